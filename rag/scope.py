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

from pathlib import Path

import numpy as np

from rag.confidence import LogisticModel
from rag.rank import MODELS

SCOPE_EXTRAS = ("dense_top", "known_share")


def scope_features(vector: np.ndarray, dense_top: float, known_share: float) -> np.ndarray:
    """The scope model's input: the question embedding, then ``SCOPE_EXTRAS``."""
    return np.concatenate([np.asarray(vector, dtype=np.float64), [dense_top, known_share]])


class ScopeModel(LogisticModel):
    """Probability that a question is an industrial production question (``probability``), over
    ``scope_features``; ``threshold`` separates escalation from out of scope."""


def load_scope_model(index_dir: Path, model_id: str) -> ScopeModel | None:
    """The scope model fitted for this index (``<index>/scope.json``), else the shipped one, if its embedder matches."""
    for path in (Path(index_dir) / "scope.json", MODELS / "scope.json"):
        if path.exists():
            model = ScopeModel.load(path)
            if model.model_id == model_id:
                return model
    return None
