"""Shared by the SQLite and PostgreSQL queue tests."""

import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from rag.db import connect

RUN = uuid.uuid4().hex[:8]  # the askers and owners of this test run start with ent-RUN-, so its PostgreSQL rows can go


def uid(prefix: str) -> str:
    return f"{prefix}-{RUN}-{uuid.uuid4().hex[:8]}"


def postgres_for_run(owned: Sequence[tuple[str, str]]) -> Iterator[Any]:
    """For a module fixture: the PostgreSQL engine (or a skip), then the rows of this run deleted from each
    ``(table, owner column)`` (rows that reference them go by ON DELETE CASCADE)."""
    engine = postgres_or_skip()
    yield engine
    with engine.begin() as conn:
        for table, column in owned:
            conn.execute(text(f"DELETE FROM {table} WHERE {column} LIKE :run"), {"run": f"ent-{RUN}-%"})
    engine.dispose()


def sqlite_or_postgres(request, tmp_path) -> Any:
    """For a fixture parametrised ``["sqlite", "postgres"]``: a fresh SQLite file, or the module's ``pg_engine``."""
    if request.param == "sqlite":
        return connect(f"sqlite:///{tmp_path / 'q.db'}")
    return request.getfixturevalue("pg_engine")


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


class Pause:
    """A point planted in code under test (``hit`` from a wrapped method) where the thread that reaches it first waits
    until ``interleave`` lets it go on; later passes run through."""

    def __init__(self) -> None:
        self.reached, self.release, self._taken = threading.Event(), threading.Event(), threading.Lock()

    def hit(self) -> None:
        if self._taken.acquire(blocking=False):
            self.reached.set()
            self.release.wait(10)


def interleave(first: Callable[[], Any], second: Callable[[], Any], pause: Pause, settle: float = 1.0) -> tuple[Any, Any]:
    """``first`` runs to ``pause``; then ``second`` runs — to its end, or for ``settle`` seconds when it waits for a lock
    ``first`` holds (SQLite's writer lock) — and then ``first`` goes on. What each returned or raised."""
    outcomes: list[Any] = [None, None]

    def run(i: int, attempt: Callable[[], Any]) -> None:
        try:
            outcomes[i] = attempt()
        except Exception as exc:
            outcomes[i] = exc

    a = threading.Thread(target=run, args=(0, first))
    a.start()
    assert pause.reached.wait(10), "the first attempt never reached the pause"
    b = threading.Thread(target=run, args=(1, second))
    b.start()
    b.join(settle)
    pause.release.set()
    a.join()
    b.join()
    return outcomes[0], outcomes[1]


@contextmanager
def index_held(index_dir: Path) -> Iterator[None]:
    """Another writer — a build in another process — holds the index in ``index_dir`` until the block ends."""
    from indexer.store import IndexStore

    held, done = threading.Event(), threading.Event()

    def writer() -> None:
        with IndexStore(index_dir).writing():
            held.set()
            done.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert held.wait(10), "the other writer never took the index"
    try:
        yield
    finally:
        done.set()
        thread.join()


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
