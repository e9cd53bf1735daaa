"""The programme's loop over a real server: a confidential challenge two craftsmen apply to, one picked; a visit
requested from it, scheduled, reported and confirmed; a de-identified service case published, shown on the showcase
and cited by the next answer; every step on the timeline and posted, signed, to the enterprise's webhook (retried
until the receiver accepts); the craftsman not picked never sees the confidential text; each route's roles."""

import hashlib
import hmac
import json
import threading
import time
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.api.conftest import make_server
from tests.api.test_routes import allowed_roles

SECRET_TEXT = "客户三号产线镀锌钢板点焊飞溅严重，月损失约十二万元"
SOON = (date.today() + timedelta(days=30)).isoformat()


class Receiver:
    """A real local HTTP receiver: answers 500 to the first ``fail`` posts, then 200; keeps what it got."""

    def __init__(self, fail: int) -> None:
        self.fail, self.got, self.lock = fail, [], threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.got.append((dict(self.headers), body))
                    status = 500 if outer.fail > 0 else 200
                    outer.fail -= 1
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory, embedder, cache, cache_path):
    proc, server = make_server(tmp_path_factory, embedder, cache, cache_path, "programme", threshold="0",
                               env_extra={"JIANGXIN_WEBHOOK_BACKOFF": "0.2", "JIANGXIN_WEBHOOK_ALLOW_PRIVATE": "true"})
    yield server
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver(fail=2)
    yield r
    r.server.shutdown()


def call(srv, who, method, path, body=None, seen=None):
    with srv.client(who) as c:
        r = c.request(method, path, json=body)
    if seen is not None:
        seen.append(r.text)
    return r


def test_challenge_to_visit_to_service_case(srv, receiver):
    cnc_saw: list[str] = []
    hook = call(srv, "ent_a", "PUT", "/v1/webhooks", {"url": receiver.url})
    assert hook.status_code == 200 and hook.json()["secret"].startswith("whsec_")
    secret = hook.json()["secret"]

    posted = call(srv, "ent_a", "POST", "/v1/challenges", {
        "title": "镀锌板点焊飞溅攻关", "summary": "镀锌钢板电阻点焊飞溅大，求工艺改进方案", "description": SECRET_TEXT,
        "trade": "焊接", "deadline": SOON, "reward": "2万元", "invited_only": True, "invited": ["cm-m-2", "cm-m-3"],
        "confidential": True})
    assert posted.status_code == 201, posted.text
    cid = posted.json()["id"]

    for who in ("welder", "cnc"):  # invited: both see the summary, neither the confidential description
        listed = call(srv, who, "GET", "/v1/challenges", seen=cnc_saw if who == "cnc" else None).json()
        mine = [c for c in listed if c["id"] == cid]
        assert mine and mine[0]["description"] is None and mine[0]["summary"].startswith("镀锌钢板")
        assert mine[0]["enterprise"].startswith("企业-") and mine[0]["enterprise"] != "ent-a"  # a pseudonym
    applied = {who: call(srv, who, "POST", f"/v1/challenges/{cid}/applications", {"plan": f"{who}的方案：调整电极压力与焊接电流"},
                         seen=cnc_saw if who == "cnc" else None) for who in ("welder", "cnc")}
    assert all(r.status_code == 201 for r in applied.values()), [r.text for r in applied.values()]
    again = call(srv, "welder", "POST", f"/v1/challenges/{cid}/applications", {"plan": "再来一次"})
    assert again.status_code == 409

    owner_view = call(srv, "ent_a", "GET", f"/v1/challenges/{cid}").json()
    assert len(owner_view["applications"]) == 2 and owner_view["description"] == SECRET_TEXT
    picked = call(srv, "ent_a", "POST", f"/v1/challenges/{cid}/pick", {"application_id": applied["welder"].json()["id"]})
    assert picked.status_code == 200 and picked.json()["status"] == "in_progress"
    assert call(srv, "welder", "GET", f"/v1/challenges/{cid}").json()["description"] == SECRET_TEXT  # the picked team
    cnc_view = call(srv, "cnc", "GET", f"/v1/challenges/{cid}", seen=cnc_saw).json()
    assert cnc_view["description"] is None and [a["craftsman"] for a in cnc_view["applications"]] == ["cm-m-3"]
    assert call(srv, "welder", "POST", f"/v1/challenges/{cid}/progress", {"note": "已完成电极修磨试验"}).status_code == 201
    assert call(srv, "cnc", "POST", f"/v1/challenges/{cid}/progress", {"note": "x"}).status_code == 404
    cnc_timeline = call(srv, "cnc", "GET", f"/v1/challenges/{cid}/timeline", seen=cnc_saw).json()
    assert "progress" not in {e["event"] for e in cnc_timeline}

    visit = call(srv, "ent_a", "POST", "/v1/visits", {
        "title": "点焊飞溅现场诊断", "description": "请到现场调试点焊参数", "trade": "焊接", "region": "湖北武汉",
        "address": "武汉市某工业园3号厂房", "preferred_dates": [SOON], "source": f"challenge:{cid}", "consent": True})
    assert visit.status_code == 201, visit.text
    vid = visit.json()["id"]
    assert visit.json()["craftsman"] == "cm-m-2"  # the picked team's lead
    assert call(srv, "cnc", "GET", f"/v1/visits/{vid}", seen=cnc_saw).status_code == 404
    assert call(srv, "welder", "POST", f"/v1/visits/{vid}/schedule", {"date": SOON}).json()["status"] == "scheduled"
    reported = call(srv, "welder", "POST", f"/v1/visits/{vid}/report", {
        "problem": SECRET_TEXT, "actions": "修磨电极端面，电极压力提高到3.2kN，预压时间延长到20周波",
        "results": "飞溅减少90%，焊点合格率由92%升到99.5%", "advice": "每班检查电极端面直径"})
    assert reported.json()["status"] == "reported", reported.text
    assert call(srv, "ent_a", "POST", f"/v1/visits/{vid}/confirm", {}).json()["status"] == "confirmed"
    assert call(srv, "ent_a", "POST", f"/v1/challenges/{cid}/complete").json()["status"] == "completed"

    case = call(srv, "maintainer", "POST", f"/v1/visits/{vid}/publish", {
        "title": "镀锌钢板电阻点焊飞溅的现场解决", "problem": "某企业镀锌钢板电阻点焊飞溅严重，焊点合格率偏低。",
        "actions": "修磨电极端面，提高电极压力到3.2kN，延长预压时间到20周波。", "results": "飞溅减少约九成，焊点合格率升到99.5%。",
        "advice": "每班检查电极端面直径。", "keywords": ["电阻点焊", "镀锌钢板", "飞溅"]})
    assert case.status_code == 200, case.text
    assert case.json()["citation"].startswith("服务案例《镀锌钢板电阻点焊飞溅的现场解决》")
    assert SECRET_TEXT not in case.text and "ent-a" not in case.text
    assert call(srv, "maintainer", "POST", f"/v1/visits/{vid}/publish", {
        "title": "t", "problem": "p", "actions": "a", "results": "r"}).status_code == 409  # published once

    with srv.client() as c:  # the public showcase, no key
        shown = c.get("/v1/showcase", params={"trade": "焊接"}).json()
    assert [s["id"] for s in shown] == [case.json()["id"]]
    answer = call(srv, "ent_b", "POST", "/v1/questions", {"question": "镀锌钢板电阻点焊飞溅严重怎么解决"}).json()
    assert answer["status"] == "answered", answer
    assert answer["sources"][0]["id"] == case.json()["id"] and "服务案例《" in answer["answer"], answer

    assert all(SECRET_TEXT not in text for text in cnc_saw)  # the craftsman not picked never saw it

    events = [e["event"] for e in call(srv, "ent_a", "GET", f"/v1/visits/{vid}/timeline").json()]
    assert events == ["created", "routed", "scheduled", "visited", "confirmed", "published"]
    challenge_events = [e["event"] for e in call(srv, "ent_a", "GET", f"/v1/challenges/{cid}/timeline").json()]
    assert challenge_events[:3] == ["created", "invited", "invited"] and "picked" in challenge_events
    assert challenge_events[-1] == "confirmed"

    mine = call(srv, "ent_a", "GET", "/v1/events").json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = call(srv, "ent_a", "GET", "/v1/webhooks/deliveries").json()
        if log and all(d["state"] == "delivered" for d in log):
            break
        time.sleep(0.2)
    assert log and all(d["state"] == "delivered" for d in log), log
    assert len(log) == len(mine)
    assert max(d["attempts"] for d in log) >= 2  # the receiver refused the first posts: retried, then delivered
    delivered = {json.loads(body)["id"]: (headers, body) for headers, body in receiver.got}
    assert set(delivered) == {e["id"] for e in mine}
    for headers, body in delivered.values():
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Jiangxin-Signature"] == expected


def test_ticket_steps_are_on_its_timeline(srv):
    asked = call(srv, "ent_a", "POST", "/v1/questions", {"question": "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"}).json()
    if asked["status"] != "escalated":
        asked = call(srv, "ent_a", "POST", f"/v1/questions/{asked['id']}/escalate").json()
    tid = asked["ticket"]["id"]
    assert call(srv, "welder", "POST", f"/v1/tickets/{tid}/claim").status_code == 200
    blank = call(srv, "welder", "POST", f"/v1/tickets/{tid}/answer", {"answer": " \u3000\n"})
    assert blank.status_code == 422 and "no visible character" in blank.json()["error"]["message"]
    assert call(srv, "welder", "POST", f"/v1/tickets/{tid}/answer", {"answer": "背面充氩保护。"}).status_code == 200
    events = [e["event"] for e in call(srv, "ent_a", "GET", f"/v1/tickets/{tid}/timeline").json()]
    assert events[0] == "created" and events[-2:] == ["claimed", "answered"]
    seen_by_craftsman = call(srv, "welder", "GET", f"/v1/tickets/{tid}/timeline").json()
    assert seen_by_craftsman[0]["actor"].startswith("企业-")  # the asker under its pseudonym
    assert call(srv, "ent_b", "GET", f"/v1/tickets/{tid}/timeline").status_code == 404


def test_a_confidential_visit_is_never_published(srv):
    visit = call(srv, "ent_b", "POST", "/v1/visits", {"title": "数控系统报警", "description": "保密产线", "trade": "数控机床",
                                                      "region": "江苏", "address": "某地", "confidential": True, "consent": True})
    assert visit.status_code == 201 and visit.json()["craftsman"] == "cm-m-3" and visit.json()["consent"] is False
    vid = visit.json()["id"]
    call(srv, "cnc", "POST", f"/v1/visits/{vid}/schedule", {"date": SOON})
    call(srv, "cnc", "POST", f"/v1/visits/{vid}/report", {"problem": "p", "actions": "a", "results": "r"})
    assert call(srv, "ent_b", "POST", f"/v1/visits/{vid}/confirm", {"consent": True}).json()["consent"] is False
    r = call(srv, "maintainer", "POST", f"/v1/visits/{vid}/publish", {"title": "t", "problem": "p", "actions": "a", "results": "r"})
    assert r.status_code == 409 and "confidential" in r.json()["error"]["message"]


def test_racing_picks_pick_one(srv):
    posted = call(srv, "ent_a", "POST", "/v1/challenges", {"title": "焊缝气孔", "description": "d", "trade": "焊接",
                                                           "deadline": SOON, "invited": ["cm-m-3"]}).json()
    cid = posted["id"]
    apps = [call(srv, who, "POST", f"/v1/challenges/{cid}/applications", {"plan": "p"}).json()["id"] for who in ("welder", "cnc")]
    results: list[int] = []
    threads = [threading.Thread(target=lambda a=a: results.append(
        call(srv, "ent_a", "POST", f"/v1/challenges/{cid}/pick", {"application_id": a}).status_code)) for a in apps * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * 5
    final = call(srv, "ent_a", "GET", f"/v1/challenges/{cid}").json()
    assert [a["status"] for a in final["applications"]].count("picked") == 1


def test_every_programme_route_allows_exactly_its_roles(srv):
    cid = call(srv, "ent_a", "POST", "/v1/challenges", {"title": "t", "description": "d", "trade": "焊接",
                                                        "deadline": SOON}).json()["id"]
    vid = call(srv, "ent_a", "POST", "/v1/visits", {"title": "t", "description": "d", "trade": "焊接", "region": "湖北",
                                                    "address": "a"}).json()["id"]
    matrix = [
        ("POST", "/v1/challenges", {"title": "t", "description": "d", "trade": "焊接", "deadline": SOON}, {"ent_a"}),
        ("GET", "/v1/challenges", None, {"maintainer", "ent_a", "welder"}),
        ("GET", f"/v1/challenges/{cid}", None, {"maintainer", "ent_a", "welder"}),
        ("POST", f"/v1/challenges/{cid}/applications", {"plan": "p"}, {"welder"}),
        ("POST", f"/v1/challenges/{cid}/progress", {"note": "n"}, {"welder"}),
        ("POST", f"/v1/challenges/{cid}/pick", {"application_id": "A0"}, {"ent_a"}),
        ("POST", f"/v1/challenges/{cid}/complete", None, {"ent_a"}),
        ("GET", f"/v1/challenges/{cid}/timeline", None, {"maintainer", "ent_a", "welder"}),
        ("POST", "/v1/visits", {"title": "t", "description": "d", "trade": "焊接", "region": "湖北", "address": "a"}, {"ent_a"}),
        ("GET", "/v1/visits", None, {"maintainer", "ent_a", "welder"}),
        ("GET", f"/v1/visits/{vid}", None, {"maintainer", "ent_a", "welder"}),
        ("POST", f"/v1/visits/{vid}/schedule", {"date": SOON}, {"welder"}),
        ("POST", f"/v1/visits/{vid}/report", {"problem": "p", "actions": "a", "results": "r"}, {"welder"}),
        ("POST", f"/v1/visits/{vid}/confirm", {}, {"ent_a"}),
        ("POST", f"/v1/visits/{vid}/publish", {"title": "t", "problem": "p", "actions": "a", "results": "r"}, {"maintainer"}),
        ("GET", f"/v1/visits/{vid}/timeline", None, {"maintainer", "ent_a", "welder"}),
        ("GET", "/v1/events", None, {"ent_a"}),
        ("GET", "/v1/webhooks", None, {"ent_a"}),
        ("GET", "/v1/webhooks/deliveries", None, {"ent_a"}),
        ("POST", f"/v1/challenges/{cid}/cancel", None, {"ent_a"}),
    ]
    for method, path, body, expected in matrix:
        assert allowed_roles(srv, method, path, body) == expected, (method, path)


def test_craftsmen_see_timelines_under_the_pseudonym_and_whoami(srv):
    cid = call(srv, "ent_a", "POST", "/v1/challenges", {"title": "焊接变形", "description": "d", "trade": "焊接",
                                                        "deadline": SOON, "invited": ["cm-m-3"]}).json()["id"]
    events = call(srv, "welder", "GET", f"/v1/challenges/{cid}/timeline").json()
    assert events and all(e["actor"] != "ent-a" for e in events) and events[0]["actor"].startswith("企业-")
    assert all(e["event"] != "invited" for e in events)  # whom else the enterprise invited is not the welder's business
    assert call(srv, "welder", "GET", "/v1/me").json() == {"role": "craftsman", "principal": "cm-m-2", "name": "李红"}


def test_a_confidential_question_stays_with_its_craftsmen_and_is_never_published(srv):
    secret = "我厂第二车间304不锈钢薄壁管氩弧焊背面发黑"
    asked = call(srv, "ent_b", "POST", "/v1/questions", {"question": secret, "confidential": True}).json()
    if asked["status"] != "escalated":
        asked = call(srv, "ent_b", "POST", f"/v1/questions/{asked['id']}/escalate").json()
    ticket = asked["ticket"]
    assert ticket["confidential"] is True
    routed = {r["id"] for r in ticket["routed_to"]}
    outsider = "cnc" if "cm-m-3" not in routed else "welder"
    assert call(srv, outsider, "GET", f"/v1/tickets/{ticket['id']}").status_code == 404
    assert ticket["id"] not in {t["id"] for t in call(srv, outsider, "GET", "/v1/tickets").json()}
    for report in ("gaps", "trades", "capacity", "craftsmen", "feedback"):  # never in analytics text
        for fmt in ("json", "csv"):
            shown = call(srv, "maintainer", "GET", f"/v1/analytics/{report}?format={fmt}")
            assert shown.status_code == 200 and secret not in shown.text, (report, fmt)
    if "cm-m-2" in routed:  # the routed craftsman sees it, under a pseudonym
        seen = call(srv, "welder", "GET", f"/v1/tickets/{ticket['id']}").json()
        assert seen["asker"].startswith("企业-") and seen["question"] == secret
        assert call(srv, "welder", "POST", f"/v1/tickets/{ticket['id']}/claim").status_code == 200
        assert call(srv, "welder", "POST", f"/v1/tickets/{ticket['id']}/answer", {"answer": "加强背面保护。"}).status_code == 200
        refused = call(srv, "maintainer", "POST", f"/v1/tickets/{ticket['id']}/publish",
                       {"question": "不锈钢薄壁管背面发黑", "answer": "加强背面保护。"})
        assert refused.status_code == 409 and "confidential" in refused.json()["error"]["message"]


def test_the_maintainers_edit_is_what_gets_published(srv):
    raw = "我们公司三号线的激光焊缝咬边严重，老板急死了怎么办"
    asked = call(srv, "ent_a", "POST", "/v1/questions", {"question": raw}).json()
    if asked["status"] != "escalated":
        asked = call(srv, "ent_a", "POST", f"/v1/questions/{asked['id']}/escalate").json()
    tid = asked["ticket"]["id"]
    claimer = "welder" if "cm-m-2" in {r["id"] for r in asked["ticket"]["routed_to"]} else "cnc"
    assert call(srv, claimer, "POST", f"/v1/tickets/{tid}/claim").status_code == 200
    assert call(srv, claimer, "POST", f"/v1/tickets/{tid}/answer", {"answer": "降低焊接速度，调整离焦量。三号线老板请放心。"}).status_code == 200
    edited = {"question": "激光焊焊缝咬边严重怎么解决", "answer": "降低焊接速度，调整离焦量。"}
    r = call(srv, "maintainer", "POST", f"/v1/tickets/{tid}/publish", edited)
    assert r.status_code == 202, r.text
    from tests.api.conftest import wait_for_job
    with srv.client("maintainer") as c:
        assert wait_for_job(c, r.headers["location"])["state"] == "done"
    record = call(srv, "maintainer", "GET", f"/v1/admin/records/standard_question/sq-craft-{tid.lower()}").json()
    assert record["question"] == edited["question"] and record["answer"] == edited["answer"]
    assert "三号线" not in json.dumps(record, ensure_ascii=False)


def test_not_solved_reopens_an_answered_ticket_and_solved_is_recorded(srv):
    asked = call(srv, "ent_a", "POST", "/v1/questions", {"question": "焊缝表面裂纹怎么预防"}).json()
    if asked["status"] != "escalated":
        asked = call(srv, "ent_a", "POST", f"/v1/questions/{asked['id']}/escalate").json()
    tid = asked["ticket"]["id"]
    claimer = "welder" if "cm-m-2" in {r["id"] for r in asked["ticket"]["routed_to"]} else "cnc"
    call(srv, claimer, "POST", f"/v1/tickets/{tid}/claim")
    call(srv, claimer, "POST", f"/v1/tickets/{tid}/answer", {"answer": "控制预热温度。"})
    assert call(srv, "ent_b", "POST", f"/v1/tickets/{tid}/outcome", {"solved": False}).status_code == 404
    reopened = call(srv, "ent_a", "POST", f"/v1/tickets/{tid}/outcome", {"solved": False, "comment": "还是有裂纹"}).json()
    assert reopened["status"] == "open" and reopened["answer"] is None
    again = call(srv, "ent_a", "POST", f"/v1/tickets/{tid}/outcome", {"solved": False})
    assert again.status_code == 409
    call(srv, claimer, "POST", f"/v1/tickets/{tid}/claim")
    call(srv, claimer, "POST", f"/v1/tickets/{tid}/answer", {"answer": "控制预热温度，焊后缓冷。"})
    assert call(srv, "ent_a", "POST", f"/v1/tickets/{tid}/outcome", {"solved": True}).json()["status"] == "answered"
    events = [e for e in call(srv, "ent_a", "GET", f"/v1/tickets/{tid}/timeline").json()]
    names = [e["event"] for e in events]
    assert names.count("answered") == 2 and "reopened" in names and names[-1] == "solved"
    assert next(e for e in events if e["event"] == "reopened")["detail"]["answer"] == "控制预热温度。"
