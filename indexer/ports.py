"""The narrow interfaces the query pipeline asks of an index backend, addressed by ids, never by row numbers.

Retrieval hands on ``Hit(chunk_id, record_id, score)``; ranking and answering ask a chunk store and a record
store for the few ids they need (``get_many``), term statistics for idf, a craftsman directory for routing.
The local files (``indexer/local.py``) are one implementation of each; another backend (a distributed engine)
is another implementation of the same protocols, named in the index manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple, Protocol

import numpy as np

from indexer.chunking import Chunk as ChunkRow  # a stored chunk: what answers quote and cross-encoders read
from indexer.records import Craftsman, Record


class ChunkLabel(NamedTuple):
    """What folding a chunk's hit into its record needs: the record, its kind and title (no text)."""

    record_id: str
    kind: str
    title: str


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk (or, for whole-record search, the record's head chunk) with its score."""

    chunk_id: str
    record_id: str
    score: float


@dataclass(frozen=True)
class Filters:
    """Restrict a search to records of some kinds, of some trades, dated within a range (YYYY-MM-DD, inclusive;
    a record without a date is outside any range). Empty fields restrict nothing."""

    kinds: tuple[str, ...] = ()
    trades: tuple[str, ...] = ()
    date_from: str = ""
    date_to: str = ""

    @property
    def empty(self) -> bool:
        return not (self.kinds or self.trades or self.date_from or self.date_to)

    def date_problems(self) -> list[str]:
        """What is wrong with the dates, in words (empty when nothing is): a date that is not on the calendar
        (2020-13-45, 2020-02-30). A range that ends before it starts is no error: nothing matches it."""
        problems = []
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value and not _is_calendar_date(value):
                problems.append(f"{name} {value!r} is not a calendar date YYYY-MM-DD")
        return problems


NO_FILTERS = Filters()


def _is_calendar_date(value: str) -> bool:
    """YYYY-MM-DD and on the calendar (not 2020-13-45, 2020-02-30; not the other ISO forms Python also reads)."""
    if len(value) != 10 or value[4] != "-" or value[7] != "-" or not (value[:4] + value[5:7] + value[8:]).isdigit():
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RecordTexts:
    """What ranking needs of a record that does not depend on the question, computed at build time: its normalised
    head (title and keywords) and its normalised full text."""

    head: str
    full: str


@dataclass(frozen=True)
class CraftsmanProfile:
    """A craftsman (劳模工匠) and the vector of their profile (the record's head chunk)."""

    record: Craftsman
    vector: np.ndarray


class TermStats(Protocol):
    """Global, exact BM25 statistics over every live document of a version."""

    def idf(self, term: str) -> float:
        """Okapi idf of ``term`` over live chunks (0 for an unknown term; no floor)."""
        ...


class SparseSearch(Protocol):
    def search(self, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        """Top ``k`` chunks by BM25 for the question's terms (a repeated term counts again), best first."""
        ...

    def search_records(self, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        """Top ``k`` whole records by BM25 over their full text; each hit names the record's head chunk."""
        ...


class DenseSearch(Protocol):
    def search(self, vector: np.ndarray, k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        """Top ``k`` chunks by cosine similarity to a unit ``vector``, best first (scores exact)."""
        ...

    def similarities(self, vector: np.ndarray, record_ids: Sequence[str]) -> dict[str, float]:
        """Each record's best cosine to ``vector`` over its chunks that have a vector (exact; records without one
        are left out): how close a candidate that ``search`` did not reach comes to the question."""
        ...


class ChunkStore(Protocol):
    def get_many(self, chunk_ids: Iterable[str]) -> dict[str, ChunkRow]:
        """The live chunks among ``chunk_ids`` (unknown or deleted ids are absent)."""
        ...

    def labels(self, chunk_ids: Iterable[str]) -> dict[str, ChunkLabel]:
        """The labels of the live chunks among ``chunk_ids``, without reading their text."""
        ...


class RecordStore(Protocol):
    def get_many(self, record_ids: Iterable[str]) -> dict[str, Record]:
        """The live records among ``record_ids``."""
        ...

    def get(self, record_id: str) -> Record | None: ...

    def __contains__(self, record_id: object) -> bool: ...

    def texts(self, record_ids: Iterable[str]) -> dict[str, RecordTexts]:
        """Build-time ranking texts of the live records among ``record_ids``."""
        ...

    def count(self) -> int: ...


class CraftsmanDirectory(Protocol):
    def craftsmen(self) -> list[CraftsmanProfile]:
        """Every live craftsman with a profile vector (built once per version, not per question)."""
        ...

    def trades(self) -> list[str]:
        """The trades the craftsmen cover, sorted."""
        ...


class IndexWriter(Protocol):
    """Changes to an index, applied as one new version on ``commit``."""

    def upsert(self, records: Sequence[Record]) -> None: ...

    def delete(self, record_ids: Sequence[str]) -> None: ...

    def commit(self) -> str:
        """Write the changes and switch the serving version; returns the new version's name."""
        ...
