"""The corpus's one writer: concurrent writes from threads and processes all land, ids stay unique across
kinds, an unreadable line is reported and left alone, and a writer killed mid-write leaves the old file."""

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from indexer.corpus_store import CorpusBusy, CorpusCorrupt, CorpusStore, DuplicateId
from indexer.errors import CorpusError, NotFound
from indexer.records import Course, StandardQuestion, load_corpus
from tests.conftest import ROOT

WRITERS = 16


def question(n: int, **changes) -> StandardQuestion:
    data = {"id": f"sq-race-{n:02d}", "question": f"并发写入问题{n:02d}：数控车床主轴异响怎么排查", "answer": "1. 检查轴承；2. 检查皮带张紧。",
            "aliases": [], "trade": "数控机床", "keywords": [], "extra": {"n": n}}
    return StandardQuestion.model_validate(data | changes)


def snapshot(corpus: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(corpus.glob("*.jsonl"))}


def assert_only_added(corpus: Path, before: dict[str, bytes], added: set[str]) -> None:
    """Every other file byte for byte as before; the questions file is its old lines, in order, plus ``added``."""
    after = snapshot(corpus)
    assert {k: v for k, v in after.items() if k != "standard_questions.jsonl"} == \
           {k: v for k, v in before.items() if k != "standard_questions.jsonl"}
    old = before["standard_questions.jsonl"].decode().splitlines()
    new = after["standard_questions.jsonl"].decode().splitlines()
    assert new[:len(old)] == old
    assert {json.loads(line)["id"] for line in new[len(old):]} == added and len(new) == len(old) + len(added)
    assert load_corpus(corpus).problems == []


def test_concurrent_writes_from_threads_all_land_and_nothing_else_changes(mini_corpus):
    before = snapshot(mini_corpus)
    barrier = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        barrier.wait()
        try:
            assert CorpusStore(mini_corpus).upsert(question(n)) is True
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert_only_added(mini_corpus, before, {f"sq-race-{n:02d}" for n in range(WRITERS)})


CHILD = """
import json, sys
from pathlib import Path
from indexer.corpus_store import CorpusStore
from indexer.records import StandardQuestion
record = StandardQuestion.model_validate(json.loads(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()  # the barrier: every process is up before any writes
CorpusStore(Path(sys.argv[1])).upsert(record)
print("written", flush=True)
"""


def test_concurrent_writes_from_processes_all_land_and_nothing_else_changes(mini_corpus):
    before = snapshot(mini_corpus)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(mini_corpus), question(n).model_dump_json(by_alias=True)],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in range(WRITERS)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.close()
    for proc in procs:
        assert proc.stdout.read().strip() == "written" and proc.wait(timeout=60) == 0
    assert_only_added(mini_corpus, before, {f"sq-race-{n:02d}" for n in range(WRITERS)})


def test_id_of_another_kind_is_refused_naming_it(mini_corpus):
    before = snapshot(mini_corpus)
    first_achievement = json.loads((mini_corpus / "achievements.jsonl").read_text(encoding="utf-8").splitlines()[0])
    course = Course.model_validate({"id": first_achievement["id"], "title": "焊接入门", "description": "d", "chapters": ["第1章"],
                                    "trade": "焊接", "level": "初级", "duration": "8学时"})
    with pytest.raises(DuplicateId) as refused:
        CorpusStore(mini_corpus).upsert(course)
    assert refused.value.other_kind == "achievement" and "achievements.jsonl:1" in str(refused.value)
    assert snapshot(mini_corpus) == before


def test_a_corrupt_line_is_reported_as_file_and_line_and_left_untouched(mini_corpus):
    path = mini_corpus / "standard_questions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines[:2], '{"id": "sq-broken", "question": ', *lines[2:]]) + "\n", encoding="utf-8")
    before = snapshot(mini_corpus)
    store = CorpusStore(mini_corpus)
    with pytest.raises(CorpusCorrupt, match=r"^standard_questions\.jsonl:3: invalid JSON"):
        store.upsert(question(1))
    with pytest.raises(CorpusCorrupt, match=r"^standard_questions\.jsonl:3: "):
        store.delete("standard_question", json.loads(lines[0])["id"])
    with pytest.raises(CorpusCorrupt, match=r"^standard_questions\.jsonl:3: "):  # ids elsewhere cannot be checked either
        store.upsert(Course.model_validate({"id": "course-new", "title": "t", "description": "d", "chapters": ["c"],
                                            "trade": "焊接", "level": "初级", "duration": "8学时"}))
    assert snapshot(mini_corpus) == before
    assert store.get("standard_question", json.loads(lines[0])["id"]).id == json.loads(lines[0])["id"]  # reads still work


def test_upsert_replaces_in_place_and_delete_removes(mini_corpus):
    store = CorpusStore(mini_corpus)
    path = mini_corpus / "standard_questions.jsonl"
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
    replacement = question(0, id=ids[1], answer="新的答案。")
    assert store.upsert(replacement) is False
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ids
    assert store.get("standard_question", ids[1]) == replacement
    assert store.delete("standard_question", ids[1]) is True
    assert store.delete("standard_question", ids[1]) is False
    with pytest.raises(NotFound):
        store.get("standard_question", ids[1])


@pytest.mark.parametrize("extra,reason", [
    ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}}, "nested deeper than 8"),
    ({"blob": "长" * 10_000}, "bytes as JSON"),
])
def test_deep_or_large_extra_is_refused_before_anything_is_written(mini_corpus, extra, reason):
    before = snapshot(mini_corpus)
    with pytest.raises(CorpusError) as refused:
        CorpusStore(mini_corpus).upsert(question(1, extra=extra))
    assert refused.value.field == "extra" and reason in refused.value.reason
    assert snapshot(mini_corpus) == before


def test_a_writer_waits_for_the_lock_and_gives_up_with_busy(mini_corpus):
    holder = CorpusStore(mini_corpus)
    with holder._locked():
        with pytest.raises(CorpusBusy):
            CorpusStore(mini_corpus, lock_timeout=0.2).upsert(question(1))
    CorpusStore(mini_corpus, lock_timeout=0.2).upsert(question(1))


KILLED = """
import json, os, sys
from pathlib import Path
from indexer.corpus_store import CorpusStore
from indexer.records import StandardQuestion

def stalled_replace(src, dst):
    print("renaming", flush=True)
    sys.stdin.readline()  # killed here: the new file is written and fsynced, not yet renamed into place

os.replace = stalled_replace
CorpusStore(Path(sys.argv[1])).upsert(StandardQuestion.model_validate(json.loads(sys.argv[2])))
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_and_the_lock_free(mini_corpus):
    before = snapshot(mini_corpus)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(mini_corpus), question(1).model_dump_json(by_alias=True)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "renaming"
    assert list(mini_corpus.glob(".standard_questions.jsonl.*.tmp"))  # it really was mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert snapshot(mini_corpus) == before and load_corpus(mini_corpus).problems == []
    CorpusStore(mini_corpus, lock_timeout=5).upsert(question(2))  # the dead writer's lock went with it
    assert not list(mini_corpus.glob(".*.tmp"))
    assert_only_added(mini_corpus, before, {"sq-race-02"})
