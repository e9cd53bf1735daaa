"""Craftsmen see the tickets routed to them (and the open pool of their trades), claim, release and
answer; maintainers publish answers into the corpus or reject them; enterprises follow their own."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.paging import CURSOR_HELP, CURSOR_PATTERN, decode_cursor, page
from api.routes.jobs import JobOut, job_url
from api.schemas import NOT_BLANK, TicketOut, TicketStatus
from api.security import Principal, require
from api.service import Service
from indexer.errors import NotFound
from rag.escalate import Ticket
from rag.timeline import as_shown

router = APIRouter(prefix="/v1/tickets", tags=["tickets"], responses=ERROR_RESPONSES)


class AnswerIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    answer: str = Field(min_length=1, max_length=8000, pattern=NOT_BLANK)


class RejectIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class OutcomeIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    solved: bool = Field(description="Did the craftsman's answer solve the problem? Not solved reopens the ticket")
    comment: str = Field(default="", max_length=500)


class PublishIn(BaseModel):
    """What goes into the shared corpus: the maintainer's edited, de-identified question and answer (company names,
    sites and figures that identify the asker removed), never the raw texts."""

    model_config = ConfigDict(strict=True, extra="forbid")
    question: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK)
    answer: str = Field(min_length=1, max_length=8000, pattern=NOT_BLANK)


class PublishAccepted(BaseModel):
    job: JobOut
    ticket: TicketOut = Field(description="The ticket when the job was accepted")


def _trades(svc: Service, p: Principal) -> list[str]:
    record = svc.engine.live.get().records.get(p.principal)
    return list(getattr(record, "trades", []))


def _out(ticket: Ticket, p: Principal) -> TicketOut:
    """The ticket as ``p`` may see it: craftsmen see the asker as a pseudonym unless the enterprise revealed itself."""
    if p.role == "craftsman":
        ticket = replace(ticket, asker=as_shown(ticket.asker, ticket.reveal))
    return TicketOut.of(ticket)


def _visible(svc: Service, p: Principal, ticket: Ticket) -> Ticket:
    allowed = (p.role == "maintainer" or (p.role == "enterprise" and ticket.asker == p.principal)
               or (p.role == "craftsman" and svc.engine.queue.can_see(ticket, p.principal, _trades(svc, p))))
    if not allowed:
        raise NotFound(f"ticket {ticket.id} does not exist")
    return ticket


@router.get("")
def list_tickets(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
                 request: Request, response: Response, status: TicketStatus | None = None,
                 limit: Annotated[int, Query(ge=1, le=200)] = 100,
                 cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description=CURSOR_HELP)] = None,
                 ) -> list[TicketOut]:
    """Craftsmen: routed to you or open in your trades. Enterprises: your own. Maintainers: all. Newest first; when
    more follow, the ``X-Next-Cursor`` header gives the next page's ``cursor``."""
    queue, after = svc.engine.queue, decode_cursor(cursor)
    if p.role == "craftsman":
        tickets = queue.list(status=status, craftsman=p.principal, trades=_trades(svc, p), limit=limit + 1, after=after)
    elif p.role == "enterprise":
        tickets = queue.list(status=status, asker=p.principal, limit=limit + 1, after=after)
    else:
        tickets = queue.list(status=status, limit=limit + 1, after=after)
    return [_out(t, p) for t in page(tickets, limit, lambda t: (t.created_at, t.id), request, response)]


@router.get("/{ticket_id}")
def get_ticket(ticket_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> TicketOut:
    return _out(_visible(svc, p, svc.engine.queue.get(ticket_id)), p)


@router.post("/{ticket_id}/claim")
def claim(ticket_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> TicketOut:
    require(p, "craftsman")
    _visible(svc, p, svc.engine.queue.get(ticket_id))
    return _out(svc.engine.queue.claim(ticket_id, p.principal, _trades(svc, p)), p)


@router.post("/{ticket_id}/release")
def release(ticket_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> TicketOut:
    require(p, "craftsman")
    _visible(svc, p, svc.engine.queue.get(ticket_id))
    return _out(svc.engine.queue.release(ticket_id, p.principal), p)


@router.post("/{ticket_id}/answer", dependencies=[Depends(role("craftsman"))])
def answer(ticket_id: str, body: AnswerIn, p: Annotated[Principal, Depends(principal)],
           svc: Annotated[Service, Depends(service)]) -> TicketOut:
    require(p, "craftsman")
    _visible(svc, p, svc.engine.queue.get(ticket_id))
    return _out(svc.engine.queue.answer(ticket_id, p.principal, body.answer), p)


@router.post("/{ticket_id}/outcome", dependencies=[Depends(role("enterprise"))])
def outcome(ticket_id: str, body: OutcomeIn, p: Annotated[Principal, Depends(principal)],
            svc: Annotated[Service, Depends(service)]) -> TicketOut:
    """The asker says whether the answer solved it; not solved reopens an answered ticket for the craftsmen."""
    return TicketOut.of(svc.engine.queue.outcome(ticket_id, p.principal, body.solved, body.comment))


@router.post("/{ticket_id}/publish", status_code=202, dependencies=[Depends(role("maintainer"))],
             responses={202: {"description": "Publishing started; follow the job at Location",
                              "headers": {"Location": {"description": "The job, /v1/jobs/{job_id}", "schema": {"type": "string"}}}}})
def publish(ticket_id: str, response: Response, p: Annotated[Principal, Depends(principal)],
            body: PublishIn, svc: Annotated[Service, Depends(service)]) -> PublishAccepted:
    """Maintainers: publish an answered ticket's answer as a standard question, in the background. Follow the job
    (``Location``) until it is done: the new index version then serves the answer. While a job for the ticket is
    queued or running, this returns that job; 409 unless the ticket is answered."""
    require(p, "maintainer")
    job = svc.publish_jobs.submit(ticket_id, p.principal, body.question, body.answer)
    response.headers["Location"] = job_url(job.id)
    return PublishAccepted(job=JobOut.of(job), ticket=TicketOut.of(svc.engine.queue.get(ticket_id)))


@router.post("/{ticket_id}/reject", dependencies=[Depends(role("maintainer"))])
def reject(ticket_id: str, body: RejectIn, p: Annotated[Principal, Depends(principal)],
           svc: Annotated[Service, Depends(service)]) -> TicketOut:
    """Maintainers: close the ticket with a reason instead of publishing."""
    require(p, "maintainer")
    return TicketOut.of(svc.engine.reject(ticket_id, body.reason))
