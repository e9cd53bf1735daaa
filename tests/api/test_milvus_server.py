"""The HTTP server on the Milvus backend (Milvus Lite): a question escalated, answered by a craftsman, published
through the API, and the next asker answered from the published record, searched in Milvus."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from api.security import KeyStore
from rag.db import connect
from tests.api.conftest import GENEROUS_LIMITS, Server, free_port, start_server
from tests.api.test_publish_jobs import answered_ticket, publish, ticket_status, wait_for_job
from tests.conftest import MINI, ROOT


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory, cache_path):
    root = tmp_path_factory.mktemp("milvus-server")
    corpus = root / "corpus"
    shutil.copytree(MINI, corpus)
    db_url = f"sqlite:///{root / 'jiangxin.db'}"
    store = KeyStore(connect(db_url))
    keys = {"maintainer": store.create("maintainer", "ops")[0], "ent_a": store.create("enterprise", "企业A", "ent-a")[0],
            "ent_b": store.create("enterprise", "企业B", "ent-b")[0], "welder": store.create("craftsman", "李红", "cm-m-2")[0]}
    port = free_port()
    env = dict(os.environ, JIANGXIN_INDEX_DIR=str(root / "index"), JIANGXIN_CORPUS_DIR=str(corpus),
               JIANGXIN_DATABASE_URL=db_url, JIANGXIN_CACHE_PATH=str(cache_path), JIANGXIN_ANSWER_THRESHOLD="0.99",
               JIANGXIN_BACKEND="milvus", JIANGXIN_MILVUS_URI=str(root / "milvus.db"), JX_TEST_PORT=str(port)) | GENEROUS_LIMITS
    # indexed by the CLI in its own process: Milvus Lite lets one process at a time open a database file
    done = subprocess.run([sys.executable, "-m", "api.cli", "index"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    proc = start_server(root, env)
    yield Server(f"http://127.0.0.1:{port}", keys, corpus, root / "index", env)
    proc.terminate()
    proc.wait(timeout=30)


def test_publish_on_milvus_serves_the_next_asker(milvus_server):
    srv = milvus_server
    manifest = json.loads(next((srv.index / "versions").glob("*/manifest.json")).read_text(encoding="utf-8"))
    assert manifest["backend"] == "milvus"
    question = "不锈钢管道氩弧焊打底后背面焊缝发黑氧化严重如何避免"
    tid = answered_ticket(srv, question)["id"]
    r = publish(srv, tid)
    assert r.status_code == 202, r.text
    with srv.client("maintainer") as c:
        done = wait_for_job(c, r.headers["location"])
    assert done["state"] == "done", done
    assert ticket_status(srv, tid) == "published"
    with srv.client("ent_b") as c:
        body = c.post("/v1/questions", json={"question": question}).json()
        only_courses = c.post("/v1/questions", json={"question": question, "filters": {"kinds": ["course"]}}).json()
    assert body["status"] == "answered" and body["sources"][0]["id"] == f"sq-craft-{tid.lower()}", body
    assert body["index_version"] == done["index_version"]
    # filters reach Milvus: restricted to courses, the published standard question is not what answers
    assert all(s["id"] != f"sq-craft-{tid.lower()}" for s in only_courses.get("sources", [])), only_courses
