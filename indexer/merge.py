"""Fold a version's segments into one, in the background, without re-tokenising or re-embedding anything.

Term ids are global and the live set does not change, so a merge is array work: every segment's live postings,
lengths, vectors and payload rows are renumbered and concatenated into one new segment; the term dictionary and
statistics stay as they are. The heavy part runs without the index lock, from a snapshot of the serving version;
the lock is taken only to switch. If deltas were published meanwhile (the serving version then lists the snapshot's
segments followed by new ones), the new version lists the merged segment followed by those deltas, and the
tombstones they added to the snapshot's segments are renumbered into the merged one: nothing published during a
merge is lost.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.build import DICTIONARY_FILE, STOPWORDS_FILE, BuildOptions, BuildReport, _ann, _serving, segment_name
from indexer.embedders import Embedder
from indexer.segment import SegmentData, write_segment
from indexer.store import IndexStore
from indexer.terms import FIELDS

log = logging.getLogger(__name__)
WAIT = 60.0  # seconds a merge waits for the index lock when it switches
DICTIONARY_FILES = ("terms.bin", "terms_offsets.npy", "terms_sorted.npy", *(f"df_{f}.npy" for f in FIELDS))


@dataclass
class Compacted:
    data: SegmentData
    renumber: dict[str, dict[str, np.ndarray]]  # segment → field → new local number of each old one (-1: dead)


def compact(version) -> Compacted:
    """The live documents of every segment of ``version`` as one segment's data, oldest segment first."""
    parts = version.parts
    chunk_rows: list[tuple] = []
    record_rows: list[tuple] = []
    postings: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {f: [] for f in FIELDS}
    lengths: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
    vectors: list[np.ndarray] = []
    dense_chunks: list[np.ndarray] = []
    renumber: dict[str, dict[str, np.ndarray]] = {}
    offset = {f: 0 for f in FIELDS}
    dense_offset = 0
    for si, seg in enumerate(parts.segments):
        maps = {}
        for field in FIELDS:
            fp = seg.fields[field]
            n = len(fp.length)
            alive = np.ones(n, dtype=bool)
            alive[parts.dead[field][si]] = False
            new = np.full(n, -1, dtype=np.int64)
            new[alive] = offset[field] + np.arange(int(alive.sum()))
            maps[field] = new
            terms = np.repeat(np.asarray(fp.terms), np.diff(np.asarray(fp.indptr)))
            keep = alive[fp.docs]
            postings[field].append((new[fp.docs[keep]].astype(np.int32), terms[keep], np.asarray(fp.tf)[keep]))
            lengths[field].append(np.asarray(fp.length)[alive])
            offset[field] += int(alive.sum())
        renumber[seg.name] = maps
        live_dense = np.flatnonzero(maps["chunks"][seg.dense_chunks] >= 0) if len(seg.dense_chunks) else np.zeros(0, np.int64)
        dense_new = np.full(len(seg.dense_chunks), -1, dtype=np.int64)
        dense_new[live_dense] = dense_offset + np.arange(len(live_dense))
        vectors.append(np.asarray(seg.vectors[live_dense]) if len(live_dense) else np.zeros((0, seg.meta["dim"] or version.embedder.dim), np.float32))
        dense_chunks.append(maps["chunks"][seg.dense_chunks[live_dense]])
        dense_offset += len(live_dense)
        for local, *row, dense in seg.db.execute("SELECT local, id, record_id, kind, title, role, text, dense FROM chunk ORDER BY local"):
            if maps["chunks"][local] >= 0:
                chunk_rows.append((*row, int(dense_new[dense]) if dense >= 0 else -1))
        for local, *row in seg.db.execute("SELECT local, id, kind, json, hash, head, full, head_chunk, trades, date FROM record ORDER BY local"):
            if maps["records"][local] >= 0:
                record_rows.append(tuple(row))
    data = SegmentData(
        chunk_rows, record_rows,
        {f: tuple(np.concatenate([p[i] for p in postings[f]]) for i in range(3)) for f in FIELDS},  # type: ignore[misc]
        {f: np.concatenate(lengths[f]) for f in FIELDS},
        np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, version.embedder.dim), np.float32),
        np.concatenate(dense_chunks).astype(np.int32) if dense_chunks else np.zeros(0, np.int32))
    return Compacted(data, renumber)


@dataclass
class PendingMerge:
    """A merged segment written from a snapshot, not yet serving."""

    store: IndexStore
    embedder: Embedder
    snapshot: object  # the IndexVersion it was made from
    compacted: Compacted
    name: str
    seconds: float


def prepare(index_dir: Path, embedder: Embedder, options: BuildOptions = BuildOptions()) -> PendingMerge | None:
    """Write the merged segment of the serving version (no lock held); None when there is nothing to fold."""
    started = time.perf_counter()
    store = IndexStore(Path(index_dir))
    snapshot = _serving(store, embedder, required=True)
    if len(snapshot.parts.segments) < 2 and not any(len(d) for f in FIELDS for d in snapshot.parts.dead[f]):
        return None
    compacted = compact(snapshot)
    name = segment_name()
    write_segment(store.root, name, compacted.data, embedder.model_id, _ann(options))
    return PendingMerge(store, embedder, snapshot, compacted, name, time.perf_counter() - started)


def switch(pending: PendingMerge, wait: float = WAIT) -> BuildReport | None:
    """Serve the merged segment in place of the snapshot's segments, keeping what was published since; None (and
    the segment removed) when the index was rebuilt or merged by someone else meanwhile."""
    started = time.perf_counter()
    store, name, compacted = pending.store, pending.name, pending.compacted
    with store.writing(wait=wait):
        current = _serving(store, pending.embedder, required=True)
        before = [s.name for s in pending.snapshot.parts.segments]
        now = list(current.manifest["segments"])
        if now[: len(before)] != before:
            log.info("merge of %s abandoned: the index changed under it", pending.snapshot.version)
            shutil.rmtree(store.root / "segments" / name, ignore_errors=True)
            return None
        staging = store.begin()
        dead_files: dict[str, dict[str, str]] = {}
        merged_dead: dict[str, list[int]] = {f: [] for f in FIELDS}
        for si, seg in enumerate(current.parts.segments):
            for field in FIELDS:
                dead = current.parts.dead[field][si]
                if not len(dead):
                    continue
                if seg.name in compacted.renumber:  # tombstoned after the snapshot: now in the merged segment
                    moved = compacted.renumber[seg.name][field][dead]
                    merged_dead[field].extend(int(x) for x in moved if x >= 0)
                else:
                    file = f"dead-{seg.name}-{field}.npy"
                    np.save(staging.path / file, np.asarray(dead, dtype=np.int32))
                    dead_files.setdefault(seg.name, {})[field] = file
        for field, locals_ in merged_dead.items():
            if locals_:
                file = f"dead-{name}-{field}.npy"
                np.save(staging.path / file, np.asarray(sorted(set(locals_)), dtype=np.int32))
                dead_files.setdefault(name, {})[field] = file
        for file in (*DICTIONARY_FILES, DICTIONARY_FILE, STOPWORDS_FILE):
            (staging.path / file).write_bytes((current.path / file).read_bytes())
        manifest = {k: v for k, v in current.manifest.items() if k not in ("version", "parent", "files")}
        manifest.update(segments=[name, *now[len(before):]], dead=dead_files,
                        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        final = store.commit(staging, manifest)
    counts = current.manifest["counts"]
    return BuildReport(staging.version, final, counts["records"], counts["chunks"], counts["dense_chunks"], 0, 0, 0,
                       counts["dense_chunks"], 0, 0,
                       seconds={"merge": pending.seconds, "switch": time.perf_counter() - started,
                                "total": pending.seconds + time.perf_counter() - started})


def merge(index_dir: Path, embedder: Embedder, options: BuildOptions = BuildOptions(), wait: float = WAIT) -> BuildReport | None:
    """Fold the serving version's segments into one and switch to it; None when there is nothing to fold or the
    index was rebuilt meanwhile (the merge is then moot)."""
    pending = prepare(index_dir, embedder, options)
    return switch(pending, wait) if pending is not None else None
