"""The programme's loop through its pages in a real headless browser, at phone width: an enterprise posts a
confidential challenge on /programme, two invited craftsmen apply on /work, the welder is picked, reports the visit
that follows, the enterprise confirms, a maintainer publishes a de-identified service case on /dashboard, and the next
question on the ask page is answered citing it; the craftsman not picked never sees the confidential text. And the
tickets: a confidential question escalates, the enterprise invites from the recommendations on /programme, a decline
passes the invitation on, the answer is judged not solved and reopened; a maintainer publishes an edited answer."""

import json
import shutil
from datetime import date, timedelta

import pytest

from api.app import openapi_document
from tests.api.conftest import make_server

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SECRET_TEXT = "客户三号产线镀锌钢板点焊飞溅严重，月损失约十二万元"
SOON = (date.today() + timedelta(days=30)).isoformat()
CASE_TITLE = "镀锌钢板电阻点焊飞溅的现场解决"
REPORTS = ("trades", "capacity", "gaps", "feedback", "craftsmen")
ANALYTICS_SERVED = "/v1/analytics/trades" in openapi_document()["paths"]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory, embedder, cache, cache_path):
    proc, server = make_server(tmp_path_factory, embedder, cache, cache_path, "programme-pages", threshold="0",
                               env_extra={"JIANGXIN_WEBHOOK_ALLOW_PRIVATE": "true"})
    yield server
    proc.terminate()
    proc.wait(timeout=30)


class Tab:
    """A phone-sized page of ``path`` with ``who``'s key saved; it keeps the script errors and CSP refusals it met."""

    def __init__(self, browser, server, who: str, path: str) -> None:
        self.context = browser.new_context(viewport={"width": 390, "height": 844})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.responses = []
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        # a 404 from a route the server does not serve is logged as a failed load; anything else is a fault
        self.page.on("console", lambda m: self.problems.append(m.text)
                     if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        self.page.on("response", lambda r: self.responses.append(r))
        self.page.goto(server.url + path)
        self.page.fill("#key", server.keys[who])
        self.page.click("#save-key")
        expect(self.page.locator("#key-state")).to_have_text("已保存")

    def refresh(self) -> None:
        self.page.click("#refresh")

    def api_texts(self) -> list[str]:
        """The bodies of every API response this page received."""
        return [r.text() for r in self.responses if "/v1/" in r.url]

    def check(self, tmp_path, name: str) -> None:
        """No script errors or CSP refusals, nothing wider than the phone, #error empty; a full-page screenshot."""
        assert self.problems == [], self.problems
        expect(self.page.locator("#error")).to_be_empty()
        assert self.page.evaluate("document.documentElement.scrollWidth") <= 390
        self.page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_confidential_challenge_to_cited_service_case_through_the_pages(browser, srv, tmp_path):
    cnc_saw: list[str] = []

    ent = Tab(browser, srv, "ent_a", "/programme")
    page = ent.page
    page.fill("#webhook-url", "http://127.0.0.1:9/jiangxin-hook")
    page.click("#webhook-save")
    expect(page.locator("#webhook-secret")).to_contain_text("whsec_", timeout=30_000)
    expect(page.locator("#webhook-state")).to_contain_text("127.0.0.1:9")
    page.fill("#ch-title", "镀锌板点焊飞溅攻关")
    page.fill("#ch-summary", "镀锌钢板电阻点焊飞溅大，求工艺改进方案")
    page.fill("#ch-description", SECRET_TEXT)
    page.fill("#ch-trade", "焊接")
    page.fill("#ch-deadline", SOON)
    page.fill("#ch-reward", "2万元")
    page.fill("#ch-invited", "cm-m-2, cm-m-3")
    page.check("#ch-invited-only")
    page.check("#ch-confidential")
    page.click("#ch-submit")
    expect(page.locator("#ch-result")).to_contain_text("已发布榜单", timeout=30_000)
    cid = page.locator("#ch-result").get_attribute("data-id")
    posted = page.locator(f'#challenges [data-challenge="{cid}"]')
    expect(posted).to_contain_text("保密", timeout=30_000)
    expect(posted).to_contain_text(SECRET_TEXT)  # the enterprise sees its own description
    expect(posted).to_contain_text("cm-m-2、cm-m-3")

    craftsmen = {}
    for who in ("welder", "cnc"):
        tab = craftsmen[who] = Tab(browser, srv, who, "/work")
        card = tab.page.locator(f'[data-challenge="{cid}"]')
        expect(card).to_contain_text("镀锌钢板电阻点焊飞溅大", timeout=30_000)
        expect(card).to_contain_text("仅对选中的工匠可见")
        assert card.locator(".description").count() == 0
        card.locator("textarea.plan").fill(f"{who}的方案：调整电极压力与焊接电流")
        card.get_by_role("button", name="揭榜", exact=True).click()
        expect(card.locator(".mine")).to_contain_text("已申请", timeout=30_000)
    welder, cnc = craftsmen["welder"].page, craftsmen["cnc"].page
    cnc_saw.append(cnc.content())

    ent.refresh()
    expect(posted.locator("[data-application]")).to_have_count(2, timeout=30_000)
    posted.locator('[data-craftsman="cm-m-2"]').get_by_role("button", name="选择").click()
    expect(posted).to_have_attribute("data-status", "in_progress", timeout=30_000)
    expect(posted.locator('[data-craftsman="cm-m-3"]')).to_contain_text("未选中")

    craftsmen["welder"].refresh()
    chosen = welder.locator(f'[data-challenge="{cid}"]')
    expect(chosen.locator(".description")).to_contain_text(SECRET_TEXT, timeout=30_000)  # the picked team
    chosen.locator("textarea.progress-note").fill("已完成电极修磨试验")
    chosen.get_by_role("button", name="提交进展").click()
    expect(chosen.locator(".progress-log")).to_contain_text("已完成电极修磨试验", timeout=30_000)
    craftsmen["cnc"].refresh()
    not_chosen = cnc.locator(f'[data-challenge="{cid}"]')
    expect(not_chosen.locator(".mine")).to_contain_text("未选中", timeout=30_000)
    assert not_chosen.locator(".description").count() == 0 and not_chosen.locator(".progress-form").count() == 0
    cnc_saw.append(cnc.content())

    ent.refresh()
    posted.get_by_role("button", name="申请上门服务").click()
    expect(page.locator("#v-source")).to_have_value(f"challenge:{cid}")
    expect(page.locator("#v-trade")).to_have_value("焊接")
    page.fill("#v-description", "请到现场调试点焊参数")
    page.fill("#v-region", "湖北武汉")
    page.fill("#v-address", "武汉市某工业园3号厂房")
    page.fill("#v-date", SOON)
    page.check("#v-consent")
    page.click("#v-submit")
    expect(page.locator("#v-result")).to_contain_text("cm-m-2", timeout=30_000)  # the picked team's lead
    vid = page.locator("#v-result").get_attribute("data-id")
    requested = page.locator(f'#visits [data-visit="{vid}"]')
    expect(requested).to_have_attribute("data-status", "requested", timeout=30_000)

    craftsmen["welder"].refresh()
    visit = welder.locator(f'[data-visit="{vid}"]')
    expect(visit).to_contain_text("请到现场调试点焊参数", timeout=30_000)
    visit.locator("input.schedule-date").fill(SOON)
    visit.get_by_role("button", name="安排", exact=True).click()
    expect(visit).to_have_attribute("data-status", "scheduled", timeout=30_000)
    visit.locator("textarea.report-problem").fill(SECRET_TEXT)
    visit.locator("textarea.report-actions").fill("修磨电极端面，电极压力提高到3.2kN，预压时间延长到20周波")
    visit.locator("textarea.report-results").fill("飞溅减少90%，焊点合格率由92%升到99.5%")
    visit.locator("textarea.report-advice").fill("每班检查电极端面直径")
    visit.get_by_role("button", name="提交报告").click()
    expect(visit).to_have_attribute("data-status", "reported", timeout=30_000)
    expect(visit.locator(".report")).to_contain_text("焊点合格率由92%升到99.5%")
    craftsmen["welder"].check(tmp_path, "work-welder")
    craftsmen["cnc"].refresh()
    expect(cnc.locator("#visits")).to_contain_text("暂无上门服务", timeout=30_000)  # not the welder's visit
    cnc_saw.append(cnc.content())

    ent.refresh()
    expect(requested.locator(".report")).to_contain_text("每班检查电极端面直径", timeout=30_000)
    expect(requested.locator("input.confirm-consent")).to_be_checked()
    requested.get_by_role("button", name="确认", exact=True).click()
    expect(requested).to_have_attribute("data-status", "confirmed", timeout=30_000)
    posted.get_by_role("button", name="确认完成").click()
    expect(posted).to_have_attribute("data-status", "completed", timeout=30_000)
    posted.get_by_role("button", name="时间线").click()
    expect(posted.locator(".timeline")).to_contain_text("进展", timeout=30_000)
    expect(posted.locator(".timeline")).to_contain_text("选定")
    requested.get_by_role("button", name="时间线").click()
    expect(requested.locator(".timeline li")).to_have_count(5, timeout=30_000)  # created … confirmed
    page.click("#load-events")
    expect(page.locator("#events")).to_contain_text(f"visit:{vid}", timeout=30_000)

    maintainer = Tab(browser, srv, "maintainer", "/dashboard")
    board = maintainer.page
    review = board.locator(f'[data-visit="{vid}"]')
    expect(review.locator("textarea.case-problem")).to_have_value(SECRET_TEXT, timeout=30_000)  # the raw report
    review.locator("input.case-title").fill(CASE_TITLE)
    review.locator("textarea.case-problem").fill("某企业镀锌钢板电阻点焊飞溅严重，焊点合格率偏低。")
    review.locator("textarea.case-actions").fill("修磨电极端面，提高电极压力到3.2kN，延长预压时间到20周波。")
    review.locator("textarea.case-results").fill("飞溅减少约九成，焊点合格率升到99.5%。")
    review.locator("textarea.case-advice").fill("每班检查电极端面直径。")
    review.locator("input.case-keywords").fill("电阻点焊, 镀锌钢板, 飞溅")
    review.get_by_role("button", name="发布服务案例").click()
    expect(board.locator("#published")).to_contain_text(f"服务案例《{CASE_TITLE}》", timeout=120_000)
    case_id = board.locator("#published").get_attribute("data-id")
    expect(board.locator(f'#showcase [data-case="{case_id}"]')).to_be_visible(timeout=30_000)
    expect(review).to_have_count(0)
    expect(board.locator("[data-report]")).to_have_count(len(REPORTS), timeout=60_000)
    maintainer.check(tmp_path, "dashboard")

    ent.refresh()
    expect(requested).to_have_attribute("data-status", "published", timeout=30_000)
    expect(requested).to_contain_text(case_id)
    ent.check(tmp_path, "programme")

    public = browser.new_context(viewport={"width": 390, "height": 844}).new_page()  # no key: the public showcase
    public.goto(srv.url + "/showcase")
    public.fill("#trade", "焊接")
    public.click("#search")
    shown = public.locator(f'[data-case="{case_id}"]')
    expect(shown).to_contain_text(CASE_TITLE, timeout=30_000)
    expect(shown).to_contain_text("实测效果")
    assert SECRET_TEXT not in public.content() and "ent-a" not in public.content()
    public.screenshot(path=str(tmp_path / "showcase.png"), full_page=True)
    public.context.close()

    asker = Tab(browser, srv, "ent_b", "/")
    asker.page.fill("#question", "镀锌钢板电阻点焊飞溅严重怎么解决")
    asker.page.click("#ask")
    expect(asker.page.locator("#answer")).to_contain_text(f"服务案例《{CASE_TITLE}》", timeout=60_000)
    expect(asker.page.locator(f'#sources [data-id="{case_id}"]')).to_have_count(1)
    assert SECRET_TEXT not in asker.page.content()
    asker.check(tmp_path, "ask")

    craftsmen["cnc"].refresh()
    expect(not_chosen).to_have_attribute("data-status", "completed", timeout=30_000)
    cnc_saw.append(cnc.content())
    craftsmen["cnc"].check(tmp_path, "work-cnc")
    cnc_saw.extend(craftsmen["cnc"].api_texts())
    assert len(cnc_saw) > 4 and all(SECRET_TEXT not in text for text in cnc_saw)
    with srv.client("maintainer") as client:
        published = client.get(f"/v1/visits/{vid}").json()
        case = next(c for c in client.get("/v1/showcase").json() if c["id"] == case_id)
    assert published["status"] == "published" and published["case_record"] == case_id
    assert SECRET_TEXT not in str(case) and case["problem"].startswith("某企业")
    for tab in (ent, maintainer, asker, *craftsmen.values()):
        tab.context.close()


@pytest.mark.skipif(not ANALYTICS_SERVED, reason="api/app.py does not include the analytics router yet")
def test_dashboard_draws_each_report_and_downloads_its_csv(browser, srv, tmp_path):
    tab = Tab(browser, srv, "maintainer", "/dashboard")
    page = tab.page
    for name in REPORTS:
        expect(page.locator(f'[data-report="{name}"]')).to_have_attribute("data-state", "shown", timeout=60_000)
    capacity = page.locator('[data-report="capacity"]')
    expect(capacity.locator("svg.chart")).to_have_count(1)
    expect(capacity.locator("table tr").first).to_contain_text("工匠数")
    with page.expect_download(timeout=30_000) as download:
        capacity.locator('[data-csv="capacity"]').click()
    assert download.value.suggested_filename == "capacity.csv"
    text = open(download.value.path(), encoding="utf-8-sig").read()
    assert text.splitlines()[0].startswith("trade,open_tickets")
    tab.check(tmp_path, "dashboard-analytics")
    tab.context.close()


def test_dashboard_works_without_the_analytics_routes(browser, srv, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.route("**/v1/analytics/**", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"error": {"code": "not_found", "message": "Not Found"}}'))
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(srv.url + "/dashboard")
    page.fill("#key", srv.keys["maintainer"])
    page.click("#save-key")
    for name in REPORTS:
        expect(page.locator(f'[data-report="{name}"]')).to_have_attribute("data-state", "missing", timeout=30_000)
    expect(page.locator("#visits")).not_to_contain_text("请先保存密钥")
    expect(page.locator("#error")).to_be_empty()
    assert problems == [] and page.locator("[data-csv]").count() == 0
    context.close()


WELD_SECRET = "我厂二号线不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"
FIRST_ANSWER = "背面充氩保护，流量8L/min，焊前置换3分钟。"
SECOND_ANSWER = "背面充氩流量提高到12L/min并提前置换5分钟，管口用胶带封堵，层间温度控制在150℃以下。"


@pytest.fixture(scope="module")
def escalating(tmp_path_factory, embedder, cache, cache_path):
    """A server of its own at make_server's default threshold, where questions escalate to the craftsmen."""
    proc, server = make_server(tmp_path_factory, embedder, cache, cache_path, "ticket-pages")
    yield server
    proc.terminate()
    proc.wait(timeout=30)


def queue_page(browser, server, who: str):
    """The craftsmen's /queue page (no key state of its own to wait for) with ``who``'s key saved; (context, page)."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server.url + "/queue")
    page.fill("#key", server.keys[who])
    page.click("#save-key")
    return context, page


def answer_on_the_queue(page, ticket_id: str, answer: str) -> None:
    """Claim ``ticket_id`` on /queue if it is open, then answer it."""
    card = page.locator(f'[data-ticket="{ticket_id}"]')
    claim = card.get_by_role("button", name="认领", exact=True)
    expect(card.locator("textarea").or_(claim)).to_be_visible(timeout=30_000)
    if claim.count():
        claim.click()
    card.locator("textarea").fill(answer)
    card.get_by_role("button", name="提交解答").click()
    expect(card).to_contain_text("我的解答：" + answer, timeout=30_000)


def test_confidential_ticket_invited_passed_on_answered_and_reopened_through_the_pages(browser, escalating, tmp_path):
    asker = Tab(browser, escalating, "ent_a", "/")
    ask = asker.page
    ask.fill("#question", WELD_SECRET)
    ask.check("#confidential")
    ask.click("#ask")
    expect(ask.locator("#ticket")).to_contain_text("工单", timeout=60_000)
    tid = ask.locator("#ticket").inner_text().split()[1]

    ent = Tab(browser, escalating, "ent_a", "/programme")
    ticket = ent.page.locator(f'#tickets [data-ticket="{tid}"]')
    expect(ticket).to_have_attribute("data-status", "open", timeout=30_000)
    expect(ticket.locator(".title")).to_contain_text("保密")
    ticket.get_by_role("button", name="推荐工匠").click()
    welder_card = ticket.locator('.recommendation[data-craftsman="cm-m-2"]')
    expect(welder_card).to_contain_text("擅长", timeout=60_000)
    expect(welder_card).to_contain_text("在办工单")
    expect(welder_card).to_contain_text("解答获赞")
    ticket.locator('.recommendation[data-craftsman="cm-m-3"]').get_by_role("button", name="邀请", exact=True).click()
    invitation = ticket.locator(".invitations li")
    expect(invitation).to_have_count(1, timeout=30_000)
    expect(invitation).to_have_attribute("data-status", "pending")
    expect(invitation).to_contain_text("cm-m-3")
    expect(ticket.locator(".recommendation")).not_to_have_count(0, timeout=60_000)
    expect(ticket.locator(".recommendation button")).to_have_count(0)  # one pending invitation at a time

    cnc = Tab(browser, escalating, "cnc", "/work")
    expect(cnc.page.locator("#me")).to_contain_text("cm-m-3", timeout=30_000)
    offer = cnc.page.locator(f'#invitations [data-ticket="{tid}"]')
    expect(offer).to_contain_text(WELD_SECRET, timeout=30_000)
    expect(offer).to_contain_text("企业-")  # the enterprise did not reveal itself
    offer.get_by_role("button", name="谢绝").click()
    expect(offer).to_have_count(0, timeout=30_000)
    cnc.check(tmp_path, "work-invitation-declined")

    welder = Tab(browser, escalating, "welder", "/work")
    passed_on = welder.page.locator(f'#invitations [data-ticket="{tid}"]')
    expect(passed_on).to_contain_text(WELD_SECRET, timeout=30_000)
    passed_on.get_by_role("button", name="接受").click()
    expect(welder.page.locator("#accepted")).to_contain_text(tid, timeout=30_000)
    expect(passed_on).to_have_count(0)
    welder.check(tmp_path, "work-invitation-accepted")

    ent.refresh()
    expect(ticket).to_have_attribute("data-status", "claimed", timeout=30_000)
    expect(ticket.locator('.invitations li[data-status="declined"]')).to_contain_text("cm-m-3")
    expect(ticket.locator('.invitations li[data-status="accepted"]')).to_contain_text("cm-m-2")

    queue_context, queue = queue_page(browser, escalating, "welder")
    answer_on_the_queue(queue, tid, FIRST_ANSWER)
    expect(ask.locator("#craftsman-answer")).to_contain_text(FIRST_ANSWER, timeout=30_000)
    ask.click("#not-solved")
    expect(ask.locator("#ticket")).to_contain_text("状态：open", timeout=30_000)
    expect(ask.locator("#outcome-state")).to_contain_text("未解决")
    expect(ask.locator("#craftsman-answer")).to_be_hidden()

    ent.refresh()
    expect(ticket).to_have_attribute("data-status", "open", timeout=30_000)
    ticket.get_by_role("button", name="时间线").click()
    expect(ticket.locator(".timeline")).to_contain_text("未解决，重新开放", timeout=30_000)
    expect(ticket.locator(".timeline")).to_contain_text("谢绝邀请")

    queue.click("#refresh")
    answer_on_the_queue(queue, tid, SECOND_ANSWER)  # the reopened ticket is taken up again
    expect(ask.locator("#craftsman-answer")).to_contain_text(SECOND_ANSWER, timeout=30_000)
    expect(ask.locator("#not-solved")).to_be_visible()
    ent.refresh()
    expect(ticket).to_have_attribute("data-status", "answered", timeout=30_000)
    ticket.get_by_role("button", name="已解决").click()
    expect(ticket.locator(".verdict")).to_contain_text("已确认解决", timeout=30_000)
    expect(ticket.locator(".timeline")).to_contain_text("已解决")
    asker.check(tmp_path, "ask-reopened-and-answered")
    ent.check(tmp_path, "programme-tickets")

    maintainer = Tab(browser, escalating, "maintainer", "/dashboard")
    secret = maintainer.page.locator(f'#tickets [data-ticket="{tid}"]')
    expect(secret).to_contain_text("保密，不发布", timeout=30_000)
    assert secret.get_by_role("button").count() == 0 and secret.locator("textarea").count() == 0
    assert WELD_SECRET not in maintainer.page.locator("#tickets").inner_text()
    maintainer.check(tmp_path, "dashboard-confidential-ticket")
    for tab in (asker, ent, cnc, welder, maintainer):
        tab.context.close()
    queue_context.close()


def test_an_answer_is_published_from_the_dashboard_as_the_maintainer_edited_it(browser, escalating, tmp_path):
    raw_question = "我们公司三号线的激光焊缝咬边严重，老板急死了怎么办"
    raw_answer = "降低焊接速度，调整离焦量。三号线老板请放心。"
    edited = {"question": "激光焊焊缝咬边严重怎么解决", "answer": "降低焊接速度，调整离焦量到+1mm。"}
    with escalating.client("ent_b") as client:
        asked = client.post("/v1/questions", json={"question": raw_question}).json()
    assert asked["status"] == "escalated", asked
    tid = asked["ticket"]["id"]
    with escalating.client("welder") as client:
        assert client.post(f"/v1/tickets/{tid}/claim").status_code == 200
        assert client.post(f"/v1/tickets/{tid}/answer", json={"answer": raw_answer}).status_code == 200

    maintainer = Tab(browser, escalating, "maintainer", "/dashboard")
    board = maintainer.page
    card = board.locator(f'#tickets [data-ticket="{tid}"]')
    expect(card.locator("textarea.publish-question")).to_have_value(raw_question, timeout=30_000)
    expect(card.locator("textarea.publish-answer")).to_have_value(raw_answer)
    card.locator("textarea.publish-question").fill(edited["question"])
    card.locator("textarea.publish-answer").fill(edited["answer"])
    card.get_by_role("button", name="发布", exact=True).click()
    record_id = f"sq-craft-{tid.lower()}"
    expect(board.locator("#ticket-published")).to_have_attribute("data-id", record_id, timeout=120_000)
    expect(board.locator("#ticket-published")).to_contain_text(record_id)
    expect(card).to_have_count(0)  # published: no longer waiting
    maintainer.check(tmp_path, "dashboard-published-answer")
    maintainer.context.close()
    with escalating.client("maintainer") as client:
        record = client.get(f"/v1/admin/records/standard_question/{record_id}").json()
    assert record["question"] == edited["question"] and record["answer"] == edited["answer"]
    assert "三号线" not in json.dumps(record, ensure_ascii=False)
