"""The local backend: every port of ``indexer/ports.py`` over immutable segments, tombstones and a term dictionary.

BM25 is exact and global: a term's idf comes from document frequencies summed over the live documents of every
segment (the dictionary keeps them), the length normalisation from the global average length, so a version made
of a base and deltas scores every document exactly as one fresh build of the same records would. Per question the
cost is O(postings of the question's terms + documents of the segments touched) in numpy; nothing loops over
records in Python.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from indexer.analysis import TRADE_SEPARATOR
from indexer.ports import NO_FILTERS, ChunkLabel, ChunkRow, CraftsmanProfile, Filters, Hit, RecordTexts
from indexer.records import KINDS, Craftsman, Record
from indexer.segment import Segment
from indexer.terms import BM25Params, FieldStats, TermDictionary, okapi_idf, plain_idf


class LocalParts:
    """What the local ports share: the segments (oldest first), their dead documents, the dictionary and stats."""

    def __init__(self, segments: list[Segment], dead: dict[str, dict[str, np.ndarray]], dictionary: TermDictionary,
                 stats: dict[str, FieldStats], params: BM25Params) -> None:
        self.segments = segments
        self.dictionary = dictionary
        self.stats = stats
        self.params = params
        self.dead = {f: [np.asarray(dead.get(s.name, {}).get(f, np.zeros(0, np.int32)), dtype=np.int64) for s in segments]
                     for f in ("chunks", "records")}
        self.idf = {f: okapi_idf(dictionary.df[f], stats[f].docs, params.epsilon) for f in ("chunks", "records")}
        self.norm = {f: [self._norm(s.fields[f].length, stats[f].avgdl) for s in segments] for f in ("chunks", "records")}
        # each segment's smallest normalisation, in the bound of a term's weight (a pass over the segment per question before)
        self.least = {f: [float(norm.min()) if len(norm) else 0.0 for norm in self.norm[f]] for f in ("chunks", "records")}
        self._hidden: dict[tuple, np.ndarray] = {}
        self._hidden_lock = threading.Lock()

    def hidden(self, field: str, segment: int, filters: Filters) -> np.ndarray | None:
        """The documents of one segment that ``filters`` exclude, as a mask (None when nothing is filtered); computed
        once per filter, field and segment by one SQL query over the payload table, then remembered."""
        if filters.empty:
            return None
        key = (filters, field, segment)
        with self._hidden_lock:
            mask = self._hidden.get(key)
        if mask is not None:
            return mask
        conditions, args = [], []
        if filters.kinds:
            conditions.append(f"r.kind IN ({','.join('?' * len(filters.kinds))})")
            args.extend(filters.kinds)
        if filters.trades:  # whole trades: the column holds them between separators
            conditions.append("(" + " OR ".join(["instr(char(31) || r.trades || char(31), ?) > 0"] * len(filters.trades)) + ")")
            args.extend(f"{TRADE_SEPARATOR}{t}{TRADE_SEPARATOR}" for t in filters.trades)
        if filters.date_from:
            conditions.append("r.date != '' AND r.date >= ?")
            args.append(filters.date_from)
        if filters.date_to:
            conditions.append("r.date != '' AND r.date <= ?")
            args.append(filters.date_to)
        where = " AND ".join(conditions)
        seg = self.segments[segment]
        if field == "records":
            sql, n = f"SELECT r.local FROM record r WHERE {where}", seg.n_records
        else:
            sql, n = f"SELECT c.local FROM chunk c JOIN record r ON r.id = c.record_id WHERE {where}", seg.n_chunks
        allowed = np.fromiter((row[0] for row in seg.db.execute(sql, args)), dtype=np.int64)
        mask = np.ones(n, dtype=bool)
        mask[allowed] = False
        with self._hidden_lock:
            if len(self._hidden) >= 64:
                self._hidden.clear()
            self._hidden[key] = mask
        return mask

    def _norm(self, length: np.ndarray, avgdl: float) -> np.ndarray:
        k1, b = self.params.k1, self.params.b
        if avgdl <= 0:
            return np.full(len(length), k1 * (1 - b))
        return k1 * (1 - b + b * np.asarray(length, dtype=np.float64) / avgdl)


def _rows(db, table: str, columns: str, key: str, values: Sequence) -> list[tuple]:
    out: list[tuple] = []
    values = list(values)
    for start in range(0, len(values), 500):
        part = values[start:start + 500]
        marks = ",".join("?" * len(part))
        out.extend(db.execute(f"SELECT {columns} FROM {table} WHERE {key} IN ({marks})", part).fetchall())
    return out


class LocalTerms:
    """``TermStats`` over the version's dictionary."""

    def __init__(self, parts: LocalParts) -> None:
        self.parts = parts
        self.params = parts.params

    def idf(self, term: str) -> float:
        tid = self.parts.dictionary.lookup(term)
        if tid < 0:
            return 0.0
        return plain_idf(int(self.parts.dictionary.df["chunks"][tid]), self.parts.stats["chunks"].docs)


class LocalSparse:
    """``SparseSearch``: BM25 over chunks and over whole records, across segments."""

    def __init__(self, parts: LocalParts) -> None:
        self.parts = parts

    def search(self, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        return self._hits("chunks", "chunk", "id, record_id", terms, k, filters)

    def search_records(self, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[Hit]:
        return self._hits("records", "record", "head_chunk, id", terms, k, filters)

    def _hits(self, field: str, table: str, ids: str, terms: Sequence[str], k: int, filters: Filters) -> list[Hit]:
        """The top ``k`` of a field as hits; ``ids`` names the payload columns holding (chunk id, record id)."""
        hits: list[Hit] = []
        for si, locals_, scores in self._top(field, terms, k, filters):
            rows = {r[0]: r[1:] for r in _rows(self.parts.segments[si].db, table, f"local, {ids}", "local", locals_)}
            hits.extend(Hit(rows[l][0], rows[l][1], s) for l, s in zip(locals_, scores))
        return _best(hits, k)

    def scores(self, field: str, terms: Sequence[str], segment: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, matched) of every document of one segment, nothing pruned (the reference the tests compare with)."""
        scores, matched, _, _ = self._score(field, terms, segment, k=0)
        return scores, matched

    def _score(self, field: str, terms: Sequence[str], segment: int, k: int,
               hidden: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[np.ndarray]]:
        """The BM25 core over one segment: (scores, matched, candidates, touched). Exact top-``k`` with pruning in the manner
        of MaxScore: terms are scored rarest first; once the documents touched so far hold ``k`` whose partial scores
        all exceed what the remaining terms could add at most (their idf × the largest possible term weight), no
        other document can enter the top ``k``; the remaining (common, long) posting lists are then only searched
        for the touched documents that could still reach the k-th score, a set that shrinks term by term.
        ``candidates`` is that set, scored exactly (else None: every matched document competes). With ``k`` the
        arrays come from a pool (``touched`` lists what to clear when giving them back, see ``_top``).
        O(postings of the rare terms + candidates · log postings of the common ones); ``k=0`` scores everything."""
        parts = self.parts
        postings = parts.segments[segment].fields[field]
        n = len(postings.length)
        idf, norm, k1 = parts.idf[field], parts.norm[field][segment], parts.params.k1
        dead = parts.dead[field][segment]
        counts: dict[int, int] = {}
        for tid in parts.dictionary.ids(terms):
            if tid >= 0:
                counts[tid] = counts.get(tid, 0) + 1
        entries = []
        least = parts.least[field][segment]
        for tid, times in counts.items():
            found = postings.postings(tid)
            if found is not None:
                docs, tf, top = found
                bound = times * float(idf[tid]) * (k1 + 1) * (top / (top + least) if top != float("inf") else 1.0)
                entries.append((len(docs), tid, times, docs, tf, max(bound, 0.0)))
        entries.sort(key=lambda e: (e[0], e[1]))
        prunable = k > 0 and all(idf[e[1]] >= 0 for e in entries)  # with a negative weight a score could fall later
        scores, matched = _SCRATCH.take(n) if k else (np.zeros(n, dtype=np.float64), np.zeros(n, dtype=bool))
        touched_arrays: list[np.ndarray] = []
        rest = sum(e[5] for e in entries)
        candidates: np.ndarray | None = None
        touched, best, theta = 0, 0.0, 0.0
        ceiling = float("inf")  # after a failed look: the k-th score can have grown by at most what was added since
        for _, tid, times, docs, tf, bound in entries:
            if candidates is not None:  # pruned: look the few candidates up in this (long) posting list
                if len(docs) == 0 or len(candidates) == 0:
                    continue
                pos = np.minimum(np.searchsorted(docs, candidates), len(docs) - 1)
                hit = docs[pos] == candidates
                docs, tf = candidates[hit], tf[pos[hit]]
            tf = tf.astype(np.float64)
            w = idf[tid] * (tf * (k1 + 1) / (tf + norm[docs]))
            for _ in range(times):  # a repeated question term counts again, as in rank-bm25
                scores[docs] += w  # a term's postings name each document once
            rest -= bound
            if candidates is not None:  # drop those that cannot reach the k-th score even with every term left
                candidates = candidates[scores[candidates] + rest + _SLACK * (1 + theta) >= theta]
                continue
            matched[docs] = True
            touched_arrays.append(docs)
            touched += len(docs)
            if len(docs):
                best = max(best, float(scores[docs].max()))  # partial scores only grow: the best is among these
            ceiling += bound
            if prunable and touched >= k and 0 < rest < min(best, ceiling):  # else the look would fail anyway
                if len(dead):
                    matched[dead] = False
                if hidden is not None:  # filtered out: like the dead, never candidates
                    matched[hidden] = False
                alive = np.flatnonzero(matched)
                if len(alive) >= k:
                    theta = float(np.partition(scores[alive], len(alive) - k)[len(alive) - k])
                    if rest + _SLACK * (1 + theta) < theta:  # nothing outside ``alive`` can reach the k-th score
                        alive = alive[scores[alive] + rest + _SLACK * (1 + theta) >= theta]
                        candidates = alive.astype(postings.docs.dtype)  # the posting lists' type: no copy in search
                    else:
                        ceiling = theta
        if len(dead):
            matched[dead] = False
        if hidden is not None:
            matched[hidden] = False
        return scores, matched, candidates, touched_arrays

    def _top(self, field: str, terms: Sequence[str], k: int, filters: Filters = NO_FILTERS) -> list[tuple[int, list[int], list[float]]]:
        out = []
        for si, seg in enumerate(self.parts.segments):
            if len(seg.fields[field].length) == 0:
                continue
            scores, matched, candidates, touched = self._score(field, terms, si, k, self.parts.hidden(field, si, filters))
            rows = candidates if candidates is not None else np.flatnonzero(matched)
            if len(rows) > k:
                rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
            rows = rows[np.lexsort((rows, -scores[rows]))]
            found = (si, rows.tolist(), scores[rows].tolist())
            _SCRATCH.give(scores, matched, touched)
            if found[1]:
                out.append(found)
        return out


FILTERED_EXACT_MAX = 50_000  # filtered dense search is exact when at most this many vectors pass the filter
_SLACK = 1e-9  # relative: ``rest`` is a running difference of sums and may sit a rounding error below the truth


class _ScratchPool:
    """Score and match arrays reused across questions (a million-document segment costs 9 MB to allocate and zero
    each time); only what a question touched is cleared on return, and a few arrays per size are kept."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._lock = threading.Lock()

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            free = self._free.get(n)
            if free:
                return free.pop()
        return np.zeros(n, dtype=np.float64), np.zeros(n, dtype=bool)

    def give(self, scores: np.ndarray, matched: np.ndarray, touched: list[np.ndarray]) -> None:
        if sum(len(d) for d in touched) > len(scores) // 8:
            scores.fill(0.0)
            matched.fill(False)
        else:
            for docs in touched:
                scores[docs] = 0.0
                matched[docs] = False
        with self._lock:
            free = self._free.setdefault(len(scores), [])
            if len(free) < self.keep:
                free.append((scores, matched))


_SCRATCH = _ScratchPool()


def _best(hits: list[Hit], k: int) -> list[Hit]:
    hits.sort(key=lambda h: (-h.score, h.chunk_id))
    return hits[:k]


class LocalDense:
    """``DenseSearch``: exact inner product over a segment's mapped vectors, or its approximate index with the
    candidates re-scored exactly."""

    def __init__(self, parts: LocalParts, nprobe: int = 32, overfetch: int = 2) -> None:
        self.parts = parts
        self.nprobe = nprobe
        self.overfetch = overfetch

    def search(self, vector: np.ndarray, k: int, exact: bool = False, filters: Filters = NO_FILTERS) -> list[Hit]:
        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(-1))
        hits: list[Hit] = []
        for si, seg in enumerate(self.parts.segments):
            n = len(seg.vectors)
            if n == 0:
                continue
            dead = self.parts.dead["chunks"][si]
            hidden = self.parts.hidden("chunks", si, filters)
            allowed = np.flatnonzero(~hidden[seg.dense_chunks]) if hidden is not None else None
            if allowed is not None and len(allowed) <= FILTERED_EXACT_MAX:  # few left: exact over those alone
                sims_all = np.asarray(seg.vectors[allowed]) @ query if len(allowed) else np.zeros(0, np.float32)
                top = np.argpartition(-sims_all, min(k, len(allowed)) - 1)[:k] if len(allowed) > k else np.arange(len(allowed))
                rows, sims = allowed[top], sims_all[top]
            elif seg.ann is not None and not exact:
                want = min(n, k + len(dead)) * (self.overfetch if allowed is None else 4 * self.overfetch)
                seg.ann.nprobe = self.nprobe
                _, ids = seg.ann.search(query.reshape(1, -1), min(n, want))
                rows = np.sort(ids[0][ids[0] >= 0])
                sims = seg.vector_rows(rows) @ query
            else:
                want = min(n, k + len(dead) + (int(hidden.sum()) if hidden is not None else 0))
                all_sims = np.asarray(seg.vectors) @ query
                rows = np.argpartition(-all_sims, want - 1)[:want] if want < n else np.arange(n)
                sims = all_sims[rows]
            locals_ = np.asarray(seg.dense_chunks)[rows]
            keep = ~np.isin(locals_, dead) if len(dead) else np.ones(len(locals_), dtype=bool)
            if hidden is not None:
                keep &= ~hidden[locals_]
            locals_, sims = locals_[keep], sims[keep]
            order = np.lexsort((locals_, -sims))[:k]
            chosen = locals_[order].tolist()
            rows_by_local = {r[0]: r[1:] for r in _rows(seg.db, "chunk", "local, id, record_id", "local", chosen)}
            hits.extend(Hit(rows_by_local[l][0], rows_by_local[l][1], float(s)) for l, s in zip(chosen, sims[order].tolist()))
        return _best(hits, k)

    def similarities(self, vector: np.ndarray, record_ids: Sequence[str]) -> dict[str, float]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        best: dict[str, float] = {}
        wanted = list(dict.fromkeys(record_ids))
        for si in range(len(self.parts.segments) - 1, -1, -1):  # newest first: a replaced record's chunks are dead
            seg = self.parts.segments[si]
            if not wanted or len(seg.vectors) == 0:
                continue
            dead = self.parts.dead["chunks"][si]
            rows = [r for r in _rows(seg.db, "chunk", "local, record_id, dense", "record_id", wanted) if r[2] >= 0]
            if len(dead):
                rows = [r for r, gone in zip(rows, np.isin([r[0] for r in rows], dead)) if not gone]
            if not rows:
                continue
            sims = seg.vector_rows(np.array([r[2] for r in rows], dtype=np.int64)) @ query
            for (_, record_id, _), sim in zip(rows, sims.tolist()):
                best[record_id] = max(best.get(record_id, -1.0), sim)
            wanted = [r for r in wanted if r not in best]
        return best


class _Lookup:
    """Find live rows by id across segments, newest first (a newer segment's copy replaces an older one)."""

    def __init__(self, parts: LocalParts) -> None:
        self.parts = parts

    def find(self, table: str, field: str, columns: str, ids: Iterable[str]) -> dict[str, tuple]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, tuple] = {}
        for si in range(len(self.parts.segments) - 1, -1, -1):
            if not wanted:
                break
            dead = set(self.parts.dead[field][si].tolist())
            for row in _rows(self.parts.segments[si].db, table, f"local, id, {columns}", "id", wanted):
                if row[0] not in dead and row[1] not in found:
                    found[row[1]] = row[2:]
            wanted = [i for i in wanted if i not in found]
        return found


class Recent:
    """A bounded map of the most recently used entries, safe across threads (a version's hot payloads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        with self._lock:
            found = {k: self._entries[k] for k in keys if k in self._entries}
            for k in found:
                self._entries.move_to_end(k)
        return found

    def put_many(self, entries: dict[str, Any]) -> None:
        with self._lock:
            self._entries.update(entries)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get_or_load(self, keys: Iterable[str], load: Callable[[list[str]], dict[str, Any]]) -> dict[str, Any]:
        """The entries of ``keys`` (each once), the missing ones from ``load`` (and remembered); absent keys omitted."""
        keys = list(dict.fromkeys(keys))
        out = self.get_many(keys)
        if len(out) < len(keys):
            found = load([k for k in keys if k not in out])
            self.put_many(found)
            out.update(found)
        return out


class LocalChunks(_Lookup):
    """``ChunkStore`` over the segments' payload tables; the labels of recent hits are remembered (the same
    records come back question after question, and folding hits into records reads a label per hit)."""

    def __init__(self, parts: LocalParts, cache_size: int = 100_000) -> None:
        super().__init__(parts)
        self._labels = Recent(cache_size)

    def get_many(self, chunk_ids: Iterable[str]) -> dict[str, ChunkRow]:
        rows = self.find("chunk", "chunks", "record_id, kind, title, role, text", chunk_ids)
        return {cid: ChunkRow(cid, *row) for cid, row in rows.items()}

    def labels(self, chunk_ids: Iterable[str]) -> dict[str, ChunkLabel]:
        return self._labels.get_or_load(chunk_ids, lambda missing: {
            cid: ChunkLabel(*row) for cid, row in self.find("chunk", "chunks", "record_id, kind, title", missing).items()})


class LocalRecords(_Lookup):
    """``RecordStore``: records parsed only when asked for, a bounded cache of the recent ones."""

    def __init__(self, parts: LocalParts, cache_size: int = 20_000) -> None:
        super().__init__(parts)
        self._records = Recent(cache_size)
        self._texts = Recent(cache_size)

    def get_many(self, record_ids: Iterable[str]) -> dict[str, Record]:
        ids = list(dict.fromkeys(record_ids))
        out = self._records.get_or_load(ids, lambda missing: {
            rid: KINDS[kind].model_validate(json.loads(data))
            for rid, (kind, data) in self.find("record", "records", "kind, json", missing).items()})
        return {rid: out[rid] for rid in ids if rid in out}  # in the order asked

    def get(self, record_id: str) -> Record | None:
        return self.get_many([record_id]).get(record_id)

    def __getitem__(self, record_id: str) -> Record:
        record = self.get(record_id)
        if record is None:
            raise KeyError(record_id)
        return record

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and bool(self.find("record", "records", "kind", [record_id]))

    def texts(self, record_ids: Iterable[str]) -> dict[str, RecordTexts]:
        return self._texts.get_or_load(record_ids, lambda missing: {
            rid: RecordTexts(*row) for rid, row in self.find("record", "records", "head, full", missing).items()})

    def count(self) -> int:
        return self.parts.stats["records"].docs

    def hashes(self, record_ids: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
        """Live records' id → (kind, content hash), of ``record_ids`` or of every record (what an incremental
        re-index compares the corpus with)."""
        if record_ids is not None:
            return {rid: (kind, digest) for rid, (kind, digest) in self.find("record", "records", "kind, hash", record_ids).items()}
        out: dict[str, tuple[str, str]] = {}
        for si in range(len(self.parts.segments) - 1, -1, -1):
            dead = set(self.parts.dead["records"][si].tolist())
            for local, rid, kind, digest in self.parts.segments[si].db.execute("SELECT local, id, kind, hash FROM record"):
                if local not in dead and rid not in out:
                    out[rid] = (kind, digest)
        return out


class LocalDirectory:
    """``CraftsmanDirectory``: craftsmen and their profile vectors, read once per version."""

    def __init__(self, parts: LocalParts) -> None:
        self.parts = parts
        self._craftsmen: list[CraftsmanProfile] | None = None
        self._lock = threading.Lock()

    def craftsmen(self) -> list[CraftsmanProfile]:
        with self._lock:
            if self._craftsmen is None:
                profiles: dict[str, CraftsmanProfile] = {}
                for si in range(len(self.parts.segments) - 1, -1, -1):
                    seg = self.parts.segments[si]
                    dead = set(self.parts.dead["records"][si].tolist())
                    rows = seg.db.execute("SELECT r.local, r.id, r.json, c.dense FROM record r JOIN chunk c ON c.id = r.head_chunk "
                                          "WHERE r.kind = 'craftsman' ORDER BY r.local").fetchall()
                    for local, rid, data, dense in rows:
                        if local in dead or rid in profiles or dense < 0:
                            continue
                        record = KINDS["craftsman"].model_validate(json.loads(data))
                        assert isinstance(record, Craftsman)
                        profiles[rid] = CraftsmanProfile(record, np.array(seg.vectors[dense], dtype=np.float32))
                self._craftsmen = sorted(profiles.values(), key=lambda p: p.record.id)
            return self._craftsmen

    def trades(self) -> list[str]:
        return sorted({t for p in self.craftsmen() for t in p.record.trades})
