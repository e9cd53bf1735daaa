"""Escalation to master craftsmen (劳模工匠): routing by expertise and load, and the durable ticket queue.

Ticket life cycle: open → claimed → answered → published, or closed with a reason from any state
before published. A claimed ticket can be released back to open. The same question from the same
asker within ``dedupe_window`` returns the existing ticket instead of creating another.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from indexer.errors import Conflict, Forbidden, NotFound
from indexer.records import Craftsman
from indexer.text import normalise
from rag.db import LockRow, RouteRow, TicketRow, sessions, utcnow

STATUSES = ("open", "claimed", "answered", "published", "closed")


@dataclass(frozen=True)
class Route:
    craftsman_id: str
    name: str
    score: float


@dataclass
class Ticket:
    id: str
    question: str
    asker: str
    status: str
    confidence: float
    context: list[dict[str, Any]]
    trades: list[str]
    routes: list[Route]
    claimed_by: str | None = None
    answer: str | None = None
    answered_by: str | None = None
    published_record: str | None = None
    closed_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "question": self.question, "asker": self.asker, "status": self.status,
            "confidence": self.confidence, "context": self.context, "trades": self.trades,
            "routed_to": [{"id": r.craftsman_id, "name": r.name, "score": round(r.score, 4)} for r in self.routes],
            "claimed_by": self.claimed_by, "answer": self.answer, "answered_by": self.answered_by,
            "published_record": self.published_record, "closed_reason": self.closed_reason,
            "created_at": self.created_at.isoformat() + "Z" if self.created_at else None,
            "updated_at": self.updated_at.isoformat() + "Z" if self.updated_at else None,
        }


@dataclass(frozen=True)
class CraftsmanProfile:
    record: Craftsman
    vector: np.ndarray


@dataclass(frozen=True)
class RoutingWeights:
    """score = cosine(question, profile) + trade·[shares a trade] + skill·(share of skills named) − load·open tickets."""

    trade: float = 0.15
    skill: float = 0.1
    load: float = 0.03
    top: int = 3


def route(question: str, question_vector: np.ndarray, trades: list[str], craftsmen: list[CraftsmanProfile],
          open_load: dict[str, int], weights: RoutingWeights = RoutingWeights()) -> list[Route]:
    """The craftsmen best placed to answer: those of the question's trades (everyone if none fits), by
    expertise match, balanced by how many open tickets each holds."""
    text = normalise(question)
    scored = []
    experts = [p for p in craftsmen if set(p.record.trades) & set(trades)]
    for profile in experts or craftsmen:
        record = profile.record
        similarity = float(np.dot(question_vector, profile.vector))
        shares_trade = any(t in trades for t in record.trades)
        skills = sum(1 for s in record.skills if any(part and part in text for part in _skill_parts(s)))
        score = (similarity + weights.trade * shares_trade + weights.skill * skills / max(len(record.skills), 1)
                 - weights.load * open_load.get(record.id, 0))
        scored.append(Route(record.id, record.name, score))
    scored.sort(key=lambda r: (-r.score, r.craftsman_id))
    return scored[: weights.top]


def _skill_parts(skill: str) -> list[str]:
    skill = normalise(skill)
    return [skill] + ([skill[:4]] if len(skill) > 4 else [])


def question_key(question: str) -> str:
    return hashlib.sha256(normalise(question).encode("utf-8")).hexdigest()


class TicketQueue:
    """Tickets in the database; every method is one transaction."""

    def __init__(self, engine: Engine, dedupe_window: timedelta = timedelta(minutes=10)) -> None:
        self.engine = engine
        self.session = sessions(engine)
        self.dedupe_window = dedupe_window

    def _lock_for_create(self, session: Session, key: str) -> None:
        """Serialise concurrent creates of the same question so the duplicate check cannot race."""
        if self.engine.dialect.name == "postgresql":
            lock = int(key[:15], 16)  # 60 bits: fits a bigint
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
        else:
            self._write_lock(session)

    def _write_lock(self, session: Session) -> None:
        """SQLite: make a write the transaction's first statement, so it takes the single write lock (waiting
        for it) before reading; a read-then-write transaction could otherwise fail on a stale snapshot."""
        if self.engine.dialect.name == "sqlite":
            stmt = sqlite_insert(LockRow).values(name="tickets", taken_at=utcnow())
            session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"taken_at": stmt.excluded.taken_at}))

    def create(self, question: str, asker: str, confidence: float, context: list[dict[str, Any]],
               trades: list[str], routes: list[Route]) -> tuple[Ticket, bool]:
        """A new open ticket, or the asker's recent ticket for the same question; (ticket, created)."""
        key = question_key(question)
        with self.session.begin() as session:
            self._lock_for_create(session, key)
            since = utcnow() - self.dedupe_window
            existing = session.scalars(
                select(TicketRow).where(TicketRow.asker == asker, TicketRow.question_key == key,
                                        TicketRow.created_at >= since, TicketRow.status != "closed")
                .order_by(TicketRow.created_at.desc()).limit(1)).first()
            if existing is not None:
                return self._ticket(session, existing), False
            row = TicketRow(id="T" + secrets.token_hex(6), question=question, question_key=key, asker=asker, status="open",
                            confidence=confidence, context=context, trades=trades)
            session.add(row)
            session.flush()
            for rank, r in enumerate(routes, start=1):
                session.add(RouteRow(ticket_id=row.id, craftsman_id=r.craftsman_id, name=r.name, rank=rank, score=r.score))
            session.flush()
            return self._ticket(session, row, routes), True

    def get(self, ticket_id: str) -> Ticket:
        with self.session.begin() as session:
            return self._ticket(session, self._row(session, ticket_id))

    def list(self, status: str | None = None, craftsman: str | None = None, trades: list[str] | None = None,
             asker: str | None = None, limit: int = 100) -> list[Ticket]:
        """Tickets by status; for a craftsman: those routed to them, or open for one of ``trades``."""
        with self.session.begin() as session:
            query = select(TicketRow)
            if status:
                query = query.where(TicketRow.status == status)
            if asker:
                query = query.where(TicketRow.asker == asker)
            if craftsman:
                routed = select(RouteRow.ticket_id).where(RouteRow.craftsman_id == craftsman)
                visible = [TicketRow.id.in_(routed), TicketRow.claimed_by == craftsman, TicketRow.answered_by == craftsman]
                rows = session.scalars(query.where(or_(*visible)).order_by(TicketRow.created_at.desc()).limit(limit)).all()
                if trades:
                    pool = session.scalars(query.where(TicketRow.status == "open").order_by(TicketRow.created_at.desc()).limit(limit)).all()
                    ids = {r.id for r in rows}
                    rows = list(rows) + [r for r in pool if r.id not in ids and set(r.trades or []) & set(trades)]
            else:
                rows = session.scalars(query.order_by(TicketRow.created_at.desc()).limit(limit)).all()
            return [self._ticket(session, r) for r in rows]

    def open_load(self) -> dict[str, int]:
        """Open or claimed tickets per routed craftsman (for balancing new routes)."""
        with self.session.begin() as session:
            rows = session.execute(
                select(RouteRow.craftsman_id, func.count()).join(TicketRow, TicketRow.id == RouteRow.ticket_id)
                .where(TicketRow.status.in_(("open", "claimed"))).group_by(RouteRow.craftsman_id)).all()
            return {craftsman: count for craftsman, count in rows}

    def can_see(self, ticket: Ticket, craftsman: str, trades: list[str]) -> bool:
        return (any(r.craftsman_id == craftsman for r in ticket.routes) or craftsman in (ticket.claimed_by, ticket.answered_by)
                or (ticket.status == "open" and bool(set(ticket.trades) & set(trades))))

    def claim(self, ticket_id: str, craftsman: str, trades: list[str] | None = None) -> Ticket:
        with self.session.begin() as session:
            self._write_lock(session)
            row = self._row(session, ticket_id)
            ticket = self._ticket(session, row)
            if not self.can_see(ticket, craftsman, trades or []):
                raise Forbidden(f"ticket {ticket_id} is not routed to {craftsman} nor open for their trades")
            if row.status == "claimed" and row.claimed_by == craftsman:
                return ticket
            if row.status != "open":
                raise Conflict(f"ticket {ticket_id} is {row.status}{' by ' + row.claimed_by if row.claimed_by else ''}; only an open ticket can be claimed")
            row.status, row.claimed_by, row.updated_at = "claimed", craftsman, utcnow()
            return self._ticket(session, row)

    def release(self, ticket_id: str, craftsman: str) -> Ticket:
        with self.session.begin() as session:
            self._write_lock(session)
            row = self._row(session, ticket_id)
            if row.status != "claimed" or row.claimed_by != craftsman:
                raise Conflict(f"ticket {ticket_id} is not claimed by {craftsman}")
            row.status, row.claimed_by, row.updated_at = "open", None, utcnow()
            return self._ticket(session, row)

    def answer(self, ticket_id: str, craftsman: str, answer: str) -> Ticket:
        answer = answer.strip()
        if not answer:
            raise Conflict("an answer cannot be empty")
        with self.session.begin() as session:
            self._write_lock(session)
            row = self._row(session, ticket_id)
            if row.status != "claimed" or row.claimed_by != craftsman:
                raise Conflict(f"ticket {ticket_id} is {row.status}; claim it before answering")
            row.status, row.answer, row.answered_by, row.updated_at = "answered", answer, craftsman, utcnow()
            return self._ticket(session, row)

    def mark_published(self, ticket_id: str, record_id: str) -> Ticket:
        with self.session.begin() as session:
            self._write_lock(session)
            row = self._row(session, ticket_id)
            if row.status != "answered":
                raise Conflict(f"ticket {ticket_id} is {row.status}; only an answered ticket can be published")
            row.status, row.published_record, row.updated_at = "published", record_id, utcnow()
            return self._ticket(session, row)

    def close(self, ticket_id: str, reason: str) -> Ticket:
        with self.session.begin() as session:
            self._write_lock(session)
            row = self._row(session, ticket_id)
            if row.status in ("published", "closed"):
                raise Conflict(f"ticket {ticket_id} is already {row.status}")
            row.status, row.closed_reason, row.updated_at = "closed", reason.strip() or "closed", utcnow()
            return self._ticket(session, row)

    def _row(self, session: Session, ticket_id: str) -> TicketRow:
        row = session.get(TicketRow, ticket_id)
        if row is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return row

    def _ticket(self, session: Session, row: TicketRow, routes: list[Route] | None = None) -> Ticket:
        if routes is None:
            found = session.scalars(select(RouteRow).where(RouteRow.ticket_id == row.id).order_by(RouteRow.rank)).all()
            routes = [Route(r.craftsman_id, r.name, r.score) for r in found]
        return Ticket(row.id, row.question, row.asker, row.status, row.confidence, list(row.context or []),
                      list(row.trades or []), routes, row.claimed_by, row.answer, row.answered_by, row.published_record,
                      row.closed_reason, row.created_at, row.updated_at)
