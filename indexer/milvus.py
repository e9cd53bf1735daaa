"""The Milvus backend: sparse (client-side BM25) and dense search in Milvus, everything else from our own files.

Milvus's built-in BM25 keeps statistics per segment (shared/NOTES.md), so BM25 is computed here: each chunk (and each
whole record) is stored with a sparse vector of document-side weights ``tf·(k1+1) / (tf + k1·(1−b+b·len/avgdl))``
over our term ids, and a question becomes a sparse vector of ``times · idf`` from our global statistics (the version's
term dictionary). Their inner product is exactly the local engine's BM25 score. Payloads, term statistics and the
craftsman directory stay in the version's own files (``indexer.local``); Milvus holds only what is searched.

One pair of collections (chunks, whole records) serves every version of one full build. Rows are versioned: a row
carries the ``seq`` of the change that wrote it and, once replaced or deleted, the ``gone`` seq of the change that
retired it; version ``S`` sees the rows with ``seq ≤ S`` and ``gone`` unset or ``> S``. So a delta is invisible until
its version is committed (a crash mid-way leaves the serving version's view intact), a worker still serving the
previous version keeps seeing exactly it, and a rollback is exact. The next writer clears what a crashed one left
(rows above the serving seq, retirements above it); retired rows no kept version sees are purged after each commit.

Approximation, stated: a row's document-side weights use the average length at the time it was written; a delta
moves the average, so an older row's weight drifts from a fresh build's by at most the relative change of the
average length since it was written (d ln w / d ln avgdl < 1; tested) — one record into an index of n chunks moves
it by about 1/n. idf is always exact (query side). ``jiangxin index --full`` rewrites every row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.analysis import TRADE_SEPARATOR
from indexer.errors import IndexCorrupt, JiangxinError
from indexer.ports import NO_FILTERS, Filters, Hit
from indexer.segment import SegmentData
from indexer.terms import BM25Params, FieldStats

BACKEND = "milvus"
SENTINEL_TERM = 2**32 - 2  # a dimension no term id reaches: the weight of a document with no terms (Milvus refuses empty rows)
BATCH = 500  # rows per insert request
EF_MIN = 128  # HNSW search breadth (at least; grows with k)
log = logging.getLogger(__name__)
_CLIENTS: dict[str, Any] = {}
_TOKENS: dict[str, str] = {}
_LOCK = threading.Lock()


class MilvusUnavailable(JiangxinError):
    """The configured Milvus cannot be reached or refused a request."""


@dataclass(frozen=True)
class MilvusSpec:
    """Where Milvus is: a Milvus Lite database file (tests, one machine) or a server URI (``http://host:19530``), with
    an optional token. The token is never written to an index manifest."""

    uri: str
    token: str = ""

    @property
    def location(self) -> str:
        """The URI as stored in the manifest: a Lite file path made absolute."""
        if "://" in self.uri:
            return self.uri
        return str(Path(self.uri).expanduser().resolve())


def register(spec: MilvusSpec) -> None:
    """Remember the token for a URI (called where settings are read), so later connections to it authenticate."""
    with _LOCK:
        _TOKENS[spec.location] = spec.token


def connect(uri: str):
    """One client per URI and process (Milvus Lite runs one server per database file)."""
    from pymilvus import MilvusClient

    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # it logs tracebacks; its errors reach users as ours
    with _LOCK:
        client = _CLIENTS.get(uri)
        if client is None:
            try:
                client = MilvusClient(uri=uri, token=_TOKENS.get(uri, ""))
            except Exception as exc:  # noqa: BLE001 - whatever pymilvus raises on connect, say where and why
                raise MilvusUnavailable(f"cannot connect to Milvus at {uri}: {type(exc).__name__}: {exc}") from exc
            _CLIENTS[uri] = client
        return client


def collection_base(index_root: Path, version: str) -> str:
    """Collections of one full build: named after the index folder (several indexes may share a Milvus) and the build."""
    root = hashlib.sha256(str(Path(index_root).resolve()).encode()).hexdigest()[:8]
    return f"jx_{root}_" + "".join(c if c.isalnum() else "_" for c in version)


def _literal(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def visible(seq: int) -> str:
    """The rows version ``seq`` sees."""
    return f"seq <= {int(seq)} and (gone == 0 or gone > {int(seq)})"


def expression(filters: Filters) -> str:
    """``Filters`` as a Milvus boolean expression (empty when nothing is filtered); same meaning as the local masks."""
    parts = []
    if filters.kinds:
        parts.append(f"kind in [{', '.join(map(_literal, filters.kinds))}]")
    if filters.trades:
        parts.append(f"array_contains_any(trades, [{', '.join(map(_literal, filters.trades))}])")
    if filters.date_from:
        parts.append(f'date != "" and date >= {_literal(filters.date_from)}')
    if filters.date_to:
        parts.append(f'date != "" and date <= {_literal(filters.date_to)}')
    return " and ".join(parts)


def document_weights(postings: tuple[np.ndarray, np.ndarray, np.ndarray], lengths: np.ndarray, stats: FieldStats,
                     params: BM25Params) -> list[dict[int, float]]:
    """Each document's sparse vector of BM25 document-side weights (term id → weight), from (doc, term, tf) arrays."""
    doc, term, tf = (np.asarray(a) for a in postings)
    n = len(lengths)
    k1, b = params.k1, params.b
    if stats.avgdl > 0:
        norm = k1 * (1 - b + b * np.asarray(lengths, dtype=np.float64) / stats.avgdl)
    else:
        norm = np.full(n, k1 * (1 - b))
    tf64 = tf.astype(np.float64)
    weight = tf64 * (k1 + 1) / (tf64 + norm[doc]) if len(doc) else np.zeros(0)
    order = np.lexsort((term, doc))
    doc, term, weight = doc[order], term[order], weight[order]
    bounds = np.searchsorted(doc, np.arange(n + 1))
    terms, weights = term.tolist(), weight.tolist()
    out = []
    for i in range(n):
        start, end = int(bounds[i]), int(bounds[i + 1])
        row = {t: w for t, w in zip(terms[start:end], weights[start:end]) if w > 0}
        out.append(row or {SENTINEL_TERM: 1.0})
    return out


class MilvusCollections:
    """The chunk and record collections of one full build, at one URI."""

    def __init__(self, uri: str, base: str, dim: int) -> None:
        self.uri, self.base, self.dim = uri, base, dim
        self.chunks, self.records = f"{base}_chunks", f"{base}_records"
        self.client = connect(uri)

    # ------------------------------------------------------------------------------------------ writing

    def create(self) -> None:
        """Both collections, empty (a leftover of a crashed build of the same name is dropped first)."""
        from pymilvus import DataType, MilvusClient

        self.drop()
        for name, with_dense in ((self.chunks, True), (self.records, False)):
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=600)
            schema.add_field("chunk_id", DataType.VARCHAR, max_length=512)
            schema.add_field("record_id", DataType.VARCHAR, max_length=512)
            schema.add_field("kind", DataType.VARCHAR, max_length=64)
            schema.add_field("trades", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=64, max_length=128)
            schema.add_field("date", DataType.VARCHAR, max_length=16)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("gone", DataType.INT64)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            index = self.client.prepare_index_params()
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
            if with_dense:
                schema.add_field("has_dense", DataType.BOOL)
                schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
                index.add_index("dense", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 200})
            self._call("create collection", self.client.create_collection, name, schema=schema, index_params=index,
                       consistency_level="Strong")

    def write(self, data: SegmentData, stats: dict[str, FieldStats], params: BM25Params, seq: int) -> None:
        """The chunks and records of one segment's data as rows of change ``seq`` (weights from ``stats``)."""
        records = {row[0]: row for row in data.record_rows}

        def facets(record_id: str) -> dict[str, Any]:
            row = records[record_id]
            return {"kind": row[1], "trades": [t for t in row[7].split(TRADE_SEPARATOR) if t], "date": row[8]}

        chunk_weights = document_weights(data.postings["chunks"], data.lengths["chunks"], stats["chunks"], params)
        zero = [0.0] * self.dim
        rows = []
        for (cid, rid, *_, dense), sparse in zip(data.chunk_rows, chunk_weights):
            vector = data.vectors[dense].tolist() if dense >= 0 else zero
            rows.append({"key": f"{cid}@{seq}", "chunk_id": cid, "record_id": rid, **facets(rid), "seq": seq, "gone": 0,
                         "sparse": sparse, "has_dense": dense >= 0, "dense": vector})
        self._insert(self.chunks, rows)
        record_weights = document_weights(data.postings["records"], data.lengths["records"], stats["records"], params)
        self._insert(self.records, [{"key": f"{row[0]}@{seq}", "chunk_id": row[6], "record_id": row[0], **facets(row[0]),
                                     "seq": seq, "gone": 0, "sparse": sparse}
                                    for row, sparse in zip(data.record_rows, record_weights)])

    def seal(self, wait: float = 120.0) -> None:
        """Flush both collections and wait (up to ``wait`` seconds) until their indexes cover every row: rows left in
        Milvus's growing segments are searched by brute force (measured on Lite: 240 ms a question at 4k chunks,
        8 ms once sealed and indexed)."""
        deadline = time.monotonic() + wait
        for name in (self.chunks, self.records):
            self._call("flush", self.client.flush, name)
        fields = [(self.chunks, "sparse"), (self.chunks, "dense"), (self.records, "sparse")]
        while time.monotonic() < deadline:
            states = [self._call("describe index", self.client.describe_index, name, field) for name, field in fields]
            if all(s.get("pending_index_rows", 0) == 0 and s.get("indexed_rows", 0) >= s.get("total_rows", 0) for s in states):
                return
            time.sleep(0.2)
        log.warning("Milvus at %s: indexes of %s not complete after %.0fs; searching what is indexed", self.uri, self.base, wait)

    def retire(self, record_ids: Sequence[str], seq: int) -> None:
        """Mark the live rows of ``record_ids`` gone as of change ``seq`` (earlier versions still see them)."""
        for name in (self.chunks, self.records):
            for start in range(0, len(record_ids), BATCH):
                ids = ", ".join(map(_literal, record_ids[start:start + BATCH]))
                rows = self._call("query", self.client.query, name, filter=f"record_id in [{ids}] and gone == 0",
                                  output_fields=["key"])
                if rows:
                    self._call("retire", self.client.upsert, name, [{"key": r["key"], "gone": seq} for r in rows],
                               partial_update=True)

    def recover(self, seq: int) -> None:
        """Undo what a writer that crashed before committing past version ``seq`` left: its rows and retirements."""
        for name in (self.chunks, self.records):
            self._call("delete", self.client.delete, name, filter=f"seq > {int(seq)}")
            rows = self._call("query", self.client.query, name, filter=f"gone > {int(seq)}", output_fields=["key"])
            if rows:
                self._call("recover", self.client.upsert, name, [{"key": r["key"], "gone": 0} for r in rows],
                           partial_update=True)

    def purge(self, oldest_seq: int) -> None:
        """Delete rows retired at or before the oldest kept version (no version sees them any more)."""
        for name in (self.chunks, self.records):
            self._call("purge", self.client.delete, name, filter=f"gone > 0 and gone <= {int(oldest_seq)}")

    def drop(self) -> None:
        for name in (self.chunks, self.records):
            if self.client.has_collection(name):
                self.client.drop_collection(name)

    def load(self) -> None:
        """Make both collections searchable (Milvus serves only loaded collections; loading a loaded one is a no-op)."""
        for name in (self.chunks, self.records):
            self._call("load", self.client.load_collection, name)

    def exists(self) -> bool:
        return all(self.client.has_collection(name) for name in (self.chunks, self.records))

    def count(self, seq: int) -> dict[str, int]:
        """Rows version ``seq`` sees, per collection."""
        return {name: int(self._call("count", self.client.query, name, filter=visible(seq),
                                     output_fields=["count(*)"])[0]["count(*)"])
                for name in (self.chunks, self.records)}

    def _insert(self, name: str, rows: list[dict]) -> None:
        for start in range(0, len(rows), BATCH):
            self._call("insert", self.client.upsert, name, rows[start:start + BATCH])

    def _call(self, what: str, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except JiangxinError:
            raise
        except Exception as exc:  # noqa: BLE001 - pymilvus errors become ours, naming the collection and the step
            collection = args[0] if args and isinstance(args[0], str) else self.base
            raise MilvusUnavailable(f"Milvus at {self.uri}: {what} on {collection} failed: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------------------------------ reading

    def vectors(self, where: str) -> list[tuple[str, list[float]]]:
        """(record id, dense vector) of the chunk rows ``where`` selects."""
        rows = self._call("query", self.client.query, self.chunks, filter=where, output_fields=["record_id", "dense"])
        return [(r["record_id"], r["dense"]) for r in rows]

    def search(self, name: str, field: str, query: Any, k: int, where: str, params: dict) -> list[Hit]:
        rows = self._call("search", self.client.search, name, data=[query], anns_field=field, limit=k, filter=where,
                          output_fields=["chunk_id", "record_id"], search_params={"metric_type": "IP", "params": params})
        hits = [Hit(r["entity"]["chunk_id"], r["entity"]["record_id"], float(r["distance"])) for r in rows[0]]
        hits.sort(key=lambda h: (-h.score, h.chunk_id))
        return hits


def _where(seq: int, filters: Filters, extra: str = "") -> str:
    return " and ".join(p for p in (visible(seq), extra, expression(filters)) if p)


class MilvusSparse:
    """``SparseSearch``: BM25 as a sparse inner product, the question weighted by our global idf."""

    def __init__(self, collections: MilvusCollections, parts, seq: int) -> None:
        self.collections, self.parts, self.seq = collections, parts, seq

    def search(self, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        return self._search(self.collections.chunks, "chunks", terms, k, filters)

    def search_records(self, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        return self._search(self.collections.records, "records", terms, k, filters)

    def _search(self, name: str, field: str, terms: Sequence[str], k: int, filters: Filters) -> list[Hit]:
        idf = self.parts.idf[field]
        query: dict[int, float] = {}
        for tid in self.parts.dictionary.ids(terms):
            if tid >= 0 and idf[tid] > 0:  # a repeated question term counts again, as in rank-bm25
                query[int(tid)] = query.get(int(tid), 0.0) + float(idf[tid])
        if not query or k <= 0:
            return []
        return self.collections.search(name, "sparse", query, k, _where(self.seq, filters), {"drop_ratio_search": 0.0})


class MilvusDense:
    """``DenseSearch``: inner product of unit vectors over an HNSW index (the scores are exact inner products)."""

    def __init__(self, collections: MilvusCollections, seq: int) -> None:
        self.collections, self.seq = collections, seq

    def search(self, vector: np.ndarray, k: int, exact: bool = False, filters: Filters = NO_FILTERS) -> list[Hit]:
        if k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        ef = max(EF_MIN, 2 * k) * (4 if exact else 1)
        return self.collections.search(self.collections.chunks, "dense", query, k,
                                       _where(self.seq, filters, "has_dense == true"), {"ef": ef})

    def similarities(self, vector: np.ndarray, record_ids: Sequence[str]) -> dict[str, float]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        best: dict[str, float] = {}
        wanted = list(dict.fromkeys(record_ids))
        for start in range(0, len(wanted), BATCH):
            ids = ", ".join(map(_literal, wanted[start:start + BATCH]))
            rows = self.collections.vectors(f"{visible(self.seq)} and has_dense == true and record_id in [{ids}]")
            for record_id, dense in rows:
                best[record_id] = max(best.get(record_id, -1.0), float(np.dot(np.asarray(dense, dtype=np.float32), query)))
        return best


def prune(store, uris: set[str]) -> None:
    """Drop this index's collections that no kept version of ``store`` names, at each of ``uris``; purge from the
    kept ones the rows retired before their oldest kept version (call under the index's write lock)."""
    oldest: dict[tuple[str, str], int] = {}
    for manifest in map(store.manifest, store.versions()):
        if manifest.get("backend") == BACKEND:
            key = (manifest["milvus"]["uri"], manifest["milvus"]["collection"])
            oldest[key] = min(oldest.get(key, 1 << 62), int(manifest["milvus"]["seq"]))
    prefix = collection_base(store.root, "")
    for uri in uris:
        client = connect(uri)
        for name in client.list_collections():
            base, _, suffix = name.rpartition("_")
            if name.startswith(prefix) and suffix in ("chunks", "records") and (uri, base) not in oldest:
                client.drop_collection(name)
    for (uri, base), seq in oldest.items():
        MilvusCollections(uri, base, 0).purge(seq)


def open_version(manifest: dict, parts, dim: int) -> tuple[MilvusSparse, MilvusDense, MilvusCollections]:
    """The search ports of a Milvus-backed version (its collections must exist)."""
    config = manifest["milvus"]
    collections = MilvusCollections(config["uri"], config["collection"], dim)
    if not collections.exists():
        raise IndexCorrupt(f"index version {manifest.get('version')}: Milvus collections {config['collection']}_* are "
                           f"missing at {config['uri']}; re-index with `jiangxin index --full`")
    collections.load()
    return MilvusSparse(collections, parts, int(config["seq"])), MilvusDense(collections, int(config["seq"])), collections
