"""Every error leaves the API as JSON ``{"error": {"code", "message"}}`` with a 4xx status (5xx only for bugs)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api.schemas import NOT_BLANK
from api.security import Unauthorized
from indexer.corpus_store import CorpusBusy, CorpusCorrupt, DuplicateId
from indexer.errors import (Conflict, CorpusError, CorpusInvalid, Forbidden, IndexBusy, IndexCorrupt, IndexMismatchError,
                            IndexNotFound, JiangxinError, NotFound, QuotaExceeded)
from rag.engine import InvalidQuestion

log = logging.getLogger(__name__)

STATUS = [(Unauthorized, 401, "unauthorized"), (Forbidden, 403, "forbidden"), (NotFound, 404, "not_found"),
          (DuplicateId, 409, "duplicate_id"), (CorpusCorrupt, 409, "corpus_corrupt"), (CorpusInvalid, 409, "corpus_invalid"),
          (Conflict, 409, "conflict"), (InvalidQuestion, 422, "invalid_question"), (CorpusError, 422, "invalid_record"),
          (IndexNotFound, 503, "index_unavailable"), (IndexMismatchError, 503, "index_mismatch"),
          (QuotaExceeded, 429, "quota_exceeded"), (IndexBusy, 503, "index_busy"), (IndexCorrupt, 503, "index_corrupt"),
          (CorpusBusy, 503, "corpus_busy")]
# Said instead of pydantic's "String should match pattern '…'" (a 600-character pattern for a blank question).
BLANK = "has no visible character (white space, zero-width and control characters do not count)"
PATTERN_MESSAGES = {"question": BLANK, "date_from": "expected a date YYYY-MM-DD", "date_to": "expected a date YYYY-MM-DD",
                    "cursor": "is not a cursor this API handed out: send back the previous page's X-Next-Cursor header"}
RETRY_AFTER_503 = "5"  # seconds: a build finishing, a version loading, a lock freeing


class BodyTooLarge(Exception):
    """Raised inside the body-limit middleware when a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


ERROR_RESPONSES = {status: {"model": ErrorResponse, "description": desc} for status, desc in
                   ((400, "Bad request"), (401, "Missing or unknown API key"), (403, "Not allowed for this role"),
                    (404, "Not found"), (409, "Conflict with the current state"), (413, "Body too large"),
                    (422, "Invalid input"), (429, "Quota exceeded; see Retry-After"),
                    (503, "Index or corpus busy or unavailable; see Retry-After"))}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first matching route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(JiangxinError)
    async def jiangxin_error(_: Request, exc: JiangxinError) -> JSONResponse:
        for cls, status, code in STATUS:
            if isinstance(exc, cls):
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                if isinstance(exc, QuotaExceeded):
                    headers = {"Retry-After": str(exc.retry_after)}
                elif status == 503:
                    headers = {"Retry-After": RETRY_AFTER_503}
                return error(status, code, str(exc), headers)
        return error(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            message = e.get("msg")
            if e.get("type") == "string_pattern_mismatch":  # the pattern itself is no help to a reader
                blank = (e.get("ctx") or {}).get("pattern") == NOT_BLANK  # the pattern of every other text field
                message = BLANK if blank else PATTERN_MESSAGES.get(str((e.get("loc") or ("",))[-1]),
                                                                   "does not have the expected form")
            elif str(message).startswith("Value error, "):
                message = str(message)[len("Value error, "):]
            parts.append(f"{where or 'body'}: {message}")
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {"Allow": ", ".join(allowed_methods(request))}
        return error(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, "internal", "internal error; it has been logged")
