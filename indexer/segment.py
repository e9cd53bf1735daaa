"""An immutable segment: the chunks and records of one build or one delta, their postings and vectors.

A segment folder (``segments/<name>/``) holds::

    payload.sqlite                 chunk and record rows by local number and by id (payloads stay on disk)
    <field>_terms.npy              int32: sorted global term ids present in the field (chunks, records)
    <field>_indptr.npy             int64: postings of the i-th present term are [indptr[i], indptr[i+1])
    <field>_docs.npy, _tf.npy      int32 local document numbers and float32 term counts, by term then document
    <field>_len.npy                int32 length (terms) of each document
    dense_vectors.npy              float32 unit vectors of the chunks that have one; dense_chunks.npy their chunk
    dense.faiss                    optional approximate index over dense_vectors (large segments)
    meta.json                      counts, model, and the checksum of every file

Everything numeric is memory-mapped; rows become Python objects only when asked for by id or number.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.errors import IndexCorrupt
from indexer.store import sha256_file
from indexer.terms import FIELDS

SCHEMA = """
CREATE TABLE chunk (local INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, record_id TEXT NOT NULL, kind TEXT NOT NULL,
                    title TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, dense INTEGER NOT NULL);
CREATE INDEX chunk_record ON chunk(record_id);
CREATE TABLE record (local INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, json TEXT NOT NULL,
                     hash TEXT NOT NULL, head TEXT NOT NULL, full TEXT NOT NULL, head_chunk TEXT NOT NULL,
                     trades TEXT NOT NULL, date TEXT NOT NULL);
CREATE INDEX record_kind ON record(kind);
"""


@dataclass
class FieldPostings:
    terms: np.ndarray
    indptr: np.ndarray
    docs: np.ndarray
    tf: np.ndarray
    length: np.ndarray
    maxtf: np.ndarray | None = None  # per present term: its largest count (a bound for pruning)

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(documents, counts, largest count) of a global term id, or None when the term is absent here."""
        i = int(np.searchsorted(self.terms, np.int32(term_id)))  # same dtype: a Python int would copy the array
        if i >= len(self.terms) or int(self.terms[i]) != term_id:
            return None
        start, end = int(self.indptr[i]), int(self.indptr[i + 1])
        top = float(self.maxtf[i]) if self.maxtf is not None else float("inf")
        return self.docs[start:end], self.tf[start:end], top


def _csr(doc: np.ndarray, term: np.ndarray, tf: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.lexsort((doc, term))
    term, doc, tf = term[order], doc[order], tf[order]
    present, counts = np.unique(term, return_counts=True)
    indptr = np.zeros(len(present) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return present.astype(np.int32), indptr, doc.astype(np.int32), tf.astype(np.float32)


@dataclass
class SegmentData:
    """What a segment is written from. Postings: parallel arrays (local document, global term id, count)."""

    chunk_rows: list[tuple]  # (chunk id, record id, kind, title, role, text, dense row or -1)
    record_rows: list[tuple]  # (record id, kind, json, hash, head, full, head chunk id, trades, date)
    postings: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    lengths: dict[str, np.ndarray]
    vectors: np.ndarray  # float32 [dense, dim]
    dense_chunks: np.ndarray  # int32 local chunk number of each vector


def write_segment(root: Path, name: str, data: SegmentData, model_id: str, ann: dict[str, Any] | None = None) -> Path:
    """Write a segment under ``root/segments/<name>`` atomically (staged, fsynced, checksummed, renamed)."""
    segments = root / "segments"
    segments.mkdir(parents=True, exist_ok=True)
    staging = segments / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with ThreadPoolExecutor(2) as pool:  # SQLite and numpy/faiss release the GIL for much of their work
        payload = pool.submit(_write_payload, staging / "payload.sqlite", data)
        ann_kind = _write_arrays(staging, data, ann)
        payload.result()
        paths = sorted(staging.iterdir())
        digests = list(pool.map(sha256_file, paths))
    files = {}
    for path, digest in zip(paths, digests):
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        files[path.name] = {"sha256": digest, "bytes": path.stat().st_size}
    vectors = data.vectors
    meta = {"name": name, "chunks": len(data.chunk_rows), "records": len(data.record_rows), "dense": len(vectors),
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0, "model": model_id, "ann": ann_kind, "files": files}
    with open(staging / "meta.json", "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    final = segments / name
    os.replace(staging, final)
    fd = os.open(segments, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def _write_payload(path: Path, data: SegmentData) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO chunk VALUES (?,?,?,?,?,?,?,?)", ((i, *row) for i, row in enumerate(data.chunk_rows)))
    db.executemany("INSERT INTO record VALUES (?,?,?,?,?,?,?,?,?,?)", ((i, *row) for i, row in enumerate(data.record_rows)))
    db.commit()
    db.close()


def _write_arrays(staging: Path, data: SegmentData, ann: dict[str, Any] | None) -> str | None:
    for field in FIELDS:
        doc, term, tf = data.postings[field]
        present, indptr, docs, counts = _csr(doc, term, tf)
        maxtf = np.maximum.reduceat(counts, indptr[:-1]) if len(present) else np.zeros(0, np.float32)
        for part, array in (("terms", present), ("indptr", indptr), ("docs", docs), ("tf", counts),
                            ("len", np.asarray(data.lengths[field], dtype=np.int32)), ("maxtf", maxtf)):
            np.save(staging / f"{field}_{part}.npy", array)
    vectors = np.ascontiguousarray(data.vectors, dtype=np.float32)
    np.save(staging / "dense_vectors.npy", vectors)
    np.save(staging / "dense_chunks.npy", np.asarray(data.dense_chunks, dtype=np.int32))
    if ann and len(vectors) >= ann.get("min_vectors", 1):
        return build_ann(vectors, staging / "dense.faiss", ann)
    return None


def build_ann(vectors: np.ndarray, path: Path, ann: dict[str, Any]) -> str:
    """An inverted-file index with 8-bit scalar quantisation over ``vectors`` (ids = rows), trained on a sample."""
    n, dim = vectors.shape
    nlist = int(ann.get("nlist") or max(16, min(4096, int(np.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = vectors[np.sort(rng.choice(n, size=min(n, max(nlist * 40, 20_000)), replace=False))]
    index.train(np.ascontiguousarray(sample))
    for start in range(0, n, 100_000):
        block = np.ascontiguousarray(vectors[start:start + 100_000])
        index.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
    faiss.write_index(index, str(path))
    return f"ivf{nlist}-sq8"


def mapped(path: Path) -> np.ndarray:
    """A saved array memory-mapped read-only, as a plain ndarray view (``np.memmap``'s own indexing costs microseconds
    per slice, which adds up over a question's posting lists). Read-ahead is off: questions read scattered posting
    lists, and read-ahead would make resident (and count in the process's memory) pages nobody asked for."""
    array = np.load(path, mmap_mode="r")
    raw = getattr(array, "_mmap", None)
    if raw is not None and hasattr(raw, "madvise"):
        raw.madvise(mmap.MADV_RANDOM)
    return np.asarray(array)


class Segment:
    """A segment opened for reading: postings and vectors mapped, payload rows fetched by SQL."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"segment {self.path.name} cannot be read: {exc}") from exc
        for name, info in self.meta["files"].items():
            file = self.path / name
            if not file.exists() or file.stat().st_size != info["bytes"]:
                raise IndexCorrupt(f"segment {self.path.name}: file {name} is missing or has the wrong size")
        self.name: str = self.meta["name"]
        self.n_chunks: int = self.meta["chunks"]
        self.n_records: int = self.meta["records"]
        try:
            self.fields = {f: FieldPostings(*(mapped(self.path / f"{f}_{part}.npy")
                                              for part in ("terms", "indptr", "docs", "tf", "len")),
                                            np.load(self.path / f"{f}_maxtf.npy") if (self.path / f"{f}_maxtf.npy").exists() else None)
                           for f in FIELDS}
            self.vectors = mapped(self.path / "dense_vectors.npy")
            self._vector_offset = int(self.vectors.base.offset)  # the header's length, from the map (its base)
            self.dense_chunks = mapped(self.path / "dense_chunks.npy")
            self.ann = faiss.read_index(str(self.path / "dense.faiss")) if self.meta.get("ann") else None
        except (OSError, ValueError, RuntimeError) as exc:
            raise IndexCorrupt(f"segment {self.path.name} cannot be read: {exc}") from exc
        self._local = threading.local()

    def vector_rows(self, rows: np.ndarray) -> np.ndarray:
        """Some rows of the vectors, read from the file (not through the map: a few hundred scattered rows per
        question would otherwise leave, question after question, the whole file resident in this process)."""
        dim = self.vectors.shape[1]
        size = dim * 4
        out = np.empty((len(rows), dim), dtype=np.float32)
        with open(self.path / "dense_vectors.npy", "rb", buffering=0) as handle:
            fd = handle.fileno()
            for i, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
                out[i] = np.frombuffer(os.pread(fd, size, self._vector_offset + row * size), dtype=np.float32)
        return out

    @property
    def db(self) -> sqlite3.Connection:
        """A read-only connection of this thread (SQLite connections are not shared between threads)."""
        conn = getattr(self._local, "db", None)
        if conn is None:
            uri = f"file:{self.path / 'payload.sqlite'}?mode=ro&immutable=1"
            conn = self._local.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return conn

    def verify(self) -> None:
        """Check every file against its checksum (slow on large segments; the build verifies as it writes)."""
        for name, info in self.meta["files"].items():
            if sha256_file(self.path / name) != info["sha256"]:
                raise IndexCorrupt(f"segment {self.name}: file {name} does not match its checksum")
