"""Maintainers: upload a spreadsheet to import (multipart), follow the import job, and the page for it."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from api import errors
from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.imports import (DOCUMENT_TYPES, SUFFIX, ArchiveTooLarge, ImportJob, ImportRequest, UnsupportedUpload,
                         detect_type)
from api.security import Principal, require
from api.service import Service
from indexer.sheets import HEADERS as SHEET_KINDS

UPLOAD_PATH = "/v1/admin/imports"
router = APIRouter(tags=["admin"], responses=ERROR_RESPONSES)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")
MAX_FIELD_BYTES = 64 * 1024
COPY_CHUNK = 1024 * 1024


class ImportJobOut(BaseModel):
    """An import job: queued → running (``stage``, ``done`` of ``total``) → done or failed; ``report`` as the CLI's."""

    id: str
    state: Literal["queued", "running", "done", "failed"]
    kind: str
    filename: str
    file_type: str
    stage: str
    progress: dict[str, int] = Field(description="done of total in the current stage")
    report: dict[str, Any] | None = Field(description="mapping, added/updated/unchanged/skipped, row problems as "
                                                      "file:row:column: reason, index_version")
    error: str | None
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str

    @classmethod
    def of(cls, job: ImportJob) -> ImportJobOut:
        utc = lambda t: t.replace(tzinfo=timezone.utc) if t is not None else None  # noqa: E731
        return cls(id=job.id, state=job.state, kind=job.kind, filename=job.filename, file_type=job.file_type,
                   stage=job.stage, progress={"done": job.done, "total": job.total}, report=job.report, error=job.error,
                   requested_by=job.requested_by, created_at=utc(job.created_at), started_at=utc(job.started_at),
                   finished_at=utc(job.finished_at), url=f"{UPLOAD_PATH}/{job.id}")


def _invalid(name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", name), "msg": message, "type": "value_error"}])


def _flag(form, name: str) -> bool:
    value = form.get(name)
    if value is None:
        return False
    if not isinstance(value, str) or value.strip().lower() not in TRUE + FALSE:
        raise _invalid(name, "expected true or false")
    return value.strip().lower() in TRUE


def _overrides(form) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for spec in form.getlist("map"):
        if isinstance(spec, str) and not spec.strip():
            continue  # an empty form field (a blank input on the page) maps nothing
        header, sep, target = spec.rpartition("=") if isinstance(spec, str) else ("", "", "")
        if not sep or not header.strip() or not target.strip():
            raise _invalid("map", f"{spec!r}: expected 列名=field, e.g. 标准问题=question")
        overrides[header.strip()] = target.strip()
    return overrides


def _store(upload: UploadFile) -> Path:
    """Copy the (already spooled) upload into a directory of its own; the job removes it when it ends."""
    folder = Path(tempfile.mkdtemp(prefix="jiangxin-upload-"))
    path = folder / "upload"
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, COPY_CHUNK)
    return path


def _safe_name(name: str | None) -> str:
    base = Path((name or "upload").replace("\\", "/")).name
    return "".join(c for c in base if c.isprintable())[:200] or "upload"


# The handler answers with its own JSONResponse (for the Location header): response_model documents that body.
@router.post(UPLOAD_PATH, status_code=202, dependencies=[Depends(role("maintainer"))], response_model=ImportJobOut,
             responses={415: {"model": errors.ErrorResponse, "description": "Not a type we import (decided by content)"}},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"],
                 "properties": {"file": {"type": "string", "format": "binary"},
                                "kind": {"type": "string", "enum": [*sorted(SHEET_KINDS), "knowledge"]},
                                "map": {"type": "array", "items": {"type": "string", "pattern": "^$|=.+"}},
                                "dry_run": {"type": "boolean"}, "skip_invalid": {"type": "boolean"}}}}}}})
async def upload(request: Request, p: Annotated[Principal, Depends(principal)],
                 svc: Annotated[Service, Depends(service)]) -> JSONResponse:
    """Upload an XLSX or CSV sheet (multipart: ``file``, ``kind``, ``map`` 列名=field repeated, ``dry_run``,
    ``skip_invalid``); 202 with the import job to follow. The type comes from the content (415 otherwise), zips
    that are not a workbook or would inflate too far are refused, and bodies over the upload limit get 413."""
    require(p, "maintainer")  # before the body is read: another role learns nothing and sends nothing further
    # The body is parsed here, streamed: files spool to disk past 1 MB, and the body limit counts every byte.
    form = await request.form(max_files=1, max_fields=64, max_part_size=MAX_FIELD_BYTES)
    try:
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile):
            raise _invalid("file", "required: the spreadsheet as a multipart/form-data file part")
        kind = form.get("kind")  # absent: decided by the file (a document is knowledge); present: one of the kinds
        if kind is not None:
            kind = kind.strip() if isinstance(kind, str) else ""
            if kind not in SHEET_KINDS and kind != "knowledge":
                raise _invalid("kind", f"one of {', '.join(sorted(SHEET_KINDS))} for a sheet, or knowledge for a document "
                                       "(omit it for a document)")
        overrides, dry_run, skip_invalid = _overrides(form), _flag(form, "dry_run"), _flag(form, "skip_invalid")
        filename = _safe_name(upload_file.filename)
        path = await run_in_threadpool(_store, upload_file)
    finally:
        await form.close()
    try:
        file_type = await run_in_threadpool(detect_type, path, filename, kind)
        path = path.rename(path.with_suffix(SUFFIX[file_type]))  # the readers go by the name (openpyxl refuses others)
        if file_type in DOCUMENT_TYPES:
            if kind not in (None, "knowledge"):
                raise _invalid("kind", f"{filename} is a {file_type} document, imported as knowledge records "
                                       "(omit kind or send knowledge)")
            kind = "knowledge"
        elif kind is None or kind == "knowledge":
            raise _invalid("kind", f"required for a sheet ({filename}): {', '.join(sorted(SHEET_KINDS))}")
    except (UnsupportedUpload, ArchiveTooLarge) as exc:
        shutil.rmtree(path.parent, ignore_errors=True)
        if isinstance(exc, ArchiveTooLarge):
            return errors.error(413, "archive_too_large", str(exc))
        return errors.error(415, "unsupported_type", str(exc))
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    try:
        job = svc.import_jobs.submit(
            ImportRequest(path, filename, file_type, kind, overrides, dry_run, skip_invalid), p.principal)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    out = ImportJobOut.of(job)
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers={"Location": out.url})


@router.get(UPLOAD_PATH + "/{job_id}", dependencies=[Depends(role("maintainer"))])
def get_import(job_id: str, request: Request, p: Annotated[Principal, Depends(principal)],
               svc: Annotated[Service, Depends(service)]) -> ImportJobOut:
    """An import job's state, stage and progress, and its report once parsed."""
    require(p, "maintainer")
    return ImportJobOut.of(svc.import_jobs.get(job_id))


@router.get("/import", response_class=HTMLResponse, include_in_schema=False)
def import_page() -> HTMLResponse:
    from api.app import page  # the app imports this module

    return page("import.html")
