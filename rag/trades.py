"""Which trade a question is from, for the questions of trades no craftsman covers (注塑, 压铸, 电梯 …).

An escalated question's trades are voted by its top records (``Engine.routing``), so a question of a trade the corpus
does not cover takes the trade of whatever records come nearest: an injection-moulding question is filed under 机加工,
and the programme never sees that enterprises ask about injection moulding with nobody to answer. The trade model
labels such a question with its own trade, first among the ticket's trades, so the capacity report counts the demand
under that trade (``no_expert``). Routing is unchanged: the craftsmen are chosen by the voted trades alone, which the
ticket keeps after the label (its open pool too), and a published answer is filed under the first voted trade.

The model is a one-vs-rest logistic regression per trade over the question embedding, fitted with ``jiangxin fit`` on
the fit parts' in-domain questions with a gold trade. A label is given only when the model's best trade is one no
craftsman covers and its probability reaches ``threshold``, chosen out of fold so that at most ``MAX_MISLABELLED`` of
the questions of covered trades are labelled with an uncovered one. Like the scope model, it belongs to the embedder it
was fitted with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rag.confidence import fit_logistic, fitted_model

TRADE_L2 = 3.0  # chosen out of fold on the fit parts (1, 3, 10 within a point of each other)
MAX_MISLABELLED = 0.01
# Never label below this probability: out of fold on the fit parts, at 0.20 0.313 of the questions of uncovered trades
# get their own trade and 0.052 another uncovered one (labels 86% right); at 0.10 0.361 and 0.078, at 0.05 0.400 and
# 0.130 — more labels, more of them wrong — while covered-trade questions stay under 1% mislabelled throughout.
LABEL_FLOOR = 0.2
FOLDS = 5


@dataclass
class TradeModel:
    """Per trade a logistic regression on the standardised embedding; ``threshold`` gates the uncovered labels."""

    trades: list[str]
    weights: list[list[float]]  # one row per trade
    bias: list[float]
    mean: list[float]
    scale: list[float]
    threshold: float = 1.0
    model_id: str = ""
    fitted_on: str = ""

    def __post_init__(self) -> None:
        self._arrays = (np.asarray(self.weights, dtype=np.float64), np.asarray(self.bias, dtype=np.float64),
                        np.asarray(self.mean, dtype=np.float64), np.asarray(self.scale, dtype=np.float64))

    def probabilities(self, vector: np.ndarray) -> np.ndarray:
        weights, bias, mean, scale = self._arrays
        z = (np.asarray(vector, dtype=np.float64) - mean) / scale
        return 1.0 / (1.0 + np.exp(-np.clip(weights @ z + bias, -40, 40)))

    def best(self, vector: np.ndarray) -> tuple[str, float]:
        p = self.probabilities(vector)
        i = int(p.argmax())
        return self.trades[i], float(p[i])

    def uncovered_label(self, vector: np.ndarray, covered: Collection[str]) -> str | None:
        """The question's trade when it is one outside ``covered`` (the craftsmen's trades) and the model is sure
        enough; else None."""
        trade, p = self.best(vector)
        return trade if trade not in covered and p >= self.threshold else None

    def save(self, path: Path) -> None:
        from indexer.store import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TradeModel":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def _fit(x: np.ndarray, labels: Sequence[str], trades: list[str], l2: float) -> TradeModel:
    rows = [fit_logistic(x, np.array([t == trade for t in labels], dtype=float), l2=l2) for trade in trades]
    mean, scale = rows[0][2], rows[0][3]  # the same for every trade: they are the data's
    return TradeModel(trades, [w.tolist() for w, _, _, _ in rows], [b for _, b, _, _ in rows], mean.tolist(), scale.tolist())


def fit_trade_model(x: np.ndarray, labels: Sequence[str], ids: Sequence[str], covered: Collection[str], model_id: str,
                    fitted_on: str = "", l2: float = TRADE_L2) -> tuple[TradeModel, dict[str, float]]:
    """The model over every trade among ``labels`` (one per row of ``x``), its threshold chosen out of fold (folds by
    question id); with the out-of-fold figures: the share of questions of covered trades labelled with an uncovered
    trade, and of questions of uncovered trades labelled with their own."""
    trades = sorted(set(labels))
    folds = np.array([int(hashlib.sha1(i.encode()).hexdigest(), 16) % FOLDS for i in ids])
    best = [("", 0.0)] * len(labels)
    for fold in range(FOLDS):
        model = _fit(x[folds != fold], [t for t, f in zip(labels, folds) if f != fold], trades, l2)
        for i in np.flatnonzero(folds == fold):
            best[i] = model.best(x[i])
    is_covered = np.array([t in covered for t in labels])
    uncovered_best = np.array([t not in covered for t, _ in best])
    p = np.array([q for _, q in best])
    # the lowest threshold at which few enough questions of covered trades get an uncovered label
    wrong = np.sort(p[is_covered & uncovered_best])[::-1]
    allowed = int(np.floor(MAX_MISLABELLED * is_covered.sum()))
    threshold = float(wrong[allowed]) + 1e-6 if len(wrong) > allowed else 0.0
    threshold = math.ceil(max(threshold, LABEL_FLOOR) * 1e4) / 1e4  # rounded up: never labels more than measured
    labelled = uncovered_best & (p >= threshold)
    own = np.array([b == t for (b, _), t in zip(best, labels)])
    figures = {"threshold": threshold, "questions": len(labels), "covered_trade_questions": int(is_covered.sum()),
               "covered_mislabelled": float(labelled[is_covered].mean()) if is_covered.any() else 0.0,
               "uncovered_trade_questions": int((~is_covered).sum()),
               "uncovered_labelled_own_trade": float((labelled & own)[~is_covered].mean()) if (~is_covered).any() else 0.0,
               "uncovered_labelled_any_uncovered": float(labelled[~is_covered].mean()) if (~is_covered).any() else 0.0}
    final = _fit(x, labels, trades, l2)
    final.threshold, final.model_id = threshold, model_id
    final.fitted_on = f"{fitted_on}; threshold labels {figures['covered_mislabelled']:.3f} of covered-trade questions out of fold"
    return final, figures


def load_trade_model(index_dir: Path, model_id: str) -> TradeModel | None:
    """The trade model fitted for this index (``<index>/trades.json``), else the shipped one, if its embedder matches."""
    return fitted_model(index_dir, "trades.json", TradeModel.load, lambda m: m.model_id == model_id)
