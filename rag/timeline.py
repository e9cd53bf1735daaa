"""Follow-up (持续跟踪): every step of a ticket, challenge or visit becomes an event on its timeline, written in the
transaction of the change itself (a step is never lost or told twice), and queued for the owner's webhook.

Craftsmen see an enterprise under a pseudonym (``pseudonym``) unless it chose to reveal itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from rag.db import DeliveryRow, EventRow, WebhookRow, sessions, utcnow


@dataclass(frozen=True)
class Event:
    id: int
    subject: str
    owner: str
    event: str
    actor: str
    detail: dict[str, Any]
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "event": self.event, "actor": self.actor, "detail": self.detail,
                "at": self.at.isoformat() + "Z"}


def pseudonym(principal: str) -> str:
    """How craftsmen see an enterprise that has not revealed itself: stable, not reversible."""
    return "企业-" + hashlib.sha256(principal.encode("utf-8")).hexdigest()[:6]


def as_shown(enterprise: str, reveal: bool) -> str:
    """How craftsmen see an enterprise: its id once it revealed itself, else its pseudonym."""
    return enterprise if reveal else pseudonym(enterprise)


def record(session: Session, subject: str, owner: str, event: str, actor: str, detail: dict[str, Any] | None = None) -> int:
    """Add an event to ``subject``'s timeline in ``session`` (the caller's transaction) and queue it for the owner's
    webhook, if it has one; the event's id. One INSERT statement (every ask records one; the ORM's unit of work
    costs more)."""
    at = utcnow()
    event_id = session.execute(insert(EventRow).values(subject=subject, owner=owner, event=event, actor=actor,
                                                       detail=detail or {}, at=at)).inserted_primary_key[0]
    hook = _webhook(session, owner)
    if hook is not None:
        session.add(DeliveryRow(event_id=event_id, owner=owner, url=hook.url, state="pending", attempts=0, next_at=at))
    return event_id


def _webhook(session: Session, owner: str) -> WebhookRow | None:
    """``owner``'s webhook, looked up once per transaction (an escalated ask records three events)."""
    transaction = session.get_transaction()
    seen = session.info.get("webhooks")
    if seen is None or seen[0] is not transaction:  # a later transaction of the same session looks again
        seen = session.info["webhooks"] = (transaction, {})
    if owner not in seen[1]:
        seen[1][owner] = session.get(WebhookRow, owner)
    return seen[1][owner]


def _event(row: EventRow) -> Event:
    return Event(row.id, row.subject, row.owner, row.event, row.actor, dict(row.detail or {}), row.at)


class Timeline:
    """Reads timelines."""

    def __init__(self, engine: Engine) -> None:
        self.session = sessions(engine)

    def of(self, subject: str) -> list[Event]:
        with self.session() as session:
            rows = session.scalars(select(EventRow).where(EventRow.subject == subject).order_by(EventRow.id)).all()
            return [_event(r) for r in rows]

    def of_owner(self, owner: str, limit: int = 200) -> list[Event]:
        with self.session() as session:
            rows = session.scalars(select(EventRow).where(EventRow.owner == owner).order_by(EventRow.id.desc()).limit(limit)).all()
            return [_event(r) for r in rows]
