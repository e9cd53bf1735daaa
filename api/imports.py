"""Maintainers' uploads imported in the background (上传导入): what a file is, and the job that imports it.

``detect_type`` decides from the content, never from the name alone: a zip is an XLSX only if it holds
``xl/workbook.xml`` (a DOCX if it holds ``word/document.xml``), and only within bounds on members and on their
declared uncompressed size (no zip bombs; Python's zip reader never inflates a member past its declared size);
``%PDF-`` is a PDF; anything else must decode as text (UTF-8 or GB18030) and is then a CSV sheet — unless its
name claims a binary format, which is refused, since the maintainer meant another file.

A job is one row of ``import_jobs``: queued → running → done (with the report the CLI prints: added, updated,
unchanged, skipped rows) or failed (with every bad row as ``file:row:column: reason`` and nothing written, as
``jiangxin import`` without ``--skip-invalid``). Every state change is a compare-and-set on the row's state.
Each process runs its imports one at a time on one worker thread; a job left queued or running by a killed
process is marked failed when the jobs of the next process start.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, update

from api.jobs import failure_message
from indexer.build import BuildOptions, build_index
from indexer.errors import JiangxinError, NotFound
from indexer.sheets import RowProblem, SheetInvalid, import_rows, parse_sheet
from rag.db import ImportJobRow, sessions, utcnow
from rag.engine import Engine
from rag.leases import LEASE, Lease, abandoned, grant

log = logging.getLogger(__name__)

SHEET_TYPES = ("xlsx", "csv")
DOCUMENT_TYPES = ("pdf", "docx", "markdown", "html", "text")  # knowledge records
SUFFIX = {"xlsx": ".xlsx", "csv": ".csv", "pdf": ".pdf", "docx": ".docx", "markdown": ".md", "html": ".html", "text": ".txt"}
TEXT_DOCUMENTS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
MAX_MEMBERS = 2_000  # an XLSX of a large sheet has a few dozen
MAX_UNCOMPRESSED = 100 * 1024 * 1024  # declared, all members together
TEXT_SAMPLE = 64 * 1024
BINARY_NAMES = (".xlsx", ".xlsm", ".xls", ".docx", ".doc", ".pdf", ".zip")
STALE_AFTER = LEASE  # a job without a live lease and older than this was abandoned
KILLED = "the server stopped before this import finished; upload the file again"
PROGRESS_EVERY = 0.5  # seconds between progress writes while the index builds
MAX_PROBLEMS = 1_000  # row problems kept in a job's report (the count is always exact)


class UnsupportedUpload(JiangxinError):
    """A file whose content is no type we import (415); the message says what it is and what to send."""


class ArchiveTooLarge(JiangxinError):
    """A zip whose members are too many or would inflate past the bound (413)."""


def detect_type(path: Path, filename: str, kind: str | None = None) -> str:
    """``xlsx``, ``docx``, ``pdf``, or for text ``markdown``/``html`` (so named, or HTML by its content), ``text``
    (when ``kind`` is knowledge) or ``csv``, from the file's content; UnsupportedUpload or ArchiveTooLarge."""
    with open(path, "rb") as handle:
        head = handle.read(TEXT_SAMPLE)
    if not head:
        raise UnsupportedUpload(f"{filename}: the file is empty")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _archive_type(path, filename)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise UnsupportedUpload(f"{filename}: an old Office file (.xls/.doc); save it as .xlsx, .docx or .csv")
    if b"\x00" in head or not _decodes(head):
        raise UnsupportedUpload(f"{filename}: not a spreadsheet, a document or text (binary content); "
                                "send an .xlsx or a .csv file (UTF-8 or GBK)")
    if filename.lower().endswith(BINARY_NAMES):
        raise UnsupportedUpload(f"{filename}: named {Path(filename).suffix} but its content is plain text, not that "
                                "format; send the real file, or save the text as .csv")
    sniff = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if sniff.startswith((b"<!doctype html", b"<html")):
        return "html"
    document = TEXT_DOCUMENTS.get(Path(filename).suffix.lower())
    return document or ("text" if kind == "knowledge" else "csv")


def _decodes(head: bytes) -> bool:
    for encoding in ("utf-8", "gb18030"):
        try:
            head.decode(encoding)
            return True
        except UnicodeDecodeError as exc:
            if encoding == "utf-8" and exc.start >= len(head) - 3 and len(head) == TEXT_SAMPLE:
                return True  # the sample cut a character in two
    return False


def _archive_type(path: Path, filename: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsupportedUpload(f"{filename}: a damaged zip archive ({exc}); send an .xlsx or a .csv file") from None
    if len(members) > MAX_MEMBERS:
        raise ArchiveTooLarge(f"{filename}: an archive of {len(members)} members (at most {MAX_MEMBERS})")
    inflated = sum(m.file_size for m in members)
    if inflated > MAX_UNCOMPRESSED:
        raise ArchiveTooLarge(f"{filename}: an archive that would inflate to {inflated} bytes "
                              f"(at most {MAX_UNCOMPRESSED}); refused")
    names = {m.filename for m in members}
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "word/document.xml" in names:
        return "docx"
    raise UnsupportedUpload(f"{filename}: a zip archive that is not an XLSX workbook or a DOCX document; archives "
                            "are not imported — send the .xlsx or .csv file itself")


@dataclass(frozen=True)
class ImportRequest:
    """What to import: the stored upload, its name as sent, its detected type, and the CLI's options."""

    path: Path
    filename: str
    file_type: str
    kind: str
    overrides: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    skip_invalid: bool = False


@dataclass(frozen=True)
class ImportJob:
    """One import job as stored; times are UTC."""

    id: str
    state: str
    kind: str
    filename: str
    file_type: str
    stage: str
    done: int
    total: int
    report: dict[str, Any] | None
    error: str | None
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


def _problem(p: RowProblem, filename: str) -> str:
    return str(RowProblem(filename, p.row, p.column, p.reason))


class _Progress:
    """``build_index``'s progress, written to the job's row at most every ``PROGRESS_EVERY`` seconds."""

    def __init__(self, jobs: ImportJobs, job_id: str) -> None:
        self.jobs, self.job_id = jobs, job_id
        self.name, self.done, self.total, self.written = "", 0, 0, 0.0

    def stage(self, name: str, total: int) -> None:
        self.name, self.total, self.done = name, total, 0
        self._write(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._write(force=False)

    def _write(self, force: bool) -> None:
        now = time.monotonic()
        if force or now - self.written >= PROGRESS_EVERY:
            self.written = now
            self.jobs._cas(self.job_id, "running", stage=f"indexing: {self.name}", done=self.done, total=self.total)


class ImportJobs:
    """Submits, runs and reports import jobs for one server process."""

    def __init__(self, engine: Engine, stale_after: timedelta = STALE_AFTER) -> None:
        self.engine = engine
        self.session = sessions(engine.queue.engine)
        self.stale_after = stale_after
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import")
        self._runs: dict[str, Future[None]] = {}

    def submit(self, request: ImportRequest, by: str) -> ImportJob:
        """A queued job importing ``request`` (its file becomes the job's: it is removed once the job ends)."""
        job_id = "I" + secrets.token_hex(6)
        lease = Lease(self.engine.queue.engine, f"job:{job_id}")  # renewed until the job ends (rag/leases.py)
        with self.session.begin() as session:
            session.execute(insert(ImportJobRow).values(id=job_id, state="queued", kind=request.kind,
                                                        filename=request.filename[:255], file_type=request.file_type,
                                                        stage="queued", done=0, total=0, requested_by=by,
                                                        created_at=utcnow()))
            grant(session, lease.subject, lease.holder)
        lease.start()
        log.info("import job %s queued: %s (%s) as %s by %s", job_id, request.filename, request.file_type, request.kind, by)
        run = self._worker.submit(self._run, job_id, request)
        run.add_done_callback(lambda _: lease.release())
        self._runs[job_id] = run
        run.add_done_callback(lambda _: self._runs.pop(job_id, None))
        return self.get(job_id)

    def get(self, job_id: str) -> ImportJob:
        with self.session.begin() as session:
            row = session.get(ImportJobRow, job_id)
            if row is None:
                raise NotFound(f"import job {job_id} does not exist")
            return ImportJob(row.id, row.state, row.kind, row.filename, row.file_type, row.stage, row.done, row.total,
                             row.report, row.error, row.requested_by, row.created_at, row.started_at, row.finished_at)

    def recover(self) -> list[str]:
        """Jobs queued or running whose lease has run out (``rag/leases.py``: their process died, however long they
        had been running) are marked failed; run at start-up and periodically."""
        now = utcnow()
        stale = and_(ImportJobRow.state.in_(("queued", "running")),
                     abandoned("job:", ImportJobRow.id, ImportJobRow.created_at, self.stale_after))
        with self.session.begin() as session:
            ids = list(session.scalars(update(ImportJobRow).where(stale)
                                       .values(state="failed", error=KILLED, finished_at=now)
                                       .returning(ImportJobRow.id).execution_options(synchronize_session=False)).all())
        for job_id in ids:
            log.warning("import job %s was left unfinished by a stopped server; marked failed", job_id)
        return ids

    def _run(self, job_id: str, request: ImportRequest) -> None:
        try:
            if not self._cas(job_id, "queued", state="running", stage="parsing", started_at=utcnow()):
                log.warning("import job %s was no longer queued when its turn came; not run", job_id)
                return
            try:
                self._import(job_id, request)
            except Exception as exc:  # noqa: BLE001 - a background job must report, not vanish
                if not isinstance(exc, JiangxinError):
                    log.exception("import job %s failed", job_id)
                message = failure_message(exc).replace(str(request.path), request.filename)
                self._cas(job_id, "running", state="failed", error=message, finished_at=utcnow())
        except Exception:  # noqa: BLE001 - the database itself failed; the row is recovered at a later start-up
            log.exception("import job %s could not record its state", job_id)
        finally:
            shutil.rmtree(request.path.parent, ignore_errors=True)

    def _import(self, job_id: str, request: ImportRequest) -> None:
        if request.file_type in DOCUMENT_TYPES:
            self._import_document(job_id, request)
            return
        name = request.filename
        parsed = parse_sheet(request.path, request.kind, request.overrides)
        mapping = {parsed.columns.headers[i]: f for i, f in sorted(parsed.columns.fields.items())}
        report: dict[str, Any] = {"source": parsed.table.source.replace(str(request.path), name), "mapping": mapping,
                                  "ignored": list(parsed.columns.ignored), "rows": len(parsed.table.rows),
                                  "dry_run": request.dry_run, "skip_invalid": request.skip_invalid}
        self._cas(job_id, "running", stage="writing", done=0, total=len(parsed.records), report=report)
        try:
            result = import_rows(parsed, self.engine.config.corpus_dir, request.dry_run, request.skip_invalid)
        except SheetInvalid as exc:
            problems = [_problem(p, name) for p in exc.problems]
            report |= {"problems": problems[:MAX_PROBLEMS], "problem_count": len(problems), "written": False}
            self._cas(job_id, "running", state="failed", report=report, finished_at=utcnow(),
                      error=f"{len(problems)} bad row(s); nothing was imported (fix them, or upload with "
                            "skip_invalid to import the other rows)")
            return
        done = result.outcome
        skipped = [_problem(p, name) for p in result.skipped]
        report |= {"added": len(done.added), "updated": len(done.updated), "unchanged": len(done.unchanged),
                   "skipped": len(skipped), "problems": skipped[:MAX_PROBLEMS], "problem_count": len(skipped),
                   "written": result.written, "ids": {"added": list(done.added), "updated": list(done.updated)},
                   "index_version": None}
        if result.written:
            self._index(job_id, report)
        self._cas(job_id, "running", state="done", stage="done", report=report, finished_at=utcnow())
        log.info("import job %s done: %d added, %d updated, %d unchanged, %d skipped", job_id, len(done.added),
                 len(done.updated), len(done.unchanged), len(skipped))

    def _import_document(self, job_id: str, request: ImportRequest) -> None:
        """A document's passages as knowledge records (all or none), then the index — as ``jiangxin import``."""
        from indexer.corpus_store import CorpusStore
        from indexer.documents import parse_document, to_records

        document = parse_document(request.path, source=Path(request.filename).stem)
        records = to_records(document)
        if not records:
            raise JiangxinError(f"{request.filename}: no text found in the {document.format} document")
        report: dict[str, Any] = {"source": document.source, "format": document.format, "passages": len(records),
                                  "dry_run": request.dry_run}
        self._cas(job_id, "running", stage="writing", done=0, total=len(records), report=report)
        done = CorpusStore(self.engine.config.corpus_dir).upsert_many(records, dry_run=request.dry_run)
        written = not request.dry_run and bool(done.added or done.updated)
        report |= {"added": len(done.added), "updated": len(done.updated), "unchanged": len(done.unchanged),
                   "skipped": 0, "problems": [], "problem_count": 0, "written": written,
                   "ids": {"added": list(done.added), "updated": list(done.updated)}, "index_version": None}
        if written:
            self._index(job_id, report)
        self._cas(job_id, "running", state="done", stage="done", report=report, finished_at=utcnow())

    def _index(self, job_id: str, report: dict[str, Any]) -> None:
        """Make the index match the corpus (a delta) and serve it; ``report`` gets the version."""
        self._cas(job_id, "running", stage="indexing", done=0, total=0, report=report)
        try:
            engine = self.engine
            with engine.build_lock:
                built = build_index(engine.config.corpus_dir, engine.config.index_dir, engine.live.embedder,
                                    engine.cache, BuildOptions(milvus=engine.config.milvus), _Progress(self, job_id))
            engine.live.refresh(wait=True)  # serve the new version before reporting done
        except Exception as exc:
            raise JiangxinError(f"the records were imported, but indexing failed: {failure_message(exc)}") from exc
        report["index_version"] = built.version

    def _cas(self, job_id: str, expected: str, **values: Any) -> bool:
        """``UPDATE import_jobs SET … WHERE id = :id AND state = :expected``; True if it won."""
        with self.session.begin() as session:
            stmt = update(ImportJobRow).where(ImportJobRow.id == job_id, ImportJobRow.state == expected).values(**values)
            return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1
