"""企业点单: an enterprise sees the craftsmen recommended for its ticket (fit, trade, region, load, helpful answers,
honours and skills) and invites one; the craftsman accepts (and has the ticket) or declines; a decline or no answer
in time passes the invitation to the next recommendation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import principal, role, service, viewer
from api.errors import ERROR_RESPONSES
from api.schemas import CraftsmanCard
from api.security import Principal
from api.service import Service
from indexer.errors import Conflict, NotFound
from rag.escalate import Ticket
from rag.invitations import Invitation, Recommendation, helpful_votes, recommend
from rag.timeline import as_shown

router = APIRouter(tags=["invitations"], responses=ERROR_RESPONSES)


class RecommendationOut(CraftsmanCard):
    """A craftsman recommended for a question, with what the ranking weighed."""

    model_config = ConfigDict(extra="ignore")  # a response of its own, not a stored document passed through
    open_tickets: int = Field(description="Open tickets routed to or claimed by the craftsman (current load)")
    helpful_votes: int = Field(description="Helpful votes on answers the craftsman gave")
    score: float

    @classmethod
    def of(cls, r: Recommendation) -> RecommendationOut:
        return cls(**r.__dict__)


class InviteIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    craftsman: str | None = Field(default=None, max_length=128,
                                  description="Whom to invite first (default: the best recommendation); the other "
                                              "recommendations follow in order")
    region: str = Field(default="", max_length=40, description="The enterprise's region, for the recommendations")


class InvitationOut(BaseModel):
    id: str
    ticket_id: str
    craftsman: str
    next: list[str] = Field(description="Who is invited next if this one declines or does not answer in time")
    status: Literal["pending", "accepted", "declined", "expired"]
    expires_at: str
    created_at: str
    question: str | None = Field(default=None, description="The ticket's question (craftsman's list)")
    asker: str | None = Field(default=None, description="The enterprise, as a pseudonym (craftsman's list)")

    @classmethod
    def of(cls, i: Invitation, ticket: Ticket | None = None) -> InvitationOut:
        extra = {"question": ticket.question, "asker": as_shown(ticket.asker, ticket.reveal)} if ticket else {}
        return cls(**i.to_dict(), **extra)


def _own_ticket(svc: Service, p: Principal, ticket_id: str) -> Ticket:
    ticket = svc.engine.queue.get(ticket_id)
    if p.role != "maintainer" and ticket.asker != p.principal:
        raise NotFound(f"ticket {ticket_id} does not exist")
    return ticket


def _recommendations(svc: Service, ticket: Ticket, region: str) -> list[Recommendation]:
    version = svc.engine.live.get()
    vector = version.embedder.embed_queries([ticket.question])[0]
    return recommend(ticket, vector, version.directory.craftsmen(), svc.engine.queue.open_load(),
                     helpful_votes(svc.engine.queue.engine), region)


@router.get("/v1/tickets/{ticket_id}/recommendations", dependencies=[Depends(role("enterprise", "maintainer"))])
def recommendations(ticket_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
                    region: Annotated[str, Query(max_length=40)] = "") -> list[RecommendationOut]:
    """The craftsmen recommended for a ticket, best first."""
    return [RecommendationOut.of(r) for r in _recommendations(svc, _own_ticket(svc, p, ticket_id), region)]


@router.post("/v1/tickets/{ticket_id}/invitations", status_code=201, dependencies=[Depends(role("enterprise"))])
def invite(ticket_id: str, body: InviteIn, p: Annotated[Principal, Depends(principal)],
           svc: Annotated[Service, Depends(service)]) -> InvitationOut:
    """Invite a craftsman to the ticket (409 while another invitation is pending or once it is claimed)."""
    ticket = _own_ticket(svc, p, ticket_id)
    ranked = [(r.id, r.name) for r in _recommendations(svc, ticket, body.region)]
    if body.craftsman is not None:
        chosen = [c for c in ranked if c[0] == body.craftsman]
        if not chosen:
            raise Conflict(f"{body.craftsman} is not a craftsman who could take this ticket")
        ranked = chosen + [c for c in ranked if c[0] != body.craftsman]
    return InvitationOut.of(svc.invitations.invite(ticket, p.principal, ranked))


@router.get("/v1/tickets/{ticket_id}/invitations", dependencies=[Depends(role("enterprise", "maintainer"))])
def ticket_invitations(ticket_id: str, p: Annotated[Principal, Depends(principal)],
                       svc: Annotated[Service, Depends(service)]) -> list[InvitationOut]:
    return [InvitationOut.of(i) for i in svc.invitations.of_ticket(_own_ticket(svc, p, ticket_id).id)]


def _question_ticket(svc: Service, p: Principal, question_id: str, hand_over: bool) -> Ticket | None:
    """The ticket of one of the caller's questions — created (转人工) when ``hand_over`` and it has none yet."""
    view = svc.questions.get(question_id, None if p.role == "maintainer" else p.principal)
    ticket_id = (view.get("ticket") or {}).get("id")
    if ticket_id is None and hand_over:
        ticket_id, _ = svc.engine.hand_over(question_id, p.principal)
    return svc.engine.queue.get(ticket_id) if ticket_id else None


@router.get("/v1/questions/{question_id}/recommendations", dependencies=[Depends(role("enterprise", "maintainer"))])
def question_recommendations(question_id: str, p: Annotated[Principal, Depends(principal)],
                             svc: Annotated[Service, Depends(service)],
                             region: Annotated[str, Query(max_length=40)] = "") -> list[RecommendationOut]:
    """The craftsmen recommended for any of your questions, answered automatically or escalated."""
    ticket = _question_ticket(svc, p, question_id, hand_over=False)
    if ticket is None:  # answered automatically: rank for its text and the trades of what answered it
        view = svc.questions.get(question_id, None if p.role == "maintainer" else p.principal)
        version = svc.engine.live.get()
        vector = version.embedder.embed_queries([view["question"]])[0]
        trades, _ = svc.engine.routing(version, view["question"], svc.engine.rank(version, view["question"], vector=vector), vector)
        ticket = Ticket("", view["question"], view.get("asker", ""), "open", 0.0, [], trades, [])
    return [RecommendationOut.of(r) for r in _recommendations(svc, ticket, region)]


@router.post("/v1/questions/{question_id}/invitations", status_code=201, dependencies=[Depends(role("enterprise"))])
def invite_for_question(question_id: str, body: InviteIn, p: Annotated[Principal, Depends(principal)],
                        svc: Annotated[Service, Depends(service)]) -> InvitationOut:
    """Invite a craftsman to any of your questions: an automatically answered one is handed over (转人工) first."""
    ticket = _question_ticket(svc, p, question_id, hand_over=True)
    assert ticket is not None
    return invite(ticket.id, body, p, svc)


@router.get("/v1/invitations", dependencies=[Depends(role("craftsman"))])
def my_invitations(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> list[InvitationOut]:
    """The caller's pending invitations with their questions."""
    out = []
    for i in svc.invitations.of_craftsman(p.principal):
        out.append(InvitationOut.of(i, svc.engine.queue.get(i.ticket_id)))
    return out


@router.post("/v1/invitations/{invitation_id}/accept", dependencies=[Depends(role("craftsman"))])
def accept(invitation_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> InvitationOut:
    """Accept: the ticket is claimed by the caller (409 if the invitation expired or the ticket was taken)."""
    return InvitationOut.of(svc.invitations.respond(invitation_id, p.principal, True, list(viewer(svc, p).trades)))


@router.post("/v1/invitations/{invitation_id}/decline", dependencies=[Depends(role("craftsman"))])
def decline(invitation_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> InvitationOut:
    """Decline: the next recommended craftsman is invited."""
    return InvitationOut.of(svc.invitations.respond(invitation_id, p.principal, False))
