"""Calibrated confidence that the top answer is right: logistic regression (Platt scaling) over a few
features of the ranked list, fitted on labelled answerable and unanswerable questions.

Fitted with ``jiangxin fit`` and stored beside the index as ``calibration.json`` (with the model id it
was fitted for); a copy fitted on the bundled sample ships in ``rag/models/`` as the default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from rag.rank import MODELS, Scored

M = TypeVar("M")

CONF_FEATURES = ("top_score", "margin", "dense_cos", "bm25_rel", "bm25_cover", "agree", "sq_sim", "title_match",
                 "conflict", "is_sq", "rr_bm25", "rr_dense", "dense_gap", "in_scope")


_CONFLICT = CONF_FEATURES.index("conflict")
CONFLICT_CEILING = 0.5  # below any answer threshold: a conflicting top record is never an automatic answer


def confidence_features(ranked: list[Scored], in_scope: float = 1.0) -> np.ndarray:
    """Features of a ranked list that say how sure the top answer is; ``in_scope`` is the scope model's
    probability that the question is an industrial one (1.0 without a scope model)."""
    if not ranked or not ranked[0].features:
        return np.array([0.0] * (len(CONF_FEATURES) - 1) + [in_scope])
    top = ranked[0]
    second = ranked[1].score if len(ranked) > 1 and np.isfinite(ranked[1].score) else top.score - 1.0
    f = top.features
    best_dense = max((s.candidate.dense_score for s in ranked), default=0.0)
    return np.array([top.score, top.score - second, f["dense_cos"], f["bm25_rel"], f["bm25_cover"], f["agree"],
                     f["sq_sim"], f["title_match"], f.get("conflict", 0.0), f.get("is_sq", 0.0), f["rr_bm25"], f["rr_dense"],
                     f["dense_cos"] - best_dense, in_scope], dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by Newton's method on standardised features.

    Returns (weights, bias, mean, scale) so that p = sigmoid(((x - mean) / scale) @ weights + bias).
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    beta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = _sigmoid(z @ beta)
        gradient = z.T @ (p - y) + reg * beta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1], float(beta[-1]), mean, scale


@dataclass
class LogisticModel:
    """A fitted logistic regression on standardised features, saved as JSON (shared by the confidence
    calibration and the scope model)."""

    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    threshold: float = 0.5
    model_id: str = ""
    fitted_on: str = ""

    def probability(self, features: np.ndarray) -> float:
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(_sigmoid(np.array(z @ np.asarray(self.weights) + self.bias)))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 1.0, **meta):
        w, b, mean, scale = fit_logistic(x, y, l2=l2)
        return cls(w.tolist(), b, mean.tolist(), scale.tolist(), **meta)

    def save(self, path: Path) -> None:
        from indexer.store import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path):
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray, fit) -> np.ndarray:
    """Each row's probability from a model ``fit(x, y)`` on the other folds: honest figures for thresholds."""
    out = np.zeros(len(x))
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        model = fit(x[train], y[train])
        score = getattr(model, "confidence", model.probability)  # a calibrator's rules apply out of fold too
        out[test] = [score(row) for row in x[test]]
    return out


@dataclass
class Calibrator(LogisticModel):
    """Confidence that the top record answers the question, over ``CONF_FEATURES`` (the schema it was fitted on)."""

    features: list[str] = field(default_factory=lambda: list(CONF_FEATURES))
    ood_fit_count: int = 0  # out-of-domain questions per set it was fitted on (the first ones): reports use later ones

    def confidence(self, features: np.ndarray) -> float:
        """The calibrated probability, at most ``CONFLICT_CEILING`` when the top record's head names another key
        object of a group the question names (输出 asked, 输入 in the record): such a record is about something else.
        A rule, not a weight: on the fit parts one question in 2,447 has a conflicting top record (a false one), so no
        fitted weight for ``conflict`` could mean anything."""
        p = self.probability(features)
        return min(p, CONFLICT_CEILING) if features[_CONFLICT] > 0 else p

    @classmethod
    def load(cls, path: Path) -> "Calibrator":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.setdefault("features", ["top_score", "margin", "dense_cos", "bm25_rel", "bm25_cover", "agree", "sq_sim", "title_match"])
        return cls(**data)


def fitted_model(index_dir: Path, name: str, load: Callable[[Path], M], accept: Callable[[M], bool]) -> M | None:
    """The model ``jiangxin fit`` saved beside this index (``<index>/<name>``), else the shipped one
    (``rag/models/<name>``): the first that exists and that ``accept`` takes (fitted for this embedder, this schema)."""
    for path in (Path(index_dir) / name, MODELS / name):
        if path.exists():
            model = load(path)
            if accept(model):
                return model
    return None


def load_calibrator(index_dir: Path, model_id: str) -> Calibrator:
    """The calibration fitted for this index (``<index>/calibration.json``), else the shipped default."""
    calibrator = fitted_model(index_dir, "calibration.json", Calibrator.load,
                              lambda c: (not c.model_id or c.model_id == model_id) and tuple(c.features) == CONF_FEATURES)
    return calibrator or Calibrator([0.0] * len(CONF_FEATURES), -2.0, [0.0] * len(CONF_FEATURES), [1.0] * len(CONF_FEATURES), 0.9,
                      model_id, "uncalibrated: nothing is answered automatically until `jiangxin fit` runs")
