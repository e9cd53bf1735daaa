"""A re-index swaps the serving index under load without a failed request."""

import threading
import time

NEW_QUESTION = "数控车床液压卡盘夹紧力不足工件打滑怎么办"
NEW_ANSWER = "1. 检查液压站压力是否达到2.5MPa；2. 清洗卡盘内部铁屑并加注专用润滑脂；3. 检查回转油缸密封是否泄漏。"


def test_reindex_under_load_has_no_errors_and_serves_the_new_version(own_server):
    with own_server.client("maintainer") as admin:
        old_version = admin.get("/v1/admin/index").json()["version"]
        record = {"id": "sq-live-1", "question": NEW_QUESTION, "answer": NEW_ANSWER, "aliases": [], "trade": "数控机床",
                  "keywords": ["液压卡盘"], "extra": {}}
        assert admin.put("/v1/admin/records/standard_questions", json=record).status_code == 200

    errors: list[str] = []
    seen: list[tuple[float, str, dict]] = []
    stop = threading.Event()

    def ask_forever(question: str) -> None:
        with own_server.client("ent_a") as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/questions", json={"question": question})
                    if r.status_code != 201:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        seen.append((time.monotonic(), r.json()["index_version"], r.json()))
                except Exception as exc:  # noqa: BLE001 - any failure counts
                    errors.append(repr(exc))

    threads = [threading.Thread(target=ask_forever, args=(q,)) for q in ("细长轴让刀", "焊缝气孔", NEW_QUESTION)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with own_server.client("maintainer") as admin:
        assert admin.post("/v1/admin/reindex", json={"full": False}).status_code == 202
        deadline = time.monotonic() + 180
        while (status := admin.get("/v1/admin/reindex").json())["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status["state"] == "done", status
        new_version = status["version"]
    swapped_at = time.monotonic()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    assert new_version != old_version
    assert {v for _, v, _ in seen} <= {old_version, new_version}
    after = [body for at, v, body in seen if at > swapped_at + 0.5]
    assert after and all(body["index_version"] == new_version for body in after)
    answered_new = [b for b in after if b["question"] == NEW_QUESTION]
    assert answered_new and all(b["status"] == "answered" and b["sources"][0]["id"] == "sq-live-1" for b in answered_new)
