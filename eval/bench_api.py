"""Load benchmark of the HTTP service over loopback: mixed questions for a bounded time.

``python -m eval.bench_api [--seconds 60] [--concurrency 4] [--workers 1] [--out eval/reports/bench-api]``
Starts ``jiangxin serve`` on a free loopback port over the configured index (default ./index, built by
``make index``) with a throw-away database, then sends questions drawn from eval/sample (answerable and
unanswerable) from several threads, and prints requests/s and latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from api.security import KeyStore
from eval.metrics import percentile
from eval.run import machine
from indexer.store import atomic_write_text
from rag.db import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--index", type=Path, default=Path("index"))
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    parser.add_argument("--out", type=Path, default=Path("eval/reports/bench-api"))
    args = parser.parse_args()
    questions = [json.loads(l)["text"] for l in open("eval/sample/queries.jsonl", encoding="utf-8")]
    with tempfile.TemporaryDirectory(prefix="jiangxin-bench-api-") as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        key = KeyStore(connect(db_url)).create("enterprise", "bench", "bench-enterprise")[0]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, JIANGXIN_DATABASE_URL=db_url, JIANGXIN_INDEX_DIR=str(args.index.resolve()),
                   JIANGXIN_CORPUS_DIR=str(args.corpus.resolve()),
                   JIANGXIN_RATE_PER_SECOND="0", JIANGXIN_ESCALATION_QUOTA_PER_DAY="0")  # measure the engine, not the limits
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                                   "--port", str(port), "--workers", str(args.workers), "--log-level", "warning"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            latencies: list[float] = []
            statuses: Counter[str] = Counter()
            lock = threading.Lock()
            stop_at = time.monotonic() + args.seconds

            def worker(seed: int) -> None:
                rng = random.Random(seed)
                with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                    while time.monotonic() < stop_at:
                        question = rng.choice(questions)
                        t0 = time.perf_counter()
                        try:
                            r = client.post("/v1/questions", json={"question": question})
                            outcome = r.json().get("status", str(r.status_code)) if r.status_code == 201 else str(r.status_code)
                        except httpx.HTTPError as exc:
                            outcome = type(exc).__name__
                        elapsed = (time.perf_counter() - t0) * 1000
                        with lock:
                            latencies.append(elapsed)
                            statuses[outcome] += 1

            started = time.monotonic()
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
    figures = {"machine": machine(), "seconds": round(wall, 1), "concurrency": args.concurrency, "workers": args.workers,
               "requests": len(latencies), "requests_per_second": round(len(latencies) / wall, 2),
               "latency_ms": {q: round(percentile(latencies, q), 1) for q in (50, 95, 99)}, "outcomes": dict(statuses)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench-api.json", json.dumps(figures, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(figures, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
