"""Build an index version from a corpus folder: records → chunks → tokens/vectors → version.

Incremental by default: vectors of chunks whose text is unchanged since the serving version are
copied from it; other chunks come from the embedding cache or are embedded. BM25 statistics are
global, so BM25 is rebuilt every time (tokenising is cheap next to embedding).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.bm25 import BM25Index, BM25Params
from indexer.chunking import Chunk, chunk, record_text
from indexer.embedders import EmbedCounts, EmbeddingCache, Embedder, embed_passages_cached, text_hash
from indexer.errors import CorpusInvalid, IndexMismatchError, JiangxinError
from indexer.records import CorpusLoad, Record, load_corpus, record_to_json
from indexer.store import IndexStore
from indexer.text import TOKENIZER_VERSION, Tokenizer, dictionary_words
from indexer.vectors import VectorIndex

log = logging.getLogger(__name__)
FORMAT = 1
DICTIONARY_FILE = "dictionary.txt"
RECORD_BM25 = "bm25_records"  # BM25 over whole records (title and every section), beside the chunk BM25
STOPWORDS_FILE = "stopwords.txt"


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


@dataclass(frozen=True)
class BuildOptions:
    full: bool = False
    skip_invalid: bool = False
    exact_max: int = 200_000
    bm25: BM25Params = BM25Params()


def build_dictionary(corpus_dir: Path, records: list[Record]) -> list[str]:
    """Curated dictionary (corpus/dictionary.txt) plus the corpus's own keywords, skills and trades."""
    lines: list[str] = []
    curated = Path(corpus_dir) / DICTIONARY_FILE
    if curated.exists():
        lines.extend(curated.read_text(encoding="utf-8").splitlines())
    for record in records:
        lines.extend(term for term in record.terms if len(term) <= 12)
    return dictionary_words(lines)


def _previous_vectors(store: IndexStore, model_id: str) -> dict[bytes, np.ndarray]:
    """Vectors of the serving version keyed by chunk text hash (empty if none or another model)."""
    try:
        path = store.current_path()
        manifest = store.manifest()
    except JiangxinError:
        return {}
    if manifest.get("model", {}).get("id") != model_id:
        return {}
    vectors = np.load(path / "dense_vectors.npy")
    texts = json.loads((path / "dense_texts.json").read_text(encoding="utf-8"))
    return {text_hash(t): vectors[i] for i, t in enumerate(texts)}


def build_index(corpus_dir: Path, index_dir: Path, embedder: Embedder, cache: EmbeddingCache | None,
                options: BuildOptions = BuildOptions(), progress: Progress | None = None,
                load: CorpusLoad | None = None) -> BuildReport:
    """Validate, chunk, tokenise, embed and publish a new index version; return what was done.

    One build at a time per index folder (``IndexBusy`` otherwise), across processes."""
    with IndexStore(Path(index_dir)).writing():
        return _build(corpus_dir, index_dir, embedder, cache, options, progress or Progress(), load)


def _build(corpus_dir: Path, index_dir: Path, embedder: Embedder, cache: EmbeddingCache | None,
           options: BuildOptions, progress: Progress, load: CorpusLoad | None) -> BuildReport:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    load = load or load_corpus(Path(corpus_dir))
    if load.problems and not options.skip_invalid:
        raise CorpusInvalid(load.problems)
    records = load.records
    seconds["validate"] = time.perf_counter() - started

    store = IndexStore(Path(index_dir))
    previous_hashes: dict[str, str] = {}
    if store.current_version() and not options.full:
        try:
            previous_hashes = store.manifest().get("record_hashes", {})
        except (JiangxinError, OSError, ValueError):
            previous_hashes = {}
    now_hashes = {f"{r.kind}:{r.id}": r.content_hash() for r in records}
    added = sum(1 for key in now_hashes if key not in previous_hashes)
    changed = sum(1 for key, h in now_hashes.items() if key in previous_hashes and previous_hashes[key] != h)
    removed = sum(1 for key in previous_hashes if key not in now_hashes)

    t = time.perf_counter()
    chunks: list[Chunk] = []
    progress.stage("chunk", len(records))
    for record in records:
        chunks.extend(chunk(record))
        progress.advance()
    seconds["chunk"] = time.perf_counter() - t

    t = time.perf_counter()
    words = build_dictionary(Path(corpus_dir), records)
    stop_path = Path(corpus_dir) / STOPWORDS_FILE
    stopwords = sorted(set(stop_path.read_text(encoding="utf-8").split())) if stop_path.exists() else []
    tokenizer = Tokenizer(words, set(stopwords))
    progress.stage("tokenize", len(chunks))
    tokens = []
    for c in chunks:
        tokens.append(tokenizer.tokenize(c.indexed_text))
        progress.advance()
    bm25 = BM25Index.build(tokens, options.bm25)
    record_bm25 = BM25Index.build([tokenizer.tokenize(record_text(r)) for r in records], options.bm25)
    seconds["tokenize+bm25"] = time.perf_counter() - t

    t = time.perf_counter()
    dense_rows = np.array([i for i, c in enumerate(chunks) if c.dense], dtype=np.int64)
    dense_texts = [chunks[i].text for i in dense_rows]
    reuse = {} if options.full else _previous_vectors(store, embedder.model_id)
    vectors = np.zeros((len(dense_texts), embedder.dim), dtype=np.float32)
    todo: list[int] = []
    for j, text in enumerate(dense_texts):
        old = reuse.get(text_hash(text))
        if old is not None:
            vectors[j] = old
        else:
            todo.append(j)
    reused = len(dense_texts) - len(todo)
    counts = EmbedCounts()
    progress.stage("embed", len(dense_texts))
    progress.advance(reused)
    if todo:
        vectors[todo] = embed_passages_cached(embedder, [dense_texts[j] for j in todo], cache, counts, progress=progress.advance)
    seconds["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    progress.stage("write", 1)
    vector_index = VectorIndex.build(vectors, dense_rows, embedder.model_id, exact_max=options.exact_max)
    staging = store.begin()
    out = staging.path
    bm25.save(out)
    record_bm25.save(out, RECORD_BM25)
    vector_index.save(out)
    np.save(out / "dense_vectors.npy", vectors)
    (out / "dense_texts.json").write_text(json.dumps(dense_texts, ensure_ascii=False), encoding="utf-8")
    with open(out / "chunks.jsonl", "w", encoding="utf-8") as handle:
        for c in chunks:
            handle.write(json.dumps({"chunk_id": c.chunk_id, "record_id": c.record_id, "kind": c.kind,
                                     "title": c.title, "role": c.role, "text": c.text}, ensure_ascii=False) + "\n")
    with open(out / "records.jsonl", "w", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps({"kind": r.kind, "record": record_to_json(r)}, ensure_ascii=False) + "\n")
    (out / DICTIONARY_FILE).write_text("\n".join(words) + "\n", encoding="utf-8")
    (out / STOPWORDS_FILE).write_text("\n".join(stopwords) + "\n", encoding="utf-8")
    kinds = Counter(r.kind for r in records)
    manifest = {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": str(Path(corpus_dir).resolve()),
        "corpus_fingerprint": load.fingerprint(),
        "counts": {"records": len(records), "by_kind": dict(sorted(kinds.items())), "chunks": len(chunks),
                   "dense_chunks": len(dense_texts), "terms": len(bm25.vocab)},
        "model": {"id": embedder.model_id, "dim": embedder.dim, "normalised": True},
        "vector_index": vector_index.meta.kind,
        "tokenizer": {"version": TOKENIZER_VERSION, "fingerprint": tokenizer.fingerprint},
        "bm25": {"k1": options.bm25.k1, "b": options.bm25.b, "epsilon": options.bm25.epsilon},
        "record_hashes": now_hashes,
    }
    final = store.commit(staging, manifest)
    progress.advance()
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    skipped = [str(p) for p in load.problems]
    return BuildReport(staging.version, final, len(records), len(chunks), len(dense_texts), added, changed, removed,
                       reused, counts.cached, counts.embedded, skipped, seconds)


def check_compatible(manifest: dict, embedder: Embedder) -> None:
    """Refuse to serve an index built with another embedder than the configured one."""
    model = manifest.get("model", {})
    if model.get("id") != embedder.model_id or model.get("dim") != embedder.dim:
        raise IndexMismatchError(
            f"index version {manifest.get('version')} was built with embedder {model.get('id')!r} "
            f"({model.get('dim')}-d) but {embedder.model_id!r} ({embedder.dim}-d) is configured; "
            "re-index with `jiangxin index --full` or configure the embedder it was built with"
        )
