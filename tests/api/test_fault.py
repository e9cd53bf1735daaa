"""A fault test of the service: SIGKILL the real server while clients ask questions and tickets are being opened;
after a restart on the same database and index, every question and ticket that got a 2xx is there."""

import os
import shutil
import signal
import sqlite3
import threading
import time

import httpx

from api.security import KeyStore
from indexer.build import build_index
from rag.db import connect
from tests.api.conftest import GENEROUS_LIMITS, free_port, start_server
from tests.conftest import MINI

CLIENTS = 4
ACKNOWLEDGED_BEFORE_KILL = 40  # about two seconds of traffic on 2 cores
QUESTIONS = ["不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办", "车床主轴异响怎么查", "带式输送机跑偏怎么调整",
             "数控车床液压卡盘夹紧力不足工件打滑怎么办", "焊缝气孔怎么预防", "细长轴车削时工件振动让刀怎么办"]


def test_no_acknowledged_question_or_ticket_is_lost_when_the_server_is_killed(tmp_path, embedder, cache, cache_path):
    shutil.copytree(MINI, tmp_path / "corpus")
    build_index(tmp_path / "corpus", tmp_path / "index", embedder, cache)
    db_path = tmp_path / "jiangxin.db"
    store = KeyStore(connect(f"sqlite:///{db_path}"))
    keys = [store.create("enterprise", f"企业{i}")[0] for i in range(CLIENTS)]
    env = dict(os.environ, JIANGXIN_INDEX_DIR=str(tmp_path / "index"), JIANGXIN_CORPUS_DIR=str(tmp_path / "corpus"),
               JIANGXIN_DATABASE_URL=f"sqlite:///{db_path}", JIANGXIN_CACHE_PATH=str(cache_path),
               JIANGXIN_ANSWER_THRESHOLD="0.99", JX_TEST_PORT=str(free_port())) | GENEROUS_LIMITS
    proc = start_server(tmp_path, env)
    url = f"http://127.0.0.1:{env['JX_TEST_PORT']}"

    lock = threading.Lock()
    acknowledged: list[tuple[int, str, str | None]] = []  # (client, question id, ticket id)
    outstanding = [False] * CLIENTS
    refused: list[str] = []
    enough, stop = threading.Event(), threading.Event()

    def ask(client: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[client]}"}, timeout=60) as c:
            n = 0
            while not stop.is_set():
                n += 1
                question = f"{QUESTIONS[(client + n) % len(QUESTIONS)]}（客户{client}第{n}问）"
                outstanding[client] = True
                try:
                    r = c.post("/v1/questions", json={"question": question})
                except httpx.HTTPError:
                    continue  # no answer: not acknowledged, so it may or may not be there
                finally:
                    outstanding[client] = False
                if r.status_code == 201:
                    body = r.json()
                    with lock:
                        acknowledged.append((client, body["id"], (body["ticket"] or {}).get("id")))
                        if len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL:
                            enough.set()
                elif not stop.is_set():
                    refused.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        assert enough.wait(timeout=120), f"only {len(acknowledged)} questions acknowledged; refused: {refused[:3]}"
        in_flight = sum(outstanding)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        traffic = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        if proc.poll() is None:
            proc.kill()
    kept = list(acknowledged)  # every 201 a client read, including any that arrived just before the kill
    assert refused == [] and in_flight >= 1

    env["JX_TEST_PORT"] = str(free_port())
    proc = start_server(tmp_path, env)
    try:
        present_questions = present_tickets = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{env['JX_TEST_PORT']}", timeout=60) as c:
            for client, question_id, ticket_id in kept:
                as_owner = {"Authorization": f"Bearer {keys[client]}"}
                r = c.get(f"/v1/questions/{question_id}", headers=as_owner)
                present_questions += r.status_code == 200
                if ticket_id:
                    assert r.json()["ticket"]["id"] == ticket_id
                    present_tickets += c.get(f"/v1/tickets/{ticket_id}", headers=as_owner).status_code == 200
            answer = c.post("/v1/questions", json={"question": "带式输送机跑偏怎么调整"},
                            headers={"Authorization": f"Bearer {keys[0]}"}).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with sqlite3.connect(db_path) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        orphans = db.execute("SELECT count(*) FROM tickets t WHERE NOT EXISTS "
                             "(SELECT 1 FROM questions q WHERE q.ticket_id = t.id)").fetchone()[0]
    tickets = sum(1 for _, _, t in kept if t)
    print(f"\n{traffic:.1f} s of traffic from {CLIENTS} clients, SIGKILL with {in_flight} request(s) in flight: "
          f"{len(kept)} questions acknowledged ({tickets} with tickets), {present_questions} questions and "
          f"{present_tickets} tickets present after restart; tickets without a question row: {orphans}")
    assert tickets >= 1 and present_questions == len(kept) and present_tickets == tickets
    assert integrity == "ok" and orphans == 0  # a ticket commits with its question or not at all
    assert answer["status"] == "answered" and answer["sources"][0]["id"] == "sq-m-4"
