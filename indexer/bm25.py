"""BM25 (Okapi, as rank-bm25's ``BM25Okapi``) over a precomputed term-major sparse matrix.

Each term's posting list holds its final per-document weight ``idf·tf·(k1+1)/(tf+k1·(1-b+b·dl/avgdl))``,
so a query is one vectorised add per query term into a dense score array plus an ``argpartition``:
O(Σ postings of the query terms + N). Scores equal ``BM25Okapi.get_scores`` to floating-point rounding.
Persisted as plain ``.npy`` arrays (memory-mapped on load) plus a JSON vocabulary and parameters.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import IndexCorrupt


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25


class BM25Index:
    """Okapi BM25 with rank-bm25's idf floor; documents are addressed by their row number."""

    def __init__(self, vocab: dict[str, int], indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                 n_docs: int, avgdl: float, params: BM25Params) -> None:
        self.vocab = vocab
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.n_docs = n_docs
        self.avgdl = avgdl
        self.params = params

    @classmethod
    def build(cls, corpus: Sequence[Sequence[str]], params: BM25Params = BM25Params()) -> "BM25Index":
        """Index tokenised documents. O(total tokens + postings · log postings)."""
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        doc_ids: list[int] = []
        freqs: list[int] = []
        doc_len = np.zeros(len(corpus), dtype=np.float64)
        for doc, tokens in enumerate(corpus):
            doc_len[doc] = len(tokens)
            for term, tf in Counter(tokens).items():
                term_ids.append(vocab.setdefault(term, len(vocab)))
                doc_ids.append(doc)
                freqs.append(tf)
        n_docs = len(corpus)
        total = float(doc_len.sum())
        avgdl = total / n_docs if n_docs else 0.0
        terms = np.asarray(term_ids, dtype=np.int64)
        docs = np.asarray(doc_ids, dtype=np.int32)
        tf = np.asarray(freqs, dtype=np.float64)
        df = np.bincount(terms, minlength=len(vocab)).astype(np.float64)
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        if len(idf):
            eps = params.epsilon * (float(idf.sum()) / len(idf))
            idf[idf < 0] = eps
        norm = params.k1 * (1 - params.b + params.b * doc_len[docs] / avgdl) if avgdl > 0 else np.full(len(docs), params.k1 * (1 - params.b))
        weights = idf[terms] * (tf * (params.k1 + 1) / (tf + norm))
        order = np.lexsort((docs, terms))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df.astype(np.int64), out=indptr[1:])
        return cls(vocab, indptr, docs[order], weights[order], n_docs, avgdl, params)

    def idf(self, term: str) -> float:
        """Okapi idf of ``term`` from its document frequency (0 for unknown terms; no epsilon floor)."""
        tid = self.vocab.get(term)
        if tid is None:
            return 0.0
        df = float(self.indptr[tid + 1] - self.indptr[tid])
        return max(math.log(self.n_docs - df + 0.5) - math.log(df + 0.5), 0.0)

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """Scores of every document for ``query`` (a repeated term counts again, as in rank-bm25)."""
        scores = np.zeros(self.n_docs, dtype=np.float64)
        for term in query:
            tid = self.vocab.get(term)
            if tid is None:
                continue
            start, end = int(self.indptr[tid]), int(self.indptr[tid + 1])
            scores[self.indices[start:end]] += self.data[start:end]
        return scores

    def search(self, query: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` documents that match at least one query term: (rows, scores), best first."""
        scores = self.scores(query)
        matched = np.zeros(self.n_docs, dtype=bool)
        for term in set(query):
            tid = self.vocab.get(term)
            if tid is not None:
                matched[self.indices[int(self.indptr[tid]):int(self.indptr[tid + 1])]] = True
        rows = np.flatnonzero(matched)
        if len(rows) == 0:
            return rows.astype(np.int64), np.zeros(0)
        if len(rows) > k:
            top = np.argpartition(-scores[rows], k - 1)[:k]
            rows = rows[top]
        order = np.lexsort((rows, -scores[rows]))
        rows = rows[order]
        return rows.astype(np.int64), scores[rows]

    def save(self, folder: Path, name: str = "bm25") -> list[Path]:
        """Write the index as arrays and JSON into ``folder`` (files ``<name>_*.npy``, ``<name>.json``)."""
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for part, array in (("indptr", self.indptr), ("indices", self.indices), ("data", self.data)):
            path = folder / f"{name}_{part}.npy"
            np.save(path, np.ascontiguousarray(array))
            files.append(path)
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        meta = {"k1": self.params.k1, "b": self.params.b, "epsilon": self.params.epsilon,
                "n_docs": self.n_docs, "avgdl": self.avgdl, "terms": terms}
        path = folder / f"{name}.json"
        path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        files.append(path)
        return files

    @classmethod
    def load(cls, folder: Path, name: str = "bm25") -> "BM25Index":
        """Load a saved index; the arrays are memory-mapped, not read."""
        try:
            meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
            arrays = {part: np.load(folder / f"{name}_{part}.npy", mmap_mode="r") for part in ("indptr", "indices", "data")}
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"BM25 index in {folder} cannot be read: {exc}") from exc
        vocab = {term: i for i, term in enumerate(meta["terms"])}
        if len(arrays["indptr"]) != len(vocab) + 1 or not math.isfinite(meta["avgdl"]):
            raise IndexCorrupt(f"BM25 index in {folder} is inconsistent: {len(vocab)} terms, {len(arrays['indptr'])} offsets")
        params = BM25Params(meta["k1"], meta["b"], meta["epsilon"])
        return cls(vocab, arrays["indptr"], arrays["indices"], arrays["data"], meta["n_docs"], meta["avgdl"], params)
