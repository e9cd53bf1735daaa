"""持续跟踪: timelines of tickets, the caller's events, and enterprises' webhooks with their delivery log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.routes.tickets import _visible
from api.security import Principal
from api.service import Service
from rag.timeline import Event, as_shown
from indexer.errors import Conflict
from rag.webhooks import Delivery, public_address

router = APIRouter(tags=["follow-up"], responses=ERROR_RESPONSES)


class EventOut(BaseModel):
    id: int
    subject: str = Field(description="ticket:T…, challenge:C… or visit:V…")
    event: str = Field(description="created, routed, invited, claimed, released, answered, published, closed, applied, "
                                   "picked, progress, scheduled, visited, confirmed, cancelled")
    actor: str
    detail: dict[str, Any]
    at: str

    @classmethod
    def of(cls, e: Event, shown_as: dict[str, str] | None = None) -> EventOut:
        """The event, with actors renamed by ``shown_as`` (an enterprise's pseudonym, for craftsmen)."""
        data = e.to_dict()
        data["actor"] = (shown_as or {}).get(data["actor"], data["actor"])
        return cls(**data)


class MeOut(BaseModel):
    role: Literal["enterprise", "craftsman", "maintainer"]
    principal: str = Field(description="The enterprise id, the craftsman's record id, or the maintainer's id")
    name: str


class WebhookIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://\S+$")


class WebhookOut(BaseModel):
    url: str | None = Field(description="Where events are posted; None when no webhook is set")
    secret: str | None = Field(default=None, description="The signing secret, shown once when the webhook is set")
    signature: str = Field(default="X-Jiangxin-Signature: sha256=HMAC-SHA256(secret, body), hex")


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    event: str
    url: str
    state: Literal["pending", "sending", "delivered", "failed"]
    attempts: int
    next_at: str | None
    last_status: int | None
    last_error: str | None
    delivered_at: str | None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(**d.to_dict())


@router.get("/v1/tickets/{ticket_id}/timeline")
def ticket_timeline(ticket_id: str, p: Annotated[Principal, Depends(principal)],
                    svc: Annotated[Service, Depends(service)]) -> list[EventOut]:
    """A ticket's events, for whoever may see the ticket."""
    ticket = _visible(svc, p, svc.engine.queue.get(ticket_id))
    shown = {ticket.asker: as_shown(ticket.asker, ticket.reveal)} if p.role == "craftsman" else {}
    return [EventOut.of(e, shown_as=shown) for e in svc.timeline.of(f"ticket:{ticket_id}")]


@router.get("/v1/questions/{question_id}/timeline", dependencies=[Depends(role("enterprise", "maintainer"))])
def question_timeline(question_id: str, p: Annotated[Principal, Depends(principal)],
                      svc: Annotated[Service, Depends(service)]) -> list[EventOut]:
    """A question's events and, once escalated, its ticket's, in order."""
    view = svc.questions.get(question_id, None if p.role == "maintainer" else p.principal)
    events = svc.timeline.of(f"question:{question_id}")
    ticket_id = (view.get("ticket") or {}).get("id")
    if ticket_id:
        events = sorted([*events, *svc.timeline.of(f"ticket:{ticket_id}")], key=lambda e: e.id)
    return [EventOut.of(e) for e in events]


@router.get("/v1/me")
def me(p: Annotated[Principal, Depends(principal)]) -> MeOut:
    """Who the key acts for (pages use it to tell a craftsman's own application from the others)."""
    return MeOut(role=p.role, principal=p.principal, name=p.name)


@router.get("/v1/events", dependencies=[Depends(role("enterprise"))])
def my_events(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
              limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[EventOut]:
    """Every step of the caller's questions, tickets, challenges and visits, newest first (what the webhook is told)."""
    return [EventOut.of(e) for e in svc.timeline.of_owner(p.principal, limit)]


@router.put("/v1/webhooks", dependencies=[Depends(role("enterprise"))])
def set_webhook(body: WebhookIn, p: Annotated[Principal, Depends(principal)],
                svc: Annotated[Service, Depends(service)]) -> WebhookOut:
    """Set where the caller's events are posted (a public http(s) address: 409 for one on a private network); the
    response carries the signing secret, once."""
    refused = None if svc.settings.webhook_allow_private else public_address(body.url)
    if refused is not None:
        raise Conflict(f"webhook URL refused: {refused}")
    return WebhookOut(url=body.url, secret=svc.webhooks.register(p.principal, body.url))


@router.get("/v1/webhooks", dependencies=[Depends(role("enterprise"))])
def get_webhook(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> WebhookOut:
    return WebhookOut(url=svc.webhooks.get(p.principal))


@router.delete("/v1/webhooks", status_code=204, dependencies=[Depends(role("enterprise"))])
def delete_webhook(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> Response:
    svc.webhooks.remove(p.principal)
    return Response(status_code=204)


@router.get("/v1/webhooks/deliveries", dependencies=[Depends(role("enterprise"))])
def deliveries(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DeliveryOut]:
    """The delivery log: each event posted, its attempts, the last status and error."""
    return [DeliveryOut.of(d) for d in svc.webhooks.deliveries(p.principal, limit)]
