"""Answers lead with the fix, escalations still help, out-of-scope questions never reach a craftsman —
on real records of the bundled corpus (a subset, indexed with the real embedder)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer.build import build_index
from indexer.chunking import split_sentences
from indexer.errors import Conflict, NotFound
from indexer.version import LiveIndex
from rag.answer import compose_answer, steps
from rag.db import connect
from rag.engine import Engine, EngineConfig
from rag.escalate import TicketQueue
from rag.questions import QuestionLog
from rag.scope import ScopeModel

ROOT = Path(__file__).resolve().parents[2]
KEEP = {
    "achievements.jsonl": ["ach-jg-001", "ach-jg-002", "ach-jg-003", "ach-hj-001", "ach-dq-007"],
    "standard_questions.jsonl": ["sq-jg-001", "sq-jg-002", "sq-hj-001", "sq-dq-009"],
    "courses.jsonl": ["course-jg-002", "course-hj-001"],
    "craftsmen.jsonl": None,
}


@pytest.fixture(scope="module")
def sample_subset(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("subset") / "corpus"
    target.mkdir()
    for name, ids in KEEP.items():
        lines = (ROOT / "corpus" / name).read_text(encoding="utf-8").splitlines()
        kept = [l for l in lines if l.strip() and (ids is None or json.loads(l)["id"] in ids)]
        (target / name).write_text("\n".join(kept) + "\n", encoding="utf-8")
    for name in ("dictionary.txt", "stopwords.txt"):
        shutil.copy(ROOT / "corpus" / name, target / name)
    return target


@pytest.fixture(scope="module")
def subset_index(sample_subset, tmp_path_factory, embedder, cache) -> Path:
    folder = tmp_path_factory.mktemp("subset_index")
    build_index(sample_subset, folder, embedder, cache)
    return folder


def make_engine(corpus, index, tmp_path, embedder, cache, threshold):
    live = LiveIndex(index, embedder)
    return Engine(live, TicketQueue(connect(f"sqlite:///{tmp_path / 'q.db'}")), EngineConfig(corpus, index, threshold), cache)


def ranked_with_top(engine, question, record_id):
    version = engine.live.get()
    ranked = engine.rank(version, question)
    ranked.sort(key=lambda s: s.candidate.record_id != record_id)  # stable: the wanted record first, the rest in order
    assert ranked[0].candidate.record_id == record_id
    return version, ranked


def test_achievement_answer_leads_with_its_solution_never_its_problem(sample_subset, subset_index, tmp_path, embedder, cache):
    engine = make_engine(sample_subset, subset_index, tmp_path, embedder, cache, 0.0)
    version, ranked = ranked_with_top(engine, "车床加工细长轴老是中间粗两头细，怎么弄？", "ach-jg-001")
    answer = compose_answer("车床加工细长轴老是中间粗两头细，怎么弄？", ranked, version)
    record = version.records["ach-jg-001"]
    lines = [line.rsplit("[", 1)[0] for line in answer.text.splitlines()]
    assert lines[0] in record.solution and lines[0] == steps(record.solution)[0]
    assert not any(line in record.problem for line in lines[:-1])
    assert lines[-1] == "背景：" + split_sentences(record.problem)[0]  # the problem: one line of context, last
    assert any(line.startswith("效果：") and line[3:] in record.benefits for line in lines)
    assert [s.id for s in answer.sources] == ["ach-jg-001"] and not answer.standard


def test_standard_question_gives_its_vetted_answer_and_names_the_match(sample_subset, subset_index, tmp_path, embedder, cache):
    engine = make_engine(sample_subset, subset_index, tmp_path, embedder, cache, 0.0)
    version, ranked = ranked_with_top(engine, "细长轴车成腰鼓形咋整", "sq-jg-001")
    answer = compose_answer("细长轴车成腰鼓形咋整", ranked, version)
    record = version.records["sq-jg-001"]
    assert answer.standard and answer.text == record.answer and answer.matched_question == record.question


def test_course_answer_recommends_the_chapters_that_match(sample_subset, subset_index, tmp_path, embedder, cache):
    engine = make_engine(sample_subset, subset_index, tmp_path, embedder, cache, 0.0)
    version, ranked = ranked_with_top(engine, "薄壁件车削夹紧变形", "course-jg-002")
    answer = compose_answer("薄壁件车削夹紧变形", ranked, version)
    record = version.records["course-jg-002"]
    first, chapters = answer.text.splitlines()[:2]
    assert first.startswith(f"推荐学习课程《{record.title}》")
    named = chapters.removeprefix("重点章节：").rsplit("[", 1)[0].split("；")
    assert named and all(ch in record.chapters for ch in named)
    assert any("薄壁" in ch for ch in named)


def test_escalation_carries_related_material_and_the_routed_craftsmen(sample_subset, subset_index, tmp_path, embedder, cache):
    engine = make_engine(sample_subset, subset_index, tmp_path, embedder, cache, 1.01)  # never answers
    data = engine.ask("细长轴车削老是让刀，两头细中间粗", "ent-a").to_dict()
    assert data["status"] == "escalated" and data["answer"] is None
    assert "暂未找到足够可靠的答案" in data["message"] and "%" not in data["message"]
    related = data["related"]
    assert related["note"] and related["records"]
    version = engine.live.get()
    for item in related["records"]:
        assert item["snippet"] and item["id"] in version.records and item["kind"] != "craftsman"
    routed = [r["id"] for r in data["ticket"]["routed_to"]]
    assert [c["id"] for c in related["craftsmen"]] == routed
    for card in related["craftsmen"]:
        record = version.records[card["id"]]
        assert card["skills"] == list(record.skills) and card["honours"] == list(record.honours)
        assert card["name"] in data["message"]


def test_out_of_scope_question_is_declined_without_a_ticket(sample_subset, subset_index, tmp_path, embedder, cache):
    """A scope model fitted here, on real embeddings of a few questions, declines chit-chat and keeps shop-floor ones."""
    folder = tmp_path / "index"
    shutil.copytree(subset_index, folder)
    engine = make_engine(sample_subset, folder, tmp_path, embedder, cache, 1.01)
    inside = ["车床车出来的轴两头细中间粗", "焊缝老是有气孔咋整", "PLC输出点不动作", "注塑件有飞边怎么调", "电梯门关不上是啥原因",
              "变频器报过流", "铣床主轴异响", "压铸件气孔多"]
    outside = ["今天天气怎么样", "离婚财产怎么分", "美甲能保持多久", "孩子发烧吃什么药", "周末去哪玩", "股票明天会涨吗",
               "你好在吗", "信用卡逾期了怎么办"]
    version = engine.live.get()

    x = np.stack([engine.scope_input(version, q, engine.rank(version, q)) for q in inside + outside])
    y = np.array([1.0] * len(inside) + [0.0] * len(outside))
    ScopeModel.fit(x, y, l2=1.0, threshold=0.5, model_id=embedder.model_id).save(folder / "scope.json")
    engine = make_engine(sample_subset, folder, tmp_path, embedder, cache, 1.01)
    declined = engine.ask("今天天气怎么样", "ent-a")
    assert declined.status == "out_of_scope" and declined.ticket is None and "不属于本服务的范围" in declined.message
    assert engine.queue.list(asker="ent-a") == []
    kept = engine.ask("焊缝老是有气孔咋整", "ent-a")
    assert kept.status == "escalated" and kept.ticket is not None


def test_hand_over_sends_an_answered_question_to_a_craftsman_with_the_answer_given(sample_subset, subset_index, tmp_path, embedder, cache):
    engine = make_engine(sample_subset, subset_index, tmp_path, embedder, cache, 0.0)
    result = engine.ask("细长轴车成腰鼓形咋整", "ent-a")
    assert result.status == "answered" and result.ticket is None
    log = QuestionLog(engine.queue.engine, engine.queue)
    log.feedback(result.id, "ent-a", False, "不对，我这是锥度")
    log.feedback(result.id, "ent-a", False, "")
    with pytest.raises(NotFound):
        engine.hand_over(result.id, "ent-b")  # another enterprise's question does not exist for them
    ticket_id, created = engine.hand_over(result.id, "ent-a")
    assert created and engine.hand_over(result.id, "ent-a") == (ticket_id, False)  # idempotent
    ticket = engine.queue.get(ticket_id)
    assert ticket.status == "open" and ticket.asker == "ent-a" and ticket.routes
    given = ticket.context[0]
    assert given["kind"] == "given_answer" and given["snippet"] == result.to_dict()["answer"][:600]
    said = ticket.context[1]
    assert said["kind"] == "asker_feedback" and said["snippet"] == "不对，我这是锥度"  # what the asker said of it, once
    assert len(engine.queue.list(asker="ent-a")) == 1


def test_feedback_needs_an_answer_to_judge(sample_subset, subset_index, tmp_path, embedder, cache):
    """An escalated question has no answer yet: a verdict on it is refused (and not counted) until a craftsman answers."""
    engine = make_engine(sample_subset, subset_index, tmp_path, embedder, cache, 1.01)  # nothing answered automatically
    result = engine.ask("焊缝老是有气孔咋整", "ent-a")
    assert result.status == "escalated" and result.ticket is not None
    log = QuestionLog(engine.queue.engine, engine.queue)
    with pytest.raises(Conflict):
        log.feedback(result.id, "ent-a", True, "")
    assert log.feedback_counts() == {"helpful": 0, "unhelpful": 0}
    craftsman = result.ticket.routes[0].craftsman_id
    engine.queue.claim(result.ticket.id, craftsman)
    engine.queue.answer(result.ticket.id, craftsman, "清理坡口油污，焊丝烘干，保护气流量调到15L/min。")
    log.feedback(result.id, "ent-a", True, "")
    assert log.feedback_counts() == {"helpful": 1, "unhelpful": 0}
    assert log.get(result.id, "ent-a")["message"] == f"{result.ticket.routes[0].name}已解答，答案见下方。"
