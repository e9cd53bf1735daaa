"""The answer / escalate decision, measured: of the questions answered automatically, the share that are
right (precision); of the answerable ones, the share answered (coverage); out-of-domain questions
answered count as wrong. Also fits the confidence calibrator and the ranker, with out-of-fold figures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.datasets import Dataset, Query
from indexer.errors import DatasetError
from rag.answer import SQ_DIRECT
from rag.confidence import Calibrator, confidence_features
from rag.engine import Engine
from rag.rank import FEATURES, RankerWeights, feature_matrix
from rag.confidence import fit_logistic


@dataclass
class Observation:
    """One question run through retrieval and ranking, with whether its top answer is right."""

    query_id: str
    group: str  # answerable, unanswerable, ood
    right: bool
    direct: bool
    features: np.ndarray
    candidates: np.ndarray  # ranking features of the top candidates
    relevant: np.ndarray  # 1 where the candidate is judged relevant

    @property
    def fold(self) -> int:
        return int(hashlib.sha1(self.query_id.encode()).hexdigest(), 16) % 2


def load_ood(folder: Path, count: int, offset: int = 0) -> list[Query]:
    """``count`` questions of an out-of-domain set (cail2019-dev), a deterministic slice by id hash."""
    path = Path(folder) / "questions.jsonl"
    if not path.exists():
        raise DatasetError(f"{path}: file is missing")
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    rows = [r for r in rows if str(r.get("text", "")).strip()]
    rows.sort(key=lambda r: hashlib.sha1(r["_id"].encode()).hexdigest())
    return [Query(r["_id"], r["text"], "ood", False) for r in rows[offset:offset + count]]


def observe(engine: Engine, dataset: Dataset, ood: Sequence[Query] = (), depth: int = 30,
            on_query: Callable[[], None] | None = None) -> list[Observation]:
    version = engine.live.get()
    out = []
    for query, group in [*((q, "answerable" if q.answerable and dataset.qrels.get(q.id) else "unanswerable") for q in dataset.queries),
                         *((q, "ood") for q in ood)]:
        ranked = engine.rank(version, query.text)
        qrels = dataset.qrels.get(query.id, {}) if group == "answerable" else {}
        top = ranked[0] if ranked else None
        # right = the top record directly answers (has the question's highest grade; 2 in the sample set)
        right = bool(top and qrels and qrels.get(top.candidate.record_id, 0) == max(qrels.values()))
        direct = bool(top and top.candidate.kind == "standard_question" and top.sq_sim >= SQ_DIRECT)
        head = [s for s in ranked[:depth] if s.features]
        out.append(Observation(query.id, group, right, direct, confidence_features(ranked), feature_matrix(head),
                               np.array([1.0 if qrels and qrels.get(s.candidate.record_id, 0) == max(qrels.values()) else 0.0 for s in head])))
        if on_query:
            on_query()
    return out


def decision(observations: Sequence[Observation], confidences: np.ndarray, threshold: float) -> dict[str, float]:
    answered = np.array([o.direct or c >= threshold for o, c in zip(observations, confidences)])
    right = np.array([o.right for o in observations])
    answerable = np.array([o.group == "answerable" for o in observations])
    ood = np.array([o.group == "ood" for o in observations])
    n_answered = int(answered.sum())
    return {
        "threshold": float(threshold),
        "answered": n_answered,
        "precision": float((answered & right).sum() / n_answered) if n_answered else 1.0,
        "coverage": float((answered & answerable).sum() / answerable.sum()) if answerable.any() else 0.0,
        "right_coverage": float((answered & right).sum() / answerable.sum()) if answerable.any() else 0.0,
        "ood_questions": int(ood.sum()),
        "ood_escalated": float((~answered & ood).sum() / ood.sum()) if ood.any() else 1.0,
        "unanswerable_escalated": float((~answered & ~answerable & ~ood).sum() / max((~answerable & ~ood).sum(), 1)),
    }


def reliability(observations: Sequence[Observation], confidences: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    right = np.array([o.right for o in observations], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidences >= lo) & ((confidences < hi) if hi < 1 else (confidences <= hi))
        out.append({"low": float(lo), "high": float(hi), "count": int(mask.sum()),
                    "confidence": float(confidences[mask].mean()) if mask.any() else float((lo + hi) / 2),
                    "accuracy": float(right[mask].mean()) if mask.any() else 0.0})
    return out


def choose_threshold(observations: Sequence[Observation], confidences: np.ndarray, target: float = 0.9) -> float:
    """The lowest threshold whose automatic answers are at least ``target`` precise (most coverage)."""
    for t in np.round(np.arange(0.30, 0.995, 0.01), 2):
        d = decision(observations, confidences, float(t))
        if d["precision"] >= target:
            return float(t)
    return 0.99


def fit_calibrator(observations: Sequence[Observation], model_id: str, target: float = 0.9) -> tuple[Calibrator, np.ndarray]:
    """Calibrator fitted on all observations, and out-of-fold confidences (2 folds) for honest figures."""
    x = np.stack([o.features for o in observations])
    y = np.array([o.right for o in observations], dtype=float)
    folds = np.array([o.fold for o in observations])
    oof = np.zeros(len(observations))
    for fold in (0, 1):
        train, test = folds != fold, folds == fold
        part = Calibrator.fit(x[train], y[train])
        oof[test] = [part.confidence(row) for row in x[test]]
    threshold = choose_threshold(observations, oof, target)
    final = Calibrator.fit(x, y, threshold=threshold, model_id=model_id,
                           fitted_on=f"{len(observations)} questions (sample set + out-of-domain); threshold for {target:.0%} precision out-of-fold")
    return final, oof


def fit_ranker(observations: Sequence[Observation], fold: int | None = None) -> RankerWeights:
    """Pointwise logistic regression: is a candidate relevant, from its ranking features."""
    rows = [o for o in observations if o.group == "answerable" and len(o.candidates) and (fold is None or o.fold != fold)]
    x = np.vstack([o.candidates for o in rows])
    y = np.concatenate([o.relevant for o in rows])
    w, b, mean, scale = fit_logistic(x, y, l2=1.0)
    weights = w / scale
    bias = b - float((mean / scale) @ w)
    return RankerWeights({name: float(v) for name, v in zip(FEATURES, weights)}, bias)


def answer_report(observations: Sequence[Observation], confidences: np.ndarray, threshold: float) -> dict:
    curve = [decision(observations, confidences, float(t)) for t in np.round(np.arange(0.0, 1.0001, 0.02), 2)]
    report = decision(observations, confidences, threshold)
    report["curve"] = curve
    report["reliability"] = reliability(observations, confidences)
    report["groups"] = {g: sum(1 for o in observations if o.group == g) for g in ("answerable", "unanswerable", "ood")}
    return report


def ranker_cv(observations: Sequence[Observation], fusion_k: float, w_dense: float) -> dict[str, float]:
    """Out-of-fold MRR@10 of the learned ranker against the fused order, on the same candidate pools."""
    idx_b, idx_d = FEATURES.index("rr_bm25"), FEATURES.index("rr_dense")
    out = {"ranked_mrr@10": [], "fused_mrr@10": []}
    for fold in (0, 1):
        weights = fit_ranker(observations, fold)
        w = np.array([weights.weights[name] for name in FEATURES])
        for o in observations:
            if o.group != "answerable" or o.fold != fold or not len(o.candidates):
                continue
            ranked = np.argsort(-(o.candidates @ w + weights.bias), kind="stable")
            rb, rd = o.candidates[:, idx_b], o.candidates[:, idx_d]
            fused_score = np.where(rb > 0, 1 / (fusion_k + 1 / np.maximum(rb, 1e-9)), 0) + w_dense * np.where(rd > 0, 1 / (fusion_k + 1 / np.maximum(rd, 1e-9)), 0)
            fused = np.argsort(-fused_score, kind="stable")
            for key, order in (("ranked_mrr@10", ranked), ("fused_mrr@10", fused)):
                hits = np.flatnonzero(o.relevant[order][:10] > 0)
                out[key].append(1.0 / (hits[0] + 1) if len(hits) else 0.0)
    return {k: float(np.mean(v)) for k, v in out.items()}
