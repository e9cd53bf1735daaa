"""Maintainers: re-index in the background, read index info, manage corpus records."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.security import Principal, require
from api.service import ReindexStatus, Service
from indexer.corpus_store import MAX_EXTRA_BYTES, MAX_EXTRA_DEPTH, CorpusStore, check_extra
from indexer.errors import CorpusError, NotFound
from indexer.records import KINDS, Record, record_to_json

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)
Kind = Literal["achievement", "course", "standard_question", "craftsman", "passage"]


class ReindexIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    full: bool = False


class ReindexReport(BaseModel):
    """What the finished re-index did (empty until it is done)."""

    records: int = 0
    chunks: int = 0
    added: int = Field(default=0, description="Records new since the previous version")
    changed: int = 0
    removed: int = 0
    embedded: int = Field(default=0, description="Chunks embedded (not found in the embedding cache)")
    seconds: dict[str, float] = Field(default_factory=dict, description="Time per build stage, and the total")


class ReindexStatusOut(BaseModel):
    """The background re-index: idle → running (``stage``, ``done`` of ``total``) → done (``version`` serves) or
    failed (``error`` says why). Times are Unix seconds."""

    state: Literal["idle", "running", "done", "failed"]
    full: bool
    stage: str
    done: int
    total: int
    version: str | None
    error: str | None
    started_at: float | None
    finished_at: float | None
    report: ReindexReport

    @classmethod
    def of(cls, status: ReindexStatus) -> ReindexStatusOut:
        return cls.model_validate(asdict(status))


class _Manifest(BaseModel):
    """A part of the index manifest: keys not named here pass through."""

    model_config = ConfigDict(extra="allow")


class IndexCounts(_Manifest):
    records: int
    by_kind: dict[str, int]
    chunks: int
    dense_chunks: int = Field(description="Chunks with a vector")
    terms: int


class IndexModel(_Manifest):
    id: str = Field(description="The embedding model")
    dim: int
    normalised: bool


class IndexTokenizer(_Manifest):
    version: str
    fingerprint: str = Field(description="Of the tokenizer and its dictionary")


class IndexSegment(BaseModel):
    name: str
    chunks: int
    records: int
    dense: int = Field(description="Vectors in the segment")
    vector_index: str = Field(description="exact, or the approximate index's kind")


class IndexInfo(BaseModel):
    """The serving index version."""

    version: str
    parent: str | None
    built_at: str
    counts: IndexCounts
    model: IndexModel
    backend: str
    segments: list[IndexSegment]
    tokenizer: IndexTokenizer
    corpus_fingerprint: str
    threshold: float = Field(description="Confidence at which a question is answered automatically")


class CorpusRecord(BaseModel):
    """A corpus record as written in its kind's JSONL file: ``id``, ``extra`` and the fields of its kind, which the
    request body of ``PUT /v1/admin/records/{kinds}`` lists."""

    model_config = ConfigDict(extra="allow")
    id: str
    extra: dict[str, Any]

    @classmethod
    def of(cls, record: Record) -> CorpusRecord:
        return cls.model_validate(record_to_json(record))


class RecordDeleted(BaseModel):
    deleted: str = Field(description="The record id")
    kind: Kind


# The report is empty until the re-index is done: only what it holds is sent.
@router.post("/reindex", status_code=202, dependencies=[Depends(role("maintainer"))], response_model_exclude_unset=True)
def reindex(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
            body: ReindexIn | None = None) -> ReindexStatusOut:
    """Start a re-index in the background; the serving index switches when it is done, without restart."""
    require(p, "maintainer")
    return ReindexStatusOut.of(svc.reindexer.start(full=bool(body and body.full)))


@router.get("/reindex", response_model_exclude_unset=True)
def reindex_status(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> ReindexStatusOut:
    require(p, "maintainer")
    return ReindexStatusOut.of(svc.reindexer.status)


@router.get("/index")
def index_info(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> IndexInfo:
    """Serving version, counts, model, tokenizer and build time."""
    require(p, "maintainer")
    version = svc.engine.live.get()
    m = version.manifest
    segments = [IndexSegment(name=s.name, chunks=s.n_chunks, records=s.n_records, dense=s.meta["dense"],
                             vector_index=s.meta.get("ann") or "exact") for s in version.parts.segments]
    return IndexInfo(version=m["version"], parent=m.get("parent"), built_at=m["created_at"], counts=m["counts"],
                     model=m["model"], backend=m["backend"], segments=segments, tokenizer=m["tokenizer"],
                     corpus_fingerprint=m["corpus_fingerprint"], threshold=svc.engine.threshold)


def _corpus(svc: Service) -> CorpusStore:
    return CorpusStore(svc.engine.config.corpus_dir)


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field) if field else ("body",), "msg": message, "type": "value_error"}])


def record_from_body(kind: str, body: bytes) -> Record:
    """Parse and validate a request body as a record of ``kind``; 422 naming the field and why."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise _invalid("", "JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid("", f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _invalid("", f"expected a JSON object, got {type(data).__name__}")
    try:
        if "extra" in data:
            check_extra(data["extra"])  # before validation: nothing deep or huge reaches the model or the file
        return KINDS[kind].model_validate(data)
    except CorpusError as exc:
        raise _invalid(exc.field, exc.reason) from None
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None


@router.get("/records/{kind}/{record_id}")
def get_record(kind: Kind, record_id: str, p: Annotated[Principal, Depends(principal)],
               svc: Annotated[Service, Depends(service)]) -> CorpusRecord:
    require(p, "maintainer")
    return CorpusRecord.of(_corpus(svc).get(kind, record_id))


def _put_route(kind: str, model: type[Record]) -> None:
    plural = PLURAL[kind]

    # The body is read and validated here, after ``require``: a key without the role gets 403 whatever it sends.
    async def put_record(request: Request, p: Annotated[Principal, Depends(principal)],
                         svc: Annotated[Service, Depends(service)]) -> CorpusRecord:
        require(p, "maintainer")
        record = record_from_body(kind, await request.body())
        await run_in_threadpool(_corpus(svc).upsert, record)
        return CorpusRecord.of(record)

    put_record.__doc__ = (f"Create or replace a {kind} record (by its id); re-index to serve it. Ids are unique across "
                          f"kinds (409 if another kind has it); `extra` may nest at most {MAX_EXTRA_DEPTH} levels and "
                          f"take at most {MAX_EXTRA_BYTES} bytes (422).")
    body = {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}
    router.add_api_route(f"/records/{plural}", put_record, methods=["PUT"], name=f"put_{kind}",
                         openapi_extra={"requestBody": body})


PLURAL = {"achievement": "achievements", "course": "courses", "standard_question": "standard_questions",
          "craftsman": "craftsmen", "passage": "passages", "knowledge": "knowledge", "patent": "patents",
          "service_case": "service_cases"}
for _kind, _model in KINDS.items():
    _put_route(_kind, _model)


@router.delete("/records/{kind}/{record_id}")
def remove_record(kind: Kind, record_id: str, p: Annotated[Principal, Depends(principal)],
                  svc: Annotated[Service, Depends(service)]) -> RecordDeleted:
    require(p, "maintainer")
    if not _corpus(svc).delete(kind, record_id):
        raise NotFound(f"no {kind} record {record_id} in the corpus")
    return RecordDeleted(deleted=record_id, kind=kind)
