"""Shared by the SQLite and PostgreSQL queue tests."""

import threading


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
