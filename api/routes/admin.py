"""Maintainers: re-index in the background, read index info, manage corpus records."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from api.deps import principal, service
from api.errors import ERROR_RESPONSES
from api.security import Principal, require
from api.service import Service
from indexer.errors import NotFound
from indexer.records import KINDS, delete_record, load_corpus, record_to_json, upsert_record

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)
Kind = Literal["achievement", "course", "standard_question", "craftsman", "passage"]


class ReindexIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    full: bool = False


@router.post("/reindex", status_code=202)
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
    m = svc.engine.live.get().manifest
    return {"version": m["version"], "parent": m.get("parent"), "built_at": m["created_at"], "counts": m["counts"],
            "model": m["model"], "vector_index": m["vector_index"], "tokenizer": m["tokenizer"],
            "corpus_fingerprint": m["corpus_fingerprint"], "threshold": svc.engine.threshold}


def _find(svc: Service, kind: str, record_id: str):
    for record in load_corpus(svc.engine.config.corpus_dir).records:
        if record.kind == kind and record.id == record_id:
            return record
    raise NotFound(f"no {kind} record {record_id} in the corpus")


@router.get("/records/{kind}/{record_id}")
def get_record(kind: Kind, record_id: str, p: Annotated[Principal, Depends(principal)],
               svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    require(p, "maintainer")
    return record_to_json(_find(svc, kind, record_id))


def _put_route(kind: str, model: type) -> None:
    plural = PLURAL[kind]

    def put_record(record: model, p: Annotated[Principal, Depends(principal)],  # type: ignore[valid-type]
                   svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
        require(p, "maintainer")
        upsert_record(svc.engine.config.corpus_dir, record)
        return record_to_json(record)

    put_record.__annotations__.update(record=model, p=Annotated[Principal, Depends(principal)],
                                      svc=Annotated[Service, Depends(service)], **{"return": dict[str, Any]})
    put_record.__doc__ = f"Create or replace a {kind} record (by its id); re-index to serve it."
    router.add_api_route(f"/records/{plural}", put_record, methods=["PUT"], name=f"put_{kind}")


PLURAL = {"achievement": "achievements", "course": "courses", "standard_question": "standard_questions",
          "craftsman": "craftsmen", "passage": "passages"}
for _kind, _model in KINDS.items():
    _put_route(_kind, _model)


@router.delete("/records/{kind}/{record_id}")
def remove_record(kind: Kind, record_id: str, p: Annotated[Principal, Depends(principal)],
                  svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    require(p, "maintainer")
    if kind not in KINDS or not delete_record(svc.engine.config.corpus_dir, kind, record_id):
        raise NotFound(f"no {kind} record {record_id} in the corpus")
    return {"deleted": record_id, "kind": kind}
