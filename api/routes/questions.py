"""Enterprises ask questions, read their own back, and give feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.paging import CURSOR_HELP, CURSOR_PATTERN, decode_cursor, page
from api.schemas import QuestionStatus, QuestionSummary, QuestionView
from api.security import Principal, require
from api.service import Service
from indexer.ports import NO_FILTERS, Filters
from indexer.records import KINDS
from rag.engine import INVISIBLE

router = APIRouter(prefix="/v1/questions", tags=["questions"], responses=ERROR_RESPONSES)


class QuestionIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    question: str = Field(min_length=1, max_length=2000, pattern=rf"[^\s{INVISIBLE}]",
                          description="1–2,000 characters with at least one visible one (not white space, zero-width "
                                      "or control); invisible characters are removed")
    filters: FiltersIn | None = None
    confidential: bool = Field(default=False, description="Trade secret: if escalated, the ticket is never published and "
                                                        "reaches only the craftsmen it is routed or invited to")
    reveal: bool = Field(default=False, description="Let craftsmen see who asks (default: a pseudonym)")


def _date_or_empty(schema: dict) -> None:
    """The schema of a date filter: a calendar date (JSON Schema's format ``date``, which the validator enforces) or
    empty (no bound), so clients and generated tests see what is accepted rather than a digits pattern."""
    kept = {k: v for k, v in schema.items() if k in ("default", "description", "title")}
    schema.clear()
    schema.update(kept, anyOf=[{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}])


class FiltersIn(BaseModel):
    """Answer only from records of these kinds, of these trades, dated within this range (inclusive)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    kinds: list[Literal[tuple(KINDS)]] = Field(default_factory=list, max_length=10)  # type: ignore[valid-type]
    trades: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(default_factory=list, max_length=20)
    date_from: str = Field(default="", pattern=r"^(\d{4}-\d{2}-\d{2})?$", json_schema_extra=_date_or_empty,
                           description="a calendar date YYYY-MM-DD (2020-02-30 is refused); empty: no lower bound")
    date_to: str = Field(default="", pattern=r"^(\d{4}-\d{2}-\d{2})?$", json_schema_extra=_date_or_empty,
                         description="a calendar date YYYY-MM-DD; empty: no upper bound; before date_from: nothing matches")

    @model_validator(mode="after")
    def real_dates(self) -> "FiltersIn":
        problems = self.filters().date_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def filters(self) -> Filters:
        return Filters(tuple(self.kinds), tuple(self.trades), self.date_from, self.date_to)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    helpful: bool
    comment: str = Field(default="", max_length=2000)


def _own(p: Principal) -> str | None:
    return None if p.role == "maintainer" else p.principal


# A stored question may lack fields added after it was asked: what was not stored is not sent (see api/schemas.py).
@router.post("", status_code=201, dependencies=[Depends(role("enterprise", "maintainer"))], response_model_exclude_unset=True)
def ask(body: QuestionIn, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> QuestionView:
    """Ask a question: an answer with sources and confidence, or the escalation ticket."""
    require(p, "enterprise", "maintainer")
    result = svc.engine.ask(body.question, p.principal, body.filters.filters() if body.filters else NO_FILTERS,
                            confidential=body.confidential, reveal=body.reveal)
    svc.metrics.outcomes.labels(result.status).inc()
    return QuestionView.model_validate(svc.questions.just_asked(result, p.principal))


@router.get("")
def list_questions(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
                   request: Request, response: Response, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   status: QuestionStatus | None = None,
                   cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description=CURSOR_HELP)] = None,
                   ) -> list[QuestionSummary]:
    """Your questions, newest first (maintainers: everyone's; ``status=out_of_scope`` is their triage list); when
    more follow, the ``X-Next-Cursor`` header gives the next page's ``cursor``."""
    require(p, "enterprise", "maintainer")
    found = svc.questions.list(_own(p), limit + 1, status, decode_cursor(cursor))
    shown = page(found, limit, lambda q: (datetime.fromisoformat(q["created_at"].removesuffix("Z")), q["id"]), request, response)
    return [QuestionSummary.model_validate(q) for q in shown]


@router.get("/{question_id}", response_model_exclude_unset=True)
def get_question(question_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> QuestionView:
    """One of your questions with its current status, and the craftsman's answer once published."""
    require(p, "enterprise", "maintainer")
    return QuestionView.model_validate(svc.questions.get(question_id, _own(p)))


@router.post("/{question_id}/feedback", dependencies=[Depends(role("enterprise"))], response_model_exclude_unset=True)
def feedback(question_id: str, body: FeedbackIn, p: Annotated[Principal, Depends(principal)],
             svc: Annotated[Service, Depends(service)]) -> QuestionView:
    """Helpful or not, with an optional comment."""
    require(p, "enterprise")
    view = svc.questions.feedback(question_id, p.principal, body.helpful, body.comment)
    svc.metrics.feedback.labels("true" if body.helpful else "false").inc()
    return QuestionView.model_validate(view)


@router.post("/{question_id}/escalate", dependencies=[Depends(role("enterprise"))], response_model_exclude_unset=True)
def hand_over(question_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> QuestionView:
    """转人工: send your answered question to a craftsman (one click after an unhelpful answer); the ticket
    carries the answer that was given. Idempotent."""
    require(p, "enterprise")
    _, created = svc.engine.hand_over(question_id, p.principal)
    if created:
        svc.metrics.handovers.inc()
    return QuestionView.model_validate(svc.questions.get(question_id, p.principal))
