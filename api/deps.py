"""Dependencies declared once: the service of this process and the calling principal."""

from __future__ import annotations

from fastapi import Request

from api.security import Principal
from api.service import Service


def service(request: Request) -> Service:
    return request.app.state.service


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    svc: Service = request.app.state.service
    return svc.keys.authenticate(key.strip() if scheme.lower() == "bearer" else None)
