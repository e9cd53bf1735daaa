"""End to end in a real headless browser: ask → escalated → craftsman answers on the queue page →
the enterprise's page shows the answer."""

import shutil

import pytest

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def test_escalated_question_is_answered_through_the_pages(browser, own_server, tmp_path):
    asker = browser.new_context(viewport={"width": 390, "height": 844})  # a phone screen
    ask = asker.new_page()
    ask.goto(own_server.url + "/")
    ask.fill("#key", own_server.keys["ent_a"])
    ask.click("#save-key")
    ask.fill("#question", "不锈钢薄壁管氩弧焊背面氧化发黑，充氩也不管用怎么办")
    ask.click("#ask")
    playwright.expect(ask.locator("#ticket")).to_contain_text("工单", timeout=60_000)
    ticket_id = ask.locator("#ticket").inner_text().split()[1]

    craftsman = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    craftsman.goto(own_server.url + "/queue")
    craftsman.fill("#key", own_server.keys["welder"])
    craftsman.click("#save-key")
    card = craftsman.locator(f'[data-ticket="{ticket_id}"]')
    playwright.expect(card).to_contain_text("不锈钢薄壁管", timeout=30_000)
    card.get_by_role("button", name="认领").click()
    playwright.expect(card.locator("textarea")).to_be_visible(timeout=30_000)
    answer = "背面充氩流量提高到10L/min并提前置换5分钟，管口用胶带封堵，层间温度控制在150℃以下。"
    card.locator("textarea").fill(answer)
    card.get_by_role("button", name="提交解答").click()
    playwright.expect(card).to_contain_text("我的解答", timeout=30_000)

    playwright.expect(ask.locator("#craftsman-answer")).to_contain_text("背面充氩流量提高到10L/min", timeout=30_000)
    ask.screenshot(path=str(tmp_path / "ask-page.png"), full_page=True)
    asker.close()
