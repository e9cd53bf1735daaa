"""Shared by the SQLite and PostgreSQL queue tests."""

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from rag.db import connect


def create_concurrently(queue, asker: str, n: int = 6) -> list[str]:
    """Ticket ids from ``n`` threads creating the same question for ``asker`` at the same moment."""
    ids, barrier = [], threading.Barrier(n)

    def create():
        barrier.wait()
        ids.append(queue.create("空压机排气温度高", asker, 0.1, [], [], [])[0].id)

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids


def race(*attempts: Callable[[], Any]) -> list[Any]:
    """What each attempt returned, or the exception it raised, with all of them started at the same moment."""
    outcomes: list[Any] = [None] * len(attempts)
    barrier = threading.Barrier(len(attempts))

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = attempts[i]()
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


PG_URL = os.environ.get("JIANGXIN_TEST_POSTGRES_URL", "postgresql+psycopg://jx:jx@127.0.0.1:5432/jx")


def postgres_or_skip(url: str = PG_URL):
    """An engine on the test PostgreSQL (the local role .ci/run creates), or skip the test saying why."""
    pytest.importorskip("psycopg")
    try:
        engine = connect(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {url} ({type(exc).__name__}); .ci/run installs and starts one")
    return engine
