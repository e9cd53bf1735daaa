"""Dependencies declared once: the service of this process and the calling principal (within its limits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from api.limits import Limits
from api.security import Principal, Unauthorized, require
from api.service import Service
from rag.programme import Viewer


# Dependencies that do not block are ``async``: FastAPI runs a plain ``def`` one in its thread pool, a thread hop per
# dependency per request. ``principal`` reads the key store, so it stays a ``def``.
async def service(request: Request) -> Service:
    return request.app.state.service


def principal(request: Request) -> Principal:
    """The key's principal; 429 if this address sent too many wrong keys or this key is over its rate."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    svc: Service = request.app.state.service
    limits: Limits = request.app.state.limits
    address = request.client.host if request.client else "unknown"
    limits.check_address(address)
    try:
        who = svc.keys.authenticate(key or None)
    except Unauthorized:
        if key:  # a missing key is a mistake, a wrong one may be a guess
            limits.failed(address)
        raise
    limits.take(who.key_id)
    return who


def role(*roles: str) -> Callable[..., Principal]:
    """A route dependency that refuses other roles with 403 before the body is validated (declare it in the
    route's ``dependencies``): a caller without the right role learns nothing about the body's schema."""

    async def allowed(p: Annotated[Principal, Depends(principal)]) -> Principal:
        require(p, *roles)
        return p

    return allowed


def viewer(svc: Service, p: Principal) -> Viewer:
    """The caller as the programme sees it: role, principal and, for a craftsman, the trades of their record."""
    trades: tuple[str, ...] = ()
    if p.role == "craftsman":
        record = svc.engine.live.get().records.get(p.principal)
        trades = tuple(getattr(record, "trades", []) or [])
    return Viewer(p.role, p.principal, trades)
