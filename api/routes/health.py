"""Liveness, readiness and Prometheus metrics (no key needed: probes and scrapers)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import service
from api.service import Service
from indexer.errors import JiangxinError

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "no index loaded or database unavailable"}})
def readyz(svc: Annotated[Service, Depends(service)]) -> Any:
    """States only (never error text or paths): the index served and its state, and the database."""
    live = svc.engine.live
    try:
        live.get()  # the first load, or a look at CURRENT when one is due
    except (JiangxinError, OSError):
        pass  # the state below says unavailable; the log has the reason
    state = live.state()
    index: dict[str, Any] = {"serving": state.serving, "current": state.current, "state": state.state}
    if state.loading:
        index["loading"] = state.loading
    if state.failure is not None:
        at = datetime.fromtimestamp(state.failure.at, timezone.utc).isoformat(timespec="seconds")
        index["failed_load"] = {"version": state.failure.version, "error": state.failure.error, "at": at}
    try:
        with svc.engine.queue.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any driver error means not ready
        log.warning("readiness: database unavailable (%s)", type(exc).__name__)
        database = "unavailable"
    ready = state.serving is not None and database == "ok"
    return JSONResponse({"ready": ready, "index": index, "database": database}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}})
def metrics(svc: Annotated[Service, Depends(service)]) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
