"""Ticket transitions under concurrency, on a real SQLite file and on PostgreSQL (JIANGXIN_TEST_POSTGRES_URL,
default the local test role .ci/run creates; those cases skip with a reason when none answers).

Each race starts its threads at one barrier and is repeated TRIALS times; a transition is a compare-and-set,
so exactly one racer wins it and every acknowledged change is in the final row."""

from datetime import timedelta
from functools import partial

import numpy as np
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from indexer.errors import Conflict, Forbidden, NotFound, QuotaExceeded
from indexer.records import Craftsman
from indexer.version import LiveIndex
from rag.db import QuestionRow, TicketRow, connect, sessions, utcnow
from rag.engine import Engine, EngineConfig
from rag.escalate import CraftsmanProfile, Route, Ticket, TicketQueue, route
from tests.conftest import MINI
from tests.rag.concurrency import Pause, interleave, postgres_for_run, race, sqlite_or_postgres, uid

TRIALS = 20


@pytest.fixture(scope="module")
def pg_engine():
    yield from postgres_for_run([("tickets", "asker")])


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    return sqlite_or_postgres(request, tmp_path)


@pytest.fixture
def queue(db):
    return TicketQueue(db, quota_per_day=None)


def open_ticket(queue: TicketQueue, routed_to: list[str], trades: list[str] = (), question: str | None = None,
                asker: str | None = None) -> Ticket:
    routes = [Route(c, c, 1.0 - i / 10) for i, c in enumerate(routed_to)]
    ticket, created = queue.create(question or uid("问题"), asker or uid("ent"), 0.2, [], list(trades), routes)
    assert created
    return ticket


def won(outcomes: list) -> list[Ticket]:
    return [o for o in outcomes if isinstance(o, Ticket)]


def test_of_several_simultaneous_claims_exactly_one_wins(queue):
    for _ in range(TRIALS):
        craftsmen = [uid("cm") for _ in range(4)]
        ticket = open_ticket(queue, craftsmen)
        outcomes = race(*(partial(queue.claim, ticket.id, c) for c in craftsmen))
        [winner] = won(outcomes)
        losers = [o for o in outcomes if o is not winner]
        assert all(isinstance(o, Conflict) and f"claimed by {winner.claimed_by}" in str(o) for o in losers), losers
        final = queue.get(ticket.id)
        assert (final.status, final.claimed_by) == ("claimed", winner.claimed_by)


def test_claims_racing_closes_leave_one_close_and_at_most_one_claim(queue):
    for _ in range(TRIALS):
        a, b = uid("cm"), uid("cm")
        ticket = open_ticket(queue, [a, b])
        outcomes = race(partial(queue.claim, ticket.id, a), partial(queue.claim, ticket.id, b),
                        partial(queue.close, ticket.id, "重复问题一"), partial(queue.close, ticket.id, "重复问题二"))
        claims, closes = outcomes[:2], outcomes[2:]
        [closed] = won(closes)
        assert all(isinstance(o, Conflict) for o in claims + closes if not isinstance(o, Ticket))
        assert len(won(claims)) <= 1
        final = queue.get(ticket.id)
        # a claim acknowledged before the close stays recorded; a close acknowledged is never overwritten
        assert (final.status, final.closed_reason) == ("closed", closed.closed_reason)
        assert final.claimed_by == (won(claims)[0].claimed_by if won(claims) else None)


def test_an_answer_racing_closes_is_kept_only_if_it_came_first(queue):
    for _ in range(TRIALS):
        craftsman = uid("cm")
        ticket = open_ticket(queue, [craftsman])
        queue.claim(ticket.id, craftsman)
        outcomes = race(partial(queue.answer, ticket.id, craftsman, "调整焊接电流"),
                        partial(queue.close, ticket.id, "驳回一"), partial(queue.close, ticket.id, "驳回二"))
        answered, closes = outcomes[0], outcomes[1:]
        [closed] = won(closes)
        final = queue.get(ticket.id)
        assert (final.status, final.closed_reason) == ("closed", closed.closed_reason)
        if isinstance(answered, Ticket):
            assert (final.answer, final.answered_by) == ("调整焊接电流", craftsman)
        else:
            assert isinstance(answered, Conflict) and "closed" in str(answered) and final.answer is None


def test_a_publish_racing_rejects_has_exactly_one_winner(queue):
    outcomes_seen = set()
    for _ in range(TRIALS):
        craftsman = uid("cm")
        ticket = open_ticket(queue, [craftsman])
        queue.claim(ticket.id, craftsman)
        queue.answer(ticket.id, craftsman, "更换密封圈")
        outcomes = race(partial(queue.start_publish, ticket.id), partial(queue.start_publish, ticket.id),
                        partial(queue.close, ticket.id, "答案有误"), partial(queue.close, ticket.id, "答案有误"))
        [winner] = won(outcomes)
        assert all(isinstance(o, Conflict) for o in outcomes if o is not winner)
        final = queue.get(ticket.id)
        assert final.status == winner.status
        outcomes_seen.add(winner.status)
        if winner.status == "publishing":
            assert all("is publishing" in str(o) for o in outcomes if o is not winner)
            with pytest.raises(Conflict, match="publishing"):
                queue.close(ticket.id, "晚到的驳回")
            assert queue.mark_published(ticket.id, f"sq-craft-{ticket.id.lower()}").status == "published"
        else:
            assert winner.status == "closed" and final.answer == "更换密封圈"
            with pytest.raises(Conflict, match="closed"):
                queue.start_publish(ticket.id)
    assert outcomes_seen <= {"publishing", "closed"}


def test_a_release_racing_claims_hands_the_ticket_to_at_most_one(queue):
    for _ in range(TRIALS):
        holder, b, c = uid("cm"), uid("cm"), uid("cm")
        ticket = open_ticket(queue, [holder, b, c])
        queue.claim(ticket.id, holder)
        outcomes = race(partial(queue.release, ticket.id, holder), partial(queue.release, ticket.id, holder),
                        partial(queue.claim, ticket.id, b), partial(queue.claim, ticket.id, c))
        releases, claims = outcomes[:2], outcomes[2:]
        assert len(won(releases)) == 1 and len(won(claims)) <= 1
        assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, Ticket))
        final = queue.get(ticket.id)
        if won(claims):
            assert (final.status, final.claimed_by) == ("claimed", won(claims)[0].claimed_by)
        else:
            assert (final.status, final.claimed_by) == ("open", None)


def test_a_ticket_cannot_be_closed_while_publishing_and_can_go_back_to_answered(queue):
    craftsman = uid("cm")
    ticket = open_ticket(queue, [craftsman])
    queue.claim(ticket.id, craftsman)
    queue.answer(ticket.id, craftsman, "降低转速")
    assert queue.start_publish(ticket.id).status == "publishing"
    with pytest.raises(Conflict, match=f"ticket {ticket.id} is publishing"):
        queue.close(ticket.id, "驳回")
    assert queue.abort_publish(ticket.id).status == "answered"
    assert queue.close(ticket.id, "驳回").status == "closed"
    with pytest.raises(NotFound):
        queue.start_publish("T-missing")


def test_asked_again_as_confidential_an_open_ticket_becomes_confidential_and_stays_so(queue):
    asker, question = uid("ent"), uid("液压站油温高")
    first, created = queue.create(question, asker, 0.2, [], ["设备维护"], [])
    assert created and not first.confidential
    again, created = queue.create(question, asker, 0.2, [], ["设备维护"], [], confidential=True)
    assert not created and again.id == first.id and again.confidential and queue.get(first.id).confidential
    later, _ = queue.create(question, asker, 0.2, [], ["设备维护"], [])  # asked openly again: a secret stays one
    assert later.id == first.id and queue.get(first.id).confidential
    assert first.id not in {t.id for t in queue.list(trades=["设备维护"], craftsman="cm-nobody")}


def test_a_ticket_made_confidential_while_a_pool_craftsman_claims_it_is_not_theirs(queue, monkeypatch):
    """The pool craftsman's claim has read the ticket (open, not confidential, their trade) when the asker re-asks the
    question as confidential: the claim is refused, the ticket stays open for the craftsmen it is routed to."""
    asker, question, routed = uid("ent"), uid("空压机排气温度高"), uid("cm")
    ticket = open_ticket(queue, [routed], ["设备维护"], question, asker)
    pause, get = Pause(), TicketQueue.get

    def paused_get(self, ticket_id):
        found = get(self, ticket_id)
        pause.hit()
        return found

    monkeypatch.setattr(TicketQueue, "get", paused_get)
    claimed, _ = interleave(partial(queue.claim, ticket.id, uid("cm"), ["设备维护"]),
                            partial(queue.create, question, asker, 0.2, [], ["设备维护"], [], confidential=True), pause)
    monkeypatch.undo()
    assert isinstance(claimed, Forbidden), claimed
    final = queue.get(ticket.id)
    assert (final.status, final.claimed_by, final.confidential) == ("open", None, True)
    assert queue.claim(ticket.id, routed).claimed_by == routed


def test_simultaneous_asks_some_confidential_leave_one_ticket_and_it_confidential(queue):
    for _ in range(5):
        asker, question = uid("ent"), uid("空压机排气温度高")
        outcomes = race(*[partial(queue.create, question, asker, 0.2, [], [], [], confidential=i % 2 == 1) for i in range(6)])
        tickets = [o[0] for o in outcomes if isinstance(o, tuple)]
        assert len(tickets) == 6 and len({t.id for t in tickets}) == 1, outcomes
        assert queue.get(tickets[0].id).confidential


def test_the_open_pool_finds_a_craftsmans_trade_behind_300_newer_tickets(queue):
    craftsman, trade, other = uid("cm"), uid("焊接"), uid("车削")
    mine = [open_ticket(queue, [uid("cm")], [trade]) for _ in range(3)]
    taken = open_ticket(queue, [uid("cm")], [trade])
    queue.claim(taken.id, taken.routes[0].craftsman_id)  # claimed by someone else: no longer in the pool
    for _ in range(300):
        open_ticket(queue, [uid("cm")], [other])
    listed = queue.list(craftsman=craftsman, trades=[trade], limit=5)
    assert [t.id for t in listed] == [t.id for t in reversed(mine)]
    assert queue.list(craftsman=craftsman, trades=[uid("铸造")], limit=5) == []


def test_a_craftsmans_list_honours_limit_exactly_newest_first(queue):
    craftsman, trade = uid("cm"), uid("装配")
    visible = []
    for i in range(8):  # routed to them and open in their trade, interleaved
        visible.append(open_ticket(queue, [craftsman] if i % 2 else [uid("cm")], [] if i % 2 else [trade]))
    newest_first = [t.id for t in reversed(visible)]
    for limit in (1, 5, 8, 50):
        assert [t.id for t in queue.list(craftsman=craftsman, trades=[trade], limit=limit)] == newest_first[:limit]
    queue.claim(visible[-1].id, craftsman)
    assert [t.id for t in queue.list(status="claimed", craftsman=craftsman, trades=[trade], limit=5)] == [visible[-1].id]


def test_a_craftsmans_list_pages_from_a_position_with_tickets_created_in_the_same_instant(queue, monkeypatch):
    """Pages continue after (created_at, id): tickets stamped with the very same time are neither skipped nor repeated."""
    import rag.escalate

    craftsman, instant = uid("cm"), utcnow().replace(microsecond=123456) - timedelta(hours=1)
    monkeypatch.setattr(rag.escalate, "utcnow", lambda: instant)
    same = [open_ticket(queue, [craftsman]) for _ in range(5)]
    monkeypatch.undo()
    newer = open_ticket(queue, [craftsman])
    everything = [t.id for t in queue.list(craftsman=craftsman, limit=50)]
    assert everything == [newer.id] + sorted((t.id for t in same), reverse=True)
    pages, after = [], None
    while True:
        found = queue.list(craftsman=craftsman, limit=2, after=after)
        if not found:
            break
        pages.append([t.id for t in found])
        after = (found[-1].created_at, found[-1].id)
    assert sum(pages, []) == everything and [len(p) for p in pages] == [2, 2, 2]


def test_the_daily_quota_admits_exactly_quota_tickets_from_concurrent_creates(db):
    queue = TicketQueue(db, quota_per_day=5)
    asker = uid("ent")
    outcomes = race(*(partial(queue.create, f"问题{i}-{asker}", asker, 0.2, [], [], []) for i in range(8)))
    created = [o for o in outcomes if isinstance(o, tuple)]
    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    assert len(created) == 5 and all(c[1] for c in created) and len(refused) == 3
    assert all(0 < r.retry_after <= 24 * 3600 for r in refused)
    assert len(queue.list(asker=asker)) == 5
    # the same question again is not a new ticket, so the quota does not refuse it
    question = created[0][0].question
    assert queue.create(question, asker, 0.2, [], [], [])[0].id == created[0][0].id
    assert isinstance(TicketQueue(db, quota_per_day=6).create(uid("问题"), asker, 0.2, [], [], [])[0], Ticket)


def test_the_quota_counts_only_the_last_24_hours(db):
    queue = TicketQueue(db, quota_per_day=2)
    asker = uid("ent")
    first = open_ticket(queue, [], asker=asker)
    open_ticket(queue, [], asker=asker)
    with pytest.raises(QuotaExceeded) as refused:
        open_ticket(queue, [], asker=asker)
    assert refused.value.retry_after > 23 * 3600
    with sessions(db).begin() as session:  # the first ticket was opened a day and a minute ago
        session.execute(update(TicketRow).where(TicketRow.id == first.id)
                        .values(created_at=first.created_at - timedelta(hours=24, minutes=1)))
    assert open_ticket(queue, [], asker=asker).asker == asker


def profile(craftsman_id: str, similarity: float) -> CraftsmanProfile:
    record = Craftsman(id=craftsman_id, name=craftsman_id, trades=["焊接"], skills=["氩弧焊"], region="江苏", bio="焊工")
    return CraftsmanProfile(record, np.array([similarity, (1 - similarity ** 2) ** 0.5], dtype=np.float32))


def test_one_tenants_flood_moves_another_tenants_routing_by_at_most_the_cap(queue):
    craftsmen = [profile(uid("cm"), s) for s in (0.9, 0.8, 0.7, 0.6)]
    question, vector = "不锈钢焊缝发黑", np.array([1.0, 0.0], dtype=np.float32)

    def route_b(load: dict[str, int]) -> list[Route]:
        return route(question, vector, ["焊接"], craftsmen, load)

    empty = route_b(queue.open_load())  # none of these craftsmen holds a ticket yet
    assert [r.craftsman_id for r in empty] == [c.record.id for c in craftsmen[:3]]
    flooder = uid("ent")
    for _ in range(50):  # tenant A's flood, routed as it would be: to the same best-placed three
        open_ticket(queue, [r.craftsman_id for r in empty], ["焊接"], asker=flooder)
    load = {c.record.id: queue.open_load().get(c.record.id, 0) for c in craftsmen}
    assert load == {empty[0].craftsman_id: 2, empty[1].craftsman_id: 2, empty[2].craftsman_id: 2, craftsmen[3].record.id: 0}
    after = route_b(load)
    assert [r.craftsman_id for r in after] == [r.craftsman_id for r in empty]
    assert all(0 <= e.score - a.score <= 2 * 0.03 + 1e-9 for e, a in zip(empty, after))
    uncapped = route_b({r.craftsman_id: 50 for r in empty})  # what counting every ticket would have done
    assert [r.craftsman_id for r in uncapped][0] == craftsmen[3].record.id
    open_ticket(queue, [empty[0].craftsman_id], ["焊接"], asker=uid("ent"))  # another tenant counts on top
    assert queue.open_load()[empty[0].craftsman_id] == 3


def test_a_question_and_its_ticket_commit_together(tmp_path, mini_index, embedder, cache):
    db = connect(f"sqlite:///{tmp_path / 'q.db'}")
    engine = Engine(LiveIndex(mini_index, embedder), TicketQueue(db), EngineConfig(MINI, mini_index, 0.99), cache)
    question = "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"
    with db.begin() as conn:  # the question's write fails after the ticket's: a real fault inside the database
        conn.execute(text("CREATE TRIGGER refuse_question BEFORE INSERT ON questions "
                          "BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
    with pytest.raises(DBAPIError, match="disk full"):
        engine.ask(question, "ent-atomic")
    assert engine.queue.list(asker="ent-atomic") == []
    with db.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_question"))
    result = engine.ask(question, "ent-atomic")
    assert result.status == "escalated"
    with sessions(db).begin() as session:
        row = session.scalars(select(QuestionRow).where(QuestionRow.asker == "ent-atomic")).one()
    assert row.ticket_id == result.ticket.id == engine.queue.list(asker="ent-atomic")[0].id


def test_a_failed_publish_puts_the_ticket_back_to_answered(tmp_path, embedder):
    queue = TicketQueue(connect(f"sqlite:///{tmp_path / 'q.db'}"))
    engine = Engine(LiveIndex(tmp_path / "no-index", embedder), queue, EngineConfig(tmp_path / "corpus", tmp_path / "no-index"))
    ticket = open_ticket(queue, ["cm-m-2"])
    queue.claim(ticket.id, "cm-m-2")
    queue.answer(ticket.id, "cm-m-2", "管内充氩保护")
    seen = []
    real_get = engine.live.get

    def get_while_publishing():  # the index is unavailable; meanwhile a maintainer tries to reject
        with pytest.raises(Conflict, match="publishing"):
            queue.close(ticket.id, "驳回")
        seen.append(queue.get(ticket.id).status)
        return real_get()

    engine.live.get = get_while_publishing
    with pytest.raises(Exception) as failed:
        engine.publish(ticket.id)
    assert not isinstance(failed.value, Conflict)
    assert seen == ["publishing"]
    final = queue.get(ticket.id)
    assert (final.status, final.answer, final.published_record) == ("answered", "管内充氩保护", None)


def test_a_publish_killed_midway_is_recovered_back_to_answered(db):
    queue = TicketQueue(db)
    ticket, _ = queue.create("空压机排气温度高", uid("ent"), 0.1, [], ["设备维护"], [Route("cm-1", "王师傅", 0.9)])
    queue.claim(ticket.id, "cm-1")
    queue.answer(ticket.id, "cm-1", "清洗冷却器")
    queue.start_publish(ticket.id)  # … and the process dies here
    assert queue.recover_publishing(stale_after=timedelta(minutes=30)) == []  # a publish may still be running
    assert ticket.id in queue.recover_publishing(stale_after=timedelta(0))
    assert queue.get(ticket.id).status == "answered"
    assert queue.close(ticket.id, "不发布").status == "closed"


def test_tickets_from_before_the_trades_table_reappear_in_the_open_pool(db):
    queue = TicketQueue(db)
    ticket, _ = queue.create("铣床主轴异响", uid("ent"), 0.1, [], ["机加工"], [])
    with db.begin() as conn:  # as a database created before ticket_trades existed
        conn.execute(text("DELETE FROM ticket_trades WHERE ticket_id = :t"), {"t": ticket.id})
    assert ticket.id not in {t.id for t in queue.list(craftsman="cm-x", trades=["机加工"], limit=1000)}
    restarted = TicketQueue(db)
    assert ticket.id in {t.id for t in restarted.list(craftsman="cm-x", trades=["机加工"], limit=1000)}


def test_a_database_from_before_the_list_indexes_gets_them_when_opened(db):
    """``connect`` adds the indexes added to a table since the database was made (create_all makes only new tables);
    several processes opening it at once all succeed."""
    from sqlalchemy import inspect

    url = db.url.render_as_string(hide_password=False)
    with db.begin() as conn:
        for name in ("ix_questions_created", "ix_tickets_created"):
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    assert "ix_questions_created" not in {ix["name"] for ix in inspect(db).get_indexes("questions")}
    opened = race(*[lambda: connect(url)] * 4)
    assert all(not isinstance(o, Exception) for o in opened), opened
    for engine in opened:
        engine.dispose()
    for table, name in (("questions", "ix_questions_created"), ("tickets", "ix_tickets_created")):
        assert name in {ix["name"] for ix in inspect(db).get_indexes(table)}
