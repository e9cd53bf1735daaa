"""What a newest-first list costs at 100k questions (GET /v1/questions): the first page and one 20,000 rows deep, for
maintainers, one asker and the triage list, on SQLite (a temporary file) and on any database URL given.

    python -m eval.bench_lists [postgresql+psycopg://…] [--out eval/reports/bench-lists.json]

Its rows are askers ``bench-…`` and ids ``Qbench…``, removed before and after, so a live database keeps its own.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, insert

from rag.db import QuestionRow, connect, utcnow
from rag.escalate import TicketQueue
from rag.questions import QuestionLog

QUESTIONS = 100_000
STATUSES = ("answered", "escalated", "out_of_scope")


def _median_ms(call, runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def measure(url: str) -> dict[str, float]:
    engine = connect(url)
    mine = QuestionRow.id.like("Qbench%")
    base = utcnow() - timedelta(days=100)
    rows = [dict(id=f"Qbench{i:08d}", asker=f"bench-{i % 500}", question="问题", status=STATUSES[i % 3], confidence=0.5,
                 result={}, ticket_id=None, index_version="bench", created_at=base + timedelta(seconds=60 * i))
            for i in range(QUESTIONS)]
    with engine.begin() as conn:
        conn.execute(delete(QuestionRow).where(mine))
        for start in range(0, QUESTIONS, 5000):
            conn.execute(insert(QuestionRow), rows[start:start + 5000])
    try:
        log = QuestionLog(engine, TicketQueue(engine))
        deep = (rows[QUESTIONS - 20_000]["created_at"], rows[QUESTIONS - 20_000]["id"])
        return {"maintainer_first_page_ms": _median_ms(lambda: log.list(None, 51)),
                "maintainer_page_20000_deep_ms": _median_ms(lambda: log.list(None, 51, None, deep)),
                "one_asker_first_page_ms": _median_ms(lambda: log.list("bench-7", 51)),
                "triage_first_page_ms": _median_ms(lambda: log.list(None, 51, "out_of_scope"))}
    finally:
        with engine.begin() as conn:
            conn.execute(delete(QuestionRow).where(mine))


def main(argv: list[str]) -> None:
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    urls = [a for a in argv if "://" in a]
    with tempfile.TemporaryDirectory() as tmp:
        report = {"questions": QUESTIONS, "sqlite": measure(f"sqlite:///{Path(tmp) / 'bench.db'}")}
    for url in urls:
        report[url.split(":", 1)[0]] = measure(url)
    print(json.dumps(report, indent=1))
    if out:
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
