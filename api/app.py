"""The HTTP service: ``create_app(settings)`` builds the FastAPI app over one ``Service``."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import logging
import re
import time
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.limits import Limits, RateLimited
from api.routes import admin, analytics, challenges, follow, health, imports, invitations, jobs, questions, tickets, visits
from api.service import Metrics, Service
from api.settings import Settings
from indexer.errors import JiangxinError

PAGES = Path(__file__).resolve().parent / "pages"
log = logging.getLogger(__name__)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, whether or not Content-Length is sent.

    A streamed (chunked) body is counted as it is read; once it passes the limit, reading raises, and whatever
    the app then makes of that (FastAPI turns any error while parsing a body into a 400) is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.limit = app, limit
        self.larger = larger or {}  # path → its own limit (an upload route takes files, not JSON)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self.too_large(limit)(scope, receive, send)
            return
        seen, over, started = 0, False, False

        async def limited() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                raise errors.BodyTooLarge(limit)
            return message

        async def unless_over(message: Message) -> None:
            nonlocal started
            if over and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, unless_over)
        except errors.BodyTooLarge:
            pass
        if over and not started:
            await self.too_large(limit)(scope, receive, send)

    @staticmethod
    def too_large(limit: int) -> JSONResponse:
        return errors.error(413, "body_too_large", f"request body over {limit} bytes")


class Measure:
    """Counts every response by method, route and status, and times it by method and route (for ``/metrics``).

    Plain ASGI rather than ``@app.middleware("http")``: that wrapper runs each request through a task group and a
    memory stream, about a millisecond of CPU per request on this machine.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # a response never started is counted as the server's failure

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # the router puts the matched route in the scope
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - start)


class SecurityHeaders:
    """Every response says ``nosniff`` and may not be framed; pages add their own Content-Security-Policy."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in self.HEADERS if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


class JiangxinApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # outside Starlette's error middleware too, so that a 500 also carries the headers
        return SecurityHeaders(super().build_middleware_stack())


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def page_policy(html: str) -> str:
    """A Content-Security-Policy allowing exactly this page's inline script, styles and style attributes (by hash),
    and scripts from its own origin if it loads one (the pages' shared ``common.js``).

    The pages call only their own origin; nothing else is loaded, and they may not be framed.
    """
    inline = " ".join(_csp_hash(s) for s in re.findall(r"<script>(.*?)</script>", html, flags=re.S))
    scripts = " ".join(p for p in ("'self'" if re.search(r'<script src="/', html) else "", inline) if p) or "'none'"
    styles = " ".join(_csp_hash(s) for s in re.findall(r"<style>(.*?)</style>", html, flags=re.S))
    attributes = " ".join(_csp_hash(s) for s in sorted(set(re.findall(r'\sstyle="([^"]*)"', html))))
    style_src = " ".join(p for p in (styles, f"'unsafe-hashes' {attributes}" if attributes else "") if p) or "'none'"
    return (f"default-src 'none'; script-src {scripts}; style-src {style_src}; connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@lru_cache(maxsize=None)
def _page(name: str) -> tuple[str, str]:
    html = (PAGES / name).read_text(encoding="utf-8")
    return html, page_policy(html)


def page(name: str) -> HTMLResponse:
    html, policy = _page(name)
    return HTMLResponse(html, headers={"Content-Security-Policy": policy})


@lru_cache(maxsize=None)
def common_script() -> str:
    """The helpers every page shares (api/pages/common.js)."""
    return (PAGES / "common.js").read_text(encoding="utf-8")


def _without_server_detail(handler):
    """A 5xx is the server's condition, not the caller's: its message may name files or quote a library's
    exception, so the caller gets the status, code and headers with a plain message, and the log gets the rest."""

    async def answer(request: Request, exc: Exception):
        response = await handler(request, exc)
        if response.status_code < 500:
            return response
        log.error("%s %s → %d: %s: %s", request.method, request.url.path, response.status_code, type(exc).__name__, exc)
        code = json.loads(response.body)["error"]["code"]
        headers = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
        return errors.error(response.status_code, code, f"{code.replace('_', ' ')}: the server cannot answer this now "
                                                        "(the details are in its log)", headers)

    return answer


async def rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
    return errors.error(429, "rate_limited", str(exc), {"Retry-After": exc.retry_after_header})


def _routes() -> FastAPI:
    app = JiangxinApp(title="Jiangxin (匠心) API", version="0.1.0",
                      description="Answers industrial questions from an innovation corpus; escalates to master craftsmen.")
    errors.install(app)
    for cls, handler in list(app.exception_handlers.items()):
        if isinstance(cls, type) and issubclass(cls, JiangxinError):
            app.add_exception_handler(cls, _without_server_detail(handler))
    app.add_exception_handler(RateLimited, rate_limited)
    for router in (questions.router, tickets.router, follow.router, jobs.router, admin.router, imports.router, health.router,
                   invitations.router, challenges.router, visits.router, visits.showcase_router, analytics.router):
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
    app.state.limits = Limits(settings.limit_settings())
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, larger={imports.UPLOAD_PATH: settings.max_upload_bytes})
    app.add_middleware(Measure, metrics=service.metrics)  # outside the body limit, so a 413 is counted as one

    @app.get("/pages/common.js", include_in_schema=False)
    def pages_script() -> Response:
        return Response(common_script(), media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def ask_page() -> HTMLResponse:
        return page("ask.html")

    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue_page() -> HTMLResponse:
        return page("queue.html")

    @app.get("/programme", response_class=HTMLResponse, include_in_schema=False)
    def programme_page() -> HTMLResponse:  # enterprises: challenges, visits, timelines
        return page("programme.html")

    @app.get("/work", response_class=HTMLResponse, include_in_schema=False)
    def work_page() -> HTMLResponse:  # craftsmen: invitations, challenges, visits and reports
        return page("work.html")

    @app.get("/showcase", response_class=HTMLResponse, include_in_schema=False)
    def showcase_page() -> HTMLResponse:  # public: completed services by trade and region (线上展示)
        return page("showcase.html")

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_page() -> HTMLResponse:  # maintainers: review and publish, analytics
        return page("dashboard.html")

    # What start-up made (the framework, the models, the key tables) lives as long as the process: moved out of the
    # garbage collector's view, so a full collection no longer walks it (it paused every thread ~0.1 s here, once in
    # a few hundred questions; eval/reports/bench-api).
    gc.freeze()
    return app
