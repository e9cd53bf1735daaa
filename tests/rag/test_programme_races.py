"""The programme's state changes under concurrency, on a real SQLite file and on PostgreSQL (skipped with a reason
when none answers): picks, visit reports, invitation answers, the asker's verdict against a publish, and webhook
deliveries each have exactly one winner; every acknowledged change is in the final row."""

import threading
from datetime import date, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update

from indexer.errors import Conflict
from rag.db import DeliveryRow, WebhookRow, sessions, utcnow
from rag.escalate import Route, Ticket, TicketQueue
from rag.invitations import Invitation, Invitations
from rag.programme import Challenge, Programme, Viewer, Visit
from rag.timeline import record
from rag.webhooks import Deliverer, Webhooks
from tests.rag.concurrency import Pause, interleave, postgres_for_run, race, sqlite_or_postgres, uid

TRIALS = 8
SOON = (date.today() + timedelta(days=10)).isoformat()


@pytest.fixture(scope="module")
def pg_engine():
    yield from postgres_for_run([("challenges", "enterprise"), ("visits", "enterprise"), ("tickets", "asker"),
                                 ("webhooks", "owner"), ("events", "owner")])


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    return sqlite_or_postgres(request, tmp_path)


def test_racing_picks_pick_exactly_one_application(db):
    programme = Programme(db)
    for _ in range(TRIALS):
        enterprise = uid("ent")
        challenge = programme.post_challenge(enterprise, "焊缝气孔攻关", "详情", "焊接", SOON)
        apps = [programme.apply(challenge.id, Viewer("craftsman", uid("cm"), ("焊接",)), "方案") for _ in range(4)]
        outcomes = race(*(partial(programme.pick, challenge.id, enterprise, a.id) for a in apps))
        [winner] = [o for o in outcomes if isinstance(o, Challenge)]
        assert all(isinstance(o, Conflict) for o in outcomes if o is not winner)
        final = programme.challenge(challenge.id, Viewer("enterprise", enterprise))
        assert final.status == "in_progress" and final.picked == winner.picked
        assert [a.status for a in final.applications].count("picked") == 1
        assert next(a for a in final.applications if a.status == "picked").id == final.picked


def test_racing_reports_and_a_cancelled_state_keep_one_report(db):
    programme = Programme(db)
    for _ in range(TRIALS):
        enterprise, craftsman = uid("ent"), uid("cm")
        visit = programme.request_visit(enterprise, "现场", "d", "焊接", "湖北", "地址", [], craftsman)
        programme.schedule(visit.id, craftsman, SOON)
        reports = [{"problem": f"问题{i}", "actions": "a", "results": "r", "advice": ""} for i in range(4)]
        outcomes = race(*(partial(programme.report, visit.id, craftsman, r) for r in reports))
        [winner] = [o for o in outcomes if isinstance(o, Visit)]
        assert all(isinstance(o, Conflict) for o in outcomes if o is not winner)
        final = programme.visit(visit.id, Viewer("enterprise", enterprise))
        assert final.status == "reported" and final.report == winner.report


def test_an_accept_racing_a_decline_has_one_winner(db):
    queue = TicketQueue(db, quota_per_day=None)
    invitations = Invitations(db, queue, timedelta(hours=1))
    for _ in range(TRIALS):
        enterprise, first, second = uid("ent"), uid("cm"), uid("cm")
        ticket, _ = queue.create(uid("问题"), enterprise, 0.2, [], ["焊接"], [Route(first, first, 1.0)])
        invitation = invitations.invite(ticket, enterprise, [(first, "甲"), (second, "乙")])
        outcomes = race(partial(invitations.respond, invitation.id, first, True, ["焊接"]),
                        partial(invitations.respond, invitation.id, first, False),
                        partial(invitations.respond, invitation.id, first, True, ["焊接"]))
        winners = [o for o in outcomes if isinstance(o, Invitation)]
        assert len(winners) == 1 and all(isinstance(o, Conflict) for o in outcomes if o is not winners[0])
        final = queue.get(ticket.id)
        chain = invitations.of_ticket(ticket.id)
        if winners[0].status == "accepted":
            assert (final.status, final.claimed_by) == ("claimed", first) and len(chain) == 1
        else:  # declined: the next craftsman is invited, the ticket still open
            assert final.status == "open" and [i.craftsman for i in chain] == [first, second]
            assert [i.status for i in chain] == ["declined", "pending"]


def test_an_accept_that_fails_half_way_leaves_the_invitation_pending_and_the_ticket_open(db, monkeypatch):
    """Accepting is one transaction: the claim failing for any reason (here the database, as a crash would) writes
    neither the accepted invitation nor the claim, so the craftsman may answer again or the invitation expires."""
    queue = TicketQueue(db, quota_per_day=None)
    invitations = Invitations(db, queue, timedelta(hours=1))
    enterprise, craftsman = uid("ent"), uid("cm")
    ticket, _ = queue.create(uid("问题"), enterprise, 0.2, [], ["焊接"], [])
    invitation = invitations.invite(ticket, enterprise, [(craftsman, "甲")])

    def lost(*args, **kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(TicketQueue, "claim_within", lost)
    with pytest.raises(ConnectionError):
        invitations.respond(invitation.id, craftsman, True, ["焊接"])
    monkeypatch.undo()
    assert invitations.get(invitation.id).status == "pending" and queue.get(ticket.id).status == "open"
    assert invitations.respond(invitation.id, craftsman, True, ["焊接"]).status == "accepted"
    assert (queue.get(ticket.id).status, queue.get(ticket.id).claimed_by) == ("claimed", craftsman)


def test_not_solved_racing_a_publish_has_one_winner(db):
    queue = TicketQueue(db, quota_per_day=None)
    for _ in range(TRIALS):
        enterprise, craftsman = uid("ent"), uid("cm")
        ticket, _ = queue.create(uid("问题"), enterprise, 0.2, [], [], [Route(craftsman, craftsman, 1.0)])
        queue.claim(ticket.id, craftsman)
        queue.answer(ticket.id, craftsman, "换密封圈")
        outcomes = race(partial(queue.outcome, ticket.id, enterprise, False), partial(queue.start_publish, ticket.id))
        [winner] = [o for o in outcomes if isinstance(o, Ticket)]
        assert all(isinstance(o, Conflict) for o in outcomes if o is not winner)
        assert queue.get(ticket.id).status == winner.status in ("open", "publishing")


class Counter(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}
    lock = threading.Lock()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with Counter.lock:
            key = self.headers["X-Jiangxin-Delivery"]
            Counter.hits[key] = Counter.hits.get(key, 0) + 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """A webhook receiver on loopback counting the deliveries it gets; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Counter.hits.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_racing_deliverers_post_each_event_once(db, receiver):
    owner = uid("ent")
    Webhooks(db).register(owner, receiver)
    with sessions(db).begin() as session:
        ids = [record(session, f"ticket:T{i}", owner, "created", owner) for i in range(12)]
    Counter.hits.clear()
    deliverers = [Deliverer(db, allow_private=True) for _ in range(4)]  # the receiver is on loopback
    race(*(d.run_once for d in deliverers))
    race(*(d.run_once for d in deliverers))  # anything a lease skipped the first time
    log = Webhooks(db).deliveries(owner)
    assert sorted(d.event_id for d in log) == sorted(ids) and all(d.state == "delivered" for d in log)
    assert sorted(Counter.hits.values()) == [1] * len(ids)


def test_a_delivery_whose_lease_ran_out_counts_the_new_holders_outcome(db, receiver):
    """Worker A's lease runs out while it sends (a slow receiver); worker B takes the delivery. A finishing first must
    not write its outcome over B's lease (B's own would then be dropped): only the holder of the lease records."""
    owner = uid("ent")
    Webhooks(db).register(owner, receiver)
    with sessions(db).begin() as session:
        record(session, "ticket:T1", owner, "created", owner)
    [delivery] = Webhooks(db).deliveries(owner)
    a, b = Deliverer(db, allow_private=True), Deliverer(db, allow_private=True)
    lease_a = a._claim(delivery.id)
    with sessions(db).begin() as session:  # A's lease runs out
        session.execute(update(DeliveryRow).where(DeliveryRow.id == delivery.id).values(next_at=utcnow() - timedelta(seconds=1)))
    lease_b = b._claim(delivery.id)
    assert lease_a is not None and lease_b is not None
    a._send(delivery.id, lease_a)
    [after_a] = Webhooks(db).deliveries(owner)
    assert (after_a.state, after_a.attempts) == ("sending", 0)  # still B's
    b._send(delivery.id, lease_b)
    [final] = Webhooks(db).deliveries(owner)
    assert (final.state, final.attempts) == ("delivered", 1)


def test_first_registrations_racing_each_other_all_succeed_and_one_secret_holds(db):
    webhooks, owner = Webhooks(db), uid("ent")
    outcomes = race(*(partial(webhooks.register, owner, f"https://example.com/hook/{i}") for i in range(6)))
    assert all(isinstance(o, str) and o.startswith("whsec_") for o in outcomes), outcomes
    with sessions(db)() as session:
        row = session.get(WebhookRow, owner)
        assert row.secret in outcomes and row.url == f"https://example.com/hook/{outcomes.index(row.secret)}"


def test_what_was_still_to_be_sent_to_a_removed_webhook_is_never_sent(db):
    owner = uid("ent")
    Webhooks(db).register(owner, "https://example.com/hook")
    with sessions(db).begin() as session:
        record(session, "ticket:T1", owner, "created", owner)
    assert Webhooks(db).remove(owner)
    assert Deliverer(db).run_once() == 0
    [delivery] = Webhooks(db).deliveries(owner)
    assert delivery.state == "failed" and delivery.last_error == "the webhook was removed" and delivery.attempts == 0


def test_a_delivery_to_a_private_address_is_refused_at_send_time(db):
    owner = uid("ent")
    Webhooks(db).register(owner, "http://127.0.0.1:9/hook")  # e.g. a name that resolved publicly when it was set
    with sessions(db).begin() as session:
        record(session, "ticket:T1", owner, "created", owner)
    Deliverer(db, attempts=1).run_once()
    [delivery] = Webhooks(db).deliveries(owner)
    assert delivery.state == "failed" and "non-public" in delivery.last_error and delivery.last_status is None


def test_consent_withdrawn_while_a_case_starts_is_never_published(db, monkeypatch):
    """The maintainer's start_case has read the visit (consent given) when the enterprise confirms it withdrawing
    consent: the compare-and-set must see the withdrawal (a read before it does not, on PostgreSQL)."""
    programme, pause = Programme(db), Pause()
    enterprise, craftsman = uid("ent"), uid("cm")
    visit = programme.request_visit(enterprise, "现场", "d", "焊接", "湖北", "地址", [], craftsman, consent=True)
    programme.schedule(visit.id, craftsman, SOON)
    programme.report(visit.id, craftsman, {"problem": "p", "actions": "a", "results": "r", "advice": ""})
    cas = Programme._cas

    def paused(self, session, table, row_id, owner, expected, status, *args, **kwargs):
        if status == "publishing":
            pause.hit()
        return cas(self, session, table, row_id, owner, expected, status, *args, **kwargs)

    monkeypatch.setattr(Programme, "_cas", paused)
    started, confirmed = interleave(partial(programme.start_case, visit.id),
                                    partial(programme.confirm, visit.id, enterprise, consent=False), pause)
    assert isinstance(started, Conflict), started
    assert isinstance(confirmed, Visit) and confirmed.consent is False
    final = programme.visit(visit.id, Viewer("maintainer", ""))
    assert (final.status, final.consent) == ("confirmed", False)


def test_an_application_racing_a_pick_never_lands_on_a_picked_challenge(db, monkeypatch):
    """apply has found the challenge open when the enterprise picks another application: the new application is
    refused, not left applied on a challenge in progress."""
    programme, pause = Programme(db), Pause()
    enterprise = uid("ent")
    challenge = programme.post_challenge(enterprise, "焊缝气孔攻关", "详情", "焊接", SOON)
    first = programme.apply(challenge.id, Viewer("craftsman", uid("cm"), ("焊接",)), "方案")
    read = Programme.challenge

    def paused(self, *args, **kwargs):
        found = read(self, *args, **kwargs)
        pause.hit()
        return found

    monkeypatch.setattr(Programme, "challenge", paused)
    late = Viewer("craftsman", uid("cm"), ("焊接",))
    applied, picked = interleave(partial(programme.apply, challenge.id, late, "晚到的方案"),
                                 partial(programme.pick, challenge.id, enterprise, first.id), pause)
    monkeypatch.undo()
    final = programme.challenge(challenge.id, Viewer("enterprise", enterprise))
    assert isinstance(picked, Challenge) and final.status == "in_progress" and final.picked == first.id
    assert isinstance(applied, Conflict), applied
    assert [a.craftsman for a in final.applications if a.status == "applied"] == []
