"""The version's term dictionary: term ids, document frequencies and global BM25 statistics, memory-mapped.

Terms keep their id forever (new terms are appended), so segments written at different times share one id space
and a delta never rewrites older segments. On disk (in the version folder)::

    terms.bin            UTF-8 terms concatenated in id order
    terms_offsets.npy    int64 [V+1]: term i is terms.bin[offsets[i]:offsets[i+1]]
    terms_sorted.npy     int32 [V]: term ids in code-point order, for binary search
    df_chunks.npy        int32 [V]: live chunks containing the term
    df_records.npy       int32 [V]: live records containing the term

plus, in the manifest, the live document counts and total lengths per field. Nothing is parsed into Python
objects on load; a lookup is a binary search over the mapped arrays (about 20 probes at a million terms).
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import IndexCorrupt

FIELDS = ("chunks", "records")


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25


@dataclass
class FieldStats:
    """Live documents and their total length in one field (chunks or whole records)."""

    docs: int = 0
    length: int = 0

    @property
    def avgdl(self) -> float:
        return self.length / self.docs if self.docs else 0.0


class TermDictionary:
    """Term ↔ id over memory-mapped arrays, with per-field document frequencies."""

    def __init__(self, folder: Path) -> None:
        try:
            with open(folder / "terms.bin", "rb") as handle:  # the map keeps its own descriptor
                size = os.fstat(handle.fileno()).st_size
                self._blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self.offsets = np.asarray(np.load(folder / "terms_offsets.npy", mmap_mode="r"))  # plain views: fast indexing
            self.sorted = np.asarray(np.load(folder / "terms_sorted.npy", mmap_mode="r"))
            self.df = {f: np.asarray(np.load(folder / f"df_{f}.npy", mmap_mode="r")) for f in FIELDS}
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"term dictionary in {folder} cannot be read: {exc}") from exc
        self.size = len(self.sorted)
        if len(self.offsets) != self.size + 1 or any(len(d) != self.size for d in self.df.values()):
            raise IndexCorrupt(f"term dictionary in {folder} is inconsistent ({self.size} terms)")
        self._known: dict[str, int] = {}  # recent lookups (bounded): question terms repeat

    def term(self, term_id: int) -> str:
        return bytes(self._blob[int(self.offsets[term_id]):int(self.offsets[term_id + 1])]).decode("utf-8")

    def position(self, term: str) -> tuple[int, int]:
        """(insertion position in sorted order, term id or -1)."""
        key = term.encode("utf-8")
        lo, hi = 0, self.size
        blob, offsets, order = self._blob, self.offsets, self.sorted
        while lo < hi:
            mid = (lo + hi) // 2
            tid = int(order[mid])
            probe = blob[int(offsets[tid]):int(offsets[tid + 1])]
            if probe < key:
                lo = mid + 1
            elif probe > key:
                hi = mid
            else:
                return mid, tid
        return lo, -1

    def lookup(self, term: str) -> int:
        """The id of ``term``, or -1."""
        tid = self._known.get(term)
        if tid is None:
            tid = self.position(term)[1]
            if len(self._known) >= 200_000:
                self._known.clear()
            self._known[term] = tid
        return tid

    def ids(self, terms: Iterable[str]) -> list[int]:
        """Ids of ``terms`` in order, -1 for unknown ones."""
        return [self.lookup(t) for t in terms]


def write_dictionary(folder: Path, blob: bytes, offsets: np.ndarray, order: np.ndarray, df: dict[str, np.ndarray]) -> None:
    (folder / "terms.bin").write_bytes(blob)
    np.save(folder / "terms_offsets.npy", np.ascontiguousarray(offsets, dtype=np.int64))
    np.save(folder / "terms_sorted.npy", np.ascontiguousarray(order, dtype=np.int32))
    for f in FIELDS:
        np.save(folder / f"df_{f}.npy", np.ascontiguousarray(df[f], dtype=np.int32))


def new_dictionary(folder: Path, terms: list[str], df: dict[str, np.ndarray]) -> None:
    """Write a dictionary of ``terms`` (ids = positions in the list)."""
    encoded = [t.encode("utf-8") for t in terms]
    offsets = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:]) if terms else None
    order = np.array(sorted(range(len(terms)), key=encoded.__getitem__), dtype=np.int32)
    write_dictionary(folder, b"".join(encoded), offsets, order, df)


def extended_dictionary(folder: Path, base: TermDictionary, new_terms: list[str], df: dict[str, np.ndarray]) -> None:
    """Write ``base`` plus ``new_terms`` (ids from ``base.size`` on, not already in ``base``) with ``df``."""
    encoded = [t.encode("utf-8") for t in new_terms]
    offsets = np.empty(base.size + len(encoded) + 1, dtype=np.int64)
    offsets[: base.size + 1] = base.offsets
    if encoded:
        np.cumsum([len(e) for e in encoded], out=offsets[base.size + 1:])
        offsets[base.size + 1:] += base.offsets[-1]
    positions = [base.position(t)[0] for t in new_terms]
    new_ids = np.arange(base.size, base.size + len(new_terms), dtype=np.int32)
    by_position = sorted(range(len(new_terms)), key=lambda i: (positions[i], encoded[i]))
    order = np.insert(np.asarray(base.sorted), [positions[i] for i in by_position], new_ids[by_position]) if new_terms else np.asarray(base.sorted)
    write_dictionary(folder, bytes(base._blob[:]) + b"".join(encoded), offsets, order, df)


def okapi_idf(df: np.ndarray, docs: int, epsilon: float) -> np.ndarray:
    """rank-bm25's ``BM25Okapi`` idf per term: log((N−df+0.5)/(df+0.5)), negatives raised to ε·(mean idf), the mean
    over the terms that occur in at least one live document."""
    df = np.asarray(df, dtype=np.float64)
    idf = np.log(docs - df + 0.5) - np.log(df + 0.5)
    alive = df > 0
    if alive.any():
        eps = epsilon * float(idf[alive].sum()) / int(alive.sum())
        idf[(idf < 0) & alive] = eps
    return idf


def plain_idf(df: int, docs: int) -> float:
    """Okapi idf without rank-bm25's floor, at least 0 (what ranking features weigh terms by)."""
    return max(math.log(docs - df + 0.5) - math.log(df + 0.5), 0.0) if df > 0 else 0.0
