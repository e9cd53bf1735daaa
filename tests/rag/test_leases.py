"""Work in flight is recovered when its process dies, never while it runs, however long it runs (rag/leases.py): on a
real SQLite file and on PostgreSQL. A process's death is its lease running out: renewals stop."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

import rag.leases as leases
from rag.db import LeaseRow, PublishJobRow, TicketRow, VisitRow, sessions, utcnow
from rag.escalate import Route, TicketQueue
from rag.leases import Lease, abandoned, grant
from rag.programme import Programme
from tests.rag.concurrency import postgres_for_run, race, sqlite_or_postgres, uid

SOON = (utcnow() + timedelta(days=10)).date().isoformat()


@pytest.fixture(scope="module")
def pg_engine():
    yield from postgres_for_run([("tickets", "asker"), ("visits", "enterprise")])


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    return sqlite_or_postgres(request, tmp_path)


def publishing_ticket(db) -> str:
    queue = TicketQueue(db, quota_per_day=None)
    craftsman = uid("cm")
    ticket, _ = queue.create(uid("问题"), uid("ent"), 0.2, [], ["焊接"], [Route(craftsman, craftsman, 1.0)])
    queue.claim(ticket.id, craftsman)
    queue.answer(ticket.id, craftsman, "换密封圈")
    queue.start_publish(ticket.id)
    with sessions(db).begin() as s:  # it has been publishing for two hours (a slow one, or a dead one)
        s.execute(update(TicketRow).where(TicketRow.id == ticket.id).values(updated_at=utcnow() - timedelta(hours=2)))
    return ticket.id


def test_a_publish_holding_its_lease_is_never_recovered_however_old(db):
    queue = TicketQueue(db, quota_per_day=None)
    ticket_id = publishing_ticket(db)
    lease = Lease(db, f"ticket:{ticket_id}").take()
    try:
        assert ticket_id not in queue.recover_publishing()
    finally:
        lease.release()
    assert ticket_id in queue.recover_publishing()  # released without finishing (as if it died): recovered
    assert queue.get(ticket_id).status == "answered"


def test_a_lease_that_is_no_longer_renewed_runs_out_and_its_work_is_recovered(db):
    queue = TicketQueue(db, quota_per_day=None)
    ticket_id = publishing_ticket(db)
    lease = Lease(db, f"ticket:{ticket_id}").take()
    lease._stop.set()  # the holder died: no more renewals
    assert ticket_id not in queue.recover_publishing()
    with sessions(db).begin() as s:  # … and LEASE later
        s.execute(update(LeaseRow).where(LeaseRow.subject == lease.subject).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert ticket_id in queue.recover_publishing()


def test_renewal_keeps_a_lease_alive_past_its_length(db, monkeypatch):
    monkeypatch.setattr(leases, "LEASE", timedelta(seconds=0.6))
    monkeypatch.setattr(leases, "RENEW", 0.15)
    subject = f"job:J{uid('x')}"
    with Lease(db, subject) as lease:
        time.sleep(1.5)  # two and a half lease lengths
        with sessions(db)() as s:
            row = s.get(LeaseRow, subject)
            assert row.holder == lease.holder and row.expires_at > utcnow()
    with sessions(db)() as s:
        assert s.get(LeaseRow, subject) is None  # released


def test_a_lease_taken_over_is_neither_renewed_nor_released_by_its_old_holder(db):
    subject = f"job:J{uid('x')}"
    old = Lease(db, subject).take()
    old._stop.set()
    with sessions(db).begin() as s:  # it ran out and another process took the subject over
        grant(s, subject, "newholder")
    old.release()
    with sessions(db)() as s:
        assert s.get(LeaseRow, subject).holder == "newholder"


def test_a_visit_left_publishing_is_recovered_to_confirmed_and_a_live_one_is_not(db):
    programme = Programme(db)
    visits = []
    for _ in range(2):
        enterprise, craftsman = uid("ent"), uid("cm")
        visit = programme.request_visit(enterprise, "现场", "d", "焊接", "湖北", "地址", [], craftsman, consent=True)
        programme.schedule(visit.id, craftsman, SOON)
        programme.report(visit.id, craftsman, {"problem": "p", "actions": "a", "results": "r", "advice": ""})
        programme.confirm(visit.id, enterprise)
        programme.start_case(visit.id)
        visits.append(visit.id)
    with sessions(db).begin() as s:
        s.execute(update(VisitRow).where(VisitRow.id.in_(visits)).values(updated_at=utcnow() - timedelta(minutes=5)))
    alive, dead = visits
    with Lease(db, f"visit:{alive}"):
        assert programme.abandoned_cases() == [dead]
        assert not programme.recover_case(alive) and programme.recover_case(dead)
        assert not programme.recover_case(dead)  # once: a second recoverer finds it confirmed
    with sessions(db)() as s:
        assert dict(s.execute(select(VisitRow.id, VisitRow.status).where(VisitRow.id.in_(visits))).all()) == {
            alive: "publishing", dead: "confirmed"}


def test_a_job_row_is_abandoned_only_without_a_live_lease_and_after_the_grace(db):
    fresh, old, leased = (f"J{uid('j')}"[:32] for _ in range(3))
    with sessions(db).begin() as s:
        for job_id, age in ((fresh, 0), (old, 3600), (leased, 3600)):
            s.add(PublishJobRow(id=job_id, ticket_id=f"T{job_id}"[:32], state="running", requested_by="ops",
                                created_at=utcnow() - timedelta(seconds=age)))
        grant(s, f"job:{leased}", "alive")
    with sessions(db)() as s:
        found = set(s.scalars(select(PublishJobRow.id).where(PublishJobRow.id.in_([fresh, old, leased]),
                                                              abandoned("job:", PublishJobRow.id, PublishJobRow.created_at))))
    assert found == {old}


def test_a_lease_that_ran_out_is_never_renewed(db, monkeypatch):
    """Recovery may already be taking the work of a lease that ran out (its holder stalled): a late renewal must not
    bring it back."""
    monkeypatch.setattr(leases, "RENEW", 0.1)
    subject = f"job:J{uid('x')}"
    lease = Lease(db, subject).take()
    try:
        with sessions(db).begin() as s:
            s.execute(update(LeaseRow).where(LeaseRow.subject == subject).values(expires_at=utcnow() - timedelta(seconds=1)))
        time.sleep(0.5)  # several renewal rounds
        with sessions(db)() as s:
            assert s.get(LeaseRow, subject).expires_at < utcnow()
    finally:
        lease.release()


def test_recoverers_racing_for_one_abandoned_publish_give_it_back_once(db):
    queue = TicketQueue(db, quota_per_day=None)
    ticket_id = publishing_ticket(db)
    outcomes = race(*[lambda: queue.recover_publish(ticket_id)] * 6)
    assert outcomes.count(True) == 1 and outcomes.count(False) == 5, outcomes
    assert queue.get(ticket_id).status == "answered"


def test_processes_racing_to_take_one_lease_leave_exactly_one_holder(db):
    subject = f"job:J{uid('x')}"
    leases_taken = [Lease(db, subject) for _ in range(6)]
    outcomes = race(*(lease.take for lease in leases_taken))
    try:
        assert all(isinstance(o, Lease) for o in outcomes), outcomes
        with sessions(db)() as s:
            rows = s.scalars(select(LeaseRow).where(LeaseRow.subject == subject)).all()
        assert len(rows) == 1 and rows[0].holder in {lease.holder for lease in leases_taken}
    finally:
        for lease in leases_taken:
            lease.release()
    with sessions(db)() as s:
        assert s.get(LeaseRow, subject) is None  # the holder's release removed it; the others' touched nothing of it
