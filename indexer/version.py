"""A loaded, queryable index version, and a live handle that follows ``CURRENT`` without restart."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.bm25 import BM25Index
from indexer.build import DICTIONARY_FILE, STOPWORDS_FILE, check_compatible
from indexer.embedders import Embedder
from indexer.errors import IndexCorrupt
from indexer.records import KINDS, Record
from indexer.store import IndexStore
from indexer.text import Tokenizer, load_tokenizer
from indexer.vectors import VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: str
    record_id: str
    kind: str
    title: str
    role: str
    text: str


class IndexVersion:
    """Everything one version holds, loaded for querying: chunks, records, tokenizer, BM25, vectors."""

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
        check_compatible(self.manifest, embedder)
        self.version: str = self.manifest["version"]
        self.embedder = embedder
        with open(self.path / "chunks.jsonl", encoding="utf-8") as handle:
            self.chunks = [ChunkRow(**json.loads(line)) for line in handle]
        self.records: dict[str, Record] = {}
        with open(self.path / "records.jsonl", encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                record = KINDS[entry["kind"]].model_validate(entry["record"])
                self.records[record.id] = record
        self.tokenizer: Tokenizer = load_tokenizer(self.path / DICTIONARY_FILE, self.path / STOPWORDS_FILE)
        if self.tokenizer.fingerprint != self.manifest["tokenizer"]["fingerprint"]:
            raise IndexCorrupt(f"index version {self.version}: tokenizer files do not match the manifest")
        self.bm25 = BM25Index.load(self.path)
        if self.bm25.n_docs != len(self.chunks):
            raise IndexCorrupt(f"index version {self.version}: BM25 has {self.bm25.n_docs} rows for {len(self.chunks)} chunks")
        self.vectors = VectorIndex.load(self.path, embedder.model_id, embedder.dim)
        self.chunk_rows_of: dict[str, list[int]] = {}
        for row, c in enumerate(self.chunks):
            self.chunk_rows_of.setdefault(c.record_id, []).append(row)

    def head_vector(self, record_id: str) -> np.ndarray | None:
        """The dense vector of a record's head chunk (its profile, for craftsmen)."""
        for row in self.chunk_rows_of.get(record_id, []):
            if self.chunks[row].role == "head":
                return self.vectors.index.reconstruct(row)
        return None

    def search_bm25(self, question: str, k: int) -> list[tuple[int, float]]:
        rows, scores = self.bm25.search(self.tokenizer.tokenize(question), k)
        return [(int(r), float(s)) for r, s in zip(rows, scores)]

    def search_dense(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        ids, scores = self.vectors.search(query_vector, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


class LiveIndex:
    """Serves the version ``CURRENT`` names; notices a new one on the next call and swaps it in.

    The swap loads the new version completely before replacing the reference, so a request in flight
    keeps the version it started with and no request ever sees a half-loaded one.
    """

    def __init__(self, index_dir: Path, embedder: Embedder) -> None:
        self.store = IndexStore(Path(index_dir))
        self.embedder = embedder
        self._lock = threading.Lock()
        self._loaded: IndexVersion | None = None

    def get(self) -> IndexVersion:
        name = self.store.current_version()
        loaded = self._loaded
        if loaded is not None and loaded.version == name:
            return loaded
        with self._lock:
            if self._loaded is None or self._loaded.version != self.store.current_version():
                path = self.store.current_path()
                self._loaded = IndexVersion(path, self.embedder)
                log.info("serving index version %s", self._loaded.version)
            return self._loaded
