"""Dense search over segments: exact below the threshold, IVF-SQ8 re-scored exactly above it, tombstones honoured."""

import numpy as np

from indexer.local import LocalDense, LocalParts
from indexer.segment import Segment, SegmentData, write_segment
from indexer.terms import BM25Params, FieldStats, TermDictionary, new_dictionary


def dense_over(tmp_path, vectors: np.ndarray, ann_above: int, dead: list[int] = ()) -> LocalDense:
    n = len(vectors)
    empty = (np.zeros(0, np.int32),) * 3
    rows = [(f"c{i}", f"r{i}", "passage", "", "head", f"文本{i}", i) for i in range(n)]
    records = [(f"r{i}", "passage", "{}", "", "", "", f"c{i}", "", "") for i in range(n)]
    data = SegmentData(rows, records, {"chunks": empty, "records": empty},
                       {"chunks": np.ones(n, np.int32), "records": np.ones(n, np.int32)}, vectors, np.arange(n, dtype=np.int32))
    path = write_segment(tmp_path, "seg", data, "test", {"min_vectors": ann_above + 1, "nlist": 32})
    new_dictionary(tmp_path, [], {"chunks": np.zeros(0, np.int32), "records": np.zeros(0, np.int32)})
    stats = FieldStats(n, n)
    dead_map = {"seg": {"chunks": np.asarray(dead, np.int32)}} if len(dead) else {}
    parts = LocalParts([Segment(path)], dead_map, TermDictionary(tmp_path), {"chunks": stats, "records": stats}, BM25Params())
    return LocalDense(parts, nprobe=8)


def clustered(n: int, dim: int = 64, centres: int = 40, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dim))
    v = middle[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_exact_search_returns_the_true_nearest_with_their_cosines(tmp_path):
    vectors = clustered(2000)
    dense = dense_over(tmp_path, vectors, ann_above=10_000)
    query = vectors[7] + 0.05
    query /= np.linalg.norm(query)
    truth = np.argsort(-(vectors @ query))[:10]
    hits = dense.search(query, 10)
    assert [h.chunk_id for h in hits] == [f"c{i}" for i in truth]
    assert np.allclose([h.score for h in hits], (vectors @ query)[truth], atol=1e-6)


def test_approximate_search_recalls_the_exact_top10_and_reports_exact_scores(tmp_path):
    vectors = clustered(5000)
    dense = dense_over(tmp_path, vectors, ann_above=1000)
    assert dense.parts.segments[0].ann is not None
    recall = []
    for q in vectors[:50]:
        exact = {h.chunk_id for h in dense.search(q, 10, exact=True)}
        hits = dense.search(q, 10)
        recall.append(len(exact & {h.chunk_id for h in hits}) / 10)
        assert np.allclose([h.score for h in hits], [float(vectors[int(h.chunk_id[1:])] @ q) for h in hits], atol=1e-6)
    assert np.mean(recall) >= 0.9


def test_tombstoned_chunks_are_never_returned(tmp_path):
    vectors = clustered(3000)
    dead = list(range(0, 3000, 2))
    for above, sub in ((10_000, "exact"), (1000, "ann")):
        folder = tmp_path / sub
        folder.mkdir()
        dense = dense_over(folder, vectors, ann_above=above, dead=dead)
        hits = dense.search(vectors[4], 10)  # its own vector is dead
        assert len(hits) == 10 and all(int(h.chunk_id[1:]) % 2 == 1 for h in hits)


def best_per_record(version, vector) -> dict[str, float]:
    """Every chunk's cosine by an exhaustive search, the best per record."""
    best: dict[str, float] = {}
    for hit in version.dense.search(vector, 100_000, exact=True):
        best[hit.record_id] = max(best.get(hit.record_id, -1.0), hit.score)
    return best


def test_similarities_are_each_records_best_chunk_cosine_and_replaced_records_use_their_new_vectors(
        tmp_path, mini_corpus, embedder, cache):
    from indexer.build import BuildOptions, apply_changes, build_index
    from indexer.records import Passage
    from indexer.store import IndexStore
    from indexer.version import IndexVersion

    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache, BuildOptions())
    version = IndexVersion(IndexStore(index).current_path(), embedder)
    vector = embedder.embed_queries(["细长轴车削时中间粗两头细"])[0]
    expected = best_per_record(version, vector)
    ids = sorted(expected)
    found = version.dense.similarities(vector, [*ids, "no-such-record"])
    assert set(found) == set(ids)
    assert np.allclose([found[i] for i in ids], [expected[i] for i in ids], atol=1e-6)

    target = "p-sim"
    for text in ("细长轴车削用跟刀架和弹性顶尖，反向进给消除腰鼓形。", "空压机排气温度高，先查油冷却器是否堵塞。"):
        apply_changes(index, embedder, cache, [Passage(id=target, title="", text=text)], [])
        newer = IndexVersion(IndexStore(index).current_path(), embedder)
        after = newer.dense.similarities(vector, [target])
        assert np.isclose(after[target], best_per_record(newer, vector)[target], atol=1e-6)
        found[target] = found.get(target, after[target])
    assert after[target] < found[target] - 0.01  # the replaced text's chunks are tombstoned, not read


def test_ranking_sees_the_dense_cosine_of_candidates_dense_retrieval_missed(mini_index, embedder):
    from indexer.store import IndexStore
    from indexer.version import IndexVersion
    from rag.retrieve import HybridRetriever, complete_dense, fuse

    version = IndexVersion(IndexStore(mini_index).current_path(), embedder)
    question = "焊缝气孔怎么办"
    vector = embedder.embed_queries([question])[0]
    retriever = HybridRetriever(version)
    dense = retriever.dense(question, depth=3, vector=vector)
    fused = fuse(retriever.bm25(question), dense, retriever.fusion)
    missed = [c for c in fused[:30] if not c.dense_rank and c.kind != "craftsman"]
    assert missed and all(c.dense_score == 0.0 for c in missed)
    complete_dense(version, fused, vector)
    truth = best_per_record(version, vector)
    for cand in missed:
        assert cand.dense_rank is None and np.isclose(cand.dense_score, truth[cand.record_id], atol=1e-6)
