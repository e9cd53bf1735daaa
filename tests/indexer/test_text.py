from hypothesis import given, strategies as st

from indexer.text import Tokenizer, normalise

tokenizer = Tokenizer(["跟刀架", "细长轴"], {"的", "怎么"})


def test_full_width_and_case_are_folded():
    assert normalise("ＦＡＮＵＣ　０ｉ－ＭＦ") == "fanuc 0i-mf"


def test_model_numbers_and_measurements_stay_whole():
    tokens = tokenizer.tokenize("FANUC 0i-MF 报 SV0401，西门子810M，Φ20 的轴要求 0.01mm")
    for whole in ("fanuc", "0i-mf", "sv0401", "810m", "φ20", "0.01mm"):
        assert whole in tokens
    assert "0i" in tokens and "mf" in tokens  # parts too, so a partial model number still matches


def test_domain_dictionary_words_are_kept_and_stop_words_dropped():
    tokens = tokenizer.tokenize("细长轴的跟刀架怎么调")
    assert "细长轴" in tokens and "跟刀架" in tokens
    assert "的" not in tokens and "怎么" not in tokens


@given(st.text(max_size=200))
def test_tokenize_never_fails_and_yields_no_blank_tokens(text):
    assert all(t.strip() for t in tokenizer.tokenize(text))
