"""Webhook delivery: each event of an enterprise's timeline is POSTed to its URL, signed, retried with backoff,
and logged (``webhook_deliveries``).

The body is the event as JSON; headers ``X-Jiangxin-Event`` (its name), ``X-Jiangxin-Delivery`` (the delivery id,
the same on every retry: receivers de-duplicate on it) and ``X-Jiangxin-Signature: sha256=<hex>``, the HMAC-SHA256
of the exact body with the webhook's secret. A 2xx answer delivers it; anything else (or no answer within the
timeout) is retried after ``base_delay · 2^(attempt−1)`` seconds, up to ``attempts`` tries, then the delivery is
failed. A delivery is claimed by compare-and-set with a lease (``next_at`` moved past the send), so several server
processes never send one twice at once, and a process killed mid-send leaves it to be retried when the lease ends.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from rag.background import Periodic
from rag.db import DeliveryRow, EventRow, WebhookRow, sessions, utcnow, write_transaction

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)
REMOVED = "the webhook was removed"


def public_address(url: str) -> str | None:
    """Why ``url`` may not be posted to (None: it may): its host must resolve only to public addresses, so a webhook
    cannot be pointed at the server's own network (loopback, private, link-local, reserved)."""
    host = urlsplit(url).hostname
    if not host:
        return "no host"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        return f"{host} does not resolve ({exc.strerror or exc})"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
            return f"{host} resolves to {ip}, a non-public address"
    return None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: int
    event: str
    url: str
    state: str
    attempts: int
    next_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None

    def to_dict(self) -> dict:
        iso = lambda d: d.isoformat() + "Z" if d else None  # noqa: E731
        return {"id": self.id, "event_id": self.event_id, "event": self.event, "url": self.url, "state": self.state,
                "attempts": self.attempts, "next_at": iso(self.next_at), "last_status": self.last_status,
                "last_error": self.last_error, "delivered_at": iso(self.delivered_at)}


class Webhooks:
    """Registration and the delivery log of each enterprise's webhook."""

    def __init__(self, engine: Engine) -> None:
        self.session = sessions(engine)

    def register(self, owner: str, url: str) -> str:
        """Set (or replace) ``owner``'s webhook; returns the new signing secret (shown once)."""
        secret = "whsec_" + secrets.token_urlsafe(24)
        for attempt in range(2):  # update, else insert; two first registrations at once: the loser updates instead
            try:
                with write_transaction(self.session, "webhooks") as session:
                    replaced = session.execute(update(WebhookRow).where(WebhookRow.owner == owner).values(url=url, secret=secret)
                                               .execution_options(synchronize_session=False)).rowcount
                    if not replaced:
                        session.add(WebhookRow(owner=owner, url=url, secret=secret))
                return secret
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def remove(self, owner: str) -> bool:
        """Remove ``owner``'s webhook; what was still to be sent to it is not sent (failed, saying why)."""
        with write_transaction(self.session, "webhooks") as session:
            session.execute(update(DeliveryRow).where(DeliveryRow.owner == owner, DeliveryRow.state.in_(("pending", "sending")))
                            .values(state="failed", last_error=REMOVED).execution_options(synchronize_session=False))
            return session.execute(delete(WebhookRow).where(WebhookRow.owner == owner)).rowcount == 1

    def get(self, owner: str) -> str | None:
        """The URL of ``owner``'s webhook, or None."""
        with self.session() as session:
            row = session.get(WebhookRow, owner)
            return row.url if row else None

    def deliveries(self, owner: str, limit: int = 100) -> list[Delivery]:
        with self.session() as session:
            rows = session.execute(select(DeliveryRow, EventRow.event).join(EventRow, EventRow.id == DeliveryRow.event_id)
                                   .where(DeliveryRow.owner == owner).order_by(DeliveryRow.id.desc()).limit(limit)).all()
            return [Delivery(d.id, d.event_id, name, d.url, d.state, d.attempts, d.next_at, d.last_status, d.last_error,
                             d.delivered_at) for d, name in rows]


class Deliverer(Periodic):
    """Sends due deliveries, in a background thread of the server (``start``) or one pass at a time (``run_once``);
    while a pass sends something the next follows at once, else after ``poll`` seconds."""

    name = "webhooks"
    again_while_busy = True

    def __init__(self, engine: Engine, attempts: int = 6, base_delay: float = 2.0, timeout: float = 5.0,
                 poll: float = 0.5, allow_private: bool = False) -> None:
        super().__init__(poll)
        self.session = sessions(engine)
        self.allow_private = allow_private  # tests post to a receiver on loopback; production refuses it
        self.attempts, self.base_delay, self.timeout = attempts, base_delay, timeout
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def run_once(self, limit: int = 20) -> int:
        """Send the deliveries due now (at most ``limit``); returns how many were attempted."""
        with self.session() as session:
            due = session.scalars(select(DeliveryRow.id).where(DeliveryRow.state.in_(("pending", "sending")),
                                                               DeliveryRow.next_at <= utcnow())
                                  .order_by(DeliveryRow.next_at).limit(limit)).all()
        sent = 0
        for delivery_id in due:
            lease = self._claim(delivery_id)
            if lease is not None:
                self._send(delivery_id, lease)
                sent += 1
        return sent

    def _claim(self, delivery_id: int) -> datetime | None:
        """Take a due delivery for ``LEASE`` from now (not from the start of the pass: sends before it take time);
        the lease's end, which the outcome must still find, or None when another worker has it."""
        now = utcnow()
        with self.session.begin() as session:
            taken = session.execute(update(DeliveryRow).where(
                DeliveryRow.id == delivery_id, DeliveryRow.state.in_(("pending", "sending")), DeliveryRow.next_at <= now)
                .values(state="sending", next_at=now + LEASE).execution_options(synchronize_session=False))
            return now + LEASE if taken.rowcount == 1 else None

    def _send(self, delivery_id: int, lease: datetime) -> None:
        with self.session() as session:
            delivery = session.get(DeliveryRow, delivery_id)
            event = session.get(EventRow, delivery.event_id)
            hook = session.get(WebhookRow, delivery.owner)
            url, attempts = delivery.url, delivery.attempts
            body = json.dumps({"delivery": delivery_id, "id": event.id, "subject": event.subject, "event": event.event,
                               "actor": event.actor, "detail": event.detail, "at": event.at.isoformat() + "Z"},
                              ensure_ascii=False).encode("utf-8")
            secret = hook.secret if hook is not None else ""
        status: int | None = None
        refused = None if self.allow_private else public_address(url)  # checked at each send: DNS may change
        error: str | None = f"refused: {refused}" if refused else (REMOVED if hook is None else None)
        if error is None:
            try:
                response = self._client.post(url, content=body, headers={
                    "Content-Type": "application/json", "X-Jiangxin-Event": event.event,
                    "X-Jiangxin-Delivery": str(delivery_id), "X-Jiangxin-Signature": sign(secret, body)})
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        attempts += 1
        now = utcnow()
        if error is None:
            values = {"state": "delivered", "delivered_at": now, "last_error": None}
        elif attempts >= self.attempts or hook is None:
            values = {"state": "failed", "last_error": error}
            log.warning("webhook delivery %s to %s failed for good after %d attempts: %s", delivery_id, url, attempts, error)
        else:
            values = {"state": "pending", "next_at": now + timedelta(seconds=self.base_delay * 2 ** (attempts - 1)),
                      "last_error": error}
        with self.session.begin() as session:
            # still ours: a lease that ran out meanwhile went to another worker, whose outcome counts
            session.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id, DeliveryRow.state == "sending",
                                                      DeliveryRow.next_at == lease)
                            .values(attempts=attempts, last_status=status, **values)
                            .execution_options(synchronize_session=False))


def due_count(engine: Engine) -> int:
    """Deliveries still to send (pending or in flight)."""
    with sessions(engine)() as session:
        return len(session.scalars(select(DeliveryRow.id).where(or_(DeliveryRow.state == "pending",
                                                                    DeliveryRow.state == "sending"))).all())
