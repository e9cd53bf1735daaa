"""A loaded, queryable index version (its ports), and a live handle that follows ``CURRENT`` without restart or stall."""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.build import DICTIONARY_FILE, STOPWORDS_FILE, check_compatible
from indexer.embedders import Embedder
from indexer.errors import IndexCorrupt, IndexNotFound, JiangxinError
from indexer.local import LocalChunks, LocalDense, LocalDirectory, LocalParts, LocalRecords, LocalSparse, LocalTerms
from indexer.ports import ChunkRow
from indexer.segment import Segment
from indexer.store import MANIFEST, IndexStore
from indexer.terms import BM25Params, FieldStats, TermDictionary
from indexer.text import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)
_OPEN: "weakref.WeakValueDictionary[str, Segment]" = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()

__all__ = ["ChunkRow", "IndexVersion", "LiveIndex", "open_segment"]


def open_segment(path: Path) -> Segment:
    """A segment opened once per process and shared by every version that lists it (segments never change)."""
    key = str(Path(path).resolve())
    with _OPEN_LOCK:
        segment = _OPEN.get(key)
        if segment is None:
            if not (Path(path) / "meta.json").exists():
                raise IndexCorrupt(f"segment {Path(path).name} is missing")
            segment = Segment(Path(path))
            _OPEN[key] = segment
        return segment


class IndexVersion:
    """One version opened for querying, as the ports the pipeline uses: ``sparse``, ``dense``, ``terms``,
    ``chunks``, ``records``, ``directory``, plus the tokenizer (our analyser, shared by every backend) and embedder."""

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        check_compatible(self.manifest, embedder)
        self.version: str = self.manifest["version"]
        self.embedder = embedder
        self.tokenizer: Tokenizer = load_tokenizer(self.path / DICTIONARY_FILE, self.path / STOPWORDS_FILE)
        if self.tokenizer.fingerprint != self.manifest["tokenizer"]["fingerprint"]:
            raise IndexCorrupt(f"index version {self.version}: tokenizer files do not match the manifest")
        root = self.path.parent.parent
        segments = [open_segment(root / "segments" / name) for name in self.manifest["segments"]]
        dead: dict[str, dict[str, np.ndarray]] = {}
        for name, files in self.manifest.get("dead", {}).items():
            dead[name] = {f: np.load(self.path / file) for f, file in files.items()}
        stats = {f: FieldStats(v["docs"], v["length"]) for f, v in self.manifest["stats"].items()}
        self.parts = LocalParts(segments, dead, TermDictionary(self.path), stats, BM25Params(**self.manifest["bm25"]))
        for seg in segments:
            if seg.meta["dense"] and (seg.meta["model"] != embedder.model_id or seg.meta["dim"] != embedder.dim):
                raise IndexCorrupt(f"index version {self.version}: segment {seg.name} holds vectors of {seg.meta['model']}")
        self.terms = LocalTerms(self.parts)
        self.sparse = LocalSparse(self.parts)
        self.dense = LocalDense(self.parts)
        self.chunks = LocalChunks(self.parts)
        self.records = LocalRecords(self.parts)
        self.directory = LocalDirectory(self.parts)
        self.milvus = None  # the Milvus collections when the version is searched there (payloads stay local)
        if self.manifest.get("backend") == "milvus":
            from indexer.milvus import open_version

            self.sparse, self.dense, self.milvus = open_version(self.manifest, self.parts, embedder.dim)


@dataclass(frozen=True)
class LoadFailure:
    """A version that could not be loaded: which, the error's class and message, and when (epoch seconds)."""

    version: str
    error: str
    message: str
    at: float


@dataclass(frozen=True)
class LiveState:
    """What a live index serves: ``state`` is ok, loading, stale_failed_load (serving an older version because
    the one ``CURRENT`` names failed to load) or unavailable (nothing loaded)."""

    serving: str | None
    current: str | None
    state: str
    loading: str | None
    failure: LoadFailure | None
    failures_total: int


class LiveIndex:
    """Serves the version ``CURRENT`` names and follows it without restart, never making a request wait.

    ``get`` looks at ``CURRENT`` at most once per ``check_interval`` seconds. A new version is verified
    and loaded in a background thread while ``get`` keeps returning the loaded one; the reference is
    swapped when the load is complete. A failed load (corrupt, pruned, built by another embedder) keeps
    the old version serving, is logged and remembered (``state``), and is retried after ``retry_interval``
    or on ``refresh``. Only the very first load, with nothing to serve yet, happens in the caller.
    """

    def __init__(self, index_dir: Path, embedder: Embedder, check_interval: float = 0.25, retry_interval: float = 30.0,
                 load: Callable[[Path, Embedder], IndexVersion] = IndexVersion) -> None:
        self.store = IndexStore(Path(index_dir))
        self.embedder = embedder
        self.check_interval = check_interval
        self.retry_interval = retry_interval
        self._load = load
        self._lock = threading.RLock()  # guards the fields below; held through a load only for the very first one
        self._loaded: IndexVersion | None = None
        self._current: str | None = None  # what CURRENT named at the last check
        self._next_check = 0.0
        self._loading: str | None = None
        self._loader: threading.Thread | None = None
        self._failure: LoadFailure | None = None
        self._failed_error: BaseException | None = None
        self._retry_at = 0.0
        self._failures_total = 0

    def get(self) -> IndexVersion:
        """The loaded version (at once); starts loading a newer one in the background when ``CURRENT`` moved."""
        loaded = self._loaded
        if loaded is None:
            return self._first_load()
        if time.monotonic() >= self._next_check:
            self._check(force=False)
        return self._loaded or loaded

    def refresh(self, wait: bool = False) -> IndexVersion:
        """Look at ``CURRENT`` now (retrying a failed version); with ``wait``, return once the version it names is
        serving, or raise the error its load failed with."""
        if self._loaded is None:
            return self._first_load()
        for _ in range(5):  # CURRENT may move again while we wait; follow it a few times, not forever
            self._check(force=True)
            loader = self._loader
            if not wait:
                break
            if loader is not None:
                loader.join()
            with self._lock:
                loaded, current, failure, error = self._loaded, self._current, self._failure, self._failed_error
            if loaded is not None and (current is None or loaded.version == current):
                break
            if failure is not None and failure.version == current and self._loading is None and error is not None:
                raise error.with_traceback(None)
        return self._loaded  # type: ignore[return-value]

    def state(self) -> LiveState:
        """What is served and loading, and the last failed load; reads memory only."""
        with self._lock:
            serving = self._loaded.version if self._loaded else None
            failure = self._failure
            if serving is None:
                state = "unavailable"
            elif self._loading is not None:
                state = "loading"
            elif failure is not None and self._current is not None and failure.version == self._current != serving:
                state = "stale_failed_load"
            else:
                state = "ok"
            return LiveState(serving, self._current, state, self._loading, failure, self._failures_total)

    def _first_load(self) -> IndexVersion:
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            name = self.store.current_version()
            if name is None:
                raise IndexNotFound(f"no index in {self.store.root}: run `jiangxin index --index {self.store.root}` first")
            self._current = name
            error = self._failed_error
            if error is not None and self._failure is not None and self._failure.version == name and time.monotonic() < self._retry_at:
                raise error.with_traceback(None)  # a version that just failed is not reloaded on every request
            try:
                version = self._open(name)
            except JiangxinError as exc:
                self._failed(name, exc)
                raise
            self._loaded, self._failure, self._failed_error = version, None, None
            self._next_check = time.monotonic() + self.check_interval
            log.info("serving index version %s", name)
            return version

    def _check(self, force: bool) -> None:
        """Start a background load when ``CURRENT`` names a version not loaded, not loading and not just failed."""
        if not self._lock.acquire(blocking=force):
            return  # another request is checking right now
        try:
            now = time.monotonic()
            if not force and now < self._next_check:
                return
            self._next_check = now + self.check_interval
            try:
                name = self.store.current_version()
            except OSError as exc:
                log.error("cannot read CURRENT in %s (still serving the loaded version): %s", self.store.root, exc)
                return
            self._current = name
            if name is None or self._loading is not None or (self._loaded and self._loaded.version == name):
                return
            if not force and self._failure is not None and self._failure.version == name and now < self._retry_at:
                return
            self._loading = name
            self._loader = threading.Thread(target=self._load_in_background, args=(name,), name=f"index-load-{name}",
                                            daemon=True)
            self._loader.start()
        finally:
            self._lock.release()

    def _load_in_background(self, name: str) -> None:
        started = time.perf_counter()
        version: IndexVersion | None = None
        try:
            version = self._open(name)
        except JiangxinError as exc:
            with self._lock:
                self._failed(name, exc)
        finally:
            with self._lock:  # one step: no check can see "not loading" before the swap and load it again
                self._loading = None
                if version is not None:
                    self._serve(name, version, time.perf_counter() - started)

    def _serve(self, name: str, version: IndexVersion, seconds: float) -> None:
        """Swap the reference to a freshly loaded version (under the lock), unless CURRENT moved on meanwhile."""
        if self.store.current_version() != name:  # a rollback while it loaded: do not serve it, look again
            log.info("index version %s loaded but CURRENT moved on; not serving it", name)
            self._next_check = 0.0
            return
        previous = self._loaded.version if self._loaded else None
        self._loaded, self._current, self._failure, self._failed_error = version, name, None, None
        log.info("serving index version %s instead of %s (loaded in %.2fs in the background)", name, previous, seconds)

    def _open(self, name: str) -> IndexVersion:
        """Verify a version's checksums and load it; any failure becomes a ``JiangxinError`` saying which version."""
        path = self.store.versions_dir / name
        if not (path / MANIFEST).exists():
            raise IndexNotFound(f"index version {name} named by CURRENT is missing (pruned or never finished)")
        try:
            self.store.verify(name)
            return self._load(path, self.embedder)
        except JiangxinError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever breaks a load (bad JSON, faiss, I/O) means unusable
            raise IndexCorrupt(f"index version {name} could not be loaded: {type(exc).__name__}: {exc}") from exc

    def _failed(self, name: str, exc: JiangxinError) -> None:
        self._failure = LoadFailure(name, type(exc).__name__, str(exc), time.time())
        self._failed_error = exc
        self._failures_total += 1
        self._retry_at = time.monotonic() + self.retry_interval
        serving = self._loaded.version if self._loaded else None
        log.error("index version %s could not be loaded (%s: %s); %s", name, type(exc).__name__, exc,
                  f"still serving {serving}" if serving else "nothing to serve")
