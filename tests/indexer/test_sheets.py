"""Spreadsheet import and export on real XLSX and CSV files: whole sheets land or none, every bad row is named by
file:row:column, ids are stable (a second import changes nothing, an edited row updates its record), an export
imports back unchanged, and the CLI does the same end to end."""

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.build import BuildOptions, build_index
from indexer.corpus_store import CorpusStore, DuplicateId
from indexer.records import StandardQuestion, load_corpus
from indexer.sheets import (SheetError, SheetInvalid, export_sheet, import_rows, import_sheet, parse_sheet,
                            read_table)
from indexer.store import IndexStore
from tests.conftest import ROOT

HEADERS = ["编号", "问题", "答案", "相似问法", "工种", "关键词"]


def question_row(n: int, answer: str | None = None) -> list:
    return [f"sq-sheet-{n:05d}", f"表格导入问题{n}：空压机排气温度高怎么处理", answer or f"答案{n}：先查油位和油冷却器，再查温控阀。",
            f"空压机温度高{n}；排气温度报警{n}", "设备维护", "空压机,排气温度"]


def write_xlsx(path: Path, headers: list[str], rows: list[list]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(headers)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def snapshot(corpus: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(corpus.glob("*.jsonl"))}


def test_5000_row_sheet_imports_once_and_a_second_import_changes_no_byte(mini_corpus, tmp_path):
    rows = [question_row(n)[1:] for n in range(5000)]  # no id column: ids come from the question's hash
    sheet = write_xlsx(tmp_path / "questions.xlsx", HEADERS[1:], rows)
    started = time.perf_counter()
    first = import_sheet(sheet, mini_corpus, "standard_question")
    seconds = time.perf_counter() - started
    print(f"\nimported 5,000 standard-question rows (XLSX read, validation, one atomic write; no index) in {seconds:.2f}s")
    assert (len(first.outcome.added), len(first.outcome.updated), first.skipped) == (5000, 0, [])
    load = load_corpus(mini_corpus)
    assert load.problems == []
    imported = [r for r in load.records if isinstance(r, StandardQuestion) and r.question.startswith("表格导入问题")]
    assert len(imported) == 5000 and all(r.id.startswith("sq-") and len(r.id) == 13 for r in imported)
    assert imported[7].aliases == ["空压机温度高7", "排气温度报警7"] and imported[7].keywords == ["空压机", "排气温度"]
    before = snapshot(mini_corpus)
    again = import_sheet(sheet, mini_corpus, "standard_question")
    assert (len(again.outcome.added), len(again.outcome.updated), len(again.outcome.unchanged)) == (0, 0, 5000)
    assert not again.written and snapshot(mini_corpus) == before


def three_bad_rows(tmp_path: Path) -> Path:
    rows = [question_row(n) for n in range(10)]
    rows[2][2] = "   "                              # row 4: answer only spaces
    rows[4][0] = "sq-" + "x" * 200                  # row 6: an id longer than 128 characters
    rows[7][0] = rows[1][0]                         # row 9: the id of row 3 again
    return write_xlsx(tmp_path / "bad.xlsx", HEADERS, rows)


def test_a_sheet_with_three_bad_rows_names_exactly_those_and_writes_nothing(mini_corpus, tmp_path):
    sheet = three_bad_rows(tmp_path)
    before = snapshot(mini_corpus)
    with pytest.raises(SheetInvalid) as caught:
        import_sheet(sheet, mini_corpus, "standard_question")
    assert [(p.file, p.row, p.column) for p in caught.value.problems] == \
           [(str(sheet), 4, "答案"), (str(sheet), 6, "编号"), (str(sheet), 9, "编号")]
    assert str(caught.value.problems[0]) == f"{sheet}:4:答案: required, but the cell is empty"
    assert "row 3 has it too" in caught.value.problems[2].reason
    assert snapshot(mini_corpus) == before


def test_skip_invalid_writes_the_other_rows_and_reports_the_three_it_skipped(mini_corpus, tmp_path):
    report = import_sheet(three_bad_rows(tmp_path), mini_corpus, "standard_question", skip_invalid=True)
    assert [p.row for p in report.skipped] == [4, 6, 9]
    assert report.outcome.added == tuple(f"sq-sheet-{n:05d}" for n in (0, 1, 3, 5, 6, 8, 9))
    load = load_corpus(mini_corpus)
    assert load.problems == []
    assert {r.id for r in load.records if r.id.startswith("sq-sheet-")} == set(report.outcome.added)


def test_a_wrong_type_is_reported_at_its_cell(mini_corpus, tmp_path):
    headers = ["成果名称", "成果简介", "存在问题", "解决方法", "应用效果", "工种", "完成人", "完成单位", "年份"]
    good = ["滚齿机挂轮快换", "挂轮架改快换。", "换挂轮慢。", "做快换挂轮。", "换型时间减半。", "机加工", "张三、李四", "某厂", 2021]
    sheet = write_xlsx(tmp_path / "ach.xlsx", headers, [good, ["插齿刀快换", *good[1:-1], "二〇二一年"], [*good[:7], "某厂二分厂", 1800]])
    parsed = parse_sheet(sheet, "achievement")
    assert [(p.row, p.column) for p in parsed.problems] == [(3, "年份"), (4, "年份")]
    assert "whole number" in parsed.problems[0].reason and "greater than or equal to 1949" in parsed.problems[1].reason
    assert parsed.records[0][1].authors == ["张三", "李四"] and parsed.records[0][1].year == 2021


def test_an_edited_row_with_an_id_updates_its_record_in_place(mini_corpus, tmp_path):
    rows = [question_row(n) for n in range(20)]
    import_sheet(write_xlsx(tmp_path / "v1.xlsx", HEADERS, rows), mini_corpus, "standard_question")
    lines_before = (mini_corpus / "standard_questions.jsonl").read_text(encoding="utf-8").splitlines()
    rows[5] = question_row(5, answer="改过的答案：更换温控阀芯并清洗油冷却器。")
    report = import_sheet(write_xlsx(tmp_path / "v2.xlsx", HEADERS, rows), mini_corpus, "standard_question")
    assert (report.outcome.added, report.outcome.updated, len(report.outcome.unchanged)) == ((), ("sq-sheet-00005",), 19)
    lines_after = (mini_corpus / "standard_questions.jsonl").read_text(encoding="utf-8").splitlines()
    changed = [n for n, (a, b) in enumerate(zip(lines_before, lines_after, strict=True)) if a != b]
    assert len(changed) == 1 and json.loads(lines_after[changed[0]])["answer"] == "改过的答案：更换温控阀芯并清洗油冷却器。"
    assert CorpusStore(mini_corpus).get("standard_question", "sq-sheet-00005").answer.startswith("改过的答案")


@pytest.mark.parametrize("kind", ["standard_question", "achievement", "course", "craftsman"])
def test_export_then_import_changes_nothing(mini_corpus, tmp_path, kind):
    store = CorpusStore(mini_corpus)
    first = next(r for r in load_corpus(mini_corpus).records if r.kind == kind)
    # the awkward cases: an extra map, a lone list item holding 、, free text starting with "="
    changes = {"extra": {"来源": "表格", "n": 3}}
    if kind == "craftsman":
        changes["skills"] = ["砂轮选择、平衡与修整"]
    if kind == "standard_question":
        changes["answer"] = "=先断电，再查接触器。"
    store.upsert(first.model_copy(update=changes))
    before = snapshot(mini_corpus)
    count = export_sheet(mini_corpus, kind, tmp_path / f"{kind}.xlsx")
    assert count == sum(1 for r in load_corpus(mini_corpus).records if r.kind == kind)
    report = import_sheet(tmp_path / f"{kind}.xlsx", mini_corpus, kind)
    assert (report.outcome.added, report.outcome.updated, len(report.outcome.unchanged)) == ((), (), count)
    assert snapshot(mini_corpus) == before


item = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="；;|｜\u2028\u2029\x85"),
               min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=item, answer=item, aliases=st.lists(item, max_size=3), keywords=st.lists(item, max_size=3))
def test_any_standard_question_survives_export_and_import(tmp_path, question, answer, aliases, keywords):
    corpus = tmp_path / f"corpus-{abs(hash((question, answer, tuple(aliases), tuple(keywords))))}"
    record = StandardQuestion.model_validate({"id": "sq-prop-1", "question": question, "answer": answer,
                                              "aliases": aliases, "trade": "通用", "keywords": keywords})
    CorpusStore(corpus).upsert(record)
    export_sheet(corpus, "standard_question", corpus / "out.xlsx")
    parsed = parse_sheet(corpus / "out.xlsx", "standard_question")
    assert parsed.problems == [] and [r for _, r in parsed.records] == [record]


def test_export_refuses_a_list_item_an_import_would_split(mini_corpus, tmp_path):
    first = next(r for r in load_corpus(mini_corpus).records if r.kind == "course")
    CorpusStore(mini_corpus).upsert(first.model_copy(update={"chapters": ["第1章 安全；文明生产"]}))
    with pytest.raises(SheetError, match=f"{first.id} chapters"):
        export_sheet(mini_corpus, "course", tmp_path / "c.xlsx")
    assert not (tmp_path / "c.xlsx").exists()


@pytest.mark.parametrize(("encoding", "named"), [("gbk", "GB18030 (GBK)"), ("utf-8-sig", "UTF-8 with BOM"), ("utf-8", "UTF-8")])
def test_a_csv_with_chinese_headers_imports_in_its_detected_encoding(mini_corpus, tmp_path, encoding, named):
    path = tmp_path / "faq.csv"
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["标准问题", "标准答案", "别名", "专业", "关键字", "备注"])
        writer.writerow(["锅炉水位计看不清怎么办", "冲洗水位计：开放水阀，关汽阀冲水侧，再关水阀冲汽侧。", "水位计模糊\n水位看不清", "锅炉运行", "水位计、冲洗", "甲"])
        writer.writerow(["皮带跑偏怎么调", "调整托辊：皮带往哪边跑，就把那边托辊顺着运行方向往前移。", "", "输送设备", "", ""])
    table = read_table(path)
    assert named in table.source
    parsed = parse_sheet(path, "standard_question")
    assert parsed.columns.ignored == ["备注"] and parsed.problems == []
    first = parsed.records[0][1]
    assert (first.question, first.aliases, first.trade, first.keywords) == \
           ("锅炉水位计看不清怎么办", ["水位计模糊", "水位看不清"], "锅炉运行", ["水位计", "冲洗"])
    report = import_rows(parsed, mini_corpus)
    assert len(report.outcome.added) == 2 and load_corpus(mini_corpus).problems == []


def test_a_missing_required_column_needs_a_map_and_then_imports(mini_corpus, tmp_path):
    sheet = write_xlsx(tmp_path / "odd.xlsx", ["提问内容", "回复", "工种"], [["液压站油温高怎么办", "查冷却器和溢流阀。", "液压"]])
    with pytest.raises(SheetError, match=r"question .*answer|answer .*question"):
        parse_sheet(sheet, "standard_question")
    with pytest.raises(SheetError, match="no field 'answr'"):
        parse_sheet(sheet, "standard_question", {"提问内容": "question", "回复": "answr"})
    report = import_sheet(sheet, mini_corpus, "standard_question", {"提问内容": "question", "回复": "answer"})
    assert len(report.outcome.added) == 1


def test_an_id_owned_by_another_kind_is_a_bad_row_and_the_writer_refuses_it_too(mini_corpus, tmp_path):
    course_id = next(r.id for r in load_corpus(mini_corpus).records if r.kind == "course")
    rows = [question_row(0), [course_id, *question_row(1)[1:]]]
    sheet = write_xlsx(tmp_path / "clash.xlsx", HEADERS, rows)
    before = snapshot(mini_corpus)
    with pytest.raises(SheetInvalid) as caught:
        import_sheet(sheet, mini_corpus, "standard_question")
    assert [(p.row, p.column) for p in caught.value.problems] == [(3, "编号")]
    records = [r for _, r in parse_sheet(sheet, "standard_question").records]
    with pytest.raises(DuplicateId):
        CorpusStore(mini_corpus).upsert_many(records)
    assert snapshot(mini_corpus) == before


def test_concurrent_batches_from_threads_all_land(mini_corpus):
    writers, per_batch = 8, 40
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        batch = [StandardQuestion.model_validate({"id": f"sq-batch-{n}-{i}", "question": f"批量写入{n}-{i}：水泵不出水",
                                                  "answer": "查底阀和灌泵。", "trade": "水泵"}) for i in range(per_batch)]
        barrier.wait()
        try:
            assert len(CorpusStore(mini_corpus).upsert_many(batch).added) == per_batch
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    load = load_corpus(mini_corpus)
    assert load.problems == [] and sum(r.id.startswith("sq-batch-") for r in load.records) == writers * per_batch


def jiangxin(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env | {"COLUMNS": "400"},
                          capture_output=True, text=True, timeout=120)


def test_cli_dry_run_writes_nothing_then_import_updates_the_index_and_export_writes_xlsx(
        mini_corpus, tmp_path, cli_env, embedder, cache):
    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache, BuildOptions())
    version = IndexStore(index).current_version()
    # trade and keywords the index's dictionary already has: the change is then a delta, not a rebuild
    rows = [[*question_row(n)[:4], "机加工", "细长轴", "内部"] for n in range(3)]
    sheet = write_xlsx(tmp_path / "new.xlsx", [*HEADERS, "备注"], rows)
    before = snapshot(mini_corpus)
    dry = jiangxin("import", str(sheet), "--kind", "standard_question", "--dry-run", "--corpus", str(mini_corpus),
                   "--index", str(index), env=cli_env)
    assert dry.returncode == 0, dry.stderr
    for expected in ("备注", "ignored", "表格导入问题0", "dry run"):
        assert expected in dry.stdout, (expected, dry.stdout)
    assert snapshot(mini_corpus) == before and IndexStore(index).current_version() == version
    real = jiangxin("import", str(sheet), "--kind", "standard_question", "--corpus", str(mini_corpus),
                    "--index", str(index), env=cli_env)
    assert real.returncode == 0, real.stderr
    assert "a delta segment" in real.stdout and IndexStore(index).current_version() != version
    found = jiangxin("search", "表格导入问题2：空压机排气温度高怎么处理", "--json", "--index", str(index),
                     "--corpus", str(mini_corpus), env=cli_env)
    assert "sq-sheet-00002" in found.stdout
    bad = jiangxin("import", str(three_bad_rows(tmp_path)), "--kind", "standard_question", "--corpus", str(mini_corpus),
                   env=cli_env)
    assert bad.returncode == 1 and "nothing was imported" in bad.stderr
    assert [line.split(":")[1:3] for line in bad.stdout.splitlines() if line.startswith(str(tmp_path))] == \
           [["4", "答案"], ["6", "编号"], ["9", "编号"]]
    exported = jiangxin("export", "--kind", "standard_question", "--out", str(tmp_path / "out.xlsx"),
                        "--corpus", str(mini_corpus), env=cli_env)
    assert exported.returncode == 0, exported.stderr
    assert parse_sheet(tmp_path / "out.xlsx", "standard_question").problems == []
    assert len(parse_sheet(tmp_path / "out.xlsx", "standard_question").records) == \
           sum(1 for r in load_corpus(mini_corpus).records if r.kind == "standard_question")
