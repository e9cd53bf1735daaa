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


def test_cuts_equal_python_jieba_on_the_bundled_corpus():
    """The Rust port cuts every Chinese piece of the bundled corpus exactly as Python jieba, domain words included."""
    import logging
    from pathlib import Path

    import jieba

    from indexer.text import _CJK, _CODE, _SPLIT, load_tokenizer

    corpus = Path(__file__).resolve().parents[2] / "corpus"
    ours = load_tokenizer(corpus / "dictionary.txt", corpus / "stopwords.txt")
    jieba.setLogLevel(logging.WARNING)
    reference = jieba.Tokenizer()
    for word in ours.words:
        reference.add_word(word)
    pieces = [
        piece
        for path in sorted(corpus.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        for piece in _SPLIT.split(normalise(line))
        if piece and not _CODE.fullmatch(piece) and _CJK.search(piece)
    ]
    assert len(pieces) > 20_000
    differing = [p for p in pieces if ours._segmenter.cut_for_search(p, True) != list(reference.cut_for_search(p, HMM=True))]
    assert differing == []


def test_one_tokenizer_serves_many_threads():
    from concurrent.futures import ThreadPoolExecutor

    text = "变频器过电流跳闸OC报警怎么排查，细长轴的跟刀架怎么调" * 20
    expected = tokenizer.tokenize(text)
    with ThreadPoolExecutor(8) as pool:
        assert all(got == expected for got in pool.map(tokenizer.tokenize, [text] * 400))
