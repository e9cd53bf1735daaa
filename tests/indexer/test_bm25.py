"""The BM25 core over segments scores exactly as rank-bm25's BM25Okapi on the same tokens."""

import numpy as np
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from rank_bm25 import BM25Okapi

from indexer.local import LocalParts, LocalSparse
from indexer.segment import Segment, SegmentData, write_segment
from indexer.terms import BM25Params, FieldStats, TermDictionary, new_dictionary

VOCAB = [f"词{i}" for i in range(40)]
documents = st.lists(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=25), min_size=1, max_size=60)
queries = st.lists(st.sampled_from(VOCAB + ["未登录词"]), min_size=1, max_size=6)
params = st.builds(BM25Params, k1=st.floats(0.5, 2.5), b=st.floats(0.0, 1.0), epsilon=st.floats(0.0, 0.5))


def sparse_over(tmp_path, corpus: list[list[str]], p: BM25Params = BM25Params()) -> LocalSparse:
    """One segment whose chunks (and records) are the given token lists, and its term dictionary."""
    vocab: dict[str, int] = {}
    doc, term, tf = [], [], []
    for d, tokens in enumerate(corpus):
        for t in dict.fromkeys(tokens):
            doc.append(d)
            term.append(vocab.setdefault(t, len(vocab)))
            tf.append(tokens.count(t))
    arrays = (np.array(doc, np.int32), np.array(term, np.int32), np.array(tf, np.int32))
    lengths = np.array([len(c) for c in corpus], np.int32)
    rows = [(f"c{d}", f"r{d}", "passage", "", "body", " ".join(c), -1) for d, c in enumerate(corpus)]
    records = [(f"r{d}", "passage", "{}", "", "", "", f"c{d}", "", "") for d in range(len(corpus))]
    data = SegmentData(rows, records, {"chunks": arrays, "records": arrays}, {"chunks": lengths, "records": lengths},
                       np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
    folder = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = write_segment(folder, "seg", data, "test")
    df = np.bincount(arrays[1], minlength=len(vocab)).astype(np.int32)
    new_dictionary(folder, list(vocab), {"chunks": df, "records": df})
    stats = FieldStats(len(corpus), int(lengths.sum()))
    return LocalSparse(LocalParts([Segment(path)], {}, TermDictionary(folder), {"chunks": stats, "records": stats}, p))


@settings(max_examples=100, deadline=None)
@given(documents, queries, params)
def test_scores_equal_rank_bm25(tmp_path_factory, corpus, query, p):
    ref = BM25Okapi(corpus, k1=p.k1, b=p.b, epsilon=p.epsilon)
    scores, _ = sparse_over(tmp_path_factory.mktemp("bm25"), corpus, p).scores("chunks", query, 0)
    assert np.allclose(scores, ref.get_scores(query), rtol=0, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(documents, queries)
def test_top10_ids_and_scores_equal_rank_bm25(tmp_path_factory, corpus, query):
    ref_scores = BM25Okapi(corpus).get_scores(query)
    hits = sparse_over(tmp_path_factory.mktemp("bm25"), corpus).search(query, 10)
    matched = [d for d, doc in enumerate(corpus) if set(doc) & set(query)]
    expected = np.sort(ref_scores[matched])[::-1][:10]
    assert np.allclose([h.score for h in hits], expected, rtol=0, atol=1e-6)
    # each returned id carries rank-bm25's score for it, so ids agree up to the order of exact ties
    rows = [int(h.chunk_id[1:]) for h in hits]
    assert np.allclose(ref_scores[rows], [h.score for h in hits], rtol=0, atol=1e-6)
    assert len(set(rows)) == len(rows) and all(h.record_id == f"r{r}" for h, r in zip(hits, rows))


def test_postings_are_memory_mapped_and_unknown_terms_score_nothing(tmp_path):
    sparse = sparse_over(tmp_path, [["细长轴", "振动", "跟刀架"], ["焊缝", "气孔"], ["细长轴", "直线度", "直线度"]])
    assert isinstance(sparse.parts.segments[0].fields["chunks"].docs.base, np.memmap)  # a view of the mapped file
    assert sparse.search(["未登录词"], 10) == []
    assert [h.chunk_id for h in sparse.search(["直线度", "细长轴"], 10)] == ["c2", "c0"]


SKEWED = ["常"] * 20 + ["中"] * 8 + [f"稀{i}" for i in range(30)]  # two common terms, thirty rare ones
skewed_docs = st.lists(st.lists(st.sampled_from(SKEWED), min_size=1, max_size=30), min_size=20, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(skewed_docs, st.lists(st.sampled_from(sorted(set(SKEWED))), min_size=2, max_size=8), st.sampled_from([1, 3, 10]))
def test_pruned_top_k_equals_scoring_everything(tmp_path_factory, corpus, query, k):
    """Where the common terms are skipped for documents that cannot make the top k, the top k is unchanged."""
    sparse = sparse_over(tmp_path_factory.mktemp("prune"), corpus)
    assume(sparse._score("chunks", query, 0, k)[2] is not None)  # only cases where pruning happened
    full, matched = sparse.scores("chunks", query, 0)
    expected = np.sort(full[np.flatnonzero(matched)])[::-1][:k]
    hits = sparse.search(query, k)
    assert np.allclose([h.score for h in hits], expected, rtol=0, atol=1e-9)
    assert all(abs(full[int(h.chunk_id[1:])] - h.score) < 1e-9 for h in hits)  # each returned score is its full score
