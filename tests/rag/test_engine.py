import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from indexer.build import build_index
from indexer.errors import Conflict, Forbidden
from indexer.version import LiveIndex
from rag.db import connect
from rag.engine import Engine, EngineConfig, InvalidQuestion
from rag.escalate import TicketQueue
from tests.rag.concurrency import race


def make_engine(corpus, index, db_url, embedder, cache, threshold=None):
    live = LiveIndex(index, embedder)
    return Engine(live, TicketQueue(connect(db_url)), EngineConfig(corpus, index, threshold), cache)


@pytest.fixture
def engine(mini_corpus, tmp_path, embedder, cache):
    build_index(mini_corpus, tmp_path / "index", embedder, cache)
    return make_engine(mini_corpus, tmp_path / "index", f"sqlite:///{tmp_path / 'q.db'}", embedder, cache, threshold=0.99)


def test_standard_question_is_answered_verbatim(engine):
    result = engine.ask("FANUC系统出现SV0401报警如何处理", "ent-a")
    data = result.to_dict()
    assert data["status"] == "answered" and data["standard"]
    assert data["answer"].startswith("SV0401表示伺服VRDY信号断开")
    assert [s["id"] for s in data["sources"]] == ["sq-m-3"]


def test_low_confidence_question_escalates_to_a_matching_craftsman(engine):
    result = engine.ask("不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办", "ent-a")
    assert result.status == "escalated" and result.answer is None
    ticket = result.ticket
    assert ticket.status == "open" and ticket.routes[0].craftsman_id == "cm-m-2"  # 李红: 焊接, 不锈钢氩弧焊
    assert ticket.context and all(c["id"] in engine.live.get().records for c in ticket.context)
    assert result.confidence < 0.99


def test_same_question_from_same_asker_returns_same_ticket(engine):
    first = engine.ask("铝合金薄板焊接变形太大怎么控制", "ent-a").ticket
    again = engine.ask("  铝合金薄板焊接变形太大怎么控制 ", "ent-a").ticket
    other = engine.ask("铝合金薄板焊接变形太大怎么控制", "ent-b").ticket
    assert first.id == again.id and other.id != first.id
    assert len(engine.queue.list()) == 2


def test_full_loop_craftsman_answer_is_published_and_answers_the_next_asker(engine):
    question = "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"
    ticket = engine.ask(question, "ent-a").ticket
    craftsman = ticket.routes[0].craftsman_id
    engine.queue.claim(ticket.id, craftsman)
    with pytest.raises(Forbidden):  # once claimed it leaves the open pool: another welder cannot take it
        engine.queue.claim(ticket.id, "cm-m-9", ["焊接"])
    answer = "1. 管内充氩保护，流量8-10L/min，提前5分钟置换；2. 采用背面成型保护剂；3. 控制层间温度不超过150℃。"
    engine.queue.answer(ticket.id, craftsman, answer)
    with pytest.raises(Conflict):
        engine.queue.claim(ticket.id, craftsman)
    published, report = engine.publish(ticket.id)
    assert published.status == "published" and report.added == 1 and report.embedded <= 2
    again = engine.ask(question, "ent-c").to_dict()
    assert again["status"] == "answered" and again["standard"] and again["answer"] == answer
    assert again["sources"][0]["id"] == published.published_record
    record = engine.live.get().records[published.published_record]
    assert record.extra["craftsman"] == craftsman and record.extra["ticket"] == ticket.id


def test_ticket_life_cycle_refuses_out_of_order_steps(engine):
    ticket = engine.ask("铸铁件加工表面崩边怎么办", "ent-a").ticket
    with pytest.raises(Conflict):
        engine.queue.answer(ticket.id, ticket.routes[0].craftsman_id, "先答")
    with pytest.raises(Forbidden):
        engine.queue.claim(ticket.id, "cm-nobody", [])
    with pytest.raises(Conflict):
        engine.publish(ticket.id)
    closed = engine.queue.close(ticket.id, "重复问题")
    assert closed.status == "closed" and closed.closed_reason == "重复问题"


def test_citations_point_only_at_real_records_and_quote_them(engine):
    engine.config = engine.config.__class__(engine.config.corpus_dir, engine.config.index_dir, threshold=0.0)
    version = engine.live.get()
    for question in ("细长轴车削直线度怎么提高", "皮带机跑偏", "二保焊气孔多", "加工中心伺服报警排查"):
        data = engine.ask(question, "ent-a").to_dict()
        assert data["status"] == "answered" and data["sources"]
        for source in data["sources"]:
            record = version.records[source["id"]]
            assert record.kind == source["kind"]
        if data["standard"]:
            assert data["answer"] == version.records[data["sources"][0]["id"]].answer
            continue
        full = {s["n"]: quotable(version.records[s["id"]]) for s in data["sources"]}
        for line in data["answer"].splitlines():
            body, n = line.rsplit("[", 1)
            for piece in quoted_pieces(body):
                assert piece in full[int(n.rstrip("]"))], piece


def quotable(record) -> str:
    """Everything an answer may quote from a record: its sections, title and list fields."""
    lists = [x for name in ("chapters", "skills", "honours") for x in getattr(record, name, [])]
    return "\n".join([*record.sections(), record.title, *lists, getattr(record, "level", ""), getattr(record, "duration", "")])


def quoted_pieces(line: str) -> list[str]:
    """The parts of an answer line copied from its source: labels (效果：, 重点章节：…) and joiners removed."""
    import re

    line = re.sub(r"^(效果|背景|重点章节|建议咨询)：?", "", line)
    line = re.sub(r"^推荐学习课程《(.+?)》（(.+?)，(.+?)）：", lambda m: "\x00".join(m.groups()) + "\x00", line)
    return [p for p in re.split(r"[\x00；、，（）]|擅长：", line) if p.strip()]


@pytest.mark.parametrize("bad", ["", "   ", "问" * 2001])
def test_invalid_questions_are_refused(engine, bad):
    with pytest.raises(InvalidQuestion):
        engine.ask(bad, "ent-a")


def test_acknowledged_ticket_survives_a_killed_process(mini_corpus, tmp_path, embedder, cache, cache_path):
    build_index(mini_corpus, tmp_path / "index", embedder, cache)
    db = tmp_path / "q.db"
    script = textwrap.dedent(f"""
        import json, sys, time
        from indexer.embedders import EmbedderSpec, EmbeddingCache, load_embedder
        from indexer.version import LiveIndex
        from rag.db import connect
        from rag.engine import Engine, EngineConfig
        from rag.escalate import TicketQueue
        live = LiveIndex({str(tmp_path / 'index')!r}, load_embedder(EmbedderSpec()))
        engine = Engine(live, TicketQueue(connect({f'sqlite:///{db}'!r})), EngineConfig({str(mini_corpus)!r}, {str(tmp_path / 'index')!r}, 0.99))
        result = engine.ask("铝合金焊缝热裂纹怎么防止", "ent-k")
        print(json.dumps({{"ticket": result.ticket.id}}), flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    line = proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    ticket_id = json.loads(line)["ticket"]
    queue = TicketQueue(connect(f"sqlite:///{db}"))
    assert queue.get(ticket_id).question == "铝合金焊缝热裂纹怎么防止"


def test_concurrent_duplicate_creates_yield_one_ticket_on_sqlite(tmp_path):
    from tests.rag.concurrency import create_concurrently

    ids = create_concurrently(TicketQueue(connect(f"sqlite:///{tmp_path / 'q.db'}")), "ent-x")
    assert len(ids) == 6 and len(set(ids)) == 1


QUESTION = "不锈钢管氩弧焊打底焊缝背面氧化发黑怎么办"


def answered_ticket(engine):
    """A ticket escalated from ``QUESTION`` and answered by the craftsman it was routed to first."""
    ticket = engine.ask(QUESTION, "ent-a").ticket
    craftsman = ticket.routes[0].craftsman_id
    engine.queue.claim(ticket.id, craftsman)
    engine.queue.answer(ticket.id, craftsman, "管内充氩保护。")
    return ticket


def killed_publish(engine, corpus):
    """What a publish has done when its process is killed: the ticket publishing, its record in the corpus."""
    from indexer.records import StandardQuestion, upsert_record
    from rag.engine import published_record_id

    ticket = answered_ticket(engine)
    engine.queue.start_publish(ticket.id)
    record = StandardQuestion(id=published_record_id(ticket.id), question=QUESTION, answer="管内充氩保护。", trade="焊接")
    upsert_record(corpus, record)
    return ticket, record


def test_a_publish_killed_after_it_went_live_is_withdrawn_at_recovery_and_can_be_rejected(engine, mini_corpus, embedder, cache):
    from datetime import timedelta

    from indexer.records import load_corpus

    ticket, record = killed_publish(engine, mini_corpus)  # what publish does before the process is killed …
    build_index(mini_corpus, engine.config.index_dir, embedder, cache)
    engine.live.refresh(wait=True)
    assert record.id in engine.live.get().records  # … after the new version went live
    assert engine.recover(stale_after=timedelta(0)) == [ticket.id]
    assert record.id not in engine.live.get().records
    assert record.id not in {r.id for r in load_corpus(mini_corpus).records}
    assert engine.reject(ticket.id, "答案不完整").status == "closed"
    again = engine.ask(QUESTION, "ent-b")
    assert not (again.answer and any(s.id == record.id for s in again.answer.sources))


def test_recovery_withdraws_while_the_ticket_is_still_publishing_and_retries_when_it_cannot(engine, mini_corpus, embedder,
                                                                                            cache, monkeypatch):
    """A killed publish's record cannot be withdrawn while another writer holds the index: the ticket stays
    publishing (so nothing can publish it anew meanwhile) and the next pass withdraws it, then gives it back."""
    from datetime import timedelta

    import indexer.build as build
    from tests.rag.concurrency import index_held

    ticket, record = killed_publish(engine, mini_corpus)
    build_index(mini_corpus, engine.config.index_dir, embedder, cache)
    engine.live.refresh(wait=True)

    monkeypatch.setattr(build, "DELTA_WAIT", 0.2)
    with index_held(engine.config.index_dir):  # another process's build holds the index
        assert engine.recover(stale_after=timedelta(0)) == []
        assert engine.queue.get(ticket.id).status == "publishing"
    assert engine.recover(stale_after=timedelta(0)) == [ticket.id]
    assert engine.queue.get(ticket.id).status == "answered" and record.id not in engine.live.get().records


def test_a_failed_publish_never_goes_live_through_a_build_that_read_its_record(engine, mini_corpus, embedder, cache,
                                                                              monkeypatch):
    """Another process's build takes the index right after the publish wrote its record to the corpus, reads it, and
    holds the index past the publish's wait: the publish fails, the build commits the record anyway. The ticket stays
    publishing until recovery withdraws the record under the index lock; then it is answered and nothing is served."""
    import threading
    from datetime import timedelta

    import indexer.build as build
    import rag.engine as engine_module
    from indexer.records import load_corpus
    from rag.engine import published_record_id
    from tests.rag.concurrency import Pause

    ticket = answered_ticket(engine)
    record_id = published_record_id(ticket.id)
    monkeypatch.setattr(build, "DELTA_WAIT", 0.2)
    pause, read, delta = Pause(), build.load_corpus, engine_module.apply_changes
    other = threading.Thread(target=build_index, args=(mini_corpus, engine.config.index_dir, embedder, cache))

    def slow_read(path):
        load = read(path)
        pause.hit()  # the other build holds the index, the record read
        return load

    def delta_after_the_other_build_started(*args, **kwargs):
        other.start()
        assert pause.reached.wait(30)
        return delta(*args, **kwargs)

    monkeypatch.setattr(build, "load_corpus", slow_read)
    monkeypatch.setattr(engine_module, "apply_changes", delta_after_the_other_build_started)
    with pytest.raises(Exception):
        engine.publish(ticket.id)
    assert engine.queue.get(ticket.id).status == "publishing"  # it could not withdraw yet: left to recovery
    pause.release.set()
    other.join()
    engine.live.refresh(wait=True)
    assert record_id in engine.live.get().records  # the other build served it
    assert engine.recover(stale_after=timedelta(0)) == [ticket.id]
    assert record_id not in engine.live.get().records and record_id not in {r.id for r in load_corpus(mini_corpus).records}
    assert engine.queue.get(ticket.id).status == "answered"


def test_no_more_questions_are_assessed_at_once_than_allowed(mini_corpus, tmp_path, embedder, cache):
    build_index(mini_corpus, tmp_path / "index", embedder, cache)
    engine = Engine(LiveIndex(tmp_path / "index", embedder), TicketQueue(connect(f"sqlite:///{tmp_path / 'q.db'}")),
                    EngineConfig(mini_corpus, tmp_path / "index", 0.99, assess_concurrency=2), cache)
    inside, most, lock = 0, 0, threading.Lock()
    assess = engine.assess

    def counted(*args, **kwargs):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.05)  # long enough for every racing question to arrive while the first ones are inside
            return assess(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    engine.assess = counted
    questions = [f"数控车床第{i}号主轴异响怎么排查" for i in range(6)]
    results = race(*(lambda q=q: engine.ask(q, "ent-a") for q in questions))
    assert most == 2  # six asked at once, two assessed at a time
    assert sorted(r.question for r in results) == sorted(questions)  # every one answered or escalated, none lost


def test_a_code_the_corpus_holds_keeps_a_bare_question_in_scope(mini_corpus, tmp_path, embedder, cache):
    """With a scope model that declines everything, only a question naming a model number or alarm code that its top
    records hold (SV0401 is in the mini corpus) stays in scope; an unknown code, a year or a measurement does not."""
    from rag.scope import ScopeModel, named_codes

    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache)
    width = embedder.dim + 2
    ScopeModel([0.0] * width, -10.0, [0.0] * width, [1.0] * width, 0.5, embedder.model_id).save(index / "scope.json")
    engine = make_engine(mini_corpus, index, f"sqlite:///{tmp_path / 'q.db'}", embedder, cache, threshold=0.99)
    kept = engine.ask("SV0401", "ent-a")
    assert kept.status == "escalated" and kept.in_scope == 1.0 and kept.ticket is not None
    for question in ("XK9917报警", "2019年的报警", "外径24mm的轴"):
        assert engine.ask(question, "ent-a").status == "out_of_scope", question
    assert named_codes("FANUC SV0401 和 ACS510 F0001") == {"sv0401", "acs510", "f0001"}
    assert named_codes("宝马320报价 2019年 380V 24mm 1.65米") == set()


def test_filters_that_leave_no_record_do_not_make_a_shop_floor_question_out_of_scope(engine):
    """Scope belongs to the question: with filters no record passes, a shop-floor question is escalated saying why,
    chit-chat is still declined."""
    from indexer.ports import Filters
    from rag.engine import NO_MATCH

    nothing = Filters(date_from="2099-01-01")
    kept = engine.ask("焊缝气孔怎么办", "ent-a", nothing)
    assert kept.status == "escalated" and kept.message.startswith(NO_MATCH) and kept.ticket is not None
    assert engine.ask("今天天气怎么样", "ent-a", nothing).status == "out_of_scope"
    unfiltered = engine.ask("焊缝气孔怎么办", "ent-b")
    assert abs(unfiltered.in_scope - kept.in_scope) < 1e-9


def test_a_question_in_traditional_characters_is_answered_as_the_simplified_one(engine):
    result = engine.ask("FANUC系統出現SV0401報警如何處理", "ent-a")
    assert result.question == "FANUC系统出现SV0401报警如何处理"
    assert result.status == "answered" and [s.id for s in result.answer.sources][:1] == ["sq-m-3"]
