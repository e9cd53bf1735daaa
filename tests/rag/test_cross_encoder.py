"""The optional CrossEncoder re-ranker, through a tiny random model saved locally."""

import pytest

pytest.importorskip("sentence_transformers")

from indexer.build import build_index
from indexer.version import LiveIndex
from rag.db import connect
from rag.engine import Engine, EngineConfig
from rag.escalate import TicketQueue
from tests.conftest import MINI


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-ce")
    chars = sorted({ch for p in MINI.glob("*.jsonl") for ch in p.read_text(encoding="utf-8") if not ch.isspace()})
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])}
    BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_engine_reorders_candidates_by_the_cross_encoder(tiny_cross_encoder, mini_corpus, tmp_path, embedder, cache):
    from sentence_transformers import CrossEncoder

    build_index(mini_corpus, tmp_path / "index", embedder, cache)
    live = LiveIndex(tmp_path / "index", embedder)
    queue = TicketQueue(connect(f"sqlite:///{tmp_path}/q.db"))
    plain = Engine(live, queue, EngineConfig(mini_corpus, tmp_path / "index"))
    crossed = Engine(live, queue, EngineConfig(mini_corpus, tmp_path / "index", cross_encoder=str(tiny_cross_encoder)))
    question = "焊缝气孔多怎么办"
    version = live.get()
    before = plain.rank(version, question)
    after = crossed.rank(version, question)
    assert {s.candidate.record_id for s in after} == {s.candidate.record_id for s in before}
    model = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    head = [s for s in before[:20] if s.candidate.chunk_ids]
    chunks = version.chunks.get_many(s.candidate.chunk_ids[0] for s in head)
    texts = [f"{chunks[s.candidate.chunk_ids[0]].title}。{chunks[s.candidate.chunk_ids[0]].text}" for s in head]
    scores = model.predict([(question, t) for t in texts])
    expected = [head[i].candidate.record_id for i in sorted(range(len(head)), key=lambda i: (-float(scores[i]), head[i].candidate.record_id))]
    assert [s.candidate.record_id for s in after[: len(head)]] == expected
