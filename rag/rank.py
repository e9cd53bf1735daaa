"""Ranking after fusion: a linear model over cheap, explainable features of each candidate record.

Features: the two retrievers' reciprocal ranks and scores, their agreement, BM25 coverage of the
question's terms, question-to-standard-question similarity (character bigrams over the question and
its aliases), title/keyword matches, model-number matches and the record kind (a patent describes a device, seldom
what a worker should do). Weights live in a small JSON file (``rag/models/ranker.json``) fitted with
``jiangxin fit --ranker`` on the fit parts of the labelled sets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.ports import RecordTexts
from indexer.records import StandardQuestion
from indexer.text import normalise
from indexer.version import IndexVersion
from rag.retrieve import Candidate, FusionParams, complete_dense, fuse

MODELS = Path(__file__).resolve().parent / "models"
FEATURES = ("rr_bm25", "rr_dense", "bm25_rel", "bm25_cover", "dense_cos", "agree", "sq_sim", "title_match",
            "code_match", "conflict", "is_sq", "is_course", "is_craftsman", "is_patent")
_CODE = re.compile(r"[a-z]*\d+[a-z0-9.\-/]*|[a-z]+-?\d+[a-z0-9.\-/]*", re.IGNORECASE)
_DIGIT = re.compile(r"\d")


def question_codes(normalised: str) -> set[str]:
    """The model numbers, codes and numbers of three characters or more in a ``normalise``d question (lower case)."""
    return {c.lower() for c in _CODE.findall(normalised) if _DIGIT.search(c) and len(c) >= 3}


def bigrams(text: str) -> set[str]:
    text = re.sub(r"[\W_]+", "", normalise(text))
    return {text[i:i + 2] for i in range(len(text) - 1)} or ({text} if text else set())


@lru_cache(maxsize=65_536)
def stored_bigrams(text: str) -> frozenset[str]:
    """``bigrams`` of a stored text (a standard question or alias), remembered: the same few thousand standard
    questions come back as candidates question after question."""
    return frozenset(bigrams(text))


def dice(a: AbstractSet[str], b: AbstractSet[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def load_contrasts(path: Path | None = None) -> list[tuple[str, ...]]:
    """Groups of mutually exclusive key objects (输入/输出, 过压/欠压 …), one group a line."""
    path = path or MODELS / "contrasts.txt"
    if not path.exists():
        return []
    groups = []
    for line in path.read_text(encoding="utf-8").splitlines():
        terms = tuple(normalise(t) for t in line.split()) if line.strip() and not line.startswith("#") else ()
        if len(terms) >= 2:
            groups.append(terms)
    return groups


CONTRASTS = load_contrasts()


def asked_objects(question: str, groups: list[tuple[str, ...]] = CONTRASTS) -> list[tuple[tuple[str, ...], set[str]]]:
    """The contrast groups ``question`` names, each with the key objects it names (once per question)."""
    named = [(group, {t for t in group if t in question}) for group in groups]
    return [(group, asked) for group, asked in named if asked]


def conflict(asked: list[tuple[tuple[str, ...], set[str]]], head: str) -> float:
    """1 when the question names a key object and the record's head names only another of the same group
    (``asked``: the question's ``asked_objects``, found once per question)."""
    for group, objects in asked:
        named = {t for t in group if t in head}
        if named and not objects & named:
            return 1.0
    return 0.0


@dataclass
class Scored:
    """A candidate with its ranking features and score."""

    candidate: Candidate
    features: dict[str, float]
    score: float = 0.0
    sq_sim: float = 0.0


@dataclass
class RankerWeights:
    weights: dict[str, float] = field(default_factory=dict)
    bias: float = 0.0

    @classmethod
    def load(cls, path: Path | None = None) -> "RankerWeights":
        path = path or MODELS / "ranker.json"
        if not path.exists():
            return cls(DEFAULT_WEIGHTS, 0.0)
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["weights"], data.get("bias", 0.0))


DEFAULT_WEIGHTS = {"rr_bm25": 1.0, "rr_dense": 1.0, "bm25_rel": 0.5, "dense_cos": 1.0, "agree": 0.3, "sq_sim": 1.0,
                   "title_match": 0.3, "code_match": 0.3, "is_craftsman": -1.0}


@dataclass
class QueryContext:
    """What every candidate's features need from the question, computed once."""

    text: str
    terms: list[str]
    term_weight: dict[str, float]
    codes: set[str]
    grams: set[str]
    asked: list[tuple[tuple[str, ...], set[str]]]  # contrast groups the question names (``asked_objects``)


def sq_grams(version: IndexVersion, candidates: list[Candidate]) -> dict[str, tuple[frozenset[str], ...]]:
    """Bigram sets of each standard question among ``candidates`` (its question and aliases)."""
    ids = [c.record_id for c in candidates if c.kind == "standard_question"]
    out = {}
    for rid, record in version.records.get_many(ids).items():
        if isinstance(record, StandardQuestion):
            out[rid] = tuple(stored_bigrams(q) for q in [record.question, *record.aliases])
    return out


class Ranker:
    """Scores fused candidates with a linear model; best first."""

    def __init__(self, version: IndexVersion, weights: RankerWeights | None = None) -> None:
        self.version = version
        self.weights = weights or RankerWeights.load()

    def context(self, question: str, terms: list[str] | None = None) -> QueryContext:
        terms = list(dict.fromkeys(self.version.tokenizer.tokenize(question) if terms is None else terms))
        weights = {t: self.version.terms.idf(t) for t in terms}
        normalised = normalise(question)
        return QueryContext(question, terms, weights, question_codes(normalised), bigrams(question), asked_objects(normalised))

    def features(self, ctx: QueryContext, cand: Candidate, texts: RecordTexts | None,
                 question_grams: tuple[frozenset[str], ...] = ()) -> tuple[dict[str, float], float]:
        """The features of one candidate; ``texts`` and ``question_grams`` come from the record store."""
        head, full = (texts.head, texts.full) if texts else (normalise(cand.title), normalise(cand.title))
        sq_sim = max((dice(ctx.grams, grams) for grams in question_grams), default=0.0)
        matched = sum(w for t, w in ctx.term_weight.items() if t in head)
        covered = sum(w for t, w in ctx.term_weight.items() if t in full)
        total = sum(ctx.term_weight.values()) or 1.0
        f = {
            "rr_bm25": 1.0 / cand.bm25_rank if cand.bm25_rank else 0.0,
            "rr_dense": 1.0 / cand.dense_rank if cand.dense_rank else 0.0,
            "bm25_rel": min(cand.bm25_score, 1.0),  # BM25 relative to the question's best record (HybridRetriever.bm25)
            "bm25_cover": covered / total,
            "dense_cos": cand.dense_score,
            "agree": 1.0 if cand.bm25_rank and cand.dense_rank and max(cand.bm25_rank, cand.dense_rank) <= 5 else 0.0,
            "sq_sim": sq_sim,
            "title_match": matched / total,
            "code_match": (sum(1 for c in ctx.codes if c in full) / len(ctx.codes)) if ctx.codes else 0.0,
            "conflict": conflict(ctx.asked, head),
            "is_sq": 1.0 if cand.kind == "standard_question" else 0.0,
            "is_course": 1.0 if cand.kind == "course" else 0.0,
            "is_craftsman": 1.0 if cand.kind == "craftsman" else 0.0,
            "is_patent": 1.0 if cand.kind == "patent" else 0.0,
        }
        return f, sq_sim

    def rank(self, question: str, candidates: list[Candidate], depth: int = 30, terms: list[str] | None = None) -> list[Scored]:
        """Re-score the top ``depth`` fused candidates; the rest keep their fused order after them."""
        ctx = self.context(question, terms)
        w = self.weights
        scored = []
        head = candidates[:depth]
        texts = self.version.records.texts(c.record_id for c in head)
        grams = sq_grams(self.version, head)
        for cand in head:
            features, sq_sim = self.features(ctx, cand, texts.get(cand.record_id), grams.get(cand.record_id, ()))
            score = w.bias + sum(w.weights.get(name, 0.0) * value for name, value in features.items())
            scored.append(Scored(cand, features, score, sq_sim))
        scored.sort(key=lambda s: (-s.score, s.candidate.record_id))
        tail = [Scored(c, {}, float("-inf")) for c in candidates[depth:]]
        return scored + tail


def rank_hybrid(version: IndexVersion, question: str, bm25: list[Candidate], dense: list[Candidate], vector: np.ndarray,
                weights: RankerWeights, fusion: FusionParams, terms: list[str] | None = None) -> list[Scored]:
    """The ranking stage: BM25's and dense retrieval's records fused, the fused ones dense retrieval missed given
    their exact cosine (``complete_dense``), then ranked with the learned ``weights``."""
    fused = complete_dense(version, fuse(bm25, dense, fusion), vector)
    return Ranker(version, weights).rank(question, fused, terms=terms)


def feature_matrix(rows: list[Scored]) -> np.ndarray:
    return np.array([[s.features.get(name, 0.0) for name in FEATURES] for s in rows], dtype=np.float64)
