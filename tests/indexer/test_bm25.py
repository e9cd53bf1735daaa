import numpy as np
from hypothesis import given, settings, strategies as st
from rank_bm25 import BM25Okapi

from indexer.bm25 import BM25Index, BM25Params

VOCAB = [f"词{i}" for i in range(40)]
documents = st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=25), min_size=1, max_size=60)
queries = st.lists(st.sampled_from(VOCAB + ["未登录词"]), min_size=1, max_size=6)
params = st.builds(BM25Params, k1=st.floats(0.5, 2.5), b=st.floats(0.0, 1.0), epsilon=st.floats(0.0, 0.5))


@settings(max_examples=200, deadline=None)
@given(documents, queries, params)
def test_scores_equal_rank_bm25(corpus, query, p):
    ref = BM25Okapi(corpus, k1=p.k1, b=p.b, epsilon=p.epsilon)
    ours = BM25Index.build(corpus, p)
    assert np.allclose(ours.scores(query), ref.get_scores(query), rtol=0, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(documents, queries)
def test_top10_ids_and_scores_equal_rank_bm25(corpus, query):
    ref_scores = BM25Okapi(corpus).get_scores(query)
    rows, scores = BM25Index.build(corpus).search(query, 10)
    matched = [d for d, doc in enumerate(corpus) if set(doc) & set(query)]
    expected = np.sort(ref_scores[matched])[::-1][:10]
    assert np.allclose(scores, expected, rtol=0, atol=1e-6)
    # each returned id carries rank-bm25's score for it, so ids agree up to the order of exact ties
    assert np.allclose(ref_scores[rows], scores, rtol=0, atol=1e-6)
    assert len(set(rows.tolist())) == len(rows)


def test_saved_index_loads_memory_mapped_and_scores_the_same(tmp_path):
    corpus = [["细长轴", "振动", "跟刀架"], ["焊缝", "气孔"], ["细长轴", "直线度", "直线度"]]
    index = BM25Index.build(corpus)
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path)
    assert isinstance(loaded.data, np.memmap)
    assert np.array_equal(loaded.scores(["细长轴", "直线度"]), index.scores(["细长轴", "直线度"]))
    rows, _ = loaded.search(["直线度"], 5)
    assert list(rows) == [2]


def test_query_without_known_terms_finds_nothing():
    index = BM25Index.build([["a", "b"], ["c"]])
    rows, scores = index.search(["zzz"], 5)
    assert len(rows) == 0 and len(scores) == 0
