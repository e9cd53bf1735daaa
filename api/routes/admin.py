"""Maintainers: re-index in the background, read index info, manage corpus records."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.security import Principal, require
from api.service import Service
from indexer.corpus_store import MAX_EXTRA_BYTES, MAX_EXTRA_DEPTH, CorpusStore, check_extra
from indexer.errors import CorpusError, NotFound
from indexer.records import KINDS, Record, record_to_json

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)
Kind = Literal["achievement", "course", "standard_question", "craftsman", "passage"]


class ReindexIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    full: bool = False


@router.post("/reindex", status_code=202, dependencies=[Depends(role("maintainer"))])
def reindex(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
            body: ReindexIn | None = None) -> dict[str, Any]:
    """Start a re-index in the background; the serving index switches when it is done, without restart."""
    require(p, "maintainer")
    return asdict(svc.reindexer.start(full=bool(body and body.full)))


@router.get("/reindex")
def reindex_status(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    require(p, "maintainer")
    return asdict(svc.reindexer.status)


@router.get("/index")
def index_info(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    """Serving version, counts, model, tokenizer and build time."""
    require(p, "maintainer")
    version = svc.engine.live.get()
    m = version.manifest
    segments = [{"name": s.name, "chunks": s.n_chunks, "records": s.n_records, "dense": s.meta["dense"],
                 "vector_index": s.meta.get("ann") or "exact"} for s in version.parts.segments]
    return {"version": m["version"], "parent": m.get("parent"), "built_at": m["created_at"], "counts": m["counts"],
            "model": m["model"], "backend": m["backend"], "segments": segments, "tokenizer": m["tokenizer"],
            "corpus_fingerprint": m["corpus_fingerprint"], "threshold": svc.engine.threshold}


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
               svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    require(p, "maintainer")
    return record_to_json(_corpus(svc).get(kind, record_id))


def _put_route(kind: str, model: type[Record]) -> None:
    plural = PLURAL[kind]

    # The body is read and validated here, after ``require``: a key without the role gets 403 whatever it sends.
    async def put_record(request: Request, p: Annotated[Principal, Depends(principal)],
                         svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
        require(p, "maintainer")
        record = record_from_body(kind, await request.body())
        await run_in_threadpool(_corpus(svc).upsert, record)
        return record_to_json(record)

    put_record.__doc__ = (f"Create or replace a {kind} record (by its id); re-index to serve it. Ids are unique across "
                          f"kinds (409 if another kind has it); `extra` may nest at most {MAX_EXTRA_DEPTH} levels and "
                          f"take at most {MAX_EXTRA_BYTES} bytes (422).")
    body = {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}
    router.add_api_route(f"/records/{plural}", put_record, methods=["PUT"], name=f"put_{kind}",
                         openapi_extra={"requestBody": body})


PLURAL = {"achievement": "achievements", "course": "courses", "standard_question": "standard_questions",
          "craftsman": "craftsmen", "passage": "passages", "knowledge": "knowledge", "patent": "patents"}
for _kind, _model in KINDS.items():
    _put_route(_kind, _model)


@router.delete("/records/{kind}/{record_id}")
def remove_record(kind: Kind, record_id: str, p: Annotated[Principal, Depends(principal)],
                  svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    require(p, "maintainer")
    if not _corpus(svc).delete(kind, record_id):
        raise NotFound(f"no {kind} record {record_id} in the corpus")
    return {"deleted": record_id, "kind": kind}
