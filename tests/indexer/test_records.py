import json

from typer.testing import CliRunner

from api.cli import app
from indexer.records import Achievement, load_corpus

GOOD_SQ = {"id": "sq-t-1", "question": "焊缝气孔怎么预防", "answer": "1. 烘干焊条；2. 清理坡口油污。", "aliases": ["焊缝老有气孔"],
           "trade": "焊接", "keywords": ["气孔"], "extra": {}}


def write(folder, name, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_valid_record_loads_with_its_kind(tmp_path):
    write(tmp_path, "standard_questions.jsonl", [json.dumps(GOOD_SQ, ensure_ascii=False)])
    load = load_corpus(tmp_path)
    assert load.problems == []
    assert [(r.kind, r.id, r.title) for r in load.records] == [("standard_question", "sq-t-1", "焊缝气孔怎么预防")]


def test_each_problem_names_file_line_and_field(tmp_path):
    missing_answer = {k: v for k, v in GOOD_SQ.items() if k != "answer"} | {"id": "sq-t-2"}
    blank_question = GOOD_SQ | {"id": "sq-t-3", "question": "   "}
    write(tmp_path, "standard_questions.jsonl", [
        json.dumps(GOOD_SQ, ensure_ascii=False),
        "{not json",
        json.dumps(missing_answer, ensure_ascii=False),
        json.dumps(blank_question, ensure_ascii=False),
        json.dumps(GOOD_SQ, ensure_ascii=False),
    ])
    load = load_corpus(tmp_path)
    found = [(p.line, p.field) for p in load.problems]
    assert found == [(2, "-"), (3, "answer"), (4, "question"), (5, "id")]
    assert "invalid JSON" in load.problems[0].reason
    assert "duplicate id 'sq-t-1'" in load.problems[3].reason and ":1" in load.problems[3].reason
    assert str(load.problems[1]).startswith(f"{tmp_path / 'standard_questions.jsonl'}:3: answer: ")
    assert [r.id for r in load.records] == ["sq-t-1"]


def test_nested_field_and_type_errors_are_located(tmp_path):
    craftsman = {"id": "cm-t-1", "name": "张师傅", "honours": [], "trades": ["焊接", ""], "skills": ["氩弧焊"],
                 "region": "湖北", "bio": "三十年焊接经验", "extra": {}}
    achievement = {"id": "ach-t-1", "title": "t", "summary": "s", "problem": "p", "solution": "s", "benefits": "b",
                   "trade": "焊接", "keywords": [], "authors": ["李"], "unit": "u", "year": "去年", "extra": {}}
    write(tmp_path, "craftsmen.jsonl", [json.dumps(craftsman, ensure_ascii=False)])
    write(tmp_path, "achievements.jsonl", [json.dumps(achievement, ensure_ascii=False)])
    fields = sorted(p.field for p in load_corpus(tmp_path).problems)
    assert fields == ["trades[1]", "year"]


def test_unknown_field_and_unknown_file_are_reported(tmp_path):
    write(tmp_path, "standard_questions.jsonl", [json.dumps(GOOD_SQ | {"answr": "typo"}, ensure_ascii=False)])
    write(tmp_path, "drawings.jsonl", ["{}"])
    problems = load_corpus(tmp_path).problems
    assert {(p.field, "unknown record file" in p.reason) for p in problems} == {("answr", False), ("-", True)}


def test_duplicate_ids_across_kinds_are_an_error(tmp_path):
    write(tmp_path, "standard_questions.jsonl", [json.dumps(GOOD_SQ, ensure_ascii=False)])
    course = {"id": "sq-t-1", "title": "焊接入门", "description": "d", "chapters": ["第1章"], "trade": "焊接",
              "level": "初级", "duration": "8学时", "extra": {}}
    write(tmp_path, "courses.jsonl", [json.dumps(course, ensure_ascii=False)])
    assert [p.field for p in load_corpus(tmp_path).problems] == ["id"]


def test_content_hash_changes_with_content_only():
    base = {"id": "ach-1", "title": "t", "summary": "s", "problem": "p", "solution": "x", "benefits": "b",
            "trade": "焊接", "authors": ["李"], "unit": "u", "year": 2020}
    assert Achievement.model_validate(base).content_hash() == Achievement.model_validate(dict(base)).content_hash()
    assert Achievement.model_validate(base).content_hash() != Achievement.model_validate(base | {"solution": "y"}).content_hash()


def test_validate_command_lists_every_problem_and_fails(tmp_path):
    write(tmp_path, "standard_questions.jsonl", ["[]", json.dumps(GOOD_SQ | {"trade": ""}, ensure_ascii=False)])
    result = CliRunner().invoke(app, ["validate", "--corpus", str(tmp_path)])
    assert result.exit_code == 1
    assert "standard_questions.jsonl:1: -: expected a JSON object" in result.output
    assert "standard_questions.jsonl:2: trade:" in result.output


def test_the_bundled_corpus_is_valid_with_patents_and_knowledge_items_on_every_trade():
    from collections import Counter

    from tests.conftest import ROOT

    load = load_corpus(ROOT / "corpus")
    assert load.problems == []
    kinds = Counter(r.kind for r in load.records)
    assert kinds["patent"] >= 200 and kinds["knowledge"] >= 100
    trades = {t for r in load.records if r.kind == "craftsman" for t in r.trades}
    covered = {r.trade for r in load.records if r.kind == "knowledge"}
    assert covered == trades  # every trade the craftsmen cover has knowledge items
    assert all(150 <= len(r.body) and r.title for r in load.records if r.kind == "knowledge")
