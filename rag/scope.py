"""Is a question about industrial production at all (whatever the corpus covers)? The third outcome.

A question the engine cannot answer goes to a craftsman only when it is in scope — a production question
the corpus does not cover well enough. One out of scope (a legal dispute, the weather, chit-chat) gets a polite
reply and lands on the maintainers' triage list instead of in a craftsman's queue.

The model is a logistic regression over the question's embedding plus two retrieval signals (the best dense
cosine to the corpus, the share of the question's terms the corpus vocabulary knows), fitted with
``jiangxin fit`` on in-domain questions (answerable and uncovered) against out-of-scope ones. It belongs to the
embedder it was fitted with: another embedder gets no scope model, and then every question counts as in scope.

One rule stands beside the model: a question naming a model number or alarm code that its top records hold
(``Engine.names_known_code``) is in scope, whatever the model says. A bare code ("FANUC SV0401", "828D 25000") reads like
a web query to the embedding, yet a code the corpus knows is industrial. Measured before adopting it: on the fit
parts 101 in-domain questions name such a code and no out-of-domain one does; of 9,115 further web and legal
questions (the scope model's extra slice) none does.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from indexer.text import normalise
from rag.confidence import LogisticModel, fitted_model
from rag.rank import question_codes

SCOPE_EXTRAS = ("dense_top", "known_share")
_LETTER = re.compile(r"[a-z]", re.IGNORECASE)
_MEASURE = re.compile(r"\d+(\.\d+)?(mm|cm|dm|m|km|kg|g|t|kw|w|kv|v|ma|a|hz|mpa|kpa|pa|bar|rpm|r/min|h|min|s|ml|l)",
                      re.IGNORECASE)


def named_codes(question: str) -> set[str]:
    """The model numbers and alarm codes a question names: letters and digits together (SV0401, 828D, ACS510), not a
    measurement (24mm, 380V) and not a bare number (a year, a price: web queries are full of them)."""
    return {c for c in question_codes(normalise(question)) if _LETTER.search(c) and not _MEASURE.fullmatch(c)}


def scope_features(vector: np.ndarray, dense_top: float, known_share: float) -> np.ndarray:
    """The scope model's input: the question embedding, then ``SCOPE_EXTRAS``."""
    return np.concatenate([np.asarray(vector, dtype=np.float64), [dense_top, known_share]])


class ScopeModel(LogisticModel):
    """Probability that a question is an industrial production question (``probability``), over
    ``scope_features``; ``threshold`` separates escalation from out of scope."""


def load_scope_model(index_dir: Path, model_id: str) -> ScopeModel | None:
    """The scope model fitted for this index (``<index>/scope.json``), else the shipped one, if its embedder matches."""
    return fitted_model(index_dir, "scope.json", ScopeModel.load, lambda m: m.model_id == model_id)
