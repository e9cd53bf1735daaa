"""The sentence-transformers backend, exercised through a tiny random BERT built and saved locally."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from indexer.build import build_index
from indexer.embedders import EmbedderSpec, SentenceTransformerEmbedder, load_embedder
from indexer.errors import IndexMismatchError, JiangxinError
from indexer.store import IndexStore
from indexer.version import IndexVersion
from rag.retrieve import HybridRetriever

from tests.conftest import MINI


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-st")
    chars = sorted({ch for path in MINI.glob("*.jsonl") for ch in path.read_text(encoding="utf-8") if not ch.isspace()})
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    raw = folder / "raw"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"), Normalize()])
    model.save(str(folder / "model"))
    return folder / "model"


def test_local_model_loads_and_embeds_unit_vectors(tiny_model):
    embedder = SentenceTransformerEmbedder(str(tiny_model))
    vectors = embedder.embed_passages(["细长轴车削振动", "焊缝气孔"])
    assert vectors.shape == (2, 32) and embedder.dim == 32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    assert embedder.model_id.startswith("st/model@")


def test_index_built_with_local_model_answers_and_refuses_the_default(tiny_model, tmp_path, embedder):
    st = load_embedder(EmbedderSpec(name=f"st:{tiny_model}"))
    report = build_index(MINI, tmp_path / "index", st, cache=None)
    assert report.embedded == report.dense_chunks
    version = IndexVersion(IndexStore(tmp_path / "index").current_path(), st)
    assert HybridRetriever(version).retrieve("细长轴", "dense", 3)
    with pytest.raises(IndexMismatchError):
        IndexVersion(IndexStore(tmp_path / "index").current_path(), embedder)


def test_hub_id_is_refused_while_hub_access_is_off():
    with pytest.raises(JiangxinError, match="hub access is off"):
        SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")
