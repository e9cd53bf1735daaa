import json
import logging
import re
from pathlib import Path

import jieba
from hypothesis import given, strategies as st

from indexer.build import build_dictionary, read_stopwords
from indexer.records import load_corpus
from indexer.text import Tokenizer, normalise, simplified

CORPUS = Path(__file__).resolve().parents[2] / "corpus"

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
    """The Rust port cuts the bundled corpus as Python jieba does, with the dictionary a build uses (the curated
    words plus every record's keywords, skills and trades), term for term."""
    records = load_corpus(CORPUS).records
    words = build_dictionary(CORPUS, records)
    ours = Tokenizer(words, set(read_stopwords(CORPUS)))
    jieba.setLogLevel(logging.WARNING)
    reference = jieba.Tokenizer()
    for word in words:
        reference.add_word(word)
    texts = [text for r in records for text in (r.title, *r.sections())]
    pieces = [piece for text in texts for piece in re.split(r"[^\u3400-\u9fff]+", normalise(text)) if piece]
    assert len(words) > 1_000 and len(pieces) > 20_000
    differing = [p for p in pieces if ours.cut(p) != list(reference.cut_for_search(p, HMM=True))]
    assert differing == []


def test_one_tokenizer_serves_many_threads():
    from concurrent.futures import ThreadPoolExecutor

    text = "变频器过电流跳闸OC报警怎么排查，细长轴的跟刀架怎么调" * 20
    expected = tokenizer.tokenize(text)
    with ThreadPoolExecutor(8) as pool:
        assert all(got == expected for got in pool.map(tokenizer.tokenize, [text] * 400))


def test_traditional_characters_become_simplified_and_simplified_text_stays_as_it_is():
    assert simplified("焊縫氣孔怎麼辦") == "焊缝气孔怎么办"
    assert simplified("變頻器過電流跳閘OC報警怎麼排查") == "变频器过电流跳闸OC报警怎么排查"
    assert simplified("電容鼓包，機器壞了") == "电容鼓包，机器坏了"  # 壞 → 坏, never 坯
    assert simplified("电机坏了") == "电机坏了"
    texts = [json.loads(line)["text"] for f in sorted((CORPUS.parent / "eval").glob("*/queries.jsonl"))
             for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts += [line for f in sorted(CORPUS.rglob("*.jsonl")) for line in f.read_text(encoding="utf-8").splitlines()]
    assert len(texts) > 2500 and [t for t in texts if simplified(t) != t] == []
