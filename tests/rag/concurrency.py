"""Shared by the SQLite and PostgreSQL queue tests."""

import threading
from collections.abc import Callable
from typing import Any


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
