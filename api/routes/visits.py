"""线下服务 and 线上展示: an enterprise requests an on-site visit (from a ticket, a challenge or afresh), matched to a
craftsman by trade and region; the craftsman schedules and reports it; the enterprise confirms; with its consent a
maintainer publishes an edited, de-identified service case, indexed and citable, shown on the public showcase."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import principal, role, service, viewer
from api.errors import ERROR_RESPONSES
from api.routes.follow import EventOut
from api.schemas import NOT_BLANK
from api.security import Principal
from api.service import Service
from indexer.errors import Conflict, NotFound, WithdrawalPending
from indexer.records import ServiceCase
from rag.leases import Lease
from rag.programme import Viewer, Visit, case_record_id, match_craftsman

router = APIRouter(prefix="/v1/visits", tags=["visits"], responses=ERROR_RESPONSES)
showcase_router = APIRouter(prefix="/v1/showcase", tags=["visits"], responses=ERROR_RESPONSES)
Status = Literal["requested", "scheduled", "reported", "confirmed", "publishing", "published", "cancelled"]
DATE = r"^\d{4}-\d{2}-\d{2}$"
Text = Annotated[str, Field(min_length=1, max_length=4000, pattern=NOT_BLANK)]


class VisitIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    title: str = Field(min_length=1, max_length=200, pattern=NOT_BLANK)
    description: str = Field(min_length=1, max_length=8000, pattern=NOT_BLANK)
    trade: str = Field(min_length=1, max_length=40, pattern=NOT_BLANK)
    region: str = Field(min_length=1, max_length=40, pattern=NOT_BLANK, description="Province and city, e.g. 湖北武汉")
    address: str = Field(min_length=1, max_length=400, pattern=NOT_BLANK)
    preferred_dates: list[Annotated[str, Field(pattern=DATE)]] = Field(default_factory=list, max_length=10)
    source: str = Field(default="", pattern=r"^((ticket:T|challenge:C)[A-Za-z0-9]{1,30})?$",
                        description="The ticket or challenge this visit follows (ticket:T…, challenge:C…)")
    confidential: bool = False
    consent: bool = Field(default=False, description="Agree that a de-identified service case may be published")
    reveal: bool = False


class ScheduleIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    date: str = Field(pattern=DATE)


class ReportIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    problem: Text = Field(description="Problem found")
    actions: Text = Field(description="Actions taken")
    results: Text = Field(description="Measured results")
    advice: str = Field(default="", max_length=4000, description="Follow-up advice")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    consent: bool | None = Field(default=None, description="Give or withdraw consent to a service case")


class CaseIn(BaseModel):
    """The maintainer's edited, de-identified service case (not the raw report)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    title: str = Field(min_length=1, max_length=200, pattern=NOT_BLANK)
    problem: Text
    actions: Text
    results: Text
    advice: str = Field(default="", max_length=4000)
    keywords: list[Annotated[str, Field(min_length=1, max_length=20)]] = Field(default_factory=list, max_length=10)


class ReportOut(BaseModel):
    problem: str
    actions: str
    results: str
    advice: str


class VisitOut(BaseModel):
    id: str
    enterprise: str
    source: str
    title: str
    description: str
    trade: str
    region: str
    address: str
    preferred_dates: list[str]
    confidential: bool
    consent: bool
    craftsman: str | None = Field(description="The craftsman it is matched to (by trade, region and load)")
    status: Status
    scheduled_for: str | None
    report: ReportOut | None
    case_record: str | None = Field(description="The published service case's record id")
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, v: Visit) -> VisitOut:
        return cls(**v.to_dict())


class CaseOut(BaseModel):
    id: str
    title: str
    citation: str
    trade: str
    region: str
    date: str
    problem: str
    actions: str
    results: str
    advice: str
    craftsmen: list[str]

    @classmethod
    def of(cls, r: ServiceCase) -> CaseOut:
        return cls(id=r.id, title=r.title, citation=r.citation, trade=r.trade, region=r.region, date=r.date,
                   problem=r.problem, actions=r.actions, results=r.results, advice=r.advice, craftsmen=list(r.craftsmen))


def _assignee(svc: Service, enterprise: str, body: VisitIn) -> str | None:
    """The craftsman of the source (the picked team's lead, the ticket's answerer) or the best match by trade, region
    and open visits."""
    kind, _, source_id = body.source.partition(":")
    if kind == "challenge":
        challenge = svc.programme.challenge(source_id, Viewer("enterprise", enterprise))
        team = svc.programme.team_of(challenge.id)
        if team:
            return team[0]
    elif kind == "ticket":
        ticket = svc.engine.queue.get(source_id)
        if ticket.asker != enterprise:
            raise NotFound(f"ticket {source_id} does not exist")
        if ticket.answered_by or ticket.claimed_by:
            return ticket.answered_by or ticket.claimed_by
    craftsmen = [p.record for p in svc.engine.live.get().directory.craftsmen()]
    return match_craftsman(craftsmen, body.trade, body.region, svc.programme.open_visits())


@router.post("", status_code=201, dependencies=[Depends(role("enterprise"))])
def request_visit(body: VisitIn, p: Annotated[Principal, Depends(principal)],
                  svc: Annotated[Service, Depends(service)]) -> VisitOut:
    """Request an on-site visit; it is matched to a craftsman at once (409 when no craftsman covers the trade)."""
    craftsman = _assignee(svc, p.principal, body)
    if craftsman is None:
        raise Conflict(f"no craftsman covers the trade {body.trade}")
    fields = body.model_dump()
    return VisitOut.of(svc.programme.request_visit(p.principal, craftsman=craftsman, **fields))


@router.get("")
def list_visits(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
                status: Status | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 100) -> list[VisitOut]:
    """Enterprises: their own. Craftsmen: those matched to them. Maintainers: all."""
    return [VisitOut.of(v) for v in svc.programme.visits(viewer(svc, p), status, limit)]


@router.get("/{visit_id}")
def get_visit(visit_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> VisitOut:
    return VisitOut.of(svc.programme.visit(visit_id, viewer(svc, p)))


@router.post("/{visit_id}/schedule", dependencies=[Depends(role("craftsman"))])
def schedule(visit_id: str, body: ScheduleIn, p: Annotated[Principal, Depends(principal)],
             svc: Annotated[Service, Depends(service)]) -> VisitOut:
    if body.date < date.today().isoformat():
        raise Conflict(f"{body.date} is in the past")
    return VisitOut.of(svc.programme.schedule(visit_id, p.principal, body.date))


@router.post("/{visit_id}/report", dependencies=[Depends(role("craftsman"))])
def report(visit_id: str, body: ReportIn, p: Annotated[Principal, Depends(principal)],
           svc: Annotated[Service, Depends(service)]) -> VisitOut:
    """The visit report: problem found, actions taken, measured results, follow-up advice."""
    return VisitOut.of(svc.programme.report(visit_id, p.principal, body.model_dump()))


@router.post("/{visit_id}/confirm", dependencies=[Depends(role("enterprise"))])
def confirm(visit_id: str, body: ConfirmIn, p: Annotated[Principal, Depends(principal)],
            svc: Annotated[Service, Depends(service)]) -> VisitOut:
    return VisitOut.of(svc.programme.confirm(visit_id, p.principal, body.consent))


@router.post("/{visit_id}/publish", dependencies=[Depends(role("maintainer"))])
def publish_case(visit_id: str, body: CaseIn, p: Annotated[Principal, Depends(principal)],
                 svc: Annotated[Service, Depends(service)]) -> CaseOut:
    """Publish the maintainer's edited, de-identified service case of a confirmed visit the enterprise consented to
    (409 for a confidential one): indexed before this returns, cited in answers, shown on the showcase."""
    visit = svc.programme.start_case(visit_id)
    lease = Lease(svc.engine.queue.engine, f"visit:{visit_id}")  # renewed while this runs: recovery leaves it be
    case = ServiceCase(id=case_record_id(visit.id), title=body.title, problem=body.problem, actions=body.actions,
                       results=body.results, advice=body.advice, trade=visit.trade, region=visit.region,
                       date=date.today().isoformat(), craftsmen=[visit.craftsman] if visit.craftsman else [],
                       keywords=body.keywords, extra={"visit": visit.id})
    try:
        try:
            lease.take()
            svc.engine.publish_record(case)
        except WithdrawalPending:  # the visit stays publishing: recovery withdraws the case, then confirms it back
            raise
        except BaseException:
            svc.programme.finish_case(visit_id, p.principal, None)
            raise
        try:
            svc.programme.finish_case(visit_id, p.principal, case.id)
        except Conflict:  # recovered meanwhile (its lease lost): the case must not stay live without its visit
            svc.engine.withdraw_record(case.kind, case.id)
            raise
    finally:
        lease.release()  # after the visit left publishing
    return CaseOut.of(case)


@router.get("/{visit_id}/timeline")
def timeline(visit_id: str, p: Annotated[Principal, Depends(principal)],
             svc: Annotated[Service, Depends(service)]) -> list[EventOut]:
    visit = svc.programme.visit(visit_id, viewer(svc, p))
    shown = {svc.programme.owner_of(f"visit:{visit.id}"): visit.enterprise} if p.role == "craftsman" else {}
    return [EventOut.of(e, shown_as=shown) for e in svc.timeline.of(f"visit:{visit.id}")]


@showcase_router.get("")
def showcase(svc: Annotated[Service, Depends(service)], trade: str | None = None, region: str | None = None,
             limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[CaseOut]:
    """Completed services shown online (线上展示), by trade and region: public, de-identified, no key needed."""
    ids = [v.case_record for v in svc.programme.visits(Viewer("maintainer", ""), "published", 500) if v.case_record]
    records = svc.engine.live.get().records.get_many(ids)
    cases = [r for r in records.values() if isinstance(r, ServiceCase)
             and (not trade or r.trade == trade) and (not region or r.region.startswith(region))]
    return [CaseOut.of(r) for r in cases[:limit]]
