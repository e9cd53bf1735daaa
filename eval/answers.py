"""The answer / escalate / out-of-scope decision, measured and fitted.

Of the questions answered automatically, the share that are right (precision: the first cited source is a
record of the question's highest grade); of the answerable ones, the share answered (coverage); unanswerable
and out-of-domain questions answered count as wrong. An unanswered question is escalated to craftsmen when in
scope, else declined (out of scope): the report gives the share of out-of-domain questions that reach a
craftsman and of in-domain uncovered ones wrongly declined, the routing accuracy (first routed craftsman works
in the question's gold trade), the calibration error (ECE) and, side by side, the anchors' recipe: a raw
threshold on the top dense cosine, chosen for the same precision.

Fitting (``jiangxin fit``) uses only the fit parts; reports name the part each figure comes from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from eval.datasets import Dataset, Query
from eval.metrics import wilson
from indexer.errors import DatasetError
from rag.answer import direct_match
from rag.confidence import Calibrator, confidence_features, fit_logistic, out_of_fold
from rag.engine import Engine
from rag.rank import FEATURES, RankerWeights, feature_matrix
from rag.scope import ScopeModel

IN_DOMAIN = ("answerable", "uncovered", "unanswerable")
OOD_SOURCE = "out-of-domain sets"  # the source of questions drawn from cail2019-dev and qbqtc-dev
LOWER_GRADE_LABEL = 0.05  # partly relevant records count a little: recall@5/10 up, the top answer unchanged (fit part)
SCOPE_L2 = 100.0  # strong: ~400-d embedding input (chosen out-of-fold on the fit parts with ~1,500 questions; with the
# 9,200 scope-only out-of-domain ones added, 10-300 gave 0.022-0.026 out-of-domain to a craftsman out of fold: kept)


@dataclass
class Observation:
    """One question run through retrieval and ranking, with whether its top answer is right."""

    query_id: str
    group: str  # answerable, uncovered (in-domain, not covered), unanswerable (sample set: mixed), out_of_scope, ood
    right: bool
    direct: bool
    features: np.ndarray  # confidence features of the ranked list (the last, in_scope, set by ``with_scope``)
    candidates: np.ndarray  # ranking features of the top candidates
    relevant: np.ndarray  # ranker label: 1 for the question's highest grade, LOWER_GRADE_LABEL for a lower one
    scope: np.ndarray  # scope model input
    dense_cos: float = 0.0  # the anchors' recipe: top dense cosine …
    dense_right: bool = False  # … and whether the dense top record is right
    trade: str = ""  # gold trade of an answerable question
    routed_trade_hit: bool | None = None  # the first routed craftsman works in the gold trade
    source: str = ""  # the labelled set (and part) the question comes from, or the out-of-domain sets
    known_code: bool = False  # names a code its top records hold: in scope whatever the scope model says
    labelled_trade: str = ""  # the uncovered trade the trade model labels an in-domain question with ('' if none) …
    trade_covered: bool | None = None  # … and whether a craftsman covers its gold trade (None: no gold trade)

    @property
    def fold(self) -> int:
        return int(hashlib.sha1(self.query_id.encode()).hexdigest(), 16) % 2

    @property
    def in_domain(self) -> bool:
        return self.group in IN_DOMAIN


def load_ood(folder: Path, count: int, offset: int = 0) -> list[Query]:
    """``count`` out-of-domain questions, a deterministic slice by id hash: cail2019-dev's ``questions.jsonl``
    (legal questions) or qbqtc-dev's ``dev.json`` (web search queries, deduplicated)."""
    folder = Path(folder)
    if (folder / "questions.jsonl").exists():
        rows = [json.loads(line) for line in (folder / "questions.jsonl").open(encoding="utf-8") if line.strip()]
        rows = [(r["_id"], r["text"]) for r in rows if str(r.get("text", "")).strip()]
    elif (folder / "dev.json").exists():
        text = (folder / "dev.json").read_text(encoding="utf-8")
        pairs = json.loads(text) if text.lstrip().startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
        queries = sorted({str(p.get("query", "")).strip() for p in pairs} - {""})
        rows = [(f"{folder.name}-{hashlib.sha1(q.encode()).hexdigest()[:12]}", q) for q in queries]
    else:
        raise DatasetError(f"{folder}: neither questions.jsonl nor dev.json is there")
    rows.sort(key=lambda r: hashlib.sha1(r[0].encode()).hexdigest())
    industrial = judged_industrial(folder.name)
    return [Query(qid, text, "ood", False, scope="in_domain" if qid in industrial else "out_of_scope")
            for qid, text in rows[offset:offset + count]]


SCOPE_LABELS = Path(__file__).resolve().parent / "scope-labels"


def judged_industrial(set_name: str) -> set[str]:
    """Ids of an out-of-domain set's questions that reviewers judged industrial (``eval/scope-labels/<set>.tsv``,
    ``id<TAB>in|out``): web queries such as "1110柴油机大修" belong to a craftsman, so they count as in-domain
    questions the corpus does not cover, not as out-of-domain ones."""
    path = SCOPE_LABELS / f"{set_name}.tsv"
    if not path.exists():
        return set()
    rows = (line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {row[0] for row in rows if len(row) == 2 and row[1] == "in"}


def _group(query: Query, dataset: Dataset) -> str:
    if query.answerable and dataset.qrels.get(query.id):
        return "answerable"
    if query.scope == "out_of_scope":
        return "out_of_scope"
    return "uncovered" if query.split else "unanswerable"


def _label(grade: int, best: int) -> float:
    return 1.0 if grade and grade == best else (LOWER_GRADE_LABEL if grade > 0 else 0.0)


def observe(engine: Engine, dataset: Dataset | None, ood: Sequence[Query] = (), depth: int = 30,
            on_query: Callable[[], None] | None = None, routing: bool = True) -> list[Observation]:
    """Rank every question of ``dataset`` (and the out-of-domain ones) and record what the decision needs."""
    version = engine.live.get()
    out = []
    questions = [(q, _group(q, dataset), dataset.name) for q in dataset.queries] if dataset else []
    questions += [(q, "ood" if q.scope == "out_of_scope" else "uncovered", OOD_SOURCE) for q in ood]
    for query, group, source in questions:
        terms = version.tokenizer.tokenize(query.text)
        vector = version.embedder.embed_queries([query.text])[0]
        ranked = engine.rank(version, query.text, terms, vector)
        qrels = dataset.qrels.get(query.id, {}) if dataset and group == "answerable" else {}
        best = max(qrels.values()) if qrels else 0
        top = ranked[0] if ranked else None
        right = bool(top and qrels and qrels.get(top.candidate.record_id, 0) == best)
        direct = bool(top and direct_match(top))
        head = [s for s in ranked[:depth] if s.features]
        dense_top = min((s for s in ranked if s.candidate.dense_rank), key=lambda s: s.candidate.dense_rank, default=None)
        dense_cos = dense_top.candidate.dense_score if dense_top else 0.0
        hit = None
        if routing and group == "answerable" and query.trade:
            _, routes = engine.routing(version, query.text, ranked, vector)
            record = version.records.get(routes[0].craftsman_id) if routes else None
            hit = bool(record is not None and query.trade in record.trades)
        in_domain = group in IN_DOMAIN
        covered = version.directory.trades() if in_domain and query.trade else ()
        out.append(Observation(
            query.id, group, right, direct, confidence_features(ranked), feature_matrix(head),
            np.array([_label(qrels.get(s.candidate.record_id, 0), best) for s in head]),
            engine.scope_input(version, query.text, ranked, terms, vector), dense_cos,
            bool(dense_top and qrels and qrels.get(dense_top.candidate.record_id, 0) == best), query.trade, hit,
            source, engine.names_known_code(version, query.text, ranked),
            (engine.uncovered_trade(version, vector) or "") if in_domain else "", query.trade in covered if covered else None))
        if on_query:
            on_query()
    return out


def by_source(observations: Sequence[Observation], confidences: np.ndarray, threshold: float,
              in_scope: np.ndarray | None = None) -> dict[str, dict[str, int]]:
    """Per set a question comes from, at one threshold: how many of each group, answered right or wrong, declined
    (in-domain) or sent to a craftsman (out-of-domain) — so a report says which part each figure comes from."""
    out: dict[str, dict[str, int]] = {}
    for i, o in enumerate(observations):
        row = out.setdefault(o.source or "unnamed", {"answerable": 0, "answered_right": 0, "answered_wrong": 0,
                                                      "uncovered": 0, "uncovered_declined": 0, "ood": 0, "ood_to_craftsman": 0})
        answered = o.direct or confidences[i] >= threshold
        kept = True if in_scope is None else bool(in_scope[i])
        group = "ood" if o.group in ("ood", "out_of_scope") else o.group
        if group in row:
            row[group] += 1
        if answered:
            row["answered_right" if o.right else "answered_wrong"] += 1
        elif group == "uncovered" and not kept:
            row["uncovered_declined"] += 1
        elif group == "ood" and kept:
            row["ood_to_craftsman"] += 1
    return out


def decision(observations: Sequence[Observation], confidences: np.ndarray, threshold: float,
             in_scope: np.ndarray | None = None, intervals: bool = True) -> dict[str, float]:
    """Precision, coverage and where the unanswered go, at one answer threshold (with ``intervals``, each share's 95%
    Wilson interval too)."""
    answered = np.array([o.direct or c >= threshold for o, c in zip(observations, confidences)])
    right = np.array([o.right for o in observations])
    groups = np.array([o.group for o in observations])
    answerable = groups == "answerable"
    ood = np.isin(groups, ("ood", "out_of_scope"))
    unanswerable = ~answerable & ~ood
    n_answered = int(answered.sum())
    out = {
        "threshold": float(threshold),
        "answered": n_answered,
        "precision": float((answered & right).sum() / n_answered) if n_answered else 1.0,
        "coverage": float((answered & answerable).sum() / answerable.sum()) if answerable.any() else 0.0,
        "right_coverage": float((answered & right).sum() / answerable.sum()) if answerable.any() else 0.0,
        "ood_questions": int(ood.sum()),
        "ood_escalated": float((~answered & ood).sum() / ood.sum()) if ood.any() else 1.0,
        "unanswerable_escalated": float((~answered & unanswerable).sum() / max(unanswerable.sum(), 1)),
        "not_answered_all_unanswerable": float((~answered & ~answerable).sum() / max((~answerable).sum(), 1)),
    }
    counts = {"precision": ((answered & right).sum(), n_answered), "coverage": ((answered & answerable).sum(), answerable.sum()),
              "unanswerable_escalated": ((~answered & unanswerable).sum(), unanswerable.sum())}
    if in_scope is not None:
        uncovered = groups == "uncovered"
        out["ood_to_craftsman"] = float((~answered & ood & in_scope).sum() / ood.sum()) if ood.any() else 0.0
        out["uncovered_declined"] = float((~answered & uncovered & ~in_scope).sum() / uncovered.sum()) if uncovered.any() else 0.0
        out["answerable_declined"] = float((~answered & answerable & ~in_scope).sum() / answerable.sum()) if answerable.any() else 0.0
        counts.update(ood_to_craftsman=((~answered & ood & in_scope).sum(), ood.sum()),
                      uncovered_declined=((~answered & uncovered & ~in_scope).sum(), uncovered.sum()))
    if intervals:  # how far each share can be from the true one, given how many questions it is measured on
        out["intervals"] = {name: [round(v, 4) for v in wilson(int(k), int(n))] for name, (k, n) in counts.items() if n}
    return out


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


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    """ECE: the bins' |accuracy − mean confidence|, weighted by their share of the questions."""
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total) if total else 0.0


def choose_threshold(observations: Sequence[Observation], confidences: np.ndarray, target: float = 0.95) -> float:
    """The lowest threshold whose automatic answers are at least ``target`` precise (most coverage)."""
    for t in np.round(np.arange(0.30, 0.995, 0.01), 2):
        if decision(observations, confidences, float(t), intervals=False)["precision"] >= target:
            return float(t)
    return 0.99


def raw_cosine_baseline(observations: Sequence[Observation], precision: float) -> dict[str, float]:
    """The anchors' recipe (RAGFlow, MaxKB, Dify): answer with the dense top record when its cosine passes a
    threshold; the lowest threshold reaching ``precision`` on these very questions (favourable to it)."""
    cos = np.array([o.dense_cos for o in observations])
    right = np.array([o.dense_right for o in observations])
    answerable = np.array([o.group == "answerable" for o in observations])
    best = {"threshold": None, "precision": None, "coverage": 0.0, "target_precision": precision}
    for t in np.unique(np.round(cos, 4)):
        answered = cos >= t
        if answered.sum() and (answered & right).sum() / answered.sum() >= precision:
            best.update(threshold=float(t), precision=float((answered & right).sum() / answered.sum()),
                        coverage=float((answered & answerable).sum() / max(answerable.sum(), 1)))
            break
    return best


def ceiling(observations: Sequence[Observation], confidences: np.ndarray, target: float) -> dict[str, float]:
    """What bounds coverage at ``target`` precision. How often the top record is a best-grade one (and one is in the
    top 3) for the answerable questions; then the coverage these same confidences would reach with an oracle for
    either kind of error: the questions the corpus cannot answer (uncovered, out of domain) never answered, or the
    answerable questions' wrong top records never answered (None where no threshold reaches ``target``). Nothing is
    fitted: the oracles only hold answers back."""
    answerable = [o for o in observations if o.group == "answerable"]
    if not answerable:
        return {}

    def coverage_at_target(rows: Sequence[Observation], kept: np.ndarray) -> float | None:
        d = decision(rows, kept, choose_threshold(rows, kept, target), intervals=False)
        return d["coverage"] if d["precision"] >= target else None  # None: no threshold reaches the target

    def coverage_without(held_back: Callable[[Observation], bool]) -> float | None:
        rows = [replace(o, direct=False) if held_back(o) else o for o in observations]
        return coverage_at_target(rows, np.array([0.0 if held_back(o) else c for o, c in zip(observations, confidences)]))

    return {"target_precision": target, "answerable": len(answerable),
            "top_record_right": float(np.mean([o.right for o in answerable])),
            "right_in_top3": float(np.mean([bool((np.asarray(o.relevant[:3]) == 1).any()) for o in answerable])),
            "coverage": coverage_at_target(observations, confidences),
            "coverage_if_unanswerable_known": coverage_without(lambda o: o.group != "answerable"),
            "coverage_if_wrong_tops_known": coverage_without(lambda o: o.group == "answerable" and not o.right)}


def with_scope(observations: Sequence[Observation], in_scope: np.ndarray) -> None:
    """Set each observation's in-scope probability, the calibrator's last feature."""
    for o, p in zip(observations, in_scope):
        o.features = np.concatenate([o.features[:-1], [float(p)]])


def scope_probabilities(observations: Sequence[Observation], model: ScopeModel | None,
                        out_of_fold: dict[str, float] | None = None) -> np.ndarray:
    """The scope model's probability per observation: out-of-fold where the model was fitted on it; 1.0 without a
    model and for a question naming a code its top records hold (as ``Engine.in_scope``)."""
    out_of_fold = out_of_fold or {}
    return np.array([1.0 if model is None or o.known_code else out_of_fold.get(o.query_id, model.probability(o.scope))
                     for o in observations])


CALIBRATION_FOLDS = 10


def fit_calibrator(observations: Sequence[Observation], model_id: str, target: float = 0.95,
                   fitted_on: str = "", ood_fit_count: int = 0) -> tuple[Calibrator, np.ndarray]:
    """Calibrator fitted on all observations, and out-of-fold confidences (``CALIBRATION_FOLDS`` folds) for its
    threshold: the more folds, the closer each fold's model comes to the final one fitted on everything, so the
    threshold chosen on their confidences holds for it (with 2, each saw half the data and the threshold came out
    stricter than the final model needs)."""
    x = np.stack([o.features for o in observations])
    y = np.array([o.right for o in observations], dtype=float)
    folds = np.array([int(hashlib.sha1(o.query_id.encode()).hexdigest(), 16) % CALIBRATION_FOLDS for o in observations])
    oof = out_of_fold(x, y, folds, Calibrator.fit)
    threshold = choose_threshold(observations, oof, target)
    final = Calibrator.fit(x, y, threshold=threshold, model_id=model_id, ood_fit_count=ood_fit_count,
                           fitted_on=f"{fitted_on}; threshold for {target:.0%} precision out-of-fold")
    return final, oof


def fit_scope(observations: Sequence[Observation], model_id: str, max_declined: float = 0.01,
              fitted_on: str = "") -> tuple[ScopeModel, dict[str, float]]:
    """In-domain (answerable and uncovered) against out-of-scope questions; the threshold declines at most
    ``max_declined`` of the in-domain ones out-of-fold. The mixed ``unanswerable`` group is left out."""
    rows = [o for o in observations if o.group in ("answerable", "uncovered", "out_of_scope", "ood")]
    x = np.stack([o.scope for o in rows])
    y = np.array([o.in_domain for o in rows], dtype=float)
    oof = out_of_fold(x, y, np.array([o.fold for o in rows]), lambda xs, ys: ScopeModel.fit(xs, ys, l2=SCOPE_L2))
    inside = np.sort(oof[y == 1])
    threshold = float(inside[int(np.floor(max_declined * len(inside)))]) if len(inside) else 0.5
    final = ScopeModel.fit(x, y, l2=SCOPE_L2, threshold=round(threshold, 4), model_id=model_id,
                           fitted_on=f"{fitted_on}; threshold declines {max_declined:.0%} of in-domain questions out-of-fold")
    return final, {o.query_id: float(p) for o, p in zip(rows, oof)}


def fit_ranker(observations: Sequence[Observation], fold: int | None = None) -> RankerWeights:
    """Pointwise logistic regression on graded labels (``_label``), from the candidates' ranking features."""
    rows = [o for o in observations if o.group == "answerable" and len(o.candidates) and (fold is None or o.fold != fold)]
    x = np.vstack([o.candidates for o in rows])
    y = np.concatenate([o.relevant for o in rows])
    w, b, mean, scale = fit_logistic(x, y, l2=1.0)
    weights = w / scale
    bias = b - float((mean / scale) @ w)
    return RankerWeights({name: float(v) for name, v in zip(FEATURES, weights)}, bias)


def answer_report(observations: Sequence[Observation], confidences: np.ndarray, threshold: float,
                  in_scope: np.ndarray | None = None, target: float = 0.95) -> dict:
    curve = [decision(observations, confidences, float(t), intervals=False) for t in np.round(np.arange(0.0, 1.0001, 0.02), 2)]
    report = decision(observations, confidences, threshold, in_scope)
    report["by_source"] = by_source(observations, confidences, threshold, in_scope)
    report["curve"] = curve
    report["reliability"] = reliability(observations, confidences)
    report["ece"] = expected_calibration_error(report["reliability"])
    inside = [i for i, o in enumerate(observations) if o.group in ("answerable", "uncovered")]
    if inside:  # out-of-domain questions are easy to be sure about; the in-domain ones are where calibration matters
        report["ece_in_domain"] = expected_calibration_error(reliability([observations[i] for i in inside], confidences[inside]))
    report["groups"] = {g: sum(1 for o in observations if o.group == g)
                        for g in ("answerable", "uncovered", "unanswerable", "out_of_scope", "ood")}
    routed = [o for o in observations if o.routed_trade_hit is not None]
    answered = {o.query_id for o, c in zip(observations, confidences) if o.direct or c >= threshold}
    escalated = [o for o in routed if o.query_id not in answered]
    report["routing"] = {
        "escalated_answerable": len(escalated),
        "first_craftsman_in_gold_trade": float(np.mean([o.routed_trade_hit for o in escalated])) if escalated else None,
        "all_answerable": len(routed),
        "first_craftsman_in_gold_trade_all": float(np.mean([o.routed_trade_hit for o in routed])) if routed else None,
    }
    report["raw_cosine_baseline"] = raw_cosine_baseline(observations, report["precision"])
    report["trade_labels"] = trade_labels(observations)
    report["ceiling"] = ceiling(observations, confidences, target)
    return report


def trade_labels(observations: Sequence[Observation]) -> dict[str, float | int]:
    """How the trade model labels in-domain questions (an escalated one is filed under its label), whatever the
    decision: those of a trade no craftsman covers with their own trade, those of a covered trade (wrongly) with an
    uncovered one."""
    uncovered = [o for o in observations if o.trade_covered is False]
    covered = [o for o in observations if o.trade_covered]
    return {"uncovered_trade_questions": len(uncovered),
            "labelled_own_trade": float(np.mean([o.labelled_trade == o.trade for o in uncovered])) if uncovered else 0.0,
            "labelled_any": float(np.mean([bool(o.labelled_trade) for o in uncovered])) if uncovered else 0.0,
            "covered_trade_questions": len(covered),
            "covered_mislabelled": float(np.mean([bool(o.labelled_trade) for o in covered])) if covered else 0.0}


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
