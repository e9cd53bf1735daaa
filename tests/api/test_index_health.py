"""A failed index load, seen from outside: the server keeps answering from the old version and says so in
/readyz and /metrics (states, never paths); with nothing loadable, index errors are 503 with Retry-After."""

import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from api.security import KeyStore
from indexer.store import IndexStore, atomic_write_text
from rag.db import connect
from tests.api.conftest import free_port, wait_until_serving


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def ready(c: httpx.Client, until: str) -> dict:
    deadline = time.monotonic() + 20
    while (body := c.get("/readyz").json())["index"]["state"] != until and time.monotonic() < deadline:
        time.sleep(0.1)
    return body


def test_a_failed_load_keeps_serving_and_is_reported_without_paths(own_server):
    store = IndexStore(own_server.index)
    serving = store.current_version()
    with own_server.client() as c:
        assert c.get("/readyz").json()["index"] == {"serving": serving, "current": serving, "state": "ok"}
        atomic_write_text(own_server.index / "CURRENT", "20000101T000000-pruned\n")
        try:
            body = ready(c, "stale_failed_load")
            assert body["ready"] is True and body["index"]["serving"] == serving
            assert body["index"]["failed_load"]["version"] == "20000101T000000-pruned"
            assert body["index"]["failed_load"]["error"] == "IndexNotFound"
            assert not any("/" in s for s in strings(body))
            metrics = c.get("/metrics").text
            assert "jiangxin_index_load_failures_total 1.0" in metrics and "jiangxin_index_stale 1.0" in metrics
            assert f'jiangxin_index_version_info{{version="{serving}"}} 1.0' in metrics
            with own_server.client("ent_a") as asker:
                r = asker.post("/v1/questions", json={"question": "带式输送机跑偏怎么调整"})
            assert r.status_code == 201 and r.json()["index_version"] == serving
        finally:
            atomic_write_text(own_server.index / "CURRENT", serving + "\n")
        assert ready(c, "ok")["index"]["state"] == "ok"


@pytest.fixture(scope="module")
def corrupt_server(tmp_path_factory, mini_index, cache_path):
    """A server whose only index version is corrupt: nothing can serve."""
    root = tmp_path_factory.mktemp("corrupt-server")
    shutil.copytree(mini_index, root / "index")
    version = IndexStore(root / "index").current_version()
    with open(root / "index" / "versions" / version / "terms.bin", "ab") as handle:
        handle.write("损坏".encode())
    db_url = f"sqlite:///{root / 'jiangxin.db'}"
    key = KeyStore(connect(db_url)).create("enterprise", "企业C")[0]
    port = free_port()
    env = dict(os.environ, JIANGXIN_INDEX_DIR=str(root / "index"), JIANGXIN_CORPUS_DIR=str(root / "corpus"),
               JIANGXIN_DATABASE_URL=db_url, JIANGXIN_CACHE_PATH=str(cache_path), JX_TEST_PORT=str(port))
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc, root / "server.log")  # /healthz: never ready
    yield f"http://127.0.0.1:{port}", key
    proc.terminate()
    proc.wait(timeout=30)


def test_a_corrupt_index_is_503_with_retry_after_never_400(corrupt_server):
    url, key = corrupt_server
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/questions", json={"question": "带式输送机跑偏怎么调整"}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_corrupt" and r.headers["Retry-After"]
        body = c.get("/readyz")
        assert body.status_code == 503 and body.json()["ready"] is False
        assert body.json()["index"]["state"] == "unavailable" and body.json()["index"]["failed_load"]["error"] == "IndexCorrupt"
        assert not any("/" in s for s in strings(body.json()))
