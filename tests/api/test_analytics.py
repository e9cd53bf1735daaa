"""The maintainers' dashboard (/v1/analytics/…) over a real server: questions, tickets, answers, a publish and feedback
driven through the API; visits and challenges (another resource's routes) written to the same SQLite file."""

import csv
import io
from collections import Counter

import pytest

from api.app import openapi_document
from rag.db import ApplicationRow, ChallengeRow, VisitRow, connect, sessions
from tests.api.conftest import make_server, wait_for_job

if "/v1/analytics/trades" not in openapi_document()["paths"]:
    pytest.skip("api/app.py does not include the analytics router (api/routes/analytics.py) yet", allow_module_level=True)

WELD_Q = "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"
WELD_Q_AGAIN = "不锈钢管氩弧焊打底，焊缝背面氧化发黑怎么处理"  # cosine 0.99 to WELD_Q with e5-small
CNC_Q = "数控车床主轴异响是什么原因"
CONVEYOR_Q = "带式输送机跑偏怎么调整"  # a standard question of the mini corpus: answered automatically
WEATHER_Q = "今天天气怎么样，周末适合去爬山吗"  # out of scope
SECRET = "机密配方K-77"  # in a confidential visit's texts: must appear nowhere
ANSWER = "1. 背面充氩保护，流量10L/min并提前置换5分钟；2. 管口封堵；3. 层间温度控制在150℃以下。"
ROUTES = ("trades", "gaps", "capacity", "feedback", "craftsmen")
LISTS = {"trades": "trade_weeks", "gaps": "clusters", "capacity": "trades", "feedback": "trades", "craftsmen": "craftsmen"}


def ask(srv, who: str, question: str) -> dict:
    with srv.client(who) as c:
        r = c.post("/v1/questions", json={"question": question})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def srv(tmp_path_factory, embedder, cache, cache_path):
    """A server of its own: a publish changes the index, and the figures count everything in its database."""
    proc, server = make_server(tmp_path_factory, embedder, cache, cache_path, "analytics")
    yield server
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def dash(srv):
    """Three tickets (two near-identical welding questions, one of them answered by the welder and published, and one
    claimed), an automatic answer voted unhelpful, the published answer served and voted helpful, an out-of-scope
    question; visits and a picked challenge in the database; and every report as JSON."""
    weld = ask(srv, "ent_a", WELD_Q)
    again = ask(srv, "ent_b", WELD_Q_AGAIN)
    cnc = ask(srv, "ent_a", CNC_Q)
    conveyor = ask(srv, "ent_a", CONVEYOR_Q)
    weather = ask(srv, "ent_b", WEATHER_Q)
    statuses = [q["status"] for q in (weld, again, cnc, conveyor, weather)]
    assert statuses == ["escalated", "escalated", "escalated", "answered", "out_of_scope"]
    assert weld["ticket"]["routed_to"][0]["id"] == "cm-m-2"
    tid = weld["ticket"]["id"]
    with srv.client("welder") as c:
        assert c.post(f"/v1/tickets/{tid}/claim").status_code == 200
        assert c.post(f"/v1/tickets/{tid}/answer", json={"answer": ANSWER}).status_code == 200
    with srv.client("cnc") as c:
        assert c.post(f"/v1/tickets/{cnc['ticket']['id']}/claim").status_code == 200
    with srv.client("maintainer") as c:
        ticket = c.get(f"/v1/tickets/{tid}").json()
        r = c.post(f"/v1/tickets/{tid}/publish", json={"question": ticket["question"], "answer": ticket["answer"]})
        assert r.status_code == 202, r.text
        assert wait_for_job(c, r.headers["location"])["state"] == "done"
    served = ask(srv, "ent_b", WELD_Q)
    assert served["status"] == "answered" and served["sources"][0]["id"] == f"sq-craft-{tid.lower()}", served
    with srv.client("ent_a") as c:
        assert c.post(f"/v1/questions/{conveyor['id']}/feedback", json={"helpful": False}).status_code == 200
    with srv.client("ent_b") as c:
        assert c.post(f"/v1/questions/{served['id']}/feedback", json={"helpful": True}).status_code == 200

    with sessions(connect(srv.env["JIANGXIN_DATABASE_URL"])).begin() as s:
        s.add(VisitRow(id="Vsecret", enterprise="ent-a", source=f"ticket:{cnc['ticket']['id']}", title=SECRET,
                       description=f"{SECRET}的熔炼温度", trade="铸造", region="湖北武汉", address="武汉某厂",
                       confidential=True, status="requested"))
        s.add(VisitRow(id="Vdone", enterprise="ent-a", title="焊缝返修指导", description="焊缝返修", trade="焊接",
                       region="湖北武汉", address="武汉某厂", craftsman="cm-m-2", status="confirmed"))
        s.add(ChallengeRow(id="Cpicked", enterprise="ent-a", title="薄壁件变形攻关", description="…", trade="机加工",
                           deadline="2030-01-01", status="in_progress", picked="Apicked"))
        s.flush()
        s.add(ApplicationRow(id="Apicked", challenge_id="Cpicked", craftsman="cm-m-3", plan="…", team=["cm-m-1"], status="picked"))

    with srv.client("maintainer") as c:
        def trade_of(q: dict) -> str:  # the module's definition: the ticket's first trade, else the cited record's
            if q["ticket"]:
                return q["ticket"]["trades"][0]
            if q["sources"]:
                return c.get(f"/v1/admin/records/standard_question/{q['sources'][0]['id']}").json()["trade"]
            return "未分类"

        asked = [weld, again, cnc, conveyor, weather, served]
        trades = {q["id"]: trade_of(q) for q in asked}
        tickets = [c.get(f"/v1/tickets/{q['ticket']['id']}").json() for q in (weld, again, cnc)]
        reports = {name: c.get(f"/v1/analytics/{name}").json() for name in ROUTES}
    return {"srv": srv, "asked": asked, "trade": trades, "tickets": tickets, "reports": reports, "weld": weld,
            "served": served}


def by_trade(rows: list[dict], fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Rows summed per trade (over weeks, should the test straddle a Monday)."""
    out: dict[str, Counter] = {}
    for row in rows:
        out.setdefault(row["trade"], Counter()).update({f: row[f] for f in fields})
    return {t: dict(c) for t, c in out.items()}


def test_trades_counts_questions_answers_and_tickets_per_trade(dash):
    fields = ("questions", "answered_automatically", "out_of_scope", "escalated", "answered_by_craftsmen")
    expected: dict[str, Counter] = {}
    for q in dash["asked"]:
        row = expected.setdefault(dash["trade"][q["id"]], Counter({f: 0 for f in fields}))
        row.update(questions=1, answered_automatically=q["status"] == "answered", out_of_scope=q["status"] == "out_of_scope")
    for t in dash["tickets"]:
        expected[t["trades"][0]].update(escalated=1, answered_by_craftsmen=t["answered_by"] is not None)
    report = dash["reports"]["trades"]
    assert by_trade(report["trade_weeks"], fields) == {t: dict(c) for t, c in expected.items()}
    for r in report["trade_weeks"]:
        answerable = r["answered_automatically"] + r["escalated"]
        answered = r["answered_automatically"] + r["answered_by_craftsmen"]
        assert r["answer_rate"] == (round(answered / answerable, 4) if answerable else None)
    assert report["weeks"] == 12 and all(r["week"][:4].isdigit() and "-W" in r["week"] for r in report["trade_weeks"])


def test_gaps_cluster_near_identical_questions_and_leave_confidential_tickets_out(dash):
    gaps = dash["reports"]["gaps"]
    assert gaps["tickets"] == 2  # the third ticket is the source of a confidential visit
    top = gaps["clusters"][0]
    assert top["size"] == 2 and top["published"] == 1 and len(gaps["clusters"]) == 1
    assert {top["representative"], *top["examples"]} == {WELD_Q, WELD_Q_AGAIN}
    assert top["trades"] == [dash["weld"]["ticket"]["trades"][0]]
    with dash["srv"].client("maintainer") as c:
        texts = [c.get(f"/v1/analytics/{name}", params=p).text for name in ROUTES for p in ({}, {"format": "csv"})]
    assert not any(CNC_Q in t or SECRET in t for t in texts)


def test_capacity_counts_open_work_per_trade_and_flags_demand_without_an_expert(dash):
    rows = {r["trade"]: r for r in dash["reports"]["capacity"]["trades"]}
    weld, again, cnc = dash["tickets"]
    assert weld["status"] == "published" and again["status"] == "open" and cnc["status"] == "claimed"
    expected = Counter()
    expected[(again["trades"][0], "open_tickets")] += 1
    expected[(cnc["trades"][0], "claimed_tickets")] += 1
    expected[("铸造", "open_visits")] += 1  # a confidential visit counts; its texts are never shown
    for trade, row in rows.items():
        for field in ("open_tickets", "claimed_tickets", "open_visits"):
            assert row[field] == expected[(trade, field)], (trade, field)
    assert rows["焊接"]["craftsmen"] == 1 and rows["数控机床"]["craftsmen"] == 1 and rows["铸造"]["craftsmen"] == 0
    assert rows["铸造"]["no_expert"] and rows["铸造"]["demand_per_craftsman"] is None
    assert [r["trade"] for r in dash["reports"]["capacity"]["trades"] if r["no_expert"]] == ["铸造"]
    assert dash["reports"]["capacity"]["trades"][0]["trade"] == "铸造"


def test_feedback_counts_verdicts_per_trade(dash):
    report = dash["reports"]["feedback"]
    conveyor, served = dash["asked"][3], dash["served"]
    expected = Counter()
    expected[(dash["trade"][conveyor["id"]], "unhelpful")] += 1
    expected[(dash["trade"][served["id"]], "helpful")] += 1
    assert report["helpful"] == 1 and report["unhelpful"] == 1
    assert {(r["trade"], k): r[k] for r in report["trades"] for k in ("helpful", "unhelpful") if r[k]} == dict(expected)
    assert report["trades"][0]["unhelpful"] == 1
    assert all(r["unhelpful_rate"] == round(r["unhelpful"] / (r["helpful"] + r["unhelpful"]), 4) for r in report["trades"])


def test_craftsmen_report_answers_publishes_votes_visits_and_challenges(dash):
    rows = {r["craftsman"]: r for r in dash["reports"]["craftsmen"]["craftsmen"]}
    assert set(rows) == {"cm-m-1", "cm-m-2", "cm-m-3"}
    assert dash["reports"]["craftsmen"]["craftsmen"][0]["craftsman"] == "cm-m-2"
    zero = dict.fromkeys(("tickets_answered", "answers_published", "helpful_votes", "unhelpful_votes", "visits_reported",
                          "visits_confirmed", "visits_published", "challenges_picked"), 0)
    figures = {who: {k: row[k] for k in zero} for who, row in rows.items()}
    assert figures == {
        "cm-m-2": zero | {"tickets_answered": 1, "answers_published": 1, "helpful_votes": 1, "visits_reported": 1,
                          "visits_confirmed": 1},
        "cm-m-3": zero | {"challenges_picked": 1},
        "cm-m-1": zero | {"challenges_picked": 1},
    }
    assert rows["cm-m-2"]["name"] == "李红" and rows["cm-m-2"]["trades"] == ["焊接"]


@pytest.mark.parametrize("name", ROUTES)
def test_csv_has_a_header_row_and_one_row_per_json_row(dash, name):
    with dash["srv"].client("maintainer") as c:
        r = c.get(f"/v1/analytics/{name}", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    rows = dash["reports"][name][LISTS[name]]
    assert rows and table[0] == list(rows[0]) and len(table) == 1 + len(rows)


@pytest.mark.parametrize("name", ROUTES)
def test_only_maintainers_read_the_dashboard(dash, name):
    for who, status in (("ent_a", 403), ("welder", 403), ("cnc", 403), (None, 401), ("maintainer", 200)):
        with dash["srv"].client(who) as c:
            r = c.get(f"/v1/analytics/{name}", params={"format": "csv"})
        assert r.status_code == status, (who, r.text)
        if status != 200:
            assert r.json()["error"]["code"] in ("forbidden", "unauthorized")
