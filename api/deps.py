"""Dependencies declared once: the service of this process and the calling principal (within its limits)."""

from __future__ import annotations

from fastapi import Request

from api.limits import Limits
from api.security import Principal, Unauthorized
from api.service import Service


def service(request: Request) -> Service:
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
