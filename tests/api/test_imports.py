"""Maintainers upload sheets through a real server: 202 with a job, the CLI's report, the index serving the rows;
too large, mislabelled, archive and zip-bomb uploads refused; the job's state changes are compare-and-set."""

from __future__ import annotations

import io
import re
import shutil
import threading
import zipfile
from datetime import timedelta
from types import SimpleNamespace

import httpx
import openpyxl
import pytest
from sqlalchemy import insert, update

from api.imports import ImportJobs
from rag.db import ImportJobRow, connect, utcnow
from tests.api.conftest import make_server, wait_for_job

UPLOAD_LIMIT = 1_000_000
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NEW_QUESTION = "龙门铣床横梁导轨爬行怎么处理"
NEW_ANSWER = "1. 检查导轨润滑油路与油量；2. 调整镶条间隙至0.03mm以内；3. 更换磨损的导轨软带。"


@pytest.fixture(scope="module")
def srv(tmp_path_factory, embedder, cache, cache_path):
    proc, server = make_server(tmp_path_factory, embedder, cache, cache_path, "imports-server",
                               env_extra={"JIANGXIN_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)})
    yield server
    proc.terminate()
    proc.wait(timeout=30)


def xlsx(rows: list[list[str]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def upload(srv, content: bytes, name: str = "标准问题.xlsx", kind: str = "standard_question", who: str = "maintainer",
           **fields: str) -> httpx.Response:
    with srv.client(who) as c:
        return c.post("/v1/admin/imports", files={"file": (name, content, XLSX)}, data={"kind": kind, **fields})


def test_an_uploaded_sheet_is_imported_indexed_and_answered(srv):
    sheet = xlsx([["问题", "答案", "工种", "关键词"], [NEW_QUESTION, NEW_ANSWER, "机加工", "导轨；爬行"]])
    r = upload(srv, sheet)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == r.json()["url"] and r.json()["state"] in ("queued", "running")
    with srv.client("maintainer") as c:
        job = wait_for_job(c, r.headers["location"])
    assert job["state"] == "done", job
    report = job["report"]
    assert (report["added"], report["updated"], report["unchanged"], report["skipped"]) == (1, 0, 0, 0), report
    assert report["mapping"] == {"问题": "question", "答案": "answer", "工种": "trade", "关键词": "keywords"}
    assert report["written"] and report["index_version"], report
    with srv.client("ent_a") as c:
        body = c.post("/v1/questions", json={"question": NEW_QUESTION}).json()
    assert body["status"] == "answered" and body["answer"].startswith("1. 检查导轨润滑油路"), body

    again = upload(srv, sheet)  # the same sheet twice changes nothing
    with srv.client("maintainer") as c:
        job = wait_for_job(c, again.headers["location"])
    assert job["state"] == "done" and job["report"]["unchanged"] == 1 and not job["report"]["written"], job


def test_a_sheet_with_bad_rows_fails_listing_them_and_writes_nothing(srv):
    path = srv.corpus / "standard_questions.jsonl"
    before = path.read_bytes()
    sheet = xlsx([["问题", "答案", "工种"], ["焊条烘干温度是多少", "350℃烘1小时", "焊接"], ["缺答案的问题", "", "焊接"],
                  ["", "缺问题的答案", "焊接"], ["好的第二行", "答案二", "焊接"]])
    r = upload(srv, sheet, name="坏行.xlsx")
    assert r.status_code == 202, r.text
    with srv.client("maintainer") as c:
        job = wait_for_job(c, r.headers["location"])
    assert job["state"] == "failed" and "2 bad row(s); nothing was imported" in job["error"], job
    problems = job["report"]["problems"]
    assert [re.match(r"坏行\.xlsx:(\d+):", p).group(1) for p in problems] == ["3", "4"], problems
    assert path.read_bytes() == before

    skipped = upload(srv, sheet, name="坏行.xlsx", dry_run="true", skip_invalid="true")
    with srv.client("maintainer") as c:
        job = wait_for_job(c, skipped.headers["location"])
    assert job["state"] == "done" and (job["report"]["added"], job["report"]["skipped"]) == (2, 2), job
    assert not job["report"]["written"] and path.read_bytes() == before  # dry run


def test_an_upload_over_the_limit_is_413_declared_or_streamed(srv):
    big = xlsx([["问题", "答案"]]) + b"\0" * UPLOAD_LIMIT
    r = upload(srv, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text

    boundary = "jxboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\nstandard_question\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n').encode()

    def chunks():  # no Content-Length: the server must count as it reads
        yield head
        for _ in range(20):
            yield "问题,答案\n".encode() * 10_000

    with srv.client("maintainer") as c:
        r = c.post("/v1/admin/imports", content=chunks(),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text


def test_text_named_xlsx_is_415_and_a_csv_is_accepted(srv):
    text = f"问题,答案\n{NEW_QUESTION}X,答案\n".encode()
    r = upload(srv, text, name="表格.xlsx")
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_type" and "plain text" in r.json()["error"]["message"]
    r = upload(srv, b"\x89PNG\r\n\x1a\n" + bytes(range(256)), name="图.csv")
    assert r.status_code == 415 and "binary" in r.json()["error"]["message"], r.text
    r = upload(srv, text, name="表格.csv", dry_run="true")
    assert r.status_code == 202 and r.json()["file_type"] == "csv", r.text


def test_archives_that_are_not_workbooks_and_zip_bombs_are_refused(srv):
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("问题.csv", "问题,答案\n甲,乙\n")
    r = upload(srv, plain.getvalue(), name="问题.xlsx")
    assert r.status_code == 415 and "not an XLSX workbook" in r.json()["error"]["message"], r.text

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            zeros = b"\0" * (1 << 20)
            for _ in range(200):
                member.write(zeros)
    assert len(bomb.getvalue()) < UPLOAD_LIMIT
    r = upload(srv, bomb.getvalue(), name="炸弹.xlsx")
    assert r.status_code == 413 and r.json()["error"]["code"] == "archive_too_large", r.text


def test_a_markdown_document_becomes_knowledge_records(srv):
    doc = "# 矿井防治水规定\n\n## 第三章 探放水\n\n探放水前应当编制探放水设计，钻孔超前距不得小于20米。\n".encode()
    r = upload(srv, doc, name="防治水规定.md", kind="")
    assert r.status_code == 422 and "kind" in r.json()["error"]["message"], r.text  # blank is not a kind
    with srv.client("maintainer") as c:  # no kind: a document is imported as knowledge
        r = c.post("/v1/admin/imports", files={"file": ("防治水规定.md", doc, "text/markdown")})
    assert r.status_code == 202 and r.json()["kind"] == "knowledge" and r.json()["file_type"] == "markdown", r.text
    with srv.client("maintainer") as c:
        job = wait_for_job(c, r.headers["location"])
    assert job["state"] == "done" and job["report"]["added"] >= 1 and job["report"]["index_version"], job
    assert job["report"]["source"] == "防治水规定"
    r = upload(srv, doc, name="防治水规定.md", kind="standard_question")
    assert r.status_code == 422 and "knowledge" in r.json()["error"]["message"], r.text


def test_only_maintainers_upload_or_read_jobs(srv):
    for who in ("ent_a", "welder"):
        r = upload(srv, xlsx([["问题", "答案"], ["甲", "乙"]]), who=who)
        assert r.status_code == 403, r.text
        with srv.client(who) as c:
            assert c.get("/v1/admin/imports/I000000000000").status_code == 403
    with srv.client("maintainer") as c:
        assert c.get("/v1/admin/imports/I000000000000").status_code == 404
    r = upload(srv, b"a,b\n", kind="nonsense")
    assert r.status_code == 422 and "kind" in r.json()["error"]["message"], r.text
    with srv.client("maintainer") as c:
        r = c.post("/v1/admin/imports", json={"kind": "standard_question"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("file: required"), r.text


def test_one_of_many_racing_threads_starts_a_job(tmp_path):
    db = connect(f"sqlite:///{tmp_path / 'race.db'}")
    jobs = ImportJobs(SimpleNamespace(queue=SimpleNamespace(engine=db)))
    with jobs.session.begin() as session:
        session.execute(insert(ImportJobRow).values(id="Irace", state="queued", kind="standard_question", filename="a.csv",
                                                    file_type="csv", stage="queued", requested_by="ops",
                                                    created_at=utcnow()))
    barrier, wins = threading.Barrier(8), []

    def take() -> None:
        barrier.wait()
        wins.append(jobs._cas("Irace", "queued", state="running", started_at=utcnow()))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert jobs.get("Irace").state == "running"

    # a job left running by a killed process (no live lease: rag/leases.py) is failed by recovery once older than
    # a lease; a fresh one is left alone
    assert jobs.recover() == []
    with jobs.session.begin() as session:
        session.execute(update(ImportJobRow).where(ImportJobRow.id == "Irace")
                        .values(created_at=utcnow() - timedelta(hours=1), started_at=utcnow() - timedelta(hours=1)))
    assert jobs.recover() == ["Irace"]
    assert jobs.get("Irace").state == "failed" and "upload the file again" in jobs.get("Irace").error


def test_the_import_page_uploads_a_sheet_and_shows_its_report(srv, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    sheet = tmp_path / "页面导入.xlsx"
    sheet.write_bytes(xlsx([["问题", "答案", "工种"], ["页面上传的问题怎么处理", "按页面步骤处理", "机加工"],
                            ["", "缺问题", "机加工"]]))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.location.get("url", "")
                else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url + "/import")
        page.fill("#key", srv.keys["maintainer"])
        page.click("#save-key")
        page.set_input_files("#file", str(sheet))
        page.select_option("#kind", "standard_question")
        page.check("#skip-invalid")
        page.check("#dry-run")
        page.click("#upload")
        playwright.expect(page.locator("#state")).to_contain_text("完成", timeout=30_000)
        playwright.expect(page.locator(".count-added")).to_have_text("1")
        playwright.expect(page.locator(".count-skipped")).to_have_text("1")
        playwright.expect(page.locator("#problems li")).to_contain_text("页面导入.xlsx:3:")
        browser.close()
    assert not errors, errors  # a script blocked by the page's CSP would show here
