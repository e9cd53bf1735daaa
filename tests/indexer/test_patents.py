"""Patents: validated numbers and codes, one chunk per claim, answers citing the claim they quote."""

import json
import shutil

import pytest

from indexer.build import build_index
from indexer.chunking import chunk
from indexer.records import Patent, load_corpus
from rag.engine import Engine, EngineConfig
from rag.db import connect
from rag.escalate import TicketQueue
from indexer.version import LiveIndex

PATENT = {
    "id": "pt-t-001", "application_number": "202120345678.3", "publication_number": "CN214567890U",
    "title": "一种细长轴车削用三爪滚轮跟刀架",
    "abstract": "本实用新型公开了一种细长轴车削用三爪滚轮跟刀架，包括底座、支撑臂和滚轮组件，解决了细长轴车削时让刀和振动的问题。",
    "claims": ["1.一种细长轴车削用三爪滚轮跟刀架，其特征在于，包括底座、三个支撑臂和安装在支撑臂端部的滚轮组件。",
               "2.根据权利要求1所述的跟刀架，其特征在于，所述滚轮组件采用聚氨酯包胶滚轮，滚轮与工件的接触压力由碟形弹簧调节。",
               "3.根据权利要求1所述的跟刀架，其特征在于，所述底座通过燕尾槽与车床中滑板连接。"],
    "ipc": ["B23B 25/00", "B23Q 1/76"], "applicants": ["某某机床附件有限公司"], "inventors": ["王明", "李强"],
    "application_date": "2021-02-03", "publication_date": "2021-11-12", "legal_status": "授权", "trade": "机加工",
    "keywords": ["细长轴", "跟刀架", "滚轮"],
}


def test_a_patent_gets_one_chunk_per_claim_after_its_abstract():
    patent = Patent.model_validate(PATENT)
    bodies = [c.text for c in chunk(patent) if c.role == "body"]
    assert bodies[1:] == PATENT["claims"] and patent.when() == "2021-11-12"
    assert patent.citation(2) == "专利 CN214567890U 《一种细长轴车削用三爪滚轮跟刀架》 权利要求 2"


@pytest.mark.parametrize("field,value", [("application_number", "2021203456783"), ("ipc", ["B23B25"]),
                                         ("publication_number", "US1234567B2"), ("claims", []),
                                         ("application_date", "2021/02/03")])
def test_bad_patent_fields_are_reported_by_file_line_and_field(tmp_path, field, value):
    (tmp_path / "patents.jsonl").write_text(json.dumps({**PATENT, field: value}, ensure_ascii=False) + "\n", encoding="utf-8")
    load = load_corpus(tmp_path)
    assert not load.records and len(load.problems) == 1
    problem = str(load.problems[0])
    assert "patents.jsonl:1" in problem and field in problem


def test_an_answer_from_a_patent_cites_the_claim_it_quotes(mini_corpus, tmp_path, embedder, cache):
    (mini_corpus / "patents.jsonl").write_text(json.dumps(PATENT, ensure_ascii=False) + "\n", encoding="utf-8")
    build_index(mini_corpus, tmp_path / "index", embedder, cache)
    queue = TicketQueue(connect(f"sqlite:///{tmp_path / 'q.db'}"))
    engine = Engine(LiveIndex(tmp_path / "index", embedder), queue, EngineConfig(mini_corpus, tmp_path / "index", threshold=0.0))
    from indexer.ports import Filters

    result = engine.assess("跟刀架滚轮用什么材料，接触压力怎么调节", Filters(kinds=("patent",)))  # forced: answer from patents
    assert result.status == "answered" and result.answer.sources[0].id == "pt-t-001"
    assert result.answer.sources[0].title == "专利 CN214567890U 《一种细长轴车削用三爪滚轮跟刀架》"
    assert "（专利 CN214567890U 《一种细长轴车削用三爪滚轮跟刀架》 权利要求 2）" in result.answer.text
