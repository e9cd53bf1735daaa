"""Retrieval metrics over one ranked list and graded judgements.

Rankings are lists of document ids, best first; score ties must already be broken by the caller
(Jiangxin breaks them by id, so every figure is deterministic). nDCG uses linear gains (the grade), as
trec_eval's ``ndcg_cut`` does, with the ideal ranking built from all judged documents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def rank_by_score(scored: Mapping[str, float]) -> list[str]:
    """Ids by descending score, ties broken by ascending id."""
    return [doc for doc, _ in sorted(scored.items(), key=lambda item: (-item[1], item[0]))]


def recall_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents (grade > 0) found in the top ``k``."""
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranking[:k])) / len(relevant)


def mrr_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 if none)."""
    for position, doc in enumerate(ranking[:k], start=1):
        if qrels.get(doc, 0) > 0:
            return 1.0 / position
    return 0.0


def ndcg_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """Normalised discounted cumulative gain with graded (linear) gains."""
    dcg = sum(qrels.get(doc, 0) / math.log2(position + 1) for position, doc in enumerate(ranking[:k], start=1))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(position + 1) for position, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def summarise(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
              latencies_ms: Sequence[float] = (), ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean metrics over queries (each ranking keyed by query id) plus latency percentiles."""
    queries = list(rankings)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([recall_at(rankings[q], qrels[q], k) for q in queries])) if queries else 0.0
    out["mrr@10"] = float(np.mean([mrr_at(rankings[q], qrels[q], 10) for q in queries])) if queries else 0.0
    out["ndcg@10"] = float(np.mean([ndcg_at(rankings[q], qrels[q], 10) for q in queries])) if queries else 0.0
    out["latency_ms_p50"] = percentile(latencies_ms, 50)
    out["latency_ms_p95"] = percentile(latencies_ms, 95)
    out["queries"] = len(queries)
    return out


def recall_curve(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                 ks: Sequence[int] = (1, 2, 3, 5, 10, 20, 50)) -> dict[int, float]:
    return {k: float(np.mean([recall_at(rankings[q], qrels[q], k) for q in rankings])) if rankings else 0.0 for k in ks}


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: how far a share measured on ``trials`` questions can be from the
    true one (sound at 0 or 1 and for a few dozen questions, where the normal approximation is not)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
