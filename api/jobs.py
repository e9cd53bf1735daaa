"""Publishing a ticket's answer in the background (发布任务): the HTTP request records a job and returns at once.

A job is one row of ``publish_jobs``: queued → running → done (with the index version that serves the answer) or
failed (with a message a maintainer can act on). Every state change is a compare-and-set on the row's state.
At most one job per ticket is queued or running at a time — a unique index over the active rows decides between
racing submits, in one process or several — and a second submit gets the job already under way. Each process
runs its jobs one at a time on one worker thread (``Engine.publish`` serialises builds anyway); on a graceful
shutdown the worker finishes what it accepted, and a job left behind by a killed process is marked failed at the
next start-up or the next periodic recovery, once its lease has run out (``rag/leases.py``; the ticket itself is
recovered by ``Engine.recover``).
"""

from __future__ import annotations

import logging
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from api.errors import STATUS
from indexer.errors import Conflict, JiangxinError, NotFound
from rag.db import PublishEditRow, PublishJobRow, sessions, utcnow
from rag.engine import Engine
from rag.leases import LEASE, Lease, abandoned, grant

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed")
STALE_AFTER = LEASE  # a job without a live lease and older than this was abandoned
KILLED = "the server stopped before this publish finished; the ticket is back to answered, publish it again"
MAX_ERROR = 500
_NOT_ANSWERED = {"open": " (a craftsman must claim and answer it first)", "claimed": " (its craftsman has not answered yet)",
                 "publishing": " (it is being published now)", "published": " (it already is)",
                 "closed": " (it was closed instead)"}


@dataclass(frozen=True)
class Job:
    """One publish job as stored; times are UTC."""

    id: str
    ticket_id: str
    state: str
    requested_by: str
    created_at: datetime
    index_version: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def failure_message(exc: BaseException) -> str:
    """What a maintainer reads when a publish fails: our own errors' messages as the API would show them, a
    short generic sentence for everything else (the traceback goes to the log, never into the job)."""
    if isinstance(exc, JiangxinError):
        for cls, status, code in STATUS:
            if isinstance(exc, cls):
                if status >= 500:  # as the API: a server condition's message may name files
                    return f"{code.replace('_', ' ')}: the server could not publish now; try again (the details are in its log)"
                return str(exc)[:MAX_ERROR]
        return str(exc)[:MAX_ERROR]
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return f"publishing failed writing the corpus or the index ({reason}); the details are in the server log"
    return f"publishing failed ({type(exc).__name__}); the details are in the server log"


class PublishJobs:
    """Submits, runs and reports publish jobs for one server process."""

    def __init__(self, engine: Engine, stale_after: timedelta = STALE_AFTER) -> None:
        self.engine = engine
        self.session = sessions(engine.queue.engine)
        self.stale_after = stale_after
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._runs: dict[str, Future[None]] = {}

    def submit(self, ticket_id: str, by: str, question: str | None = None, answer: str | None = None) -> Job:
        """A queued job publishing ``ticket_id``, or the job already queued or running for it.

        NotFound if there is no such ticket; Conflict unless it is answered. The check is for a clear answer
        now: ``Engine.publish`` compares and sets the ticket's state again when the job runs."""
        for _ in range(3):
            active = self._active(ticket_id)
            if active is not None:
                return active
            ticket = self.engine.queue.get(ticket_id)
            if ticket.status != "answered":
                raise Conflict(f"ticket {ticket_id} is {ticket.status}; only an answered ticket can be published"
                               + _NOT_ANSWERED.get(ticket.status, ""))
            if ticket.confidential:
                raise Conflict(f"ticket {ticket_id} is confidential: it is never published")
            job_id = "J" + secrets.token_hex(6)
            try:
                lease = Lease(self.engine.queue.engine, f"job:{job_id}")  # renewed until the job ends (rag/leases.py)
                with self.session.begin() as session:  # the job first: the write that decides the race comes first
                    session.execute(insert(PublishJobRow).values(id=job_id, ticket_id=ticket_id, state="queued",
                                                                 requested_by=by, created_at=utcnow()))
                    grant(session, lease.subject, lease.holder)
                    if question is not None or answer is not None:  # the record of the maintainer's edit (the job gets it below)
                        session.merge(PublishEditRow(ticket_id=ticket_id, question=question or ticket.question,
                                                     answer=answer or ticket.answer or "", edited_by=by, at=utcnow()))
            except IntegrityError:
                continue  # another submit won the race: its job is the answer (or it finished meanwhile: look again)
            log.info("publish job %s queued for ticket %s by %s", job_id, ticket_id, by)
            lease.start()
            run = self._worker.submit(self._run, job_id, ticket_id, (ticket.answered_by, ticket.answer), (question, answer))
            run.add_done_callback(lambda _: lease.release())
            self._runs[job_id] = run
            run.add_done_callback(lambda _: self._runs.pop(job_id, None))
            return self.get(job_id)
        raise Conflict(f"ticket {ticket_id} is being published by other requests; try again")

    def get(self, job_id: str) -> Job:
        with self.session.begin() as session:
            row = session.get(PublishJobRow, job_id)
            if row is None:
                raise NotFound(f"publish job {job_id} does not exist")
            return _job(row)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once finished, or as it is when ``timeout`` seconds have passed (for tests)."""
        run = self._runs.get(job_id)
        if run is not None:
            try:
                run.result(timeout)
            except FutureTimeout:
                pass
            return self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        while not job.finished and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)  # run by another process: only the row tells
            job = self.get(job_id)
        return job

    def recover(self) -> list[str]:
        """Jobs queued or running whose lease has run out (``rag/leases.py``: their process died) are marked failed,
        so that the ticket can be published again; run at start-up and periodically. Returns their ids."""
        now = utcnow()
        stale = and_(PublishJobRow.state.in_(ACTIVE), abandoned("job:", PublishJobRow.id, PublishJobRow.created_at, self.stale_after))
        with self.session.begin() as session:  # one UPDATE … RETURNING: no read before the write
            ids = list(session.scalars(update(PublishJobRow).where(stale)
                                       .values(state="failed", error=KILLED, finished_at=now)
                                       .returning(PublishJobRow.id).execution_options(synchronize_session=False)).all())
        for job_id in ids:
            log.warning("publish job %s was left unfinished by a stopped server; marked failed", job_id)
        return ids

    def _active(self, ticket_id: str) -> Job | None:
        with self.session.begin() as session:
            row = session.scalars(select(PublishJobRow).where(PublishJobRow.ticket_id == ticket_id,
                                                              PublishJobRow.state.in_(ACTIVE))).first()
            return _job(row) if row is not None else None

    def _run(self, job_id: str, ticket_id: str, answer_seen: tuple[str | None, str | None],
             edit: tuple[str | None, str | None]) -> None:
        """Publish the answer the job was requested for (``answer_seen``; one given since fails the job), as edited
        with this request (``edit``: question, answer; None for the raw text) — never with an earlier request's edit."""
        try:
            if not self._cas(job_id, "queued", state="running", started_at=utcnow()):
                log.warning("publish job %s was no longer queued when its turn came; not run", job_id)
                return
            try:
                _, report = self.engine.publish(ticket_id, *edit, answer_seen)
            except Exception as exc:  # noqa: BLE001 - a background job must report, not vanish
                log.exception("publish job %s for ticket %s failed", job_id, ticket_id)
                self._cas(job_id, "running", state="failed", error=failure_message(exc), finished_at=utcnow())
                return
            self._cas(job_id, "running", state="done", index_version=report.version, finished_at=utcnow())
            log.info("publish job %s done: ticket %s serves in index version %s", job_id, ticket_id, report.version)
        except Exception:  # noqa: BLE001 - the database itself failed; the row is recovered at the next start-up
            log.exception("publish job %s could not record its state", job_id)

    def _cas(self, job_id: str, expected: str, **values: Any) -> bool:
        """``UPDATE publish_jobs SET … WHERE id = :id AND state = :expected``; True if it won."""
        with self.session.begin() as session:
            stmt = update(PublishJobRow).where(PublishJobRow.id == job_id, PublishJobRow.state == expected).values(**values)
            return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1


def _job(row: PublishJobRow) -> Job:
    return Job(row.id, row.ticket_id, row.state, row.requested_by, row.created_at, row.index_version, row.error,
               row.started_at, row.finished_at)
