"""Maintainers: follow a background publish job (started by ``POST /v1/tickets/{id}/publish``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import principal, role, service
from api.errors import ERROR_RESPONSES
from api.jobs import Job
from api.security import Principal, require
from api.service import Service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None else None


class JobOut(BaseModel):
    """A publish job: queued → running → done (``index_version`` serves the answer) or failed (``error`` says why)."""

    id: str
    ticket_id: str
    state: Literal["queued", "running", "done", "failed"]
    index_version: str | None = Field(description="The index version serving the published answer, once done")
    error: str | None = Field(description="Why the publish failed (the ticket is back to answered), once failed")
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str = Field(description="Where to follow this job")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(id=job.id, ticket_id=job.ticket_id, state=job.state, index_version=job.index_version, error=job.error,
                   requested_by=job.requested_by, created_at=_utc(job.created_at), started_at=_utc(job.started_at),
                   finished_at=_utc(job.finished_at), url=job_url(job.id))


def job_url(job_id: str) -> str:
    return f"{router.prefix}/{job_id}"


@router.get("/{job_id}", dependencies=[Depends(role("maintainer"))])
def get_job(job_id: str, p: Annotated[Principal, Depends(principal)], svc: Annotated[Service, Depends(service)]) -> JobOut:
    """A publish job's state, ticket, index version or error, and times."""
    require(p, "maintainer")
    return JobOut.of(svc.publish_jobs.get(job_id))
