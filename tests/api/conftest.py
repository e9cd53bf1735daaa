"""A real uvicorn server on loopback over a real index and a real SQLite file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.security import KeyStore
from indexer.build import build_index
from rag.db import connect
from tests.conftest import MINI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    keys: dict[str, str]
    corpus: Path
    index: Path
    env: dict[str, str]

    def client(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def wait_until_serving(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    """Poll ``url`` until it answers 200; RuntimeError with the server's log if it exits or the time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not answer: {log.read_text()[-2000:]}")


def wait_for_job(client: httpx.Client, location: str, seconds: float = 60) -> dict:
    """Poll a background job at ``location`` (a publish's ``Location``) until it is done or failed; its last view.

    AssertionError with that view if it is still queued or running when the time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        r = client.get(location)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']} after {seconds:.0f} s: {job}"
        time.sleep(0.1)


def start_server(root: Path, env: dict[str, str], workers: int = 1) -> subprocess.Popen:
    port = int(env["JX_TEST_PORT"])
    log = open(root / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/readyz", proc, root / f"server-{port}.log")
    except RuntimeError:
        proc.kill()
        raise
    return proc


# Tests drive the shared servers harder than any one client should; the limits have tests of their own
# (tests/api/test_limits.py), which pass their own settings through ``env_extra``.
GENEROUS_LIMITS = {"JIANGXIN_RATE_PER_SECOND": "1000", "JIANGXIN_RATE_BURST": "1000"}


def make_server(tmp_path_factory, embedder, cache, cache_path, name: str = "server", threshold: str = "0.99",
                env_extra: dict[str, str] | None = None):
    root = tmp_path_factory.mktemp(name)
    corpus = root / "corpus"
    shutil.copytree(MINI, corpus)
    build_index(corpus, root / "index", embedder, cache)
    db_url = f"sqlite:///{root / 'jiangxin.db'}"
    store = KeyStore(connect(db_url))
    keys = {
        "maintainer": store.create("maintainer", "ops")[0],
        "ent_a": store.create("enterprise", "企业A", "ent-a")[0],
        "ent_b": store.create("enterprise", "企业B", "ent-b")[0],
        "ent_c": store.create("enterprise", "企业C", "ent-c")[0],  # asks only in the paging test: its lists are known
        "welder": store.create("craftsman", "李红", "cm-m-2")[0],
        "cnc": store.create("craftsman", "赵强", "cm-m-3")[0],
    }
    port = free_port()
    env = dict(os.environ, JIANGXIN_INDEX_DIR=str(root / "index"), JIANGXIN_CORPUS_DIR=str(corpus),
               JIANGXIN_DATABASE_URL=db_url, JIANGXIN_CACHE_PATH=str(cache_path), JIANGXIN_ANSWER_THRESHOLD=threshold,
               JX_TEST_PORT=str(port)) | GENEROUS_LIMITS | (env_extra or {})
    proc = start_server(root, env)
    return proc, Server(f"http://127.0.0.1:{port}", keys, corpus, root / "index", env)


@pytest.fixture(scope="session")
def server(tmp_path_factory, embedder, cache, cache_path):
    """The shared server; tests on it must not change the corpus."""
    proc, srv = make_server(tmp_path_factory, embedder, cache, cache_path)
    yield srv
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def own_server(tmp_path_factory, embedder, cache, cache_path):
    """A server of the module's own, for tests that change the corpus or the index."""
    proc, srv = make_server(tmp_path_factory, embedder, cache, cache_path, "own-server")
    yield srv
    proc.terminate()
    proc.wait(timeout=30)
