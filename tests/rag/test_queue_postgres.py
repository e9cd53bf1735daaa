"""The ticket queue on PostgreSQL (JIANGXIN_TEST_POSTGRES_URL, default the local test role .ci/run creates)."""

import uuid

import pytest

from rag.escalate import Route, TicketQueue
from tests.rag.concurrency import create_concurrently, postgres_or_skip


@pytest.fixture(scope="module")
def queue():
    return TicketQueue(postgres_or_skip())


def test_life_cycle_on_postgres(queue):
    asker = f"ent-{uuid.uuid4().hex[:8]}"
    ticket, created = queue.create("液压站油温过高怎么办", asker, 0.2, [{"id": "x"}], ["设备维护"], [Route("cm-1", "王师傅", 0.9)])
    assert created and ticket.routes[0].name == "王师傅"
    queue.claim(ticket.id, "cm-1")
    queue.answer(ticket.id, "cm-1", "检查冷却器和油位")
    assert queue.start_publish(ticket.id).status == "publishing"
    assert queue.mark_published(ticket.id, "sq-craft-1").status == "published"


def test_concurrent_duplicate_creates_yield_one_ticket_on_postgres(queue):
    ids = create_concurrently(queue, f"ent-{uuid.uuid4().hex[:8]}")
    assert len(ids) == 6 and len(set(ids)) == 1
