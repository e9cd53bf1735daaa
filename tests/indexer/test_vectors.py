import numpy as np

from indexer.vectors import VectorIndex


def unit(rows: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_index_up_to_the_limit_finds_each_vector_itself(tmp_path):
    vectors = unit(200)
    ids = np.arange(1000, 1200)
    index = VectorIndex.build(vectors, ids, "m", exact_max=200)
    assert index.meta.kind == "flat-ip"
    found, scores = index.search(vectors[:5], 1)
    assert found[:, 0].tolist() == ids[:5].tolist() and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_approximate_index_above_the_limit_keeps_ids_and_high_recall(tmp_path):
    vectors = unit(3000, seed=1)
    ids = np.arange(3000) * 7
    index = VectorIndex.build(vectors, ids, "m", exact_max=1000)
    assert index.meta.kind.startswith("hnsw")
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, "m", 32)
    queries = vectors[:100] + 0.05 * unit(100, seed=2)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] * 7
    found, _ = loaded.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist())])
    assert recall > 0.9
