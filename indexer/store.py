"""Versioned index directories with a manifest and an atomically switched ``CURRENT`` pointer.

Layout of an index root::

    CURRENT               name of the serving version (replaced by rename, never edited in place)
    versions/<id>/        one immutable version: the segments it lists, their tombstones, the term dictionary
                          and statistics, manifest.json (checksums of its own files)
    segments/<name>/      one immutable segment, shared by every version that lists it (indexer/segment.py)
    staging-<id>/         a version being written; never read, removed by the next build

A version is renamed into ``versions/`` only after every file is written, fsynced and verified against
the manifest, and ``CURRENT`` switches only after that. A process killed at any moment therefore leaves
``CURRENT`` pointing at a complete version. Older versions stay for rollback (the newest few are kept);
a segment no kept version lists is removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import IndexBusy, IndexCorrupt, IndexNotFound

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
KEEP_VERSIONS = 3
SEGMENT_GRACE = 3600.0  # seconds an unlisted segment is kept (a merge in progress lists it only when it switches)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_within(handle, wait: float) -> bool:
    """Take an exclusive ``flock`` on an open file, waiting up to ``wait`` seconds (backing off from 1 ms to 20 ms);
    False when another holder kept it that long. Across processes and, with one open file per caller, threads."""
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


@dataclass(frozen=True)
class Staging:
    """A version being written: put files in ``path``, then ``IndexStore.commit`` it."""

    version: str
    path: Path


class IndexStore:
    """The versions under one index root and the pointer to the serving one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def current_version(self) -> str | None:
        try:
            name = (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def current_path(self) -> Path:
        """Folder of the serving version; ``IndexNotFound`` when there is none."""
        name = self.current_version()
        if name is None:
            raise IndexNotFound(f"no index in {self.root}: run `jiangxin index --index {self.root}` first")
        path = self.versions_dir / name
        if not (path / MANIFEST).exists():
            raise IndexNotFound(f"index {self.root} points at version {name}, which is missing")
        return path

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        path = self.versions_dir / version if version else self.current_path()
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))

    def versions(self) -> list[str]:
        if not self.versions_dir.exists():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).exists())

    @contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[None]:
        """Exclusive right to change this root (an OS file lock, released when the process dies); waits up to
        ``wait`` seconds for another writer, then ``IndexBusy``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".build.lock", "w") as handle:
            if not lock_within(handle, wait):
                raise IndexBusy(f"another index build is running in {self.root}; try again when it is done")
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def begin(self) -> Staging:
        """A fresh staging folder; leftovers of killed builds are removed first (call within ``writing``). A segment
        being staged is removed only when older than ``SEGMENT_GRACE``: a merge writes its segment without the lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.root.glob("segments/.staging-*"):
            try:
                old = time.time() - stale.stat().st_mtime > SEGMENT_GRACE
            except FileNotFoundError:  # the merge finished it meanwhile
                continue
            if old:
                shutil.rmtree(stale, ignore_errors=True)
        version = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        path = self.root / f"staging-{version}"
        path.mkdir()
        return Staging(version, path)

    def commit(self, staging: Staging, manifest: dict[str, Any]) -> Path:
        """Checksum, fsync, verify and publish a staged version, then point ``CURRENT`` at it."""
        files = {}
        for path in sorted(staging.path.rglob("*")):
            if path.is_file():
                fsync_file(path)
                files[path.relative_to(staging.path).as_posix()] = sha256_file(path)
        manifest = {**manifest, "version": staging.version, "parent": self.current_version(), "files": files}
        with open(staging.path / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, ensure_ascii=False, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(staging.path)
        self._verify(staging.path)
        self.versions_dir.mkdir(exist_ok=True)
        final = self.versions_dir / staging.version
        os.replace(staging.path, final)
        fsync_dir(self.versions_dir)
        self.switch(staging.version)
        self._prune()
        return final

    def switch(self, version: str) -> None:
        """Point ``CURRENT`` at an existing, verified version (atomic rename)."""
        self._verify(self.versions_dir / version)
        atomic_write_text(self.root / "CURRENT", version + "\n")
        log.info("index %s now serves version %s", self.root, version)

    def rollback(self, wait: float = 60.0) -> str:
        """Serve the version that was current before this one — as a writer (waiting up to ``wait`` seconds for one
        at work), so a delta being committed meanwhile cannot switch back over the rollback."""
        with self.writing(wait=wait):
            parent = self.manifest().get("parent")
            if not parent or not (self.versions_dir / parent / MANIFEST).exists():
                raise IndexNotFound(f"no previous version to roll back to in {self.root}")
            self.switch(parent)
            return parent

    def verify(self, version: str | None = None) -> None:
        self._verify(self.versions_dir / version if version else self.current_path())

    def _verify(self, folder: Path) -> None:
        """The version's own files against their checksums, and every segment it lists present (segments are
        checksummed as they are written and immutable after; their sizes are checked on load)."""
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        for name, expected in manifest["files"].items():
            path = folder / name
            if not path.exists() or sha256_file(path) != expected:
                raise IndexCorrupt(f"index version {folder.name}: file {name} is missing or does not match its checksum")
        for segment in manifest.get("segments", []):
            if not (self.root / "segments" / segment / "meta.json").exists():
                raise IndexCorrupt(f"index version {folder.name}: segment {segment} is missing")

    def _prune(self) -> None:
        current = self.current_version()
        keep = set(self.versions()[-KEEP_VERSIONS:]) | {current}
        if current:
            keep.add(self.manifest(current).get("parent") or current)
        for name in self.versions():
            if name not in keep:
                shutil.rmtree(self.versions_dir / name, ignore_errors=True)
        used = {seg for name in self.versions() for seg in self.manifest(name).get("segments", [])}
        segments = self.root / "segments"
        if segments.exists():
            for folder in segments.iterdir():
                # a young unlisted segment may be a merge waiting to switch; a crashed one goes at a later prune
                if not folder.name.startswith(".") and folder.name not in used and time.time() - folder.stat().st_mtime > SEGMENT_GRACE:
                    shutil.rmtree(folder, ignore_errors=True)
