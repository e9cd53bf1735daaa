"""Record writes through the real HTTP server: concurrent PUTs all land, a cross-kind id is refused, bad
bodies are refused before anything is written, and authorisation comes before validation."""

import json
import threading
from pathlib import Path

import pytest

from indexer.records import load_corpus

WRITERS = 16


def snapshot(corpus: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(corpus.glob("*.jsonl"))}


def question(n: int, **changes) -> dict:
    return {"id": f"sq-http-{n:02d}", "question": f"并发接口写入问题{n:02d}：液压站油温过高怎么处理", "answer": "1. 清洗冷却器；2. 检查溢流阀。",
            "aliases": [], "trade": "设备维护", "keywords": [], "extra": {"n": n}} | changes


@pytest.fixture(scope="module")
def srv(own_server):
    return own_server


def test_sixteen_concurrent_puts_are_all_acknowledged_and_present(srv):
    before = snapshot(srv.corpus)
    barrier = threading.Barrier(WRITERS)
    codes: dict[int, int] = {}

    def put(n: int) -> None:
        with srv.client("maintainer") as c:
            barrier.wait()
            codes[n] = c.put("/v1/admin/records/standard_questions", json=question(n)).status_code

    threads = [threading.Thread(target=put, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == {n: 200 for n in range(WRITERS)}
    after = snapshot(srv.corpus)
    assert {k: v for k, v in after.items() if k != "standard_questions.jsonl"} == \
           {k: v for k, v in before.items() if k != "standard_questions.jsonl"}
    old = before["standard_questions.jsonl"].decode().splitlines()
    new = after["standard_questions.jsonl"].decode().splitlines()
    assert new[:len(old)] == old and {json.loads(line)["id"] for line in new[len(old):]} == {f"sq-http-{n:02d}" for n in range(WRITERS)}
    assert load_corpus(srv.corpus).problems == []
    with srv.client("maintainer") as c:
        assert all(c.get(f"/v1/admin/records/standard_question/sq-http-{n:02d}").json()["extra"] == {"n": n} for n in range(WRITERS))


def test_an_id_of_another_kind_is_refused_with_409_naming_it(srv):
    achievement = json.loads((srv.corpus / "achievements.jsonl").read_text(encoding="utf-8").splitlines()[0])
    course = {"id": achievement["id"], "title": "焊接入门", "description": "d", "chapters": ["第1章"], "trade": "焊接",
              "level": "初级", "duration": "8学时", "extra": {}}
    before = snapshot(srv.corpus)
    with srv.client("maintainer") as c:
        r = c.put("/v1/admin/records/courses", json=course)
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_id"
    assert "achievement" in r.json()["error"]["message"] and "achievements.jsonl:1" in r.json()["error"]["message"]
    assert snapshot(srv.corpus) == before


@pytest.mark.parametrize("depth", [9, 900])
def test_deeply_nested_extra_is_422_naming_the_field_and_nothing_is_written(srv, depth):
    deep: dict = {}
    for _ in range(depth - 1):
        deep = {"a": deep}
    before = snapshot(srv.corpus)
    with srv.client("maintainer") as c:
        r = c.put("/v1/admin/records/standard_questions", json=question(99, extra=deep))
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("extra: nested deeper than 8")
    assert snapshot(srv.corpus) == before


@pytest.mark.parametrize("who", ["ent_a", "welder"])
@pytest.mark.parametrize("body", [b'{"id": 5}', b"{not json", json.dumps(question(98, extra={"a": [[[[[[[[[]]]]]]]]]})).encode()])
def test_a_non_maintainer_gets_403_whatever_the_body(srv, who, body):
    before = snapshot(srv.corpus)
    with srv.client(who) as c:
        r = c.put("/v1/admin/records/standard_questions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert snapshot(srv.corpus) == before


def test_a_corrupt_line_is_409_naming_file_and_line_and_left_as_it_is(srv):
    path = srv.corpus / "standard_questions.jsonl"
    good = path.read_bytes()
    lines = good.decode().splitlines()
    path.write_text("\n".join([lines[0], "{truncated", *lines[1:]]) + "\n", encoding="utf-8")
    try:
        broken = path.read_bytes()
        with srv.client("maintainer") as c:
            r = c.put("/v1/admin/records/standard_questions", json=question(97))
            assert r.status_code == 409 and r.json()["error"]["message"].startswith("standard_questions.jsonl:2: invalid JSON")
            assert c.delete(f"/v1/admin/records/standard_question/{json.loads(lines[0])['id']}").status_code == 409
        assert path.read_bytes() == broken
    finally:
        path.write_bytes(good)
