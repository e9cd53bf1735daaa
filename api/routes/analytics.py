"""Maintainers' dashboard (运营看板): read-only reports, each as JSON or, with ``format=csv``, as a CSV table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from api.deps import role, service
from api.errors import ERROR_RESPONSES
from api.service import Service
from rag.analytics import (Analytics, CapacityReport, CraftsmanContribution, CraftsmenReport, FeedbackReport, GapCluster,
                           GapsReport, TradeCapacity, TradeFeedback, TradesReport, TradeWeek)

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERROR_RESPONSES)
MAINTAINERS = [Depends(role("maintainer"))]
CSV = {200: {"description": "The report as JSON, or with format=csv its table as CSV (UTF-8, header row first)",
             "content": {"text/csv": {}}}}
Format = Annotated[Literal["json", "csv"], Query(alias="format", description="json, or csv for the report's table")]
Days = Annotated[int, Query(ge=1, le=3650, description="Days back from now")]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell; a text a spreadsheet would run as a formula (an asker's question may start with '=') gets a leading
    apostrophe, lists are joined with ' | '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " | ".join(str(v) for v in value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return str(value)


def as_csv(rows: Sequence[BaseModel], model: type[BaseModel], name: str) -> Response:
    """``rows`` as CSV with a header row of ``model``'s fields."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    fields = list(model.model_fields)
    writer.writerow(fields)
    writer.writerows([_cell(getattr(row, f)) for f in fields] for row in rows)
    # a byte-order mark, so that spreadsheet programs read the Chinese text as UTF-8
    return Response(out.getvalue().encode("utf-8-sig"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _analytics(svc: Service) -> Analytics:
    return Analytics(svc.engine.queue.engine, svc.engine.live, svc.engine.cache)


@router.get("/trades", dependencies=MAINTAINERS, responses=CSV)
def trades(svc: Annotated[Service, Depends(service)], weeks: Annotated[int, Query(ge=1, le=104)] = 12,
           fmt: Format = "json") -> TradesReport:
    """Per trade and ISO week: questions asked, answered automatically, tickets created and answered by craftsmen,
    and the answer rate."""
    report = _analytics(svc).trades(weeks)
    return as_csv(report.trade_weeks, TradeWeek, "trades") if fmt == "csv" else report


@router.get("/gaps", dependencies=MAINTAINERS, responses=CSV)
def gaps(svc: Annotated[Service, Depends(service)], days: Days = 90, limit: Annotated[int, Query(ge=1, le=200)] = 20,
         fmt: Format = "json") -> GapsReport:
    """Knowledge gaps (知识缺口): clusters of similar escalated questions, largest first, with a representative question
    and examples — what to write standard questions for next. Confidential tickets never appear."""
    report = _analytics(svc).gaps(days, limit)
    return as_csv(report.clusters, GapCluster, "gaps") if fmt == "csv" else report


@router.get("/capacity", dependencies=MAINTAINERS, responses=CSV)
def capacity(svc: Annotated[Service, Depends(service)], fmt: Format = "json") -> CapacityReport:
    """Per trade now: open and claimed tickets, open visits, craftsmen covering it, demand per craftsman, and whether
    demand has no expert."""
    report = _analytics(svc).capacity()
    return as_csv(report.trades, TradeCapacity, "capacity") if fmt == "csv" else report


@router.get("/feedback", dependencies=MAINTAINERS, responses=CSV)
def feedback(svc: Annotated[Service, Depends(service)], days: Days = 90, fmt: Format = "json") -> FeedbackReport:
    """Helpful and unhelpful verdicts on answers per trade, most unhelpful first."""
    report = _analytics(svc).feedback(days)
    return as_csv(report.trades, TradeFeedback, "feedback") if fmt == "csv" else report


@router.get("/craftsmen", dependencies=MAINTAINERS, responses=CSV)
def craftsmen(svc: Annotated[Service, Depends(service)], fmt: Format = "json") -> CraftsmenReport:
    """Per craftsman, all time: tickets answered, answers published and the votes on them, visits, challenges picked
    (for incentive schemes)."""
    report = _analytics(svc).craftsmen()
    return as_csv(report.craftsmen, CraftsmanContribution, "craftsmen") if fmt == "csv" else report
