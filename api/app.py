"""The HTTP service: ``create_app(settings)`` builds the FastAPI app over one ``Service``."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.routes import admin, health, questions, tickets
from api.service import Service
from api.settings import Settings

PAGES = Path(__file__).resolve().parent / "pages"


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await errors.error(413, "body_too_large", f"request body over {self.limit} bytes")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except errors.BodyTooLarge:
            await errors.error(413, "body_too_large", f"request body over {self.limit} bytes")(scope, receive, send)


def _routes() -> FastAPI:
    app = FastAPI(title="Jiangxin (匠心) API", version="0.1.0",
                  description="Answers industrial questions from an innovation corpus; escalates to master craftsmen.")
    errors.install(app)
    for router in (questions.router, tickets.router, admin.router, health.router):
        app.include_router(router)
    return app


def openapi_document() -> dict:
    """The API's OpenAPI schema, without loading an index (for schema-driven tests and clients)."""
    return _routes().openapi()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings)
    app = _routes()
    app.state.service = service

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        service.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        service.metrics.latency.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def ask_page() -> HTMLResponse:
        return HTMLResponse((PAGES / "ask.html").read_text(encoding="utf-8"))

    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue_page() -> HTMLResponse:
        return HTMLResponse((PAGES / "queue.html").read_text(encoding="utf-8"))

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
