"""Liveness, readiness and Prometheus metrics (no key needed: probes and scrapers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import service
from api.service import Service
from indexer.errors import JiangxinError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "index or database unavailable"}})
def readyz(svc: Annotated[Service, Depends(service)]) -> Any:
    checks: dict[str, str] = {}
    try:
        checks["index"] = svc.engine.live.get().version
    except JiangxinError as exc:
        checks["index"] = f"unavailable: {exc}"
    try:
        with svc.engine.queue.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any driver error means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ready = not any(v.startswith("unavailable") for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}})
def metrics(svc: Annotated[Service, Depends(service)]) -> Response:
    try:
        version = svc.engine.live.get().version
        svc.metrics.index_version.clear()
        svc.metrics.index_version.labels(version).set(1)
    except JiangxinError:
        pass
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
