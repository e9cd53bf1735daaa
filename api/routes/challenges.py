"""发榜揭榜: enterprises post challenges; craftsmen of the trade (or the invited ones) browse and apply with a plan,
alone or as a team; the enterprise picks one, the team posts progress, the enterprise confirms completion."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import principal, role, service, viewer
from api.errors import ERROR_RESPONSES
from api.routes.follow import EventOut
from api.schemas import NOT_BLANK
from api.security import Principal
from api.service import Service
from rag.programme import Application, Challenge

router = APIRouter(prefix="/v1/challenges", tags=["challenges"], responses=ERROR_RESPONSES)
Status = Literal["open", "in_progress", "completed", "cancelled"]
DATE = r"^\d{4}-\d{2}-\d{2}$"
RecordIdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]


class ChallengeIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    title: str = Field(min_length=1, max_length=200, pattern=NOT_BLANK)
    description: str = Field(min_length=1, max_length=8000, pattern=NOT_BLANK)
    summary: str = Field(default="", max_length=500, description="What craftsmen may read of a confidential challenge")
    trade: str = Field(min_length=1, max_length=40, pattern=NOT_BLANK)
    region: str = Field(default="", max_length=40)
    deadline: str = Field(pattern=DATE, description="Last day for applications (YYYY-MM-DD, today or later)")
    reward: str = Field(default="", max_length=200)
    terms: str = Field(default="", max_length=2000)
    invited_only: bool = False
    invited: list[RecordIdStr] = Field(default_factory=list, max_length=20, description="Craftsmen invited (record ids)")
    confidential: bool = Field(default=False, description="The description reaches the picked team only; never published")
    reveal: bool = Field(default=False, description="Show craftsmen the enterprise's id instead of a pseudonym")


class ApplicationIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    plan: str = Field(min_length=1, max_length=4000, pattern=NOT_BLANK)
    team: list[RecordIdStr] = Field(default_factory=list, max_length=10, description="Team mates (craftsman record ids)")


class PickIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    application_id: str = Field(min_length=1, max_length=32)


class ProgressIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    note: str = Field(min_length=1, max_length=4000, pattern=NOT_BLANK)


class ApplicationOut(BaseModel):
    id: str
    challenge_id: str
    craftsman: str
    plan: str
    team: list[str]
    status: Literal["applied", "picked", "not_picked"]
    created_at: str | None

    @classmethod
    def of(cls, a: Application) -> ApplicationOut:
        return cls(**a.__dict__)


class ChallengeOut(BaseModel):
    id: str
    enterprise: str = Field(description="The enterprise, or its pseudonym for craftsmen unless it revealed itself")
    title: str
    summary: str
    description: str | None = Field(description="None where the challenge is confidential and the caller not in the picked team")
    trade: str
    region: str
    deadline: str
    reward: str
    terms: str
    invited_only: bool
    invited: list[str] = Field(description="The invited craftsmen (to the enterprise and maintainers only)")
    confidential: bool
    status: Status
    picked: str | None
    created_at: str | None
    updated_at: str | None
    applications: list[ApplicationOut] = Field(description="All (enterprise, maintainer) or the caller's own (craftsman)")

    @classmethod
    def of(cls, c: Challenge) -> ChallengeOut:
        fields = {k: v for k, v in c.__dict__.items() if k != "applications"}
        return cls(**fields, applications=[ApplicationOut.of(a) for a in c.applications])


def _is_craftsman(svc: Service):
    def check(record_id: str) -> bool:
        return getattr(svc.engine.live.get().records.get(record_id), "kind", "") == "craftsman"
    return check


@router.post("", status_code=201, dependencies=[Depends(role("enterprise"))])
def post_challenge(body: ChallengeIn, p: Annotated[Principal, Depends(principal)],
                   svc: Annotated[Service, Depends(service)]) -> ChallengeOut:
    """发榜: post a challenge (public to the trade's craftsmen, or invited-only)."""
    return ChallengeOut.of(svc.programme.post_challenge(p.principal, **body.model_dump()))


@router.get("")
def list_challenges(p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)],
                    status: Status | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 100) -> list[ChallengeOut]:
    """Craftsmen: open challenges of their trades, those they are invited to or applied to. Enterprises: their own."""
    return [ChallengeOut.of(c) for c in svc.programme.challenges(viewer(svc, p), status, limit)]


@router.get("/{challenge_id}")
def get_challenge(challenge_id: str, p: Annotated[Principal, Depends(principal)],
                  svc: Annotated[Service, Depends(service)]) -> ChallengeOut:
    return ChallengeOut.of(svc.programme.challenge(challenge_id, viewer(svc, p)))


@router.post("/{challenge_id}/applications", status_code=201, dependencies=[Depends(role("craftsman"))])
def apply(challenge_id: str, body: ApplicationIn, p: Annotated[Principal, Depends(principal)],
          svc: Annotated[Service, Depends(service)]) -> ApplicationOut:
    """揭榜: apply with a plan, alone or with team mates (组队攻关); once per craftsman."""
    return ApplicationOut.of(svc.programme.apply(challenge_id, viewer(svc, p), body.plan, body.team, _is_craftsman(svc)))


@router.post("/{challenge_id}/pick", dependencies=[Depends(role("enterprise"))])
def pick(challenge_id: str, body: PickIn, p: Annotated[Principal, Depends(principal)],
         svc: Annotated[Service, Depends(service)]) -> ChallengeOut:
    """The enterprise picks one application; the challenge is then in progress."""
    return ChallengeOut.of(svc.programme.pick(challenge_id, p.principal, body.application_id))


@router.post("/{challenge_id}/progress", status_code=201, dependencies=[Depends(role("craftsman"))])
def progress(challenge_id: str, body: ProgressIn, p: Annotated[Principal, Depends(principal)],
             svc: Annotated[Service, Depends(service)]) -> EventOut:
    """A progress update from the picked team (on the challenge's timeline)."""
    svc.programme.progress(challenge_id, p.principal, body.note)
    return EventOut.of(svc.timeline.of(f"challenge:{challenge_id}")[-1])


@router.post("/{challenge_id}/complete", dependencies=[Depends(role("enterprise"))])
def complete(challenge_id: str, p: Annotated[Principal, Depends(principal)],
             svc: Annotated[Service, Depends(service)]) -> ChallengeOut:
    """The enterprise confirms the challenge solved."""
    return ChallengeOut.of(svc.programme.complete(challenge_id, p.principal))


@router.post("/{challenge_id}/cancel", dependencies=[Depends(role("enterprise"))])
def cancel(challenge_id: str, p: Annotated[Principal, Depends(principal)],
           svc: Annotated[Service, Depends(service)]) -> ChallengeOut:
    return ChallengeOut.of(svc.programme.cancel(challenge_id, p.principal))


@router.get("/{challenge_id}/timeline")
def timeline(challenge_id: str, p: Annotated[Principal, Depends(principal)],
             svc: Annotated[Service, Depends(service)]) -> list[EventOut]:
    """The challenge's events (its enterprise, maintainers, and craftsmen who may see it)."""
    challenge = svc.programme.challenge(challenge_id, viewer(svc, p))  # 404 for whoever may not see it
    events = svc.timeline.of(f"challenge:{challenge.id}")
    if p.role != "craftsman":
        return [EventOut.of(e) for e in events]
    if challenge.description is None:  # confidential: no progress notes outside the team
        events = [e for e in events if e.event != "progress"]
    events = [e for e in events if e.event != "invited" or e.detail.get("craftsman") == p.principal]
    return [EventOut.of(e, shown_as={svc.programme.owner_of(f"challenge:{challenge.id}"): challenge.enterprise}) for e in events]
