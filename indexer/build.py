"""Build index versions: a full build writes one base segment; a change writes a small delta segment.

``build_index`` validates the corpus and compares it with the serving version (content hash per record): when
the tokenizer's dictionary is unchanged it applies only the difference as a delta (``apply_changes``): the
changed records' chunks are analysed, embedded (through the cache) and written as a new segment, the old copies
become tombstones, and the term statistics are updated exactly. Otherwise — or with ``full`` — everything is
analysed again into one segment (in a process pool for large corpora). ``indexer.merge`` folds the deltas back
into one segment without re-tokenising or re-embedding.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.analysis import DEFAULT_DENSE_ROLES, AnalysedBatch, analyse, analyse_batch
from indexer.embedders import EmbedCounts, EmbeddingCache, Embedder, embed_passages_cached, text_hash
from indexer.errors import CorpusInvalid, IndexMismatchError, JiangxinError
from indexer.milvus import MilvusCollections, MilvusSpec, collection_base
from indexer.milvus import prune as prune_collections
from indexer.ray_engine import EMBED_ROUND, RayEmbedder, RaySpec, analyse_on_ray
from indexer.records import KINDS, CorpusLoad, Record, load_corpus
from indexer.segment import SegmentData, write_segment
from indexer.store import IndexStore
from indexer.terms import FIELDS, BM25Params, FieldStats, extended_dictionary, new_dictionary
from indexer.text import TOKENIZER_VERSION, Tokenizer, dictionary_words

log = logging.getLogger(__name__)
FORMAT = 3  # 3: record rows carry trades and date (filters)
BACKEND = "local"
DICTIONARY_FILE = "dictionary.txt"
STOPWORDS_FILE = "stopwords.txt"
POOL_MIN_RECORDS = 4000
BATCH = 1000
DELTA_WAIT = 60.0  # seconds a delta waits for another writer of the index
DELTA_MAX = 2000  # changed records above which (and above a quarter of the index) a build is full


class Progress:
    """Receives build progress; the CLI draws bars, library callers may ignore it."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


@dataclass
class BuildReport:
    version: str
    path: Path
    records: int
    chunks: int
    dense_chunks: int
    added: int
    changed: int
    removed: int
    reused_from_previous: int
    from_cache: int
    embedded: int
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    delta: bool = False


@dataclass(frozen=True)
class BuildOptions:
    full: bool = False
    skip_invalid: bool = False
    exact_max: int = 50_000  # above this many vectors a segment gets an approximate (IVF-SQ8) index, re-scored exactly
    bm25: BM25Params = BM25Params()
    dense_roles: tuple[str, ...] = DEFAULT_DENSE_ROLES
    workers: int = 0  # processes for analysis; 0 = one per CPU
    milvus: MilvusSpec | None = None  # a full build writes its search rows to Milvus (deltas follow the serving version)
    ray: RaySpec | None = None  # a full build analyses and embeds on Ray (indexer/ray_engine.py)


def build_dictionary(corpus_dir: Path, records: Sequence[Record]) -> list[str]:
    """Curated dictionary (corpus/dictionary.txt) plus the corpus's own keywords, skills and trades."""
    lines: list[str] = []
    curated = Path(corpus_dir) / DICTIONARY_FILE
    if curated.exists():
        lines.extend(curated.read_text(encoding="utf-8").splitlines())
    for record in records:
        lines.extend(term for term in record.terms if len(term) <= 12)
    return dictionary_words(lines)


def read_stopwords(corpus_dir: Path) -> list[str]:
    path = Path(corpus_dir) / STOPWORDS_FILE
    return sorted(set(path.read_text(encoding="utf-8").split())) if path.exists() else []


def build_index(corpus_dir: Path, index_dir: Path, embedder: Embedder, cache: EmbeddingCache | None,
                options: BuildOptions = BuildOptions(), progress: Progress | None = None,
                load: CorpusLoad | None = None) -> BuildReport:
    """Validate the corpus and make the serving version match it (a delta when possible); report what was done.

    One build at a time per index folder (``IndexBusy`` otherwise), across processes. The corpus is read under that
    lock: a publish writes its record to the corpus before it waits for the lock to apply it, so a build either sees
    the record or runs before the publish's delta — never diffs an older corpus against an index that has it."""
    started = time.perf_counter()
    store = IndexStore(Path(index_dir))
    with store.writing():
        load = load or load_corpus(Path(corpus_dir))
        if load.problems and not options.skip_invalid:
            raise CorpusInvalid(load.problems)
        validate = time.perf_counter() - started
        words, stopwords = build_dictionary(Path(corpus_dir), load.records), read_stopwords(Path(corpus_dir))
        current = None if options.full else _serving(store, embedder)
        report = None
        if current is not None and _backend(current.manifest) != _wanted(options):
            log.info("the index moves to another backend (%s → %s): building in full", _backend(current.manifest), _wanted(options))
        elif current is not None and current.tokenizer.words == words and sorted(current.tokenizer.stopwords) == stopwords:
            live = current.records.hashes()
            now = {r.id for r in load.records}
            upserts = [r for r in load.records if live.get(r.id) != (r.kind, r.content_hash())]
            deletes = [rid for rid in live if rid not in now]
            if len(upserts) + len(deletes) <= max(DELTA_MAX, len(live) // 4):  # else a rebuild is cheaper
                report = _apply(store, current, upserts, deletes, embedder, cache, options)
        if report is None:  # first build, --full, another dictionary (all terms may cut differently) or a big change
            report = _full(store, load.records, words, stopwords, embedder, cache, options, progress or Progress(),
                           current, fingerprint=load.fingerprint())
    report.skipped = [str(p) for p in load.problems]
    report.seconds = {"validate": round(validate, 3), **report.seconds, "total": time.perf_counter() - started}
    return report


def apply_changes(index_dir: Path, embedder: Embedder, cache: EmbeddingCache | None, upserts: Sequence[Record] = (),
                  deletes: Sequence[str] = (), options: BuildOptions = BuildOptions()) -> BuildReport:
    """Apply record upserts and deletions to the serving version as one delta segment and switch to it."""
    store = IndexStore(Path(index_dir))
    with store.writing(wait=DELTA_WAIT):  # a merge switching or another publish holds the lock for moments
        current = _serving(store, embedder, required=True)
        assert current is not None
        return _apply(store, current, list(upserts), list(deletes), embedder, cache, options)


def withdraw_served(index_dir: Path, embedder: Embedder, cache: EmbeddingCache | None, record_ids: Sequence[str],
                    wait: float | None = None, options: BuildOptions = BuildOptions()) -> list[str]:
    """Delete ``record_ids`` from the serving version if it holds them, deciding under the writer lock: a build in
    another process that read the corpus while they were in it has committed by then, so what it took in goes too
    (``IndexBusy`` after ``wait`` seconds, ``DELTA_WAIT`` by default). Returns the ids that were served."""
    store = IndexStore(Path(index_dir))
    with store.writing(wait=DELTA_WAIT if wait is None else wait):
        current = _serving(store, embedder)
        if current is None:
            return []
        served = sorted(set(current.records.hashes(record_ids)))
        if served:
            _apply(store, current, [], served, embedder, cache, options)
        return served


class LocalWriter:
    """``IndexWriter`` (indexer/ports.py) over the local files: changes are collected and applied as one delta
    segment on ``commit`` (the last change of an id wins)."""

    def __init__(self, index_dir: Path, embedder: Embedder, cache: EmbeddingCache | None = None,
                 options: BuildOptions = BuildOptions()) -> None:
        self.index_dir, self.embedder, self.cache, self.options = Path(index_dir), embedder, cache, options
        self._changes: dict[str, Record | None] = {}

    def upsert(self, records: Sequence[Record]) -> None:
        self._changes.update({r.id: r for r in records})

    def delete(self, record_ids: Sequence[str]) -> None:
        self._changes.update({rid: None for rid in record_ids})

    def commit(self) -> str:
        changes, self._changes = self._changes, {}
        report = apply_changes(self.index_dir, self.embedder, self.cache,
                               [r for r in changes.values() if r is not None],
                               [rid for rid, r in changes.items() if r is None], self.options)
        return report.version


def _backend(manifest: dict) -> tuple[str, str]:
    """(backend, where) of a version: ("local", "") or ("milvus", its URI)."""
    milvus = manifest.get("milvus")
    return ("milvus", milvus["uri"]) if manifest.get("backend") == "milvus" and milvus else ("local", "")


def _wanted(options: BuildOptions) -> tuple[str, str]:
    return ("milvus", options.milvus.location) if options.milvus else ("local", "")


def _serving(store: IndexStore, embedder: Embedder, required: bool = False):
    """The serving version opened for reading, or None (none yet, another format or embedder, unreadable)."""
    from indexer.version import IndexVersion

    if store.current_version() is None and not required:
        return None
    try:
        return IndexVersion(store.current_path(), embedder)
    except JiangxinError as exc:
        if required:
            raise
        log.warning("the serving version cannot be extended (%s); building in full", exc)
        return None


# ---------------------------------------------------------------------------------------------- full build

_POOL_RECORDS: Sequence[Record] = ()
_POOL_TOKENIZER: Tokenizer | None = None


def _analyse_range(span: tuple[int, int]) -> AnalysedBatch:
    assert _POOL_TOKENIZER is not None
    return analyse_batch(_POOL_RECORDS[span[0]:span[1]], _POOL_TOKENIZER)


def analyse_all(records: Sequence[Record], tokenizer: Tokenizer, workers: int = 0, progress: Progress | None = None):
    """Analysed batches of ``records`` in order, in a pool of forked processes when the corpus is large."""
    global _POOL_RECORDS, _POOL_TOKENIZER
    progress = progress or Progress()
    progress.stage("analyse", len(records))
    spans = [(i, min(i + BATCH, len(records))) for i in range(0, len(records), BATCH)]
    workers = workers or os.cpu_count() or 1
    if len(records) < POOL_MIN_RECORDS or workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for start, end in spans:
            yield analyse_batch(records[start:end], tokenizer)
            progress.advance(end - start)
        return
    _POOL_RECORDS, _POOL_TOKENIZER = records, tokenizer  # inherited by the forked workers, not pickled
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for batch, (start, end) in zip(pool.imap(_analyse_range, spans), spans):
                yield batch
                progress.advance(end - start)
    finally:
        _POOL_RECORDS, _POOL_TOKENIZER = (), None


class _Accumulator:
    """Batches → one segment's rows and postings over a growing global vocabulary."""

    def __init__(self, vocab: dict[str, int], dense_roles: Sequence[str]) -> None:
        self.vocab = vocab
        self.dense_roles = set(dense_roles)
        self.chunk_rows: list[tuple] = []
        self.record_rows: list[tuple] = []
        self.dense_texts: list[str] = []
        self.dense_chunks: list[int] = []
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {f: [] for f in FIELDS}
        self.lengths: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}

    def add(self, batch: AnalysedBatch) -> None:
        remap = np.fromiter((self.vocab.setdefault(t, len(self.vocab)) for t in batch.vocab), dtype=np.int32,
                            count=len(batch.vocab))
        offsets = {"chunks": len(self.chunk_rows), "records": len(self.record_rows)}
        for f, postings in (("chunks", batch.chunks), ("records", batch.records)):
            self.parts[f].append((postings.doc + offsets[f], remap[postings.term] if len(postings.term) else postings.term, postings.tf))
            self.lengths[f].append(postings.length)
        for row in batch.chunk_rows:
            dense = -1
            if row[4] in self.dense_roles:
                dense = len(self.dense_texts)
                self.dense_texts.append(row[5])
                self.dense_chunks.append(len(self.chunk_rows))
            self.chunk_rows.append((*row, dense))
        self.record_rows.extend(batch.record_rows)

    def segment(self, vectors: np.ndarray) -> SegmentData:
        postings = {f: tuple(np.concatenate([p[i] for p in self.parts[f]]) if self.parts[f] else np.zeros(0, np.int32)
                             for i in range(3)) for f in FIELDS}
        lengths = {f: np.concatenate(self.lengths[f]) if self.lengths[f] else np.zeros(0, np.int32) for f in FIELDS}
        return SegmentData(self.chunk_rows, self.record_rows, postings, lengths, vectors,  # type: ignore[arg-type]
                           np.asarray(self.dense_chunks, dtype=np.int32))


def _vectors(texts: list[str], embedder: Embedder, cache: EmbeddingCache | None, reuse: dict[bytes, np.ndarray],
             progress: Progress, batch: int = 16) -> tuple[np.ndarray, int, EmbedCounts]:
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    todo: list[int] = []
    for j, text in enumerate(texts):
        old = reuse.get(text_hash(text)) if reuse else None
        if old is not None:
            vectors[j] = old
        else:
            todo.append(j)
    counts = EmbedCounts()
    progress.stage("embed", len(texts))
    progress.advance(len(texts) - len(todo))
    if todo:
        vectors[todo] = embed_passages_cached(embedder, [texts[j] for j in todo], cache, counts, batch=batch,
                                              progress=progress.advance)
    return vectors, len(texts) - len(todo), counts


def _previous_vectors(previous) -> dict[bytes, np.ndarray]:
    """Vectors of the previous version's live chunks keyed by text hash (no re-embedding on a rebuild or merge)."""
    out: dict[bytes, np.ndarray] = {}
    if previous is None:
        return out
    for si, seg in enumerate(previous.parts.segments):
        dead = set(previous.parts.dead["chunks"][si].tolist())
        for local, text, dense in seg.db.execute("SELECT local, text, dense FROM chunk WHERE dense >= 0"):
            if local not in dead:
                out[text_hash(text)] = seg.vectors[dense]
    return out


def _ann(options: BuildOptions) -> dict:
    return {"min_vectors": options.exact_max + 1}


def segment_name() -> str:
    return time.strftime("seg-%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _full(store: IndexStore, records: Sequence[Record], words: list[str], stopwords: list[str], embedder: Embedder,
          cache: EmbeddingCache | None, options: BuildOptions, progress: Progress, previous, fingerprint: str) -> BuildReport:
    seconds: dict[str, float] = {}
    previous_hashes = previous.records.hashes() if previous is not None else {}
    t = time.perf_counter()
    tokenizer = Tokenizer(words, set(stopwords))
    acc = _Accumulator({}, options.dense_roles)  # the reduce: one vocabulary, frequencies and lengths over all batches
    if options.ray is not None:
        progress.stage("analyse (ray)", len(records))
        for batch in analyse_on_ray(records, tokenizer, options.ray):
            acc.add(batch)
            progress.advance(len(batch.record_rows))
    else:
        for batch in analyse_all(records, tokenizer, options.workers, progress):
            acc.add(batch)
    seconds["analyse"] = time.perf_counter() - t

    t = time.perf_counter()
    vectors, reused, counts = (_vectors(acc.dense_texts, RayEmbedder(embedder, options.ray), cache,
                                        _previous_vectors(previous), progress, batch=EMBED_ROUND)
                               if options.ray is not None else
                               _vectors(acc.dense_texts, embedder, cache, _previous_vectors(previous), progress))
    seconds["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    progress.stage("write", 1)
    data = acc.segment(vectors)
    name = segment_name()
    write_segment(store.root, name, data, embedder.model_id, _ann(options))
    seconds["write_segment"] = time.perf_counter() - t
    t = time.perf_counter()
    terms = list(acc.vocab)
    df = {f: np.bincount(data.postings[f][1], minlength=len(terms)).astype(np.int32) for f in FIELDS}
    stats = {f: {"docs": int(len(data.lengths[f])), "length": int(np.asarray(data.lengths[f], dtype=np.int64).sum())} for f in FIELDS}
    staging = store.begin()
    new_dictionary(staging.path, terms, df)
    manifest = _manifest(embedder, tokenizer, options, [name], stats, fingerprint, Counter(r.kind for r in records),
                         len(acc.chunk_rows), len(acc.dense_texts), len(terms), dead={})
    if options.milvus is not None:  # a new pair of collections, invisible until this version is committed
        t_milvus = time.perf_counter()
        milvus = MilvusCollections(options.milvus.location, collection_base(store.root, staging.version), embedder.dim)
        progress.stage("milvus", len(data.chunk_rows))
        milvus.create()
        milvus.write(data, _field_stats(stats), options.bm25, seq=1)
        milvus.seal()
        progress.advance(len(data.chunk_rows))
        progress.stage("commit", 1)
        manifest.update(backend="milvus", milvus={"uri": milvus.uri, "collection": milvus.base, "seq": 1})
        seconds["milvus"] = time.perf_counter() - t_milvus
    uris = _milvus_uris(store)
    (staging.path / DICTIONARY_FILE).write_text("\n".join(words) + "\n", encoding="utf-8")
    (staging.path / STOPWORDS_FILE).write_text("\n".join(stopwords) + "\n", encoding="utf-8")
    final = store.commit(staging, manifest)
    prune_collections(store, uris | _milvus_uris(store))
    progress.advance()
    seconds["write_version"] = time.perf_counter() - t - seconds.get("milvus", 0.0)
    now = {r.id: (r.kind, r.content_hash()) for r in records}
    added = sum(1 for rid in now if rid not in previous_hashes)
    changed = sum(1 for rid, h in now.items() if rid in previous_hashes and previous_hashes[rid] != h)
    removed = sum(1 for rid in previous_hashes if rid not in now)
    return BuildReport(staging.version, final, len(records), len(acc.chunk_rows), len(acc.dense_texts), added, changed,
                       removed, reused, counts.cached, counts.embedded, seconds=seconds)


def _manifest(embedder: Embedder, tokenizer: Tokenizer, options: BuildOptions, segments: list[str], stats: dict,
              fingerprint: str, kinds: Counter, chunks: int, dense: int, terms: int, dead: dict) -> dict:
    return {
        "format": FORMAT,
        "backend": BACKEND,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus_fingerprint": fingerprint,
        "segments": segments,
        "dead": dead,
        "stats": stats,
        "counts": {"records": stats["records"]["docs"], "by_kind": dict(sorted(kinds.items())), "chunks": chunks,
                   "dense_chunks": dense, "terms": terms},
        "model": {"id": embedder.model_id, "dim": embedder.dim, "normalised": True},
        "dense_roles": list(options.dense_roles),
        "tokenizer": {"version": TOKENIZER_VERSION, "fingerprint": tokenizer.fingerprint},
        "bm25": {"k1": options.bm25.k1, "b": options.bm25.b, "epsilon": options.bm25.epsilon},
    }


# ---------------------------------------------------------------------------------------------- deltas

def _apply(store: IndexStore, current, upserts: list[Record], deletes: list[str], embedder: Embedder,
           cache: EmbeddingCache | None, options: BuildOptions) -> BuildReport:
    """Write ``upserts`` as a delta segment, tombstone the replaced and deleted records, update the statistics."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    parts, tokenizer, dictionary = current.parts, current.tokenizer, current.parts.dictionary
    live = current.records.hashes([*(r.id for r in upserts), *deletes])  # the ids concerned only, never all
    upserts = [r for r in upserts if live.get(r.id) != (r.kind, r.content_hash())]
    upserts = list({r.id: r for r in upserts}.values())  # the last copy of an id wins
    gone = [rid for rid in dict.fromkeys(deletes) if rid in live and rid not in {r.id for r in upserts}]
    replaced = [r.id for r in upserts if r.id in live]
    df = {f: np.array(dictionary.df[f], dtype=np.int32) for f in FIELDS}
    stats = {f: {"docs": parts.stats[f].docs, "length": parts.stats[f].length} for f in FIELDS}
    dead = {name: {f: list(map(int, arr)) for f, arr in fields.items()} for name, fields in _dead_lists(current).items()}
    kinds = Counter(current.manifest["counts"].get("by_kind", {}))
    chunks_total = current.manifest["counts"]["chunks"]
    dense_total = current.manifest["counts"]["dense_chunks"]

    for rid in [*gone, *replaced]:  # old copies: tombstone them and take their terms out of the statistics
        segment, record_local, chunk_locals, record = _locate(current, rid)
        a = analyse(record, tokenizer)
        for terms in a.chunk_terms:
            _count(df["chunks"], dictionary.ids(set(terms)), -1)
            stats["chunks"]["docs"] -= 1
            stats["chunks"]["length"] -= len(terms)
        _count(df["records"], dictionary.ids(set(a.record_terms)), -1)
        stats["records"]["docs"] -= 1
        stats["records"]["length"] -= len(a.record_terms)
        entry = dead.setdefault(segment, {"chunks": [], "records": []})
        entry["chunks"].extend(chunk_locals)
        entry["records"].append(record_local)
        kinds[record.kind] -= 1
        chunks_total -= len(a.chunks)
        dense_total -= sum(1 for c in a.chunks if c.role in options.dense_roles)
    seconds["tombstone"] = time.perf_counter() - started

    t = time.perf_counter()
    batch = analyse_batch(upserts, tokenizer) if upserts else None
    new_terms: list[str] = []
    segments = list(current.manifest["segments"])
    reused, counts, new_dense = 0, EmbedCounts(), 0
    if batch is not None:
        vocab: dict[str, int] = {}
        remap = np.empty(len(batch.vocab), dtype=np.int32)
        for i, term in enumerate(batch.vocab):
            tid = dictionary.lookup(term)
            if tid < 0:
                tid = vocab.get(term)
                if tid is None:
                    tid = vocab[term] = dictionary.size + len(new_terms)
                    new_terms.append(term)
            remap[i] = tid
        acc = _Accumulator({}, options.dense_roles)
        acc.add(batch)
        for f, postings in (("chunks", batch.chunks), ("records", batch.records)):
            acc.parts[f] = [(postings.doc, remap[postings.term] if len(postings.term) else postings.term, postings.tf)]
        size = dictionary.size + len(new_terms)
        for f in FIELDS:
            df[f] = np.concatenate([df[f], np.zeros(size - len(df[f]), dtype=np.int32)])
            term_ids = acc.parts[f][0][1]
            df[f] += np.bincount(term_ids, minlength=size).astype(np.int32)
            stats[f]["docs"] += int(len(acc.lengths[f][0]))
            stats[f]["length"] += int(np.asarray(acc.lengths[f][0], dtype=np.int64).sum())
        seconds["analyse"] = time.perf_counter() - t
        t = time.perf_counter()
        vectors, reused, counts = _vectors(acc.dense_texts, embedder, cache, {}, Progress())
        seconds["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        name = segment_name()
        delta = acc.segment(vectors)
        write_segment(store.root, name, delta, embedder.model_id, _ann(options))
        segments.append(name)
        kinds.update(r.kind for r in upserts)
        chunks_total += len(acc.chunk_rows)
        dense_total += len(acc.dense_texts)
        new_dense = len(acc.dense_texts)
        seconds["write_segment"] = time.perf_counter() - t

    t = time.perf_counter()
    staging = store.begin()
    extended_dictionary(staging.path, dictionary, new_terms, df)
    dead_files = {}
    for name, fields in dead.items():
        dead_files[name] = {}
        for f in FIELDS:
            if fields.get(f):
                file = f"dead-{name}-{f}.npy"
                np.save(staging.path / file, np.asarray(sorted(set(fields[f])), dtype=np.int32))
                dead_files[name][f] = file
    manifest = _manifest(embedder, tokenizer, options, segments, stats, current.manifest.get("corpus_fingerprint", ""),
                         Counter({k: v for k, v in kinds.items() if v > 0}), chunks_total, dense_total,
                         dictionary.size + len(new_terms), dead_files)
    manifest["dense_roles"] = current.manifest.get("dense_roles", list(options.dense_roles))
    for file in (DICTIONARY_FILE, STOPWORDS_FILE):
        (staging.path / file).write_bytes((current.path / file).read_bytes())
    milvus = getattr(current, "milvus", None)
    if milvus is not None:  # rows of change seq+1: invisible to every version until this one is committed
        t_milvus = time.perf_counter()
        seq = int(current.manifest["milvus"]["seq"]) + 1
        milvus.recover(seq - 1)
        milvus.retire([*gone, *replaced], seq)
        if batch is not None:
            milvus.write(delta, _field_stats(stats), parts.params, seq)
        milvus.seal()
        manifest.update(backend="milvus", milvus={**current.manifest["milvus"], "seq": seq})
        seconds["milvus"] = time.perf_counter() - t_milvus
    final = store.commit(staging, manifest)
    if milvus is not None:
        prune_collections(store, _milvus_uris(store))
    seconds["write_version"] = time.perf_counter() - t - seconds.get("milvus", 0.0)
    seconds["total"] = time.perf_counter() - started
    return BuildReport(staging.version, final, stats["records"]["docs"], chunks_total, dense_total,
                       sum(1 for r in upserts if r.id not in live), len(replaced), len(gone),
                       dense_total - new_dense + reused, counts.cached,
                       counts.embedded, seconds=seconds, delta=True)


def _field_stats(stats: dict[str, dict[str, int]]) -> dict[str, FieldStats]:
    return {f: FieldStats(v["docs"], v["length"]) for f, v in stats.items()}


def _milvus_uris(store: IndexStore) -> set[str]:
    """The Milvus URIs the versions kept in ``store`` name."""
    return {m["milvus"]["uri"] for m in map(store.manifest, store.versions()) if m.get("backend") == "milvus"}


def _count(df: np.ndarray, term_ids: list[int], step: int) -> None:
    ids = [t for t in term_ids if t >= 0]
    if ids:
        df[np.asarray(ids, dtype=np.int64)] += step


def _dead_lists(version) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for si, seg in enumerate(version.parts.segments):
        fields = {f: version.parts.dead[f][si] for f in FIELDS if len(version.parts.dead[f][si])}
        if fields:
            out[seg.name] = fields
    return out


def _locate(version, record_id: str) -> tuple[str, int, list[int], Record]:
    """Where the live copy of a record is: (segment, record number, chunk numbers, the record)."""
    parts = version.parts
    for si in range(len(parts.segments) - 1, -1, -1):
        seg = parts.segments[si]
        dead = set(parts.dead["records"][si].tolist())
        for local, kind, data in seg.db.execute("SELECT local, kind, json FROM record WHERE id = ?", (record_id,)):
            if local in dead:
                continue
            chunks = [row[0] for row in seg.db.execute("SELECT local FROM chunk WHERE record_id = ? ORDER BY local", (record_id,))]
            return seg.name, int(local), chunks, KINDS[kind].model_validate(json.loads(data))
    raise JiangxinError(f"record {record_id} is not in index version {version.version}")


def check_compatible(manifest: dict, embedder: Embedder) -> None:
    """Refuse to serve an index built with another embedder than the configured one, or by an older format."""
    if manifest.get("backend", BACKEND) not in (BACKEND, "milvus"):
        raise IndexMismatchError(f"index version {manifest.get('version')} uses backend {manifest.get('backend')!r}, "
                                 "which this Jiangxin does not know")
    if manifest.get("format") != FORMAT:
        raise IndexMismatchError(
            f"index version {manifest.get('version')} has format {manifest.get('format')!r}, this Jiangxin reads format "
            f"{FORMAT}; re-index with `jiangxin index --full`")
    built_with = manifest.get("tokenizer", {}).get("version")
    if built_with != TOKENIZER_VERSION:
        raise IndexMismatchError(
            f"index version {manifest.get('version')} was built with tokenizer {built_with!r}, this Jiangxin tokenizes "
            f"with {TOKENIZER_VERSION}; re-index with `jiangxin index --full`")
    model = manifest.get("model", {})
    if model.get("id") != embedder.model_id or model.get("dim") != embedder.dim:
        raise IndexMismatchError(
            f"index version {manifest.get('version')} was built with embedder {model.get('id')!r} "
            f"({model.get('dim')}-d) but {embedder.model_id!r} ({embedder.dim}-d) is configured; "
            "re-index with `jiangxin index --full` or configure the embedder it was built with"
        )
