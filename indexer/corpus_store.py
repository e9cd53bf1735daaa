"""The one writer of a corpus folder: every change to its JSONL files goes through ``CorpusStore``.

Writers in any thread or process (API workers, publish, the CLI) take an OS file lock on ``.corpus.lock``
in the folder, read the files, check the change and replace the kind's file atomically (temporary file,
fsync, rename, fsync of the folder); a writer killed at any moment leaves the old file. Readers never lock:
a file is always wholly the old or the new one. Ids are unique across kinds when a record is written. A line
the writer cannot read refuses the write with ``file:line: reason``; it is never dropped or rewritten.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import Conflict, CorpusError, JiangxinError, NotFound
from indexer.records import FILE_OF_KIND, FILES, KINDS, Record, parse_record, record_to_json
from indexer.store import atomic_write_text, lock_within

log = logging.getLogger(__name__)
LOCK_FILE = ".corpus.lock"
MAX_EXTRA_DEPTH = 8
MAX_EXTRA_BYTES = 16 * 1024


class DuplicateId(Conflict):
    """A record's id is already taken by a record of another kind (ids are unique across kinds)."""

    def __init__(self, record_id: str, kind: str, other_kind: str, file: str, line: int) -> None:
        self.record_id, self.kind, self.other_kind, self.file, self.line = record_id, kind, other_kind, file, line
        super().__init__(f"id {record_id!r} already belongs to a {other_kind} record at {file}:{line}; "
                         f"ids are unique across kinds, so it cannot also be a {kind}")


class CorpusCorrupt(Conflict):
    """A line in a corpus file cannot be read; the file is left as it is until someone fixes that line."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line}: {reason}; fix or remove that line (`jiangxin validate` lists every "
                         "problem), then write again")


class CorpusBusy(JiangxinError):
    """Another writer held the corpus lock for longer than a write may wait."""


@dataclass(frozen=True)
class BatchOutcome:
    """What ``upsert_many`` did (or, with ``dry_run``, would do): record ids per outcome, in the order given."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Line:
    """One line of a JSONL file as it is on disk; ``id`` is None for a blank line."""

    number: int
    text: str
    id: str | None


def check_extra(extra: Any) -> None:
    """Refuse an ``extra`` map nested deeper than ``MAX_EXTRA_DEPTH`` or larger than ``MAX_EXTRA_BYTES`` (422)."""
    stack: list[tuple[Any, int]] = [(extra, 1)]
    while stack:  # iterative: a hostile depth must not exhaust the interpreter's recursion limit
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_EXTRA_DEPTH:
                raise CorpusError("record", 0, "extra", f"nested deeper than {MAX_EXTRA_DEPTH} levels of objects and lists")
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    size = len(_dumps(extra, "extra").encode("utf-8"))
    if size > MAX_EXTRA_BYTES:
        raise CorpusError("record", 0, "extra", f"{size} bytes as JSON; at most {MAX_EXTRA_BYTES} are allowed")


def _dumps(value: Any, field: str) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise CorpusError("record", 0, field, f"cannot be stored as JSON text ({exc})") from None
    return text


class CorpusStore:
    """Reads and writes the records of one corpus folder; the only code that changes its JSONL files."""

    def __init__(self, corpus_dir: Path, lock_timeout: float = 30.0) -> None:
        self.root = Path(corpus_dir)
        self.lock_timeout = lock_timeout

    def upsert(self, record: Record) -> bool:
        """Write ``record`` into its kind's file, replacing the one with its id; True when it is new."""
        check_extra(record.extra)
        text = _dumps(record_to_json(record), "-")
        name = FILE_OF_KIND[record.kind]
        with self._locked():
            for other_name, other_kind in FILES.items():
                if other_name == name:
                    continue
                for line in self._read(other_name):
                    if line.id == record.id:
                        raise DuplicateId(record.id, record.kind, other_kind, other_name, line.number)
            lines = self._read(name)
            replaced = False
            kept = []
            for line in lines:
                if line.id != record.id:
                    kept.append(line.text)
                elif not replaced:  # the record keeps its place; a duplicate further down (already invalid) goes
                    kept.append(text)
                    replaced = True
            if not replaced:
                kept.append(text)
            self._write(name, kept)
        log.info("%s %s %s in %s", "replaced" if replaced else "added", record.kind, record.id, self.root / name)
        return not replaced

    def upsert_many(self, records: list[Record], dry_run: bool = False) -> BatchOutcome:
        """Write ``records`` (all of one kind) into their file in one atomic replace: all land or none.

        A record equal to the stored one keeps its line byte for byte; when nothing changes nothing is written."""
        if not records:
            return BatchOutcome()
        kinds = {record.kind for record in records}
        if len(kinds) != 1:
            raise CorpusError("records", 0, "kind", f"one kind per batch, got {', '.join(sorted(kinds))}")
        kind = records[0].kind
        name = FILE_OF_KIND[kind]
        texts: dict[str, str] = {}
        for record in records:
            if record.id in texts:
                raise CorpusError("records", 0, "id", f"duplicate id {record.id!r} in one batch")
            check_extra(record.extra)
            texts[record.id] = _dumps(record_to_json(record), "-")
        added: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        with self._locked():
            for other_name, other_kind in FILES.items():
                if other_name == name:
                    continue
                for line in self._read(other_name):
                    if line.id in texts:
                        raise DuplicateId(line.id, kind, other_kind, other_name, line.number)
            kept: list[str] = []
            placed: set[str] = set()
            dropped = False
            for line in self._read(name):
                if line.id not in texts:
                    kept.append(line.text)
                elif line.id not in placed:  # a record keeps its place; a duplicate further down (already invalid) goes
                    placed.add(line.id)
                    same = json.loads(line.text) == json.loads(texts[line.id])
                    kept.append(line.text if same else texts[line.id])
                    (unchanged if same else updated).append(line.id)
                else:
                    dropped = True
            for record_id, text in texts.items():
                if record_id not in placed:
                    kept.append(text)
                    added.append(record_id)
            if (added or updated or dropped) and not dry_run:
                self._write(name, kept)
        order = {record_id: n for n, record_id in enumerate(texts)}
        outcome = BatchOutcome(*(tuple(sorted(ids, key=order.__getitem__)) for ids in (added, updated, unchanged)))
        if not dry_run:
            log.info("%s: %d added, %d updated, %d unchanged in %s", kind, len(outcome.added), len(outcome.updated),
                     len(outcome.unchanged), self.root / name)
        return outcome

    def delete(self, kind: str, record_id: str) -> bool:
        """Remove the record ``record_id`` of ``kind``; False when there is none."""
        name = self._file(kind)
        with self._locked():
            lines = self._read(name)
            kept = [line.text for line in lines if line.id != record_id]
            if len(kept) == len(lines):
                return False
            self._write(name, kept)
        log.info("deleted %s %s from %s", kind, record_id, self.root / name)
        return True

    def get(self, kind: str, record_id: str) -> Record:
        """The record ``record_id`` of ``kind`` as stored; ``NotFound`` when absent, ``CorpusCorrupt`` when unreadable."""
        name = self._file(kind)
        unreadable: list[str] = []
        for number, raw in self._raw_lines(name):
            try:
                line = self._parse(name, number, raw)
            except CorpusCorrupt as exc:
                unreadable.append(f"{exc.file}:{exc.line}")
                continue
            if line.id == record_id:
                try:
                    return parse_record(kind, json.loads(line.text), name, number)
                except CorpusError as exc:
                    raise CorpusCorrupt(name, number, f"{exc.field}: {exc.reason}") from None
        note = f" ({', '.join(unreadable)} could not be read)" if unreadable else ""
        raise NotFound(f"no {kind} record {record_id} in the corpus{note}")

    def _file(self, kind: str) -> str:
        if kind not in KINDS:
            raise NotFound(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
        return FILE_OF_KIND[kind]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive right to change this corpus, across threads and processes (released if the holder dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as handle:  # one open file per caller: flock then excludes threads too
            if not lock_within(handle, self.lock_timeout):
                raise CorpusBusy(f"another writer has held the corpus lock for over {self.lock_timeout:.0f}s; try again")
            try:
                for stale in self.root.glob(".*.jsonl.*.tmp"):  # left by a writer killed before its rename
                    stale.unlink(missing_ok=True)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _raw_lines(self, name: str) -> Iterator[tuple[int, bytes]]:
        try:
            data = (self.root / name).read_bytes()
        except FileNotFoundError:
            return
        if not data:
            return
        parts = data.split(b"\n")
        if parts[-1] == b"":
            parts.pop()
        yield from enumerate(parts, start=1)

    def _read(self, name: str) -> list[_Line]:
        """Every line of ``name`` (call under the lock); ``CorpusCorrupt`` at the first one without a readable id."""
        return [self._parse(name, number, raw) for number, raw in self._raw_lines(name)]

    @staticmethod
    def _parse(name: str, number: int, raw: bytes) -> _Line:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusCorrupt(name, number, f"not valid UTF-8 ({exc.reason})") from None
        if not text.strip():
            return _Line(number, text, None)
        try:
            data = json.loads(text)
        except RecursionError:
            raise CorpusCorrupt(name, number, "JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise CorpusCorrupt(name, number, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(data, dict):
            raise CorpusCorrupt(name, number, f"expected a JSON object, got {type(data).__name__}")
        if not isinstance(data.get("id"), str):
            raise CorpusCorrupt(name, number, "the record has no id (a string)")
        return _Line(number, text, data["id"])

    def _write(self, name: str, lines: list[str]) -> None:
        atomic_write_text(self.root / name, "".join(line + "\n" for line in lines))
