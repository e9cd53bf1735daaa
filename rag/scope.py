"""Is a question about industrial production at all (whatever the corpus covers)? The third outcome.

A question the engine cannot answer goes to a craftsman only when it is in scope — a production question
the corpus does not cover well enough. One out of scope (a legal dispute, the weather, chit-chat) gets a polite
reply and lands on the maintainers' triage list instead of in a craftsman's queue.

The model is a logistic regression over the question's embedding plus two retrieval signals (the best dense
cosine to the corpus, the share of the question's terms the corpus vocabulary knows), fitted with
``jiangxin fit`` on in-domain questions (answerable and uncovered) against out-of-scope ones. It belongs to the
embedder it was fitted with: another embedder gets no scope model, and then every question counts as in scope.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rag.confidence import _sigmoid, fit_logistic
from rag.rank import MODELS

SCOPE_EXTRAS = ("dense_top", "known_share")


def scope_features(vector: np.ndarray, dense_top: float, known_share: float) -> np.ndarray:
    """The scope model's input: the question embedding, then ``SCOPE_EXTRAS``."""
    return np.concatenate([np.asarray(vector, dtype=np.float64), [dense_top, known_share]])


@dataclass
class ScopeModel:
    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    threshold: float = 0.5
    model_id: str = ""
    fitted_on: str = ""

    def probability(self, features: np.ndarray) -> float:
        """Probability that the question is an industrial production question."""
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(_sigmoid(np.array(z @ np.asarray(self.weights) + self.bias)))

    def in_scope(self, features: np.ndarray) -> bool:
        return self.probability(features) >= self.threshold

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 30.0, **meta) -> "ScopeModel":
        w, b, mean, scale = fit_logistic(x, y, l2=l2)
        return cls(w.tolist(), b, mean.tolist(), scale.tolist(), **meta)

    def save(self, path: Path) -> None:
        from indexer.store import atomic_write_text

        data = asdict(self)
        data["weights"] = [round(w, 6) for w in data["weights"]]
        data["mean"] = [round(m, 6) for m in data["mean"]]
        data["scale"] = [round(s, 6) for s in data["scale"]]
        atomic_write_text(path, json.dumps(data, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ScopeModel":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def load_scope_model(index_dir: Path, model_id: str) -> ScopeModel | None:
    """The scope model fitted for this index (``<index>/scope.json``), else the shipped one, if its embedder matches."""
    for path in (Path(index_dir) / "scope.json", MODELS / "scope.json"):
        if path.exists():
            model = ScopeModel.load(path)
            if model.model_id == model_id:
                return model
    return None
