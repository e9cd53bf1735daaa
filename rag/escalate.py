"""Escalation to master craftsmen (劳模工匠): routing by expertise and load, and the durable ticket queue.

Ticket life cycle: open → claimed → answered → publishing → published, or closed with a reason from open,
claimed or answered (never while publishing). A claimed ticket can be released back to open; a failed publish
goes back to answered. Every transition is one compare-and-set: an UPDATE that names the state it expects,
whose row count decides who won, so two racers cannot both succeed on SQLite or on PostgreSQL. The same
question from the same asker within ``dedupe_window`` returns the existing ticket instead of creating another.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, case, delete, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from indexer.errors import Conflict, Forbidden, NotFound, QuotaExceeded
from indexer.ports import CraftsmanProfile
from indexer.text import normalise
from rag.db import (Position, PublishEditRow, RouteRow, SubjectFlagsRow, TicketRow, TicketTradeRow, newest_first, sessions,
                    take_write_lock, utcnow)
from rag.leases import LEASE, abandoned
from rag.timeline import record

STATUSES = ("open", "claimed", "answered", "publishing", "published", "closed")
CLOSABLE = ("open", "claimed", "answered")
DAY = timedelta(hours=24)
_ADVISORY_NAMESPACE = 0x4A58  # first key of PostgreSQL advisory locks taken by the ticket queue ("JX")
_JOINED: ContextVar[tuple[TicketQueue, Session] | None] = ContextVar("jiangxin_ticket_transaction", default=None)


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
    confidential: bool = False  # never published, not in the open pool: only routed, invited or claiming craftsmen see it
    reveal: bool = False  # craftsmen see the asker's id instead of a pseudonym

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "question": self.question, "asker": self.asker, "status": self.status,
            "confidence": self.confidence, "context": self.context, "trades": self.trades,
            "routed_to": [{"id": r.craftsman_id, "name": r.name, "score": round(r.score, 4)} for r in self.routes],
            "claimed_by": self.claimed_by, "answer": self.answer, "answered_by": self.answered_by,
            "published_record": self.published_record, "closed_reason": self.closed_reason,
            "created_at": self.created_at.isoformat() + "Z" if self.created_at else None,
            "updated_at": self.updated_at.isoformat() + "Z" if self.updated_at else None,
            "confidential": self.confidential, "reveal": self.reveal,
        }


@dataclass(frozen=True)
class RoutingWeights:
    """score = cosine(question, profile) + trade·[shares a trade] + skill·(share of skills named) − load·open tickets
    (each asker's share capped: ``TicketQueue.open_load``)."""

    trade: float = 0.15
    skill: float = 0.1
    load: float = 0.03
    top: int = 3


def candidates(trades: list[str], craftsmen: list[CraftsmanProfile]) -> list[CraftsmanProfile]:
    """Whom a question of ``trades`` may be routed to: the craftsmen of those trades, everyone if none fits."""
    return [p for p in craftsmen if set(p.record.trades) & set(trades)] or craftsmen


def route(question: str, question_vector: np.ndarray, trades: list[str], craftsmen: list[CraftsmanProfile],
          open_load: dict[str, int], weights: RoutingWeights = RoutingWeights()) -> list[Route]:
    """The craftsmen best placed to answer: those of the question's trades (everyone if none fits), by
    expertise match, balanced by how many open tickets each holds. ``trades`` are ordered, most likely first:
    a craftsman of the main trade gets the whole trade bonus, one of a secondary trade half of it."""
    text = normalise(question)
    scored = []
    for profile in candidates(trades, craftsmen):
        record = profile.record
        similarity = float(np.dot(question_vector, profile.vector))
        shares_trade = 1.0 if trades and trades[0] in record.trades else 0.5 * any(t in trades for t in record.trades)
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
    """Tickets in the database; every method is one transaction, every state change one compare-and-set.

    ``quota_per_day`` caps the tickets one asker (an enterprise) may open in any 24 hours (None: no cap);
    ``load_cap_per_asker`` caps what one asker's tickets add to a craftsman's routing load (see ``open_load``).
    """

    def __init__(self, engine: Engine, dedupe_window: timedelta = timedelta(minutes=10), quota_per_day: int | None = 50,
                 load_cap_per_asker: int = 2) -> None:
        if quota_per_day is not None and quota_per_day < 1:
            raise ValueError(f"quota_per_day must be at least 1 (or None for no quota), not {quota_per_day}")
        self.engine = engine
        self.session = sessions(engine)
        self.dedupe_window = dedupe_window
        self.quota_per_day = quota_per_day
        self.load_cap_per_asker = load_cap_per_asker
        self._backfill_trades()

    def _backfill_trades(self) -> None:
        """Tickets from before the ``ticket_trades`` table get their rows, so the open pool (filtered in SQL)
        still shows them; idempotent, and a no-op once every ticket has its rows."""
        with self.session.begin() as session:
            has_rows = select(TicketTradeRow.ticket_id).where(TicketTradeRow.ticket_id == TicketRow.id).exists()
            missing = session.execute(select(TicketRow.id, TicketRow.trades).where(~has_rows)).all()
            rows = [TicketTradeRow(ticket_id=tid, trade=t) for tid, trades in missing for t in dict.fromkeys(trades or []) if t]
            if rows:
                session.add_all(rows)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction that ``create`` joins when called inside this block (same thread or task), so a caller
        commits its own rows and the ticket together, or neither (``Engine.ask``: the question and its ticket)."""
        with self.session.begin() as session:
            token = _JOINED.set((self, session))
            try:
                yield session
            finally:
                _JOINED.reset(token)

    def _lock_asker(self, session: Session, asker: str) -> None:
        """Serialise one asker's creates, so the duplicate and quota checks and the insert cannot interleave.

        PostgreSQL: an advisory lock on the asker until the transaction ends. SQLite: a write as the transaction's
        first statement takes the single write lock (waiting for it) before anything is read; a read-then-write
        transaction could otherwise fail on a stale snapshot."""
        if self.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(asker.encode("utf-8")).digest()[:4], "big", signed=True)
            session.execute(text("SELECT pg_advisory_xact_lock(CAST(:ns AS integer), CAST(:key AS integer))"), {"ns": _ADVISORY_NAMESPACE, "key": key})
        else:
            take_write_lock(session, "tickets")

    def create(self, question: str, asker: str, confidence: float, context: list[dict[str, Any]],
               trades: list[str], routes: list[Route], session: Session | None = None, confidential: bool = False,
               reveal: bool = False) -> tuple[Ticket, bool]:
        """A new open ticket, or the asker's recent ticket for the same question; (ticket, created). Asked again as
        confidential, a recent ticket not yet answered becomes confidential (never the other way: a secret stays one).

        Raises QuotaExceeded when the asker already opened ``quota_per_day`` tickets in the last 24 hours. With
        ``session`` (or inside ``transaction()``) the ticket is written in the caller's transaction and commits
        with it; that transaction must not have read anything before (SQLite takes its write lock here)."""
        joined = _JOINED.get()
        if session is None and joined is not None and joined[0] is self:
            session = joined[1]
        flags = (confidential, reveal)
        if session is not None:
            return self._create(session, question, asker, confidence, context, trades, routes, flags)
        with self.session.begin() as own:
            return self._create(own, question, asker, confidence, context, trades, routes, flags)

    def _create(self, session: Session, question: str, asker: str, confidence: float, context: list[dict[str, Any]],
                trades: list[str], routes: list[Route], flags: tuple[bool, bool] = (False, False)) -> tuple[Ticket, bool]:
        confidential, reveal = flags
        key = question_key(question)
        self._lock_asker(session, asker)
        now = utcnow()
        existing = session.scalars(
            select(TicketRow).where(TicketRow.asker == asker, TicketRow.question_key == key,
                                    TicketRow.created_at >= now - self.dedupe_window, TicketRow.status != "closed")
            .order_by(TicketRow.created_at.desc()).limit(1)).first()
        if existing is not None:
            if confidential:  # the row locked until commit (PostgreSQL), so no answer or publish slips in between
                status = session.scalars(select(TicketRow.status).where(TicketRow.id == existing.id).with_for_update()).one()
                if status in ("open", "claimed"):
                    self._make_confidential(session, existing.id, asker)
            return self._ticket(session, existing), False
        if self.quota_per_day is not None:
            opened, oldest = session.execute(
                select(func.count(), func.min(TicketRow.created_at))
                .where(TicketRow.asker == asker, TicketRow.created_at > now - DAY)).one()
            if opened >= self.quota_per_day:
                retry_after = max(1, math.ceil((oldest + DAY - now).total_seconds()))
                raise QuotaExceeded(f"{asker} has opened {opened} tickets in the last 24 hours, the daily quota; "
                                    f"the next can be opened in {retry_after} s", retry_after)
        values = {"id": "T" + secrets.token_hex(6), "question": question, "question_key": key, "asker": asker,
                  "status": "open", "confidence": confidence, "context": context, "trades": trades, "created_at": now,
                  "updated_at": now}
        # plain INSERT statements (an escalated ask writes these; the ORM's unit of work costs more), the ticket first
        session.execute(insert(TicketRow).values(**values))
        row = TicketRow(**values)  # not added: what ``_ticket`` reads
        trade_rows = [{"ticket_id": row.id, "trade": t} for t in dict.fromkeys(trades) if t]
        if trade_rows:
            session.execute(insert(TicketTradeRow), trade_rows)
        if routes:
            session.execute(insert(RouteRow), [{"ticket_id": row.id, "craftsman_id": r.craftsman_id, "name": r.name,
                                                "rank": rank, "score": r.score} for rank, r in enumerate(routes, start=1)])
        if confidential or reveal:
            session.execute(insert(SubjectFlagsRow).values(subject=f"ticket:{row.id}", confidential=confidential, reveal=reveal))
        record(session, f"ticket:{row.id}", asker, "created", asker, {"trades": list(trades)})
        if routes:
            record(session, f"ticket:{row.id}", asker, "routed", "jiangxin", {"craftsmen": [r.craftsman_id for r in routes]})
        return self._ticket(session, row, routes, flags), True

    @staticmethod
    def _make_confidential(session: Session, ticket_id: str, asker: str) -> None:
        """Mark a ticket confidential (in the asker's locked transaction, so two asks cannot both insert the flags);
        a no-op when it already is."""
        subject = f"ticket:{ticket_id}"
        flags = session.get(SubjectFlagsRow, subject)
        if flags is None:
            session.execute(insert(SubjectFlagsRow).values(subject=subject, confidential=True, reveal=False))
        elif not flags.confidential:
            session.execute(update(SubjectFlagsRow).where(SubjectFlagsRow.subject == subject,
                                                          SubjectFlagsRow.confidential.is_(False)).values(confidential=True))
        else:
            return
        record(session, subject, asker, "made_confidential", asker, {})

    def get(self, ticket_id: str) -> Ticket:
        with self.session.begin() as session:
            return self._ticket(session, self._row(session, ticket_id))

    def list(self, status: str | None = None, craftsman: str | None = None, trades: list[str] | None = None,
             asker: str | None = None, limit: int = 100, after: Position | None = None) -> list[Ticket]:
        """At most ``limit`` tickets, newest first from just after ``after`` (the last one of the previous page), by
        status and asker; for a craftsman, those routed to, claimed or answered by them, or open in one of ``trades``
        — one query, the trade filter in SQL."""
        query = select(TicketRow)
        if status:
            query = query.where(TicketRow.status == status)
        if asker:
            query = query.where(TicketRow.asker == asker)
        if craftsman:
            visible = [TicketRow.id.in_(select(RouteRow.ticket_id).where(RouteRow.craftsman_id == craftsman)),
                       TicketRow.claimed_by == craftsman, TicketRow.answered_by == craftsman]
            if trades:  # the open pool of their trades, confidential tickets excepted
                in_trades = select(TicketTradeRow.ticket_id).where(TicketTradeRow.trade.in_(list(trades)))
                secret = select(SubjectFlagsRow.subject).where(SubjectFlagsRow.confidential.is_(True))
                visible.append(and_(TicketRow.status == "open", TicketRow.id.in_(in_trades),
                                    (literal("ticket:") + TicketRow.id).not_in(secret)))
            query = query.where(or_(*visible))
        with self.session.begin() as session:
            rows = session.scalars(newest_first(query, TicketRow.created_at, TicketRow.id, after).limit(limit)).all()
            routes = self._routes(session, [r.id for r in rows])
            flags = self._flags(session, [r.id for r in rows])
            return [self._ticket(session, r, routes.get(r.id, []), flags.get(r.id)) for r in rows]

    def open_load(self, craftsmen: Collection[str] | None = None) -> dict[str, int]:
        """Open or claimed tickets per routed craftsman (of ``craftsmen`` only, when given: the ones a question may
        be routed to), for balancing new routes, counting at most ``load_cap_per_asker`` tickets from any one asker:
        one tenant's flood adds at most the cap to a craftsman's load, so it cannot push other tenants' questions
        away from the best-placed craftsmen."""
        per_asker = (select(RouteRow.craftsman_id, TicketRow.asker, func.count().label("n"))
                     .join(TicketRow, TicketRow.id == RouteRow.ticket_id)
                     .where(TicketRow.status.in_(("open", "claimed"))))
        if craftsmen is not None:
            per_asker = per_asker.where(RouteRow.craftsman_id.in_(list(craftsmen)))
        per_asker = per_asker.group_by(RouteRow.craftsman_id, TicketRow.asker).subquery()
        capped = case((per_asker.c.n > self.load_cap_per_asker, self.load_cap_per_asker), else_=per_asker.c.n)
        with self.session.begin() as session:
            rows = session.execute(select(per_asker.c.craftsman_id, func.sum(capped)).group_by(per_asker.c.craftsman_id)).all()
            return {craftsman: int(load) for craftsman, load in rows}

    def can_see(self, ticket: Ticket, craftsman: str, trades: list[str]) -> bool:
        return (any(r.craftsman_id == craftsman for r in ticket.routes) or craftsman in (ticket.claimed_by, ticket.answered_by)
                or (ticket.status == "open" and not ticket.confidential and bool(set(ticket.trades) & set(trades))))

    def claim(self, ticket_id: str, craftsman: str, trades: list[str] | None = None) -> Ticket:
        """open → claimed by ``craftsman``, if it is routed to them or in one of their ``trades``."""
        trades = list(trades or [])
        # Routes and trades never change once written, so who may claim is read before the compare-and-set; whether
        # the ticket is confidential can (the asker re-asks it so), so ``claim_within`` checks it again after winning.
        ticket = self.get(ticket_id)
        if not self.can_see(ticket, craftsman, trades):
            raise Forbidden(f"ticket {ticket_id} is {_state(ticket)}; it is not routed to {craftsman} nor open for their trades")
        with self.session.begin() as session:
            return self.claim_within(session, ticket_id, craftsman, trades)

    def claim_within(self, session: Session, ticket_id: str, craftsman: str, trades: Sequence[str] = ()) -> Ticket:
        """``claim``'s compare-and-set in the caller's transaction (an invitation accepted and its ticket claimed commit
        together); Conflict, with nothing written, when the ticket is no longer open; Forbidden when ``craftsman`` may
        not claim it (raised after the update: the caller's transaction must roll back)."""
        trades = list(trades)
        if self._cas(session, ticket_id, ("open",), status="claimed", claimed_by=craftsman):
            now = self._ticket(session, self._row(session, ticket_id))
            routed = any(r.craftsman_id == craftsman for r in now.routes) or craftsman == now.answered_by
            if not routed and (now.confidential or not set(now.trades) & set(trades)):
                raise Forbidden(f"ticket {ticket_id} is confidential or outside {craftsman}'s trades: only the craftsmen "
                                f"it is routed to may claim it")
            record(session, f"ticket:{ticket_id}", now.asker, "claimed", craftsman)
            return now
        now = self._ticket(session, self._row(session, ticket_id))
        if now.status == "claimed" and now.claimed_by == craftsman:
            return now
        if not self.can_see(now, craftsman, trades):
            raise Forbidden(f"ticket {ticket_id} is {_state(now)}; it is not routed to {craftsman} nor open for their trades")
        raise Conflict(f"ticket {ticket_id} is {_state(now)}; only an open ticket can be claimed")

    def release(self, ticket_id: str, craftsman: str) -> Ticket:
        """claimed by ``craftsman`` → open."""
        return self._transition(ticket_id, ("claimed",), craftsman, f"{craftsman} can release only a ticket they claimed",
                                status="open", claimed_by=None, event="released")

    def answer(self, ticket_id: str, craftsman: str, answer: str) -> Ticket:
        """claimed by ``craftsman`` → answered, with their answer."""
        answer = answer.strip()
        if not answer:
            raise Conflict("an answer cannot be empty")
        return self._transition(ticket_id, ("claimed",), craftsman, f"{craftsman} must claim it before answering",
                                status="answered", answer=answer, answered_by=craftsman, event="answered")

    def outcome(self, ticket_id: str, asker: str, solved: bool, comment: str = "") -> Ticket:
        """The asker's verdict on the craftsman's answer (持续跟踪): solved is recorded; not solved reopens an answered
        ticket (answered → open, the answer kept on the timeline) so a craftsman takes it up again."""
        ticket = self.get(ticket_id)
        if ticket.asker != asker:
            raise NotFound(f"ticket {ticket_id} does not exist")
        if solved or ticket.status != "answered":
            if ticket.status not in ("answered", "publishing", "published"):
                raise Conflict(f"ticket {ticket_id} is {_state(ticket)}; only an answered ticket can be judged")
            if not solved:
                raise Conflict(f"ticket {ticket_id} is {_state(ticket)}; a published answer is not reopened — ask again")
            with self.session.begin() as session:
                record(session, f"ticket:{ticket_id}", asker, "solved", asker, {"comment": comment[:500]})
            return self.get(ticket_id)
        with self.session.begin() as session:
            won = self._cas(session, ticket_id, ("answered",), None, status="open", claimed_by=None, answer=None,
                            answered_by=None)
            now = self._ticket(session, self._row(session, ticket_id))
            if not won:
                raise Conflict(f"ticket {ticket_id} is {_state(now)}; only an answered ticket can be reopened")
            # a maintainer's edit was of the answer now withdrawn: the next answer's publish must not take it
            session.execute(delete(PublishEditRow).where(PublishEditRow.ticket_id == ticket_id))
            record(session, f"ticket:{ticket_id}", asker, "reopened", asker,
                   {"comment": comment[:500], "answered_by": ticket.answered_by, "answer": ticket.answer})
            return now

    def start_publish(self, ticket_id: str, answer_seen: tuple[str | None, str | None] | None = None) -> Ticket:
        """answered → publishing: from here until ``mark_published`` or ``abort_publish`` it cannot be closed. With
        ``answer_seen`` (answered by, answer) only if the answer is still that one: a publish requested for one answer
        never publishes (nor credits) another given after a not-solved verdict."""
        if answer_seen is None:
            return self._transition(ticket_id, ("answered",), None, "only an answered ticket can be published",
                                    status="publishing")
        by, text = answer_seen
        return self._transition(ticket_id, ("answered",), None, "only an answered ticket, still with the answer the "
                                "publish was requested for, can be published: request it again", status="publishing",
                                also=(TicketRow.answered_by == by, TicketRow.answer == text))

    def mark_published(self, ticket_id: str, record_id: str) -> Ticket:
        """publishing → published as ``record_id`` (``start_publish`` first: the publish guard is never skipped)."""
        return self._transition(ticket_id, ("publishing",), None, "only a publishing ticket can be marked published",
                                status="published", published_record=record_id, event="published")

    def abort_publish(self, ticket_id: str) -> Ticket:
        """publishing → answered, after a failed publish."""
        return self._transition(ticket_id, ("publishing",), None, "only a publishing ticket can go back to answered",
                                status="answered")

    def abandoned_publishes(self, stale_after: timedelta = LEASE) -> list[str]:
        """Tickets whose publish was abandoned: publishing, no live lease (``rag/leases.py``: the publishing process
        renews one) and no change for ``stale_after``."""
        with self.session() as session:
            return list(session.scalars(select(TicketRow.id).where(
                TicketRow.status == "publishing", abandoned("ticket:", TicketRow.id, TicketRow.updated_at, stale_after))))

    def recover_publish(self, ticket_id: str, stale_after: timedelta = LEASE) -> bool:
        """publishing → answered if its publish is still abandoned (a compare-and-set: another recoverer may have
        done it); call after withdrawing what the publish wrote, while nothing else can publish the ticket."""
        with self.session.begin() as session:
            return session.execute(update(TicketRow).where(
                TicketRow.id == ticket_id, TicketRow.status == "publishing",
                abandoned("ticket:", TicketRow.id, TicketRow.updated_at, stale_after))
                .values(status="answered", updated_at=utcnow()).execution_options(synchronize_session=False)).rowcount == 1

    def recover_publishing(self, stale_after: timedelta = LEASE) -> list[str]:
        """``recover_publish`` for every abandoned publish (without withdrawing anything: ``Engine.recover`` does)."""
        return [t for t in self.abandoned_publishes(stale_after) if self.recover_publish(t, stale_after)]

    def close(self, ticket_id: str, reason: str) -> Ticket:
        """open, claimed or answered → closed with ``reason`` (refused while publishing and once published)."""
        return self._transition(ticket_id, CLOSABLE, None, "only an open, claimed or answered ticket can be closed",
                                status="closed", closed_reason=reason.strip() or "closed", event="closed")

    def _transition(self, ticket_id: str, expected: tuple[str, ...], holder: str | None, refusal: str,
                    event: str | None = None, also: Sequence[Any] = (), **values: Any) -> Ticket:
        """One compare-and-set in its own transaction (with its timeline ``event``, told to the asker); the loser
        gets Conflict naming the ticket's current state."""
        with self.session.begin() as session:
            won = self._cas(session, ticket_id, expected, holder, also, **values)
            ticket = self._ticket(session, self._row(session, ticket_id))
            if not won:
                raise Conflict(f"ticket {ticket_id} is {_state(ticket)}; {refusal}")
            if event:
                record(session, f"ticket:{ticket_id}", ticket.asker, event, holder or "maintainer",
                       {"record": ticket.published_record} if event == "published" else {})
            return ticket

    def _cas(self, session: Session, ticket_id: str, expected: tuple[str, ...], holder: str | None = None,
             also: Sequence[Any] = (), **values: Any) -> bool:
        """``UPDATE tickets SET … WHERE id = :id AND status IN :expected [AND claimed_by = :holder] [AND also…]``; True
        if it won.

        It is the transaction's first statement: SQLite takes its write lock, PostgreSQL waits for a racing
        writer of the row and re-checks the condition against what that one committed."""
        where = [TicketRow.id == ticket_id, TicketRow.status.in_(expected), *also]
        if holder is not None:
            where.append(TicketRow.claimed_by == holder)
        stmt = update(TicketRow).where(*where).values(**values, updated_at=utcnow())
        return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1

    def _row(self, session: Session, ticket_id: str) -> TicketRow:
        row = session.get(TicketRow, ticket_id)
        if row is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return row

    def _routes(self, session: Session, ticket_ids: list[str]) -> dict[str, list[Route]]:
        found = session.scalars(select(RouteRow).where(RouteRow.ticket_id.in_(ticket_ids))
                                .order_by(RouteRow.ticket_id, RouteRow.rank)).all() if ticket_ids else []
        routes: dict[str, list[Route]] = {}
        for r in found:
            routes.setdefault(r.ticket_id, []).append(Route(r.craftsman_id, r.name, r.score))
        return routes

    def _flags(self, session: Session, ticket_ids: list[str]) -> dict[str, tuple[bool, bool]]:
        rows = session.scalars(select(SubjectFlagsRow).where(
            SubjectFlagsRow.subject.in_([f"ticket:{t}" for t in ticket_ids]))).all() if ticket_ids else []
        return {r.subject.removeprefix("ticket:"): (r.confidential, r.reveal) for r in rows}

    def _ticket(self, session: Session, row: TicketRow, routes: list[Route] | None = None,
                flags: tuple[bool, bool] | None = None) -> Ticket:
        if routes is None:
            routes = self._routes(session, [row.id]).get(row.id, [])
            flags = self._flags(session, [row.id]).get(row.id)
        confidential, reveal = flags or (False, False)
        return Ticket(row.id, row.question, row.asker, row.status, row.confidence, list(row.context or []),
                      list(row.trades or []), routes, row.claimed_by, row.answer, row.answered_by, row.published_record,
                      row.closed_reason, row.created_at, row.updated_at, confidential, reveal)


def _state(ticket: Ticket) -> str:
    """The state as a loser of a race should read it: ``claimed by cm-3``, ``publishing``, ``closed (重复)``."""
    if ticket.status == "claimed":
        return f"claimed by {ticket.claimed_by}"
    if ticket.status == "answered":
        return f"answered by {ticket.answered_by}"
    if ticket.status == "published":
        return f"published as {ticket.published_record}"
    if ticket.status == "closed":
        return f"closed ({ticket.closed_reason})"
    return ticket.status
