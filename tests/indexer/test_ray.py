"""Ray batch indexing in local mode: the same index as a local build — terms, statistics, payloads and vectors — and
into Milvus the same hits."""

import numpy as np
import pytest

from indexer.build import BuildOptions, build_index
from indexer.embedders import EmbedderSpec
from indexer.milvus import MilvusSpec
from indexer.ray_engine import RaySpec
from indexer.store import IndexStore
from indexer.version import IndexVersion
from tests.conftest import MINI

QUESTIONS = ["焊缝气孔怎么办", "细长轴车削振动", "伺服报警SV0401", "输送带跑偏"]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    yield RaySpec(EmbedderSpec(), address=None, workers=2)
    ray.shutdown()


def current(index, embedder) -> IndexVersion:
    return IndexVersion(IndexStore(index).current_path(), embedder)


def test_ray_builds_the_same_index_as_the_local_engine(tmp_path, embedder, mini_index, ray_local):
    report = build_index(MINI, tmp_path / "ray", embedder, None, BuildOptions(ray=ray_local))  # no cache: Ray embeds
    assert report.embedded == report.dense_chunks > 0
    local, ray = current(mini_index, embedder), current(tmp_path / "ray", embedder)
    assert ray.manifest["counts"] == local.manifest["counts"] and ray.manifest["stats"] == local.manifest["stats"]
    assert ray.parts.dictionary.size == local.parts.dictionary.size
    (a,), (b,) = local.parts.segments, ray.parts.segments
    assert a.db.execute("SELECT id, record_id, text FROM chunk ORDER BY local").fetchall() == \
        b.db.execute("SELECT id, record_id, text FROM chunk ORDER BY local").fetchall()
    assert np.allclose(np.asarray(a.vectors), np.asarray(b.vectors), atol=1e-5)
    for q in QUESTIONS:
        terms = local.tokenizer.tokenize(q)
        for search in ("search", "search_records"):
            x, y = getattr(local.sparse, search)(terms, 20), getattr(ray.sparse, search)(terms, 20)
            assert [h.chunk_id for h in x] == [h.chunk_id for h in y]
            assert np.allclose([h.score for h in x], [h.score for h in y], rtol=0, atol=1e-9)


def test_ray_indexing_into_milvus_serves_the_same_hits(tmp_path, embedder, cache, mini_index, ray_local):
    build_index(MINI, tmp_path / "idx", embedder, cache, BuildOptions(ray=ray_local, milvus=MilvusSpec(str(tmp_path / "m.db"))))
    local, milvus = current(mini_index, embedder), current(tmp_path / "idx", embedder)
    assert milvus.manifest["backend"] == "milvus"
    for q in QUESTIONS:
        terms = local.tokenizer.tokenize(q)
        x, y = local.sparse.search(terms, 10), milvus.sparse.search(terms, 10)
        assert [h.record_id for h in x][:3] == [h.record_id for h in y][:3]
        assert np.allclose([h.score for h in x], [h.score for h in y], rtol=0, atol=1e-5)
