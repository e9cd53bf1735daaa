"""Does this record answer the question, or only share its topic? A match score learned over the embedder's vectors.

The dense cosine weighs every dimension of the embedding alike, and a record on the question's topic that does not
give the asked fact (a mine hoist's brake for a lift's brake gap) comes as close as one that does. The match model
weighs the dimensions: its score of a record is the best over the record's chunks of ``Σ_i w_i q_i c_i + b`` — a
diagonal bilinear form, i.e. a logistic regression over the element-wise product of the question's and a chunk's
vectors. It is fitted (``jiangxin fit``) on the fit parts' in-domain questions against their top ``MATCH_DEPTH``
records: a record labelled with the question's best grade is a match; every other one, and every record of a
question the corpus does not cover, is not.

Scoring a record is one ``DenseSearch.similarities`` call with the re-weighted question vector ``q ⊙ w``, so every
backend computes it with what it already has. The score is a feature of the answer confidence, not of the ranker:
ranking also serves corpora (cmrc2018, csl) these weights were never fitted on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.ports import DenseSearch
from rag.confidence import fit_logistic
from rag.rank import MODELS

MATCH_DEPTH = 10  # the top records of each question it is fitted on
# The penalty on the raw products (each about 1/384 of a cosine): scikit-learn's C = 0.1 on products ×100, which
# answered the most at 90-95% precision out of fold on the fit parts (C from 0.003 to 1 tried, three fold seeds).
MATCH_L2 = 1e-3


def pair_features(vector: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """The model's input for one record: the question vector times the record's chunk closest to it (elementwise)."""
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    chunks = np.asarray(chunks, dtype=np.float32).reshape(-1, len(query))
    return query * chunks[int(np.argmax(chunks @ query))]


@dataclass
class MatchModel:
    """The weights ``w`` (one per embedding dimension) and bias ``b``; belongs to the embedder it was fitted with."""

    weights: list[float]
    bias: float
    model_id: str = ""
    fitted_on: str = ""

    def query(self, vector: np.ndarray) -> np.ndarray:
        """The re-weighted question vector ``q ⊙ w``: its inner product with a chunk is the score less the bias."""
        return np.asarray(vector, dtype=np.float32).reshape(-1) * np.asarray(self.weights, dtype=np.float32)

    def scores(self, dense: DenseSearch, vector: np.ndarray, record_ids: Sequence[str]) -> dict[str, float]:
        """Each record's score, best over its chunks (records without a vector are left out)."""
        return {rid: s + self.bias for rid, s in dense.similarities(self.query(vector), record_ids).items()}

    def score_chunks(self, vector: np.ndarray, chunks: np.ndarray) -> float:
        """The score of a record given its chunk vectors (what ``scores`` computes through the index)."""
        return float((np.asarray(chunks, dtype=np.float32) @ self.query(vector)).max()) + self.bias

    @classmethod
    def fit(cls, pairs: np.ndarray, labels: np.ndarray, l2: float = MATCH_L2, **meta) -> "MatchModel":
        """Logistic regression over ``pair_features`` rows; ``labels`` 1 for a record that answers its question."""
        w, b, _, _ = fit_logistic(np.asarray(pairs, dtype=np.float64), np.asarray(labels, dtype=np.float64), l2=l2,
                                  standardise=False)
        return cls(w.tolist(), b, **meta)

    def save(self, path: Path) -> None:
        from indexer.store import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "MatchModel":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def load_match_model(index_dir: Path, model_id: str) -> MatchModel | None:
    """The match model fitted for this index (``<index>/match.json``), else the shipped one, if its embedder matches."""
    for path in (Path(index_dir) / "match.json", MODELS / "match.json"):
        if path.exists():
            model = MatchModel.load(path)
            if model.model_id == model_id:
                return model
    return None
