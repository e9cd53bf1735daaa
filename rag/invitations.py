"""企业点单 and the follow-up sweeper: an enterprise sees the craftsmen recommended for its ticket and invites one; a
decline, or no answer within the timeout, passes the invitation to the next recommendation. A ticket nobody claims
within the SLA is re-routed to the next best craftsmen.

Recommendation score = the routing score (expertise match to the question, trade, skills, open load; rag/escalate.py)
+ ``REGION`` when the craftsman works in the enterprise's region + ``HELPFUL`` per helpful vote on answers they gave
(at most ``HELPFUL_CAP`` votes count), so a proven, nearby, available expert rises without drowning the match.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from indexer.errors import Conflict, NotFound
from indexer.ports import CraftsmanProfile
from rag.background import Periodic
from rag.db import FeedbackRow, InvitationRow, QuestionRow, RouteRow, TicketRow, sessions, utcnow, write_transaction
from rag.escalate import RoutingWeights, Ticket, TicketQueue, route
from rag.timeline import record

REGION = 0.05
HELPFUL = 0.02
HELPFUL_CAP = 5


@dataclass
class Recommendation:
    id: str
    name: str
    honours: list[str]
    skills: list[str]
    trades: list[str]
    region: str
    open_tickets: int
    helpful_votes: int
    score: float


@dataclass
class Invitation:
    id: str
    ticket_id: str
    craftsman: str
    next: list[str]
    status: str
    expires_at: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def helpful_votes(engine: Engine) -> dict[str, int]:
    """Helpful votes per craftsman on the questions whose ticket they answered."""
    with sessions(engine)() as session:
        rows = session.execute(select(TicketRow.answered_by, func.count())
                               .join(QuestionRow, QuestionRow.ticket_id == TicketRow.id)
                               .join(FeedbackRow, FeedbackRow.question_id == QuestionRow.id)
                               .where(FeedbackRow.helpful.is_(True), TicketRow.answered_by.is_not(None))
                               .group_by(TicketRow.answered_by)).all()
    return {craftsman: int(n) for craftsman, n in rows}


def recommend(ticket: Ticket, vector, craftsmen: list[CraftsmanProfile], open_load: dict[str, int],
              helpful: dict[str, int], region: str = "") -> list[Recommendation]:
    """Every craftsman, best first: those of the ticket's trades lead by their trade bonus, the others follow."""
    weights = RoutingWeights(top=len(craftsmen))
    experts = [p for p in craftsmen if set(p.record.trades) & set(ticket.trades)]
    others = [p for p in craftsmen if p not in experts]
    routes = route(ticket.question, vector, ticket.trades, experts, open_load, weights) if experts else []
    routes += route(ticket.question, vector, ticket.trades, others, open_load, weights) if others else []
    by_id = {p.record.id: p.record for p in craftsmen}
    out = []
    for r in routes:
        c = by_id[r.craftsman_id]
        near = bool(region) and (c.region.startswith(region) or region.startswith(c.region))
        votes = helpful.get(c.id, 0)
        score = r.score + REGION * near + HELPFUL * min(votes, HELPFUL_CAP)
        out.append(Recommendation(c.id, c.name, list(c.honours), list(c.skills), list(c.trades), c.region,
                                  open_load.get(c.id, 0), votes, round(score, 4)))
    out.sort(key=lambda x: (-x.score, x.id))
    return out


def add_routes(session: Session, ticket_id: str, craftsmen: list[tuple[str, str, float]]) -> None:
    """Route a ticket to more craftsmen (id, name, score), ranked after those it already has; one already routed is
    left as it is."""
    rank = session.scalar(select(func.coalesce(func.max(RouteRow.rank), 0)).where(RouteRow.ticket_id == ticket_id))
    for cid, name, score in craftsmen:
        if session.get(RouteRow, (ticket_id, cid)) is None:
            rank += 1
            session.add(RouteRow(ticket_id=ticket_id, craftsman_id=cid, name=name, rank=rank, score=score))


class Invitations:
    def __init__(self, engine: Engine, queue: TicketQueue, timeout: timedelta = timedelta(hours=24)) -> None:
        self.engine, self.queue, self.timeout = engine, queue, timeout
        self.session = sessions(engine)

    def _tx(self):
        """A write transaction (rag/db.py ``write_transaction``: reads inside it see the latest commit on SQLite)."""
        return write_transaction(self.session, "invitations")

    def invite(self, ticket: Ticket, enterprise: str, craftsmen: list[tuple[str, str]]) -> Invitation:
        """Invite the first of ``craftsmen`` (id, name) to an open ticket of ``enterprise``; the rest follow in order."""
        if ticket.asker != enterprise:
            raise NotFound(f"ticket {ticket.id} does not exist")
        if ticket.status != "open":
            raise Conflict(f"ticket {ticket.id} is {ticket.status}; only an open ticket takes an invitation")
        try:
            with self._tx() as session:
                row = self._invite(session, ticket.id, enterprise, craftsmen)
        except IntegrityError:
            raise Conflict(f"ticket {ticket.id} already has a pending invitation") from None
        return _invitation(row)

    def _invite(self, session: Session, ticket_id: str, enterprise: str, craftsmen: list[tuple[str, str]]) -> InvitationRow:
        (craftsman, name), rest = craftsmen[0], craftsmen[1:]
        now = utcnow()
        row = InvitationRow(id="I" + secrets.token_hex(6), ticket_id=ticket_id, enterprise=enterprise, craftsman=craftsman,
                            after=[list(c) for c in rest], status="pending", expires_at=now + self.timeout, created_at=now)
        session.add(row)
        add_routes(session, ticket_id, [(craftsman, name, 0.0)])  # routed: the craftsman sees and may claim it
        session.flush()
        record(session, f"ticket:{ticket_id}", enterprise, "invited", enterprise, {"craftsman": craftsman, "invitation": row.id})
        return row

    def respond(self, invitation_id: str, craftsman: str, accept: bool, trades: list[str] | None = None) -> Invitation:
        """Accept (the ticket is claimed by the craftsman) or decline (the next recommendation is invited)."""
        status = "accepted" if accept else "declined"
        moot: Conflict | None = None
        with self._tx() as session:  # the answer and, when accepted, the claim commit together
            won = session.execute(update(InvitationRow).where(
                InvitationRow.id == invitation_id, InvitationRow.craftsman == craftsman, InvitationRow.status == "pending",
                InvitationRow.expires_at > utcnow()).values(status=status).execution_options(synchronize_session=False)).rowcount
            row = session.get(InvitationRow, invitation_id, populate_existing=True)
            if row is None or row.craftsman != craftsman:
                raise NotFound(f"invitation {invitation_id} does not exist")
            if not won:
                raise Conflict(f"invitation {invitation_id} is {row.status if row.status != 'pending' else 'expired'}")
            if accept:
                try:
                    self.queue.claim_within(session, row.ticket_id, craftsman, trades or [])
                except Conflict as exc:  # taken or closed meanwhile (nothing written): the invitation is moot
                    moot = exc
                    session.execute(update(InvitationRow).where(InvitationRow.id == invitation_id)
                                    .values(status="expired").execution_options(synchronize_session=False))
            if moot is None:
                record(session, f"ticket:{row.ticket_id}", row.enterprise, status, craftsman, {"invitation": row.id})
            if not accept:
                self._pass_on(session, row)
        if moot is not None:
            raise moot
        return self.get(invitation_id)

    def expire_due(self) -> int:
        """Expire pending invitations past their time and invite the next craftsman for each; how many expired."""
        with self.session() as session:
            due = session.scalars(select(InvitationRow.id).where(InvitationRow.status == "pending",
                                                                 InvitationRow.expires_at <= utcnow())).all()
        done = 0
        for invitation_id in due:
            with self._tx() as session:
                won = session.execute(update(InvitationRow).where(
                    InvitationRow.id == invitation_id, InvitationRow.status == "pending")
                    .values(status="expired").execution_options(synchronize_session=False)).rowcount
                if won:
                    row = session.get(InvitationRow, invitation_id, populate_existing=True)
                    record(session, f"ticket:{row.ticket_id}", row.enterprise, "expired", "jiangxin", {"invitation": row.id})
                    self._pass_on(session, row)
                    done += 1
        return done

    def _pass_on(self, session: Session, row: InvitationRow) -> None:
        ticket = session.get(TicketRow, row.ticket_id)
        if row.after and ticket is not None and ticket.status == "open":
            self._invite(session, row.ticket_id, row.enterprise, [tuple(c) for c in row.after])

    def get(self, invitation_id: str) -> Invitation:
        with self.session() as session:
            row = session.get(InvitationRow, invitation_id)
            if row is None:
                raise NotFound(f"invitation {invitation_id} does not exist")
            return _invitation(row)

    def of_ticket(self, ticket_id: str) -> list[Invitation]:
        with self.session() as session:
            rows = session.scalars(select(InvitationRow).where(InvitationRow.ticket_id == ticket_id)
                                   .order_by(InvitationRow.created_at)).all()
            return [_invitation(r) for r in rows]

    def of_craftsman(self, craftsman: str, status: str | None = "pending") -> list[Invitation]:
        with self.session() as session:
            query = select(InvitationRow).where(InvitationRow.craftsman == craftsman).order_by(InvitationRow.created_at.desc())
            if status:
                query = query.where(InvitationRow.status == status)
            return [_invitation(r) for r in session.scalars(query.limit(200)).all()]


def _invitation(row: InvitationRow) -> Invitation:
    return Invitation(row.id, row.ticket_id, row.craftsman, [c[0] for c in row.after or []], row.status,
                      row.expires_at.isoformat() + "Z", row.created_at.isoformat() + "Z")


class Sweeper(Periodic):
    """Every ``interval`` seconds: expire invitations past their time (passing them on), and re-route tickets left
    open longer than ``sla`` to the next best craftsmen (``reroute(ticket)`` gives them, best first)."""

    name = "sweeper"
    wait_first = True

    def __init__(self, engine: Engine, invitations: Invitations, reroute: Callable[[Ticket], list[tuple[str, str, float]]],
                 sla: timedelta, interval: float = 5.0) -> None:
        super().__init__(interval)
        self.engine, self.invitations, self.reroute, self.sla = engine, invitations, reroute, sla
        self.session = sessions(engine)

    def run_once(self) -> tuple[int, int]:
        """(invitations expired, tickets re-routed) in this pass."""
        return self.invitations.expire_due(), self.reroute_late()

    def reroute_late(self) -> int:
        cutoff = utcnow() - self.sla
        with self.session() as session:
            late = session.execute(select(TicketRow.id, TicketRow.updated_at).where(
                TicketRow.status == "open", TicketRow.updated_at <= cutoff)).all()
        done = 0
        for ticket_id, stamp in late:
            ticket = self.invitations.queue.get(ticket_id)
            known = {r.craftsman_id for r in ticket.routes}
            fresh = [c for c in self.reroute(ticket) if c[0] not in known][:3]
            with self.invitations._tx() as session:
                # compare-and-set on the ticket's last change: one process re-routes it, once per SLA period
                won = session.execute(update(TicketRow).where(TicketRow.id == ticket_id, TicketRow.status == "open",
                                                              TicketRow.updated_at == stamp)
                                      .values(updated_at=utcnow()).execution_options(synchronize_session=False)).rowcount
                if not won:
                    continue
                add_routes(session, ticket_id, fresh)
                record(session, f"ticket:{ticket_id}", ticket.asker, "rerouted", "jiangxin",
                       {"craftsmen": [c[0] for c in fresh], "after_seconds": int(self.sla.total_seconds())})
                done += 1
        return done
