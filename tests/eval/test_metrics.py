import math

import pytest

from eval.metrics import mrr_at, ndcg_at, rank_by_score, recall_at, summarise


def test_recall_counts_share_of_relevant_found():
    qrels = {"a": 1, "b": 2, "c": 0}
    assert recall_at(["x", "a", "c", "b"], qrels, 2) == 0.5
    assert recall_at(["x", "a", "c", "b"], qrels, 4) == 1.0
    assert recall_at(["x"], {}, 5) == 0.0


def test_mrr_uses_first_relevant_within_cutoff():
    assert mrr_at(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 10 + ["a"], {"a": 1}, 10) == 0.0
    assert mrr_at(["c", "a"], {"c": 0, "a": 1}) == 0.5  # grade 0 is not relevant


def test_graded_ndcg_by_hand():
    qrels = {"a": 2, "b": 1, "c": 1}
    ranking = ["b", "x", "a"]
    dcg = 1 / math.log2(2) + 0 + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(ranking, qrels) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b", "c"], qrels) == pytest.approx(1.0)
    assert ndcg_at(["b", "c", "a"], qrels) < ndcg_at(["a", "c", "b"], qrels)


def test_score_ties_are_broken_by_id_so_metrics_are_deterministic():
    scored = {"d2": 0.5, "d1": 0.5, "d0": 0.9}
    assert rank_by_score(scored) == ["d0", "d1", "d2"]
    assert mrr_at(rank_by_score(scored), {"d2": 1}) == pytest.approx(1 / 3)


def test_summary_averages_over_queries_and_reports_latency():
    rankings = {"q1": ["a", "b"], "q2": ["c", "d"]}
    qrels = {"q1": {"a": 1}, "q2": {"d": 1}}
    out = summarise(rankings, qrels, [1.0, 3.0])
    assert out["recall@1"] == 0.5 and out["mrr@10"] == pytest.approx(0.75)
    assert out["latency_ms_p50"] == 2.0 and out["queries"] == 2
