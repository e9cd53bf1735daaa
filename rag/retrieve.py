"""Hybrid retrieval: BM25 and dense chunk hits, folded back to records, then fused.

The BM25 side scores a record twice — its best chunk (a passage that matches closely) and the whole record
(evidence spread over its sections, what plain rank-bm25 over documents sees) — each normalised by the best
score of the question, and adds the two. Measured on eval/sample, eval/field (fit part) and cmrc2018
(eval/reports/bm25-variants.json), the sum beats either alone: chunks alone lose where the answer's words are
spread over a long record, whole records alone lose where one passage matches.

Fusion is a weighted reciprocal-rank fusion over record-level lists; its k and weights were chosen
with the eval harness (``python -m eval.tune``, eval/reports/fusion-grid.json). ``BASELINE_RRF`` (k=60,
equal weights) is the common baseline the reports compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from indexer.ports import NO_FILTERS, Filters, Hit
from indexer.version import IndexVersion

Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[str, ...] = ("bm25", "dense", "hybrid")


@dataclass
class Candidate:
    """One record found for a question, with what each retriever said about it."""

    record_id: str
    kind: str
    title: str
    score: float = 0.0
    bm25_score: float = 0.0
    bm25_rank: int | None = None
    dense_score: float = 0.0
    dense_rank: int | None = None
    chunk_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FusionParams:
    """Weighted RRF: ``w_bm25/(k+rank_bm25) + w_dense/(k+rank_dense)`` over record ranks."""

    k: float = 60.0
    w_bm25: float = 1.0
    w_dense: float = 1.0
    depth: int = 100


BASELINE_RRF = FusionParams(k=60.0, w_bm25=1.0, w_dense=1.0)
DEFAULT_FUSION = FusionParams(k=1.0, w_bm25=1.0, w_dense=0.85)  # chosen on eval/reports/fusion-grid.json


def fold(hits: list[Hit], kinds: dict[str, tuple[str, str]]) -> list[Candidate]:
    """Chunk hits → one candidate per record scored by its best chunk, in best-first order; ``kinds`` gives each
    record's (kind, title)."""
    by_record: dict[str, Candidate] = {}
    for hit in hits:
        cand = by_record.get(hit.record_id)
        if cand is None:
            kind, title = kinds.get(hit.record_id, ("", ""))
            cand = by_record[hit.record_id] = Candidate(hit.record_id, kind, title, hit.score)
        cand.chunk_ids.append(hit.chunk_id)
        cand.score = max(cand.score, hit.score)
    return sorted(by_record.values(), key=lambda c: (-c.score, c.record_id))


def describe(version: IndexVersion, hits: list[Hit]) -> dict[str, tuple[str, str]]:
    """(kind, title) of the records the hits name, from the chunk store (one lookup for all, no text read)."""
    labels = version.chunks.labels(h.chunk_id for h in hits)
    return {label.record_id: (label.kind, label.title) for label in labels.values()}


def fuse(bm25: list[Candidate], dense: list[Candidate], params: FusionParams) -> list[Candidate]:
    """Weighted reciprocal-rank fusion of two record lists (ties broken by record id)."""
    merged: dict[str, Candidate] = {}  # new candidates (built directly: dataclasses.replace costs 3 µs a call)
    for rank, cand in enumerate(bm25, start=1):
        merged[cand.record_id] = Candidate(cand.record_id, cand.kind, cand.title, 0.0, cand.score, rank, cand.dense_score,
                                           cand.dense_rank, list(cand.chunk_ids))
    for rank, cand in enumerate(dense, start=1):
        entry = merged.get(cand.record_id)
        if entry is None:
            entry = merged[cand.record_id] = Candidate(cand.record_id, cand.kind, cand.title, 0.0, cand.bm25_score,
                                                       cand.bm25_rank, chunk_ids=[])
        entry.dense_score, entry.dense_rank = cand.score, rank
        entry.chunk_ids.extend(c for c in cand.chunk_ids if c not in entry.chunk_ids)
    for entry in merged.values():
        entry.score = (params.w_bm25 / (params.k + entry.bm25_rank) if entry.bm25_rank else 0.0) + (
            params.w_dense / (params.k + entry.dense_rank) if entry.dense_rank else 0.0)
    return sorted(merged.values(), key=lambda c: (-c.score, c.record_id))


COMPLETION_DEPTH = 30  # fused candidates that get their dense cosine looked up when dense retrieval missed them


def complete_dense(version: IndexVersion, candidates: list[Candidate], vector: np.ndarray,
                   depth: int = COMPLETION_DEPTH) -> list[Candidate]:
    """Give the first ``depth`` candidates that dense retrieval did not reach their exact cosine to the question
    (their record's best vector), so ranking and confidence see how far below the dense frontier they lie instead
    of a zero. Their dense rank stays empty: they were not retrieved. One lookup of at most ``depth`` records."""
    missing = [c.record_id for c in candidates[:depth] if not c.dense_rank and c.kind != "craftsman"]
    if missing:
        found = version.dense.similarities(vector, missing)
        for cand in candidates[:depth]:
            if not cand.dense_rank and cand.record_id in found:
                cand.dense_score = found[cand.record_id]
    return candidates


class HybridRetriever:
    """Answers ``retrieve(question)`` from one loaded index version."""

    def __init__(self, version: IndexVersion, fusion: FusionParams = DEFAULT_FUSION) -> None:
        self.version = version
        self.fusion = fusion

    def bm25(self, question: str, depth: int | None = None, terms: list[str] | None = None,
             filters: Filters = NO_FILTERS) -> list[Candidate]:
        """Records by BM25: (best-chunk score / the question's best + whole-record score / the question's best) / 2,
        in [0, 1]."""
        depth = depth or self.fusion.depth
        version = self.version
        terms = version.tokenizer.tokenize(question) if terms is None else terms
        hits = version.sparse.search(terms, depth, filters)
        whole = version.sparse.search_records(terms, depth, filters)
        kinds = describe(version, hits + whole)
        found = fold(hits, kinds)
        chunk_best = found[0].score if found and found[0].score > 0 else 1.0
        for cand in found:
            cand.score /= chunk_best
        if whole:
            by_id = {c.record_id: c for c in found}
            record_best = whole[0].score if whole[0].score > 0 else 1.0
            for hit in whole:
                cand = by_id.get(hit.record_id)
                if cand is None:
                    kind, title = kinds.get(hit.record_id, ("", ""))
                    cand = by_id[hit.record_id] = Candidate(hit.record_id, kind, title, 0.0, chunk_ids=[hit.chunk_id])
                cand.score += hit.score / record_best
            for cand in by_id.values():
                cand.score /= 2.0  # the best possible record scores 1
            found = sorted(by_id.values(), key=lambda c: (-c.score, c.record_id))[:depth]
        for rank, cand in enumerate(found, start=1):
            cand.bm25_score, cand.bm25_rank = cand.score, rank
        return found

    def dense(self, question: str, depth: int | None = None, vector: np.ndarray | None = None,
              filters: Filters = NO_FILTERS) -> list[Candidate]:
        """Records by dense similarity; ``vector`` is the question's embedding when already computed."""
        vectors = self.version.embedder.embed_queries([question]) if vector is None else vector.reshape(1, -1)
        hits = self.version.dense.search(vectors[0], depth or self.fusion.depth, filters=filters)
        found = fold(hits, describe(self.version, hits))
        for rank, cand in enumerate(found, start=1):
            cand.dense_score, cand.dense_rank = cand.score, rank
        return found

    def retrieve(self, question: str, mode: Mode = "hybrid", k: int = 10, fusion: FusionParams | None = None,
                 filters: Filters = NO_FILTERS) -> list[Candidate]:
        """The best ``k`` records for ``question`` by one retriever or by their fusion (within ``filters``)."""
        if mode == "bm25":
            return self.bm25(question, filters=filters)[:k]
        if mode == "dense":
            return self.dense(question, filters=filters)[:k]
        return fuse(self.bm25(question, filters=filters), self.dense(question, filters=filters), fusion or self.fusion)[:k]


