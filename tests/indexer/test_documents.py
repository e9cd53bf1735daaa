"""Documents → knowledge records, from real files: DOCX written by python-docx, Markdown, HTML, and a PDF printed by
headless Chromium from an HTML page of 煤矿防治水细则 text with a forced page break."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import docx
import pytest

from indexer.build import BuildOptions, build_index
from indexer.corpus_store import CorpusStore
from indexer.documents import DocumentError, detect_format, is_document, parse_document, to_records
from indexer.records import load_corpus
from indexer.store import IndexStore

ROOT = Path(__file__).resolve().parents[2]
# Chapters 1 and 4 of 煤矿防治水细则 (from ../shared/eval/coal-mine-regs), kept in the repository so CI has them
REGS = ROOT / "tests" / "data" / "documents" / "煤矿防治水细则-节选.txt"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def regulation_lines() -> list[str]:
    text = REGS.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def chapter(lines: list[str], heading: str, articles: int) -> list[str]:
    """The chapter line ``heading`` and its first ``articles`` articles (with their continuation paragraphs)."""
    start = lines.index(heading)
    out, seen = [lines[start]], 0
    for line in lines[start + 1:]:
        if line.startswith("第") and "条" in line[:8]:
            seen += 1
            if seen > articles:
                break
        out.append(line)
    return out


@pytest.fixture(scope="module")
def regulation_pdf(tmp_path_factory) -> Path:
    """煤矿防治水细则: 第一章 on page 1, then a forced page break and 第四章 井下探放水 (page 2 onwards)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make browser installs it); the PDF tests need it to print one")
    lines = regulation_lines()
    first, fourth = chapter(lines, "第一章总则", 3), chapter(lines, "第四章井下探放水", 4)
    para = lambda items: "".join(f"<p>{html.escape(x)}</p>" for x in items)  # noqa: E731
    page = (f'<!doctype html><html><head><meta charset="utf-8"><style>body{{font-family:"WenQuanYi Micro Hei"}}'
            f"</style></head><body><h1>煤矿防治水细则</h1>{para(first)}"
            f'<div style="break-before:page">{para(fourth)}</div></body></html>')
    folder = tmp_path_factory.mktemp("pdf")
    source = folder / "page.html"
    source.write_text(page, encoding="utf-8")
    target = folder / "煤矿防治水细则.pdf"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                           f"--print-to-pdf={target}", source.as_uri()], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and target.exists(), done.stderr[-2000:]
    return target


def test_pdf_sections_keep_heading_paths_and_the_page_where_they_start(regulation_pdf):
    document = parse_document(regulation_pdf)
    assert document.format == "pdf" and document.source == "煤矿防治水细则"
    records = to_records(document)
    by_path = {tuple(r.heading_path): r for r in records}
    first = by_path[("第一章 总则", "第一条")]
    assert first.page == 1 and first.body.startswith("第一条为了加强煤矿防治水工作")
    assert "《中华人民共和国安全生产法》" in first.body  # a line wrapped by the printer is joined without a gap
    probe = by_path[("第四章 井下探放水", "第三十九条")]
    assert probe.page >= 2  # printed after the forced page break
    assert probe.title == "煤矿防治水细则 › 第四章 井下探放水 › 第三十九条"
    assert "专职探放水队伍施工" in probe.body and probe.citation == f"《煤矿防治水细则》第{probe.page}页"
    assert all(r.page == 1 for r in records if r.heading_path[0] == "第一章 总则")
    assert all(len(r.body) <= 600 for r in records)


def test_long_sections_are_cut_at_sentence_ends(tmp_path):
    sentence = "探放水钻孔应当按设计施工并做好记录。"
    (tmp_path / "规程.md").write_text("# 第四章 井下探放水\n\n" + sentence * 80 + "\n", encoding="utf-8")
    records = to_records(parse_document(tmp_path / "规程.md"))
    assert len(records) == 3 and all(len(r.body) <= 600 and r.body.endswith("。") for r in records)
    assert "".join(r.body for r in records) == sentence * 80
    assert len({r.id for r in records}) == 3 and all(r.heading_path == ["第四章 井下探放水"] for r in records)


def test_docx_headings_and_table_rows(tmp_path):
    doc = docx.Document()
    doc.add_heading("第三章 防治水", level=1)
    doc.add_heading("3.2 探放水", level=2)
    doc.add_paragraph("采掘工作面探水前，应当编制探放水设计和施工安全技术措施。")
    table = doc.add_table(rows=3, cols=3)
    for row, cells in zip(table.rows, [["水压/MPa", "超前距/m", "帮距/m"], ["<1", "20", "20"], ["1~2", "30", "20"]]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    doc.add_paragraph("钻孔内水压过大时，应当采用反压和有防喷装置的方法钻进。")
    doc.add_heading("3.3 老空水", level=2)
    doc.add_paragraph("老空积水应当查清范围。")
    path = tmp_path / "防治水讲义.docx"
    doc.save(path)
    assert detect_format(path) == "docx" and is_document(path)
    records = to_records(parse_document(path))
    assert [(r.heading_path, r.page) for r in records] == [(["第三章 防治水", "3.2 探放水"], None),
                                                            (["第三章 防治水", "3.3 老空水"], None)]
    assert records[0].body.splitlines() == ["采掘工作面探水前，应当编制探放水设计和施工安全技术措施。",
                                            "水压/MPa | 超前距/m | 帮距/m", "<1 | 20 | 20", "1~2 | 30 | 20",
                                            "钻孔内水压过大时，应当采用反压和有防喷装置的方法钻进。"]
    assert records[0].title == "防治水讲义 › 第三章 防治水 › 3.2 探放水" and records[0].citation == "《防治水讲义》"


def test_markdown_and_html_headings_and_tables(tmp_path):
    (tmp_path / "讲义.md").write_text(
        "# 防治水\n\n引言段落。\n\n## 探放水\n\n先探后掘。\n\n| 项目 | 要求 |\n|---|---|\n| 超前距 | 20m |\n\n"
        "### 钻孔\n\n**成组布设**。\n\n## 老空水\n\n查清范围。\n", encoding="utf-8")
    md = to_records(parse_document(tmp_path / "讲义.md"))
    assert [(r.heading_path, r.body) for r in md] == [
        (["防治水"], "引言段落。"), (["防治水", "探放水"], "先探后掘。\n项目 | 要求\n超前距 | 20m"),
        (["防治水", "探放水", "钻孔"], "成组布设。"), (["防治水", "老空水"], "查清范围。")]
    (tmp_path / "page.htm").write_text(
        "<!doctype html><html><head><title>x</title><style>p{color:red}</style></head><body>"
        "<h1>防治水</h1><h2>探放水</h2><p>先探后掘，<b>有疑必探</b>。</p><table><tr><th>项目</th><th>要求</th></tr>"
        "<tr><td>超前距</td><td>20m</td></tr></table><script>var a='不要';</script><h2>老空水</h2><p>查清范围。</p>"
        "</body></html>", encoding="utf-8")
    assert detect_format(tmp_path / "page.htm") == "html"
    page = to_records(parse_document(tmp_path / "page.htm"))
    assert [(r.heading_path, r.body) for r in page] == [
        (["防治水", "探放水"], "先探后掘，有疑必探。\n项目 | 要求\n超前距 | 20m"), (["防治水", "老空水"], "查清范围。")]


def test_type_comes_from_the_content_not_the_name(tmp_path):
    fake = tmp_path / "规程.pdf"
    fake.write_text("# 不是PDF\n", encoding="utf-8")
    with pytest.raises(DocumentError, match="not a PDF"):
        parse_document(fake)
    renamed = tmp_path / "table.bin"
    shutil.copy(ROOT / "pyproject.toml", renamed)
    assert not is_document(renamed)


def test_reimport_changes_nothing(tmp_path, regulation_pdf):
    corpus = tmp_path / "corpus"
    records = to_records(parse_document(regulation_pdf))
    first = CorpusStore(corpus).upsert_many(records)
    again = CorpusStore(corpus).upsert_many(to_records(parse_document(regulation_pdf)))
    assert len(first.added) == len(records) and again.added == again.updated == ()
    assert len(again.unchanged) == len(records)
    assert all(r.id.startswith("kn-") and len(r.id) == 15 for r in records)
    loaded = load_corpus(corpus)
    assert loaded.problems == [] and {r.id for r in loaded.records} == {r.id for r in records}


def jiangxin(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env | {"COLUMNS": "200"},
                          capture_output=True, text=True, timeout=120)


def test_cli_imports_the_pdf_then_an_answer_cites_document_and_page(
        regulation_pdf, mini_corpus, tmp_path, cli_env, embedder, cache):
    from rag.db import connect
    from rag.engine import Engine, EngineConfig
    from rag.escalate import TicketQueue
    from indexer.version import LiveIndex

    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache, BuildOptions())
    version = IndexStore(index).current_version()
    wrong = jiangxin("import", str(regulation_pdf), "--kind", "standard_question", "--corpus", str(mini_corpus),
                     env=cli_env)
    assert wrong.returncode == 1 and "is a document" in wrong.stderr
    done = jiangxin("import", str(regulation_pdf), "--corpus", str(mini_corpus), "--index", str(index), env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "第四章 井下探放水 › 第三十九条" in done.stdout and "added" in done.stdout
    assert IndexStore(index).current_version() != version
    before, current = (mini_corpus / "knowledge.jsonl").read_bytes(), IndexStore(index).current_version()
    again = jiangxin("import", str(regulation_pdf), "--kind", "knowledge", "--corpus", str(mini_corpus),
                     "--index", str(index), env=cli_env)
    assert again.returncode == 0, again.stderr
    stored = [json.loads(line) for line in (mini_corpus / "knowledge.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (mini_corpus / "knowledge.jsonl").read_bytes() == before and IndexStore(index).current_version() == current
    assert "index version" not in again.stdout  # nothing changed, so nothing to index
    probe = next(r for r in stored if r["heading_path"] == ["第四章 井下探放水", "第三十九条"])

    # threshold 0: answer rather than escalate, so the test sees the composed answer and its sources
    engine = Engine(LiveIndex(index, embedder), TicketQueue(connect(f"sqlite:///{tmp_path / 'q.db'}")),
                    EngineConfig(mini_corpus, index, 0.0), cache)
    result = engine.ask("井下探放水的“三专”要求是什么？", "ent-a").to_dict()
    assert result["status"] == "answered", result
    cited = {s["id"]: s for s in result["sources"]}
    assert probe["id"] in cited, result["sources"]
    expected = f"《煤矿防治水细则》第{probe['page']}页"
    assert probe["page"] >= 2 and cited[probe["id"]]["title"] == f"{expected} › 第三十九条"
    n = cited[probe["id"]]["n"]
    assert f"[{n}]（{expected}）" in result["answer"]
