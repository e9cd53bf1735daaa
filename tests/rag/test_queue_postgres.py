"""The ticket queue on PostgreSQL (JIANGXIN_TEST_POSTGRES_URL, default the local test role .ci/run creates)."""

import os
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from rag.db import connect
from rag.escalate import Route, TicketQueue
from tests.rag.concurrency import create_concurrently

URL = os.environ.get("JIANGXIN_TEST_POSTGRES_URL", "postgresql+psycopg://jx:jx@127.0.0.1:5432/jx")


@pytest.fixture(scope="module")
def queue():
    pytest.importorskip("psycopg")
    try:
        engine = connect(URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {URL} ({type(exc).__name__}); .ci/run installs and starts one")
    return TicketQueue(engine)


def test_life_cycle_on_postgres(queue):
    asker = f"ent-{uuid.uuid4().hex[:8]}"
    ticket, created = queue.create("液压站油温过高怎么办", asker, 0.2, [{"id": "x"}], ["设备维护"], [Route("cm-1", "王师傅", 0.9)])
    assert created and ticket.routes[0].name == "王师傅"
    queue.claim(ticket.id, "cm-1")
    queue.answer(ticket.id, "cm-1", "检查冷却器和油位")
    assert queue.mark_published(ticket.id, "sq-craft-1").status == "published"


def test_concurrent_duplicate_creates_yield_one_ticket_on_postgres(queue):
    ids = create_concurrently(queue, f"ent-{uuid.uuid4().hex[:8]}")
    assert len(ids) == 6 and len(set(ids)) == 1
