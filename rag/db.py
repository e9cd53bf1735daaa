"""The durable store behind questions, tickets and feedback (SQLAlchemy; SQLite by default, PostgreSQL too).

SQLite runs in WAL mode with ``synchronous=FULL``: a row is on disk when its transaction commits, so a
ticket acknowledged to an asker survives a killed process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Engine, Float, ForeignKey, Index, Integer, Select, String, Text, create_engine, event, inspect, literal,
                        text, tuple_)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.schema import CreateIndex


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


Position = tuple[datetime, str]  # where a newest-first page ended: its last row's (created_at, id)


def newest_first(query: Select, created_at: Any, row_id: Any, after: Position | None = None) -> Select:
    """``query`` ordered newest first (ties by id, so the order is total), from just after ``after`` when given: keyset
    pagination, which neither skips nor repeats a row when new ones arrive between pages. With an index on
    (…, created_at, id) a page is one index range scan at any depth: the row-value comparison is what both SQLite and
    PostgreSQL turn into one (an OR of the two conditions is not; 20,000 rows deep at 100k questions: 11–13 ms against
    under 2; ``python -m eval.bench_lists``)."""
    if after is not None:
        at, last = after
        query = query.where(tuple_(created_at, row_id) < tuple_(literal(at, created_at.type), literal(last, row_id.type)))
    return query.order_by(created_at.desc(), row_id.desc())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class QuestionRow(Base):
    """Every question asked, with what the engine did about it (questions 提问)."""

    __tablename__ = "questions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    asker: Mapped[str] = mapped_column(String(128), index=True)
    question: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    ticket_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    index_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # newest-first lists (``newest_first``): everyone's for maintainers, one status's for the triage list, one asker's
    __table_args__ = (Index("ix_questions_created", "created_at", "id"), Index("ix_questions_status_created", "status", "created_at", "id"),
                      Index("ix_questions_asker_created", "asker", "created_at", "id"))


class TicketRow(Base):
    """An escalated question waiting for a craftsman (工单): open → claimed → answered → publishing → published,
    or closed. Rows change only by compare-and-set (rag/escalate.py)."""

    __tablename__ = "tickets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    question_key: Mapped[str] = mapped_column(String(64))
    asker: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    context: Mapped[list[Any]] = mapped_column(JSON)
    trades: Mapped[list[Any]] = mapped_column(JSON)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    published_record: Mapped[str | None] = mapped_column(String(128), nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_tickets_dedupe", "asker", "question_key", "created_at"),
                      Index("ix_tickets_asker_created", "asker", "created_at"), Index("ix_tickets_created", "created_at", "id"))


class TicketTradeRow(Base):
    """One trade of a ticket, written with it, so the open pool of a craftsman's trades is filtered in SQL."""

    __tablename__ = "ticket_trades"
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    trade: Mapped[str] = mapped_column(Text, primary_key=True, index=True)


class RouteRow(Base):
    """One craftsman a ticket is routed to, by rank."""

    __tablename__ = "ticket_routes"
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    craftsman_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    name: Mapped[str] = mapped_column(String(128))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)


class FeedbackRow(Base):
    """An asker's verdict on an answer (反馈)."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question_id: Mapped[str] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"), index=True)
    helpful: Mapped[bool]
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LockRow(Base):
    """Rows written only to take SQLite's write lock before reading (serialises a ticket create's checks and insert)."""

    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)


class LeaseRow(Base):
    """A process's lease on work in flight (``rag/leases.py``): ``subject`` is ``job:J…``, ``ticket:T…`` or
    ``visit:V…``; renewed while the work goes on, so recovery can tell abandoned work from slow work."""

    __tablename__ = "leases"
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(index=True)


_ACTIVE_JOB = text("state IN ('queued', 'running')")


class PublishJobRow(Base):
    """A maintainer's request to publish a ticket's answer, run in the background: queued → running → done or
    failed. Rows change only by compare-and-set (api/jobs.py); at most one queued or running job per ticket."""

    __tablename__ = "publish_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    index_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    __table_args__ = (Index("ux_publish_jobs_active_ticket", "ticket_id", unique=True,
                            sqlite_where=_ACTIVE_JOB, postgresql_where=_ACTIVE_JOB),)


class PublishEditRow(Base):
    """The maintainer's last edited, de-identified question and answer for a ticket (what goes into the shared corpus
    instead of the raw text), written with a publish request: the record of the edit. The job publishes the edit sent
    with its own request (api/jobs.py), so an edit of an answer since withdrawn never goes out with a later one."""

    __tablename__ = "publish_edits"
    ticket_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    edited_by: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportJobRow(Base):
    """A maintainer's upload imported in the background (导入任务): queued → running → done or failed. Rows change
    only by compare-and-set (api/imports.py); ``report`` holds what the import did, as the CLI prints it."""

    __tablename__ = "import_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    file_type: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SubjectFlagsRow(Base):
    """How an enterprise marked a question or ticket (``question:Q…``, ``ticket:T…``): confidential (never published,
    never in the open pool, never in analytics text) and/or revealed (craftsmen see its id, not a pseudonym). Written
    in the transaction that creates the subject; a subject without a row is neither."""

    __tablename__ = "subject_flags"
    subject: Mapped[str] = mapped_column(String(48), primary_key=True)
    confidential: Mapped[bool] = mapped_column(default=False)
    reveal: Mapped[bool] = mapped_column(default=False)


class ChallengeRow(Base):
    """A challenge an enterprise posts (发榜): open → in_progress (a craftsman's application picked) → completed
    (confirmed by the enterprise), or cancelled. Rows change only by compare-and-set (rag/programme.py). A
    confidential challenge shows craftsmen its ``summary`` only; the description reaches the picked team alone."""

    __tablename__ = "challenges"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    enterprise: Mapped[str] = mapped_column(String(128), index=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text)
    trade: Mapped[str] = mapped_column(String(64), index=True)
    region: Mapped[str] = mapped_column(String(64), default="")
    deadline: Mapped[str] = mapped_column(String(10))
    reward: Mapped[str] = mapped_column(String(200), default="")
    terms: Mapped[str] = mapped_column(Text, default="")
    invited_only: Mapped[bool] = mapped_column(default=False)
    invited: Mapped[list[Any]] = mapped_column(JSON, default=list)
    confidential: Mapped[bool] = mapped_column(default=False)
    reveal: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), index=True)
    picked: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApplicationRow(Base):
    """A craftsman's application to a challenge (揭榜) with a plan and optional team mates (组队攻关):
    applied → picked | not_picked, or withdrawn."""

    __tablename__ = "challenge_applications"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    challenge_id: Mapped[str] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"), index=True)
    craftsman: Mapped[str] = mapped_column(String(64), index=True)
    plan: Mapped[str] = mapped_column(Text)
    team: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ux_application_once", "challenge_id", "craftsman", unique=True),)


class VisitRow(Base):
    """An on-site service (线下服务): requested → scheduled (by the craftsman it is matched to) → reported (the visit
    report) → confirmed (by the enterprise) → published (a maintainer's de-identified service case), or cancelled."""

    __tablename__ = "visits"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    enterprise: Mapped[str] = mapped_column(String(128), index=True)
    source: Mapped[str] = mapped_column(String(48), default="")  # ticket:T… or challenge:C… or ""
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    trade: Mapped[str] = mapped_column(String(64), index=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(Text)
    preferred_dates: Mapped[list[Any]] = mapped_column(JSON, default=list)
    confidential: Mapped[bool] = mapped_column(default=False)
    reveal: Mapped[bool] = mapped_column(default=False)
    consent: Mapped[bool] = mapped_column(default=False)  # the enterprise agrees to a de-identified service case
    craftsman: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    scheduled_for: Mapped[str | None] = mapped_column(String(10), nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    case_record: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventRow(Base):
    """One step in the life of a question, ticket, challenge or visit (持续跟踪), written in the transaction of the
    change it records; ``detail`` never holds a confidential text."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(48), index=True)  # ticket:T…, challenge:C…, visit:V…, question:Q…
    owner: Mapped[str] = mapped_column(String(128), index=True)  # the enterprise told about it
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookRow(Base):
    """Where an enterprise wants its events posted, and the secret they are signed with (HMAC-SHA256)."""

    __tablename__ = "webhooks"
    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryRow(Base):
    """One event posted to one webhook (the delivery log): pending → sending → delivered, or back to pending with a
    later ``next_at`` after a failure, failed after the last attempt. Claimed by compare-and-set (rag/webhooks.py)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)


_PENDING = text("status = 'pending'")


class InvitationRow(Base):
    """An enterprise's invitation of one craftsman to its ticket (企业点单): pending → accepted (the ticket is claimed
    by them) | declined | expired (no answer in time); a decline or expiry invites the next of ``after``. At most one
    pending invitation per ticket; rows change only by compare-and-set (rag/invitations.py)."""

    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    enterprise: Mapped[str] = mapped_column(String(128), index=True)
    craftsman: Mapped[str] = mapped_column(String(64), index=True)
    after: Mapped[list[Any]] = mapped_column(JSON, default=list)  # who is invited next, in order
    status: Mapped[str] = mapped_column(String(16), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ux_invitation_pending_ticket", "ticket_id", unique=True,
                            sqlite_where=_PENDING, postgresql_where=_PENDING),)


class ApiKeyRow(Base):
    """A hashed API key bound to one principal and one role."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(128))
    revoked: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema created; SQLite gets WAL and full fsync on commit."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    sqlite = url.startswith("sqlite")
    # A ping before each checkout finds a server connection that dropped; a SQLite file's connection cannot drop,
    # and the ping was one more statement on every transaction of every request.
    engine = create_engine(url, pool_pre_ping=not sqlite, connect_args={"timeout": 30} if sqlite else {})
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            dbapi_connection.isolation_level = None  # SQLAlchemy's recipe: let us emit BEGIN ourselves

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN")

    for attempt in range(5):
        try:
            Base.metadata.create_all(engine)
            _add_missing_indexes(engine)
            break
        except (OperationalError, ProgrammingError, IntegrityError):  # concurrent first start: another process may be
            if attempt == 4:                                            # creating the same tables or indexes
                raise
            time.sleep(0.2 * (attempt + 1))
    return engine


def _add_missing_indexes(engine: Engine) -> None:
    """Indexes added to a table after a database was created (``create_all`` makes only missing tables, with theirs)."""
    present = {table: {ix["name"] for ix in inspect(engine).get_indexes(table)} for table in inspect(engine).get_table_names()}
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                if index.name not in present.get(table.name, set()):
                    conn.execute(CreateIndex(index, if_not_exists=True))


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def take_write_lock(session: Session, name: str) -> None:
    """On SQLite, make a write the transaction's first statement: it takes the single write lock (waiting for it)
    before anything is read, so a transaction that reads before it writes cannot fail on a stale snapshot under
    concurrent writers. Elsewhere nothing: PostgreSQL's row locks and compare-and-set updates do that job."""
    if session.get_bind().dialect.name == "sqlite":
        stmt = sqlite_insert(LockRow).values(name=name, taken_at=utcnow())
        session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"taken_at": stmt.excluded.taken_at}))


@contextmanager
def write_transaction(maker: sessionmaker, name: str) -> Iterator[Session]:
    """A transaction that starts with ``take_write_lock(name)``."""
    with maker.begin() as session:
        take_write_lock(session, name)
        yield session
