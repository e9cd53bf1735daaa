"""Load benchmark of the HTTP service over loopback: mixed or never-seen questions for a bounded time.

``python -m eval.bench_api [--fresh] [--seconds 60] [--concurrency 4] [--workers 1] [--out eval/reports/bench-api]``
Starts ``jiangxin serve`` on a free loopback port over the configured index (default ./index, built by
``make index``) with a throw-away database, then sends questions from several threads, and prints requests/s
and latency percentiles. Mixed mode (default, ``bench-api.json``) draws eval/sample questions (answerable and
unanswerable) at random, so most are asked again and their embedding is remembered by the server; ``--fresh``
(``bench-api-fresh.json``) sends every request a question not sent before in the run, taken in turn from
eval/field, eval/sample and the real sets in ../shared/eval that are present, so every request pays for its
embedding.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from api.security import KeyStore
from eval.metrics import percentile
from eval.run import machine
from indexer.embedders import query_head
from indexer.errors import JiangxinError
from indexer.store import atomic_write_text
from rag.db import connect
from rag.engine import InvalidQuestion, clean_question

# Where the fresh pool comes from, in turn order: (name, file under eval/ or the shared folder, the question's key).
FRESH_SETS = [("field", "field/queries.jsonl", "text"), ("sample", "sample/queries.jsonl", "text"),
              ("cmrc2018", "cmrc2018/queries.jsonl", "text"), ("csl", "csl/queries.jsonl", "text"),
              ("qbqtc-dev", "qbqtc-dev/dev.json", "query")]


@dataclass(frozen=True)
class QuestionSet:
    """Real questions of one evaluation set, each distinct from every earlier set's (as the server embeds them)."""

    name: str
    questions: list[str]


def memo_key(question: str) -> str:
    """What the server remembers a question's embedding by: the cleaned question's embedded head."""
    return query_head(clean_question(question))


def load_question_sets(eval_dir: Path, shared_dir: Path) -> list[QuestionSet]:
    """The fresh pool's sets that exist, with repeats (within and across sets) and unaskable questions dropped."""
    seen: set[str] = set()
    sets = []
    for name, relative, field in FRESH_SETS:
        path = (eval_dir if name in ("field", "sample") else shared_dir) / relative
        if not path.is_file():
            print(f"fresh pool: {path} is absent, {name} left out", file=sys.stderr)
            continue
        questions = []
        for line in open(path, encoding="utf-8"):
            text = json.loads(line)[field] if line.strip() else ""
            try:
                key = memo_key(text)
            except InvalidQuestion:
                continue
            if key not in seen:
                seen.add(key)
                questions.append(text)
        sets.append(QuestionSet(name, questions))
    return sets


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by process ``pid`` and its live children (uvicorn's workers)."""
    root = psutil.Process(pid)
    times = [p.cpu_times() for p in [root, *root.children(recursive=True)]]
    return sum(t.user for t in times), sum(t.system for t in times)


# How a set that has run out is asked again: each question once more after each of these spoken openings. The text
# stays a real question of its set, two to five characters longer; a server cannot have seen it (its embedding is
# of the whole text). Joining two questions into one, as before, doubled the length of what a fast server was
# sent late in a run, so its figure depended on how fast it was.
OPENINGS = ("请问", "师傅，", "想问一下，", "咨询下，", "麻烦问下，")


class FreshQuestions:
    """Hands out questions never handed out before, one set after another in turn (safe across threads).

    Each set's questions come in a shuffled order fixed by the seed. A set that has run out goes on with its
    questions asked again after a spoken opening (``OPENINGS``) — the turn order and so the mix of sets unchanged;
    a variant whose embedded head equals one already handed out is skipped, so no request ever repeats one.
    """

    def __init__(self, sets: list[QuestionSet], seed: int = 0) -> None:
        sets = [s for s in sets if s.questions]
        if not sets:
            raise JiangxinError("the fresh pool is empty: no question set was found")
        self.available = {s.name: len(s.questions) for s in sets}
        self.variants = 0
        self.exhausted = False
        self._handed: set[str] = set()
        self._streams = {s.name: self._stream(s, seed) for s in sets}
        self._turn = 0
        self._lock = threading.Lock()

    @staticmethod
    def _stream(qs: QuestionSet, seed: int) -> Iterator[tuple[str, bool]]:
        order = list(qs.questions)
        random.Random(f"{seed}:{qs.name}").shuffle(order)
        yield from ((q, False) for q in order)
        for opening in OPENINGS:
            yield from ((opening + q, True) for q in order)

    def next(self) -> tuple[str, str] | None:
        """(set name, question), or None once every set and every variant is spent."""
        with self._lock:
            while self._streams:
                names = list(self._streams)
                name = names[self._turn % len(names)]
                for text, variant in self._streams[name]:
                    try:
                        key = memo_key(text)
                    except InvalidQuestion:  # a variant past the length limit
                        continue
                    if key not in self._handed:
                        self._handed.add(key)
                        self.variants += variant
                        self._turn += 1
                        return name, text
                del self._streams[name]
            self.exhausted = True
            return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="a question never sent before on every request")
    parser.add_argument("--index", type=Path, default=Path("index"))
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    parser.add_argument("--shared-eval", type=Path, default=Path("../shared/eval"), help="the real data sets")
    parser.add_argument("--out", type=Path, default=Path("eval/reports/bench-api"))
    args = parser.parse_args()
    questions = [json.loads(l)["text"] for l in open("eval/sample/queries.jsonl", encoding="utf-8")]
    pool = FreshQuestions(load_question_sets(Path("eval"), args.shared_eval)) if args.fresh else None
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
            deadline, ready = time.monotonic() + 120, False
            while not ready and time.monotonic() < deadline and server.poll() is None:
                try:
                    ready = httpx.get(url + "/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    pass
                if not ready:
                    time.sleep(0.3)
            if not ready:  # figures from a server that never served would measure nothing
                log.flush()
                sys.exit("the server was not ready within 120 s:\n" + (Path(tmp) / "server.log").read_text(encoding="utf-8")[-4000:])
            latencies: list[float] = []
            statuses: Counter[str] = Counter()
            sent: Counter[str] = Counter()
            by_set: defaultdict[str, list[float]] = defaultdict(list)
            chars: list[int] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.seconds

            def worker(seed: int) -> None:
                # The standard library's client on one kept-alive connection: the load generator shares this machine's
                # cores with the server, and httpx spent about 1 CPU-ms a request of theirs (http.client: half that).
                rng = random.Random(seed)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                try:
                    while time.monotonic() < stop_at:
                        drawn = pool.next() if pool else ("sample", rng.choice(questions))
                        if drawn is None:
                            return
                        set_name, question = drawn
                        body = json.dumps({"question": question}, ensure_ascii=False).encode("utf-8")
                        t0 = time.perf_counter()
                        try:
                            connection.request("POST", "/v1/questions", body, headers)
                            response = connection.getresponse()
                            data = response.read()
                            outcome = json.loads(data).get("status", "201") if response.status == 201 else str(response.status)
                        except (OSError, http.client.HTTPException) as exc:
                            outcome = type(exc).__name__
                            connection.close()  # the next request opens a new connection
                        elapsed = (time.perf_counter() - t0) * 1000
                        with lock:
                            latencies.append(elapsed)
                            statuses[outcome] += 1
                            sent[question] += 1
                            by_set[set_name].append(elapsed)
                            chars.append(len(question))
                finally:
                    connection.close()

            load_before = os.getloadavg()[0]
            server_cpu_before, client_cpu_before = cpu_seconds(server.pid), time.process_time()
            started = time.monotonic()
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - started
            (user, system), client_cpu = cpu_seconds(server.pid), time.process_time() - client_cpu_before
            server_user, server_system = user - server_cpu_before[0], system - server_cpu_before[1]
            load_after = os.getloadavg()[0]
        finally:
            server.terminate()
            server.wait(timeout=30)
    figures = {"mode": "fresh" if pool else "mixed", "machine": machine(), "seconds": round(wall, 1),
               "concurrency": args.concurrency, "workers": args.workers,
               "requests": len(latencies), "requests_per_second": round(len(latencies) / wall, 2),
               "latency_ms": {q: round(percentile(latencies, q), 1) for q in (50, 95, 99)}, "outcomes": dict(statuses),
               "distinct_questions": len(sent), "question_chars_mean": round(sum(chars) / max(len(chars), 1), 1),
               "load_average_1m": [round(load_before, 2), round(load_after, 2)],  # before: other work; after: this run too
               # CPU time per request (user + system, all threads): the server with its workers, and this client
               "cpu_ms_per_request": {"server": round((server_user + server_system) * 1000 / max(len(latencies), 1), 1),
                                      "server_system": round(server_system * 1000 / max(len(latencies), 1), 1),
                                      "client": round(client_cpu * 1000 / max(len(latencies), 1), 1)},
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset (OpenMP default: all cores)")}
    if pool:
        figures["pool"] = {"available": sum(pool.available.values()), "variants_sent": pool.variants,
                           "exhausted": pool.exhausted}
        figures["by_set"] = {name: {"available": pool.available[name], "sent": len(by_set[name]),
                                    "p50_ms": round(percentile(by_set[name], 50), 1)} for name in pool.available}
    args.out.mkdir(parents=True, exist_ok=True)
    report = "bench-api-fresh.json" if pool else "bench-api.json"
    atomic_write_text(args.out / report, json.dumps(figures, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(figures, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
