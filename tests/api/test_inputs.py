"""Bad input at the HTTP layer gets a clear 4xx and changes nothing; pages and responses carry security headers;
a 5xx names no file; a long question's embedding sees only its head."""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from api.routes.questions import QuestionIn
from api.security import KeyStore
from indexer.embedders import MAX_QUERY_CHARS
from rag.db import connect
from rag.engine import InvalidQuestion, clean_question
from tests.api.conftest import free_port, wait_until_serving

INVISIBLE_QUESTIONS = ["\u200b", "\ufeff", "\u2060", "\u00ad", "\u200b\ufeff\u2060\u00ad\u200c\u200d", "\u3000\u00a0\u200b \t\n",
             "\x07\x1b\x7f", "\u202e\u2066\u180e", "\U000e0041\U000e007f"]


@pytest.fixture(scope="module")
def fresh(server):
    """A client for an enterprise of its own, so what its requests leave behind can be counted."""
    key = KeyStore(connect(server.env["JIANGXIN_DATABASE_URL"])).create("enterprise", "输入测试厂")[0]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        yield c


def nothing_recorded(c: httpx.Client) -> bool:
    return c.get("/v1/questions").json() == [] and c.get("/v1/tickets").json() == []


def test_a_chunked_body_over_the_limit_without_content_length_is_413(fresh):
    body = b'{"question": "' + "焊".encode() * 25_000 + b'"}'  # 75 KB, over the 64 KiB limit

    def chunks():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    r = fresh.post("/v1/questions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert nothing_recorded(fresh)


def test_a_chunked_body_under_the_limit_is_read(server):
    body = '{"question": "焊缝气孔怎么预防（分块发送）"}'.encode()
    with server.client("ent_b") as c:
        r = c.post("/v1/questions", content=iter([body[:10], body[10:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["question"] == "焊缝气孔怎么预防（分块发送）"


@pytest.mark.parametrize("question", INVISIBLE_QUESTIONS, ids=lambda q: "+".join(f"U{ord(ch):04X}" for ch in q))
def test_a_question_of_only_invisible_characters_is_422_and_creates_nothing(fresh, question):
    r = fresh.post("/v1/questions", json={"question": question})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert r.json()["error"]["code"] in ("invalid_question", "invalid_request") and "question" in message
    assert "visible character" in message and "\\" not in message and len(message) < 200  # words, not the pattern
    assert nothing_recorded(fresh)


@pytest.mark.parametrize("filters, said", [
    ({"date_from": "2020-13-45"}, "date_from '2020-13-45' is not a calendar date"),
    ({"date_to": "2020-02-30"}, "date_to '2020-02-30' is not a calendar date"),
    ({"date_from": "2020/01/01"}, "filters.date_from: expected a date YYYY-MM-DD"),
])
def test_a_date_filter_off_the_calendar_is_422_and_creates_nothing(fresh, filters, said):
    r = fresh.post("/v1/questions", json={"question": "焊缝气孔怎么办", "filters": filters})
    assert r.status_code == 422, r.text
    assert said in r.json()["error"]["message"]
    assert nothing_recorded(fresh)


@settings(max_examples=400, deadline=None)
@given(st.text(st.one_of(st.sampled_from("".join(INVISIBLE_QUESTIONS) + "\x96\u0085\u2028\u0600\U000110bd\U000e0041焊a"), st.characters()), max_size=6))
def test_the_schema_accepts_exactly_the_questions_the_engine_accepts(text):
    """The OpenAPI pattern and ``clean_question`` draw the same line, so a schema-valid question is never refused."""
    try:
        QuestionIn(question=text)
        schema_ok = True
    except ValidationError:
        schema_ok = False
    try:
        clean_question(text)
        engine_ok = True
    except InvalidQuestion:
        engine_ok = False
    assert schema_ok == engine_ok


def test_invisible_characters_inside_a_question_are_removed(server):
    with server.client("ent_b") as c:
        r = c.post("/v1/questions", json={"question": "\ufeff带式输送机\u200b跑偏\u2060怎么\u00ad调整\u200b"})
    assert r.status_code == 201 and r.json()["question"] == "带式输送机跑偏怎么调整"
    assert r.json()["status"] == "answered" and r.json()["sources"][0]["id"] == "sq-m-4"


def test_a_long_question_is_embedded_by_its_head(embedder):
    question = ("细长轴车削时工件振动让刀怎么办，" * 125)[:2000]
    forget = getattr(embedder, "forget_queries", lambda: None)
    forget()
    started = time.perf_counter()
    whole = embedder.embed_queries([question])
    seconds = time.perf_counter() - started
    forget()
    head = embedder.embed_queries([question[:MAX_QUERY_CHARS]])
    forget()
    other = embedder.embed_queries([question[:MAX_QUERY_CHARS - 40]])
    print(f"\n2,000-character question embedded in {seconds:.2f} s")
    assert np.array_equal(whole, head) and not np.array_equal(whole, other)


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("path", ["/", "/queue", "/programme", "/work", "/showcase", "/dashboard", "/import"])
def test_pages_send_a_csp_that_allows_only_their_own_inline_script(server, path):
    """Each page runs its own inline script (by hash) and the shared helpers from its own origin, nothing else."""
    with server.client() as c:
        r = c.get(path)
        shared = c.get("/pages/common.js")
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    scripts = re.findall(r"<script>(.*?)</script>", r.text, flags=re.S)
    assert scripts and policy["script-src"] == " ".join(["'self'"] + [_sha256(s) for s in scripts])
    assert re.findall(r'<script src="([^"]+)"', r.text) == ["/pages/common.js"]
    assert shared.status_code == 200 and shared.headers["content-type"].startswith("text/javascript")
    assert "async function api(" in shared.text and not re.search(r"function (api|auth|key|saveKey|showKey|el)\(|const \$ =", "".join(scripts))
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'" and policy["connect-src"] == "'self'"


def test_every_response_says_nosniff(server, fresh):
    with server.client() as anonymous:
        responses = [anonymous.get("/healthz"), anonymous.get("/metrics"), anonymous.get("/v1/questions"),
                     anonymous.get("/no-such-page"), fresh.get("/v1/questions"), fresh.post("/v1/questions", json={}),
                     fresh.post("/v1/questions", content=b"x" * 70_000)]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 200, 422, 413]
    assert all(r.headers.get("x-content-type-options") == "nosniff" for r in responses)


def test_pages_run_under_their_csp_in_a_browser(server):
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        try:
            page = browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            for path in ("/", "/queue"):
                page.goto(server.url + path)
                page.fill("#key", server.keys["ent_a"])
                page.click("#save-key")  # the inline script runs: it handles the click
                playwright.expect(page.locator("#key")).to_have_value("", timeout=10_000)
            assert violations == []
        finally:
            browser.close()


def test_server_errors_name_no_file(tmp_path, cache_path):
    """With no index at all, the API answers 503 without the index's path or any library's exception text."""
    db = f"sqlite:///{tmp_path / 'jx.db'}"
    store = KeyStore(connect(db))
    ent, ops = store.create("enterprise", "某厂")[0], store.create("maintainer", "ops")[0]
    port = free_port()
    env = dict(os.environ, JIANGXIN_INDEX_DIR=str(tmp_path / "no-index"), JIANGXIN_CORPUS_DIR=str(tmp_path / "no-corpus"),
               JIANGXIN_DATABASE_URL=db, JIANGXIN_CACHE_PATH=str(cache_path))
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url + "/healthz", proc, tmp_path / "server.log")
        with httpx.Client(base_url=url, timeout=60) as c:
            asked = c.post("/v1/questions", json={"question": "焊缝气孔怎么预防"}, headers={"Authorization": f"Bearer {ent}"})
            info = c.get("/v1/admin/index", headers={"Authorization": f"Bearer {ops}"})
        for r in (asked, info):
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"].startswith("index") and str(tmp_path) not in r.text and "/" not in r.json()["error"]["message"]
        assert str(tmp_path / "no-index") in (tmp_path / "server.log").read_text()  # the operator still learns where
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_not_blank_means_the_same_to_pydantic_and_to_python_for_every_character():
    """The schema's non-blank pattern is read by pydantic's Rust regex when validating and by schemathesis/clients
    elsewhere; a bare \\S disagreed on U+0085 (refused with 422 although the schema allowed it)."""
    from pydantic import BaseModel, Field

    from api.schemas import NOT_BLANK

    class Text(BaseModel):
        text: str = Field(pattern=NOT_BLANK)

    def accepted(c: str) -> bool:
        try:
            Text(text=c)
            return True
        except ValidationError:
            return False

    differ = [hex(cp) for cp in range(0x3400) if accepted(chr(cp)) != bool(re.search(NOT_BLANK, chr(cp)))]
    assert differ == []
    assert not accepted("\u0085") and not accepted("\ufeff") and not accepted(" \u3000\t") and accepted(" 轴 ")
