"""Questions about an imported regulation: are they answered from the right passage, citing document and page?

``python -m eval.documents`` prints 煤矿防治水细则 (../shared/eval/coal-mine-regs) to a PDF with headless Chromium,
copies the bundled corpus to a temporary folder, indexes it, imports the PDF as a maintainer would (its passages
become knowledge records with heading path and page), then asks the held-out part of eval/regs — questions written
from that regulation's articles by someone who saw neither the corpus nor the system — through the engine with the
shipped ranker, calibration and scope model at the default threshold. A question is answered right when the first
cited source is the passage of its labelled article (or a record judged to answer it as well, ``also``). Writes eval/reports/documents/report.{json,md}.

Nothing here is fitted: the models come from ``jiangxin fit`` on other sets (eval/regs' fit part is about other
regulations, and the bundled corpus does not hold them).
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from eval.datasets import load_beir
from eval.run import machine

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "eval"
REGULATION = SHARED / "coal-mine-regs" / "26-煤矿防治水细则.txt"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def regulation_pdf(source: Path, folder: Path) -> Path:
    """The regulation's text (literal ``\\n`` line breaks) as an HTML page printed to PDF by Chromium."""
    lines = [line.strip() for line in source.read_text(encoding="utf-8").replace("\\n", "\n").splitlines() if line.strip()]
    title, body = lines[0], lines[1:]
    page = (f'<!doctype html><html><head><meta charset="utf-8"><style>body{{font-family:"WenQuanYi Micro Hei"}}</style>'
            f'</head><body><h1>{html.escape(title)}</h1>{"".join(f"<p>{html.escape(x)}</p>" for x in body)}</body></html>')
    (folder / "page.html").write_text(page, encoding="utf-8")
    target = folder / f"{title}.pdf"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                           f"--print-to-pdf={target}", (folder / "page.html").as_uri()], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or not target.exists():
        raise RuntimeError(f"chromium could not print {source.name}: {done.stderr[-1000:]}")
    return target


def evaluate(workdir: Path) -> dict[str, Any]:
    from api.settings import Settings
    from indexer.build import BuildOptions, build_index
    from indexer.corpus_store import CorpusStore
    from indexer.documents import parse_document, to_records
    from indexer.embedders import EmbeddingCache, load_embedder
    from indexer.version import LiveIndex
    from rag.db import connect
    from rag.engine import Engine, EngineConfig
    from rag.escalate import TicketQueue

    settings = Settings()
    corpus, index = workdir / "corpus", workdir / "index"
    shutil.copytree(ROOT / "corpus", corpus)
    embedder, cache = load_embedder(settings.embedder_spec()), EmbeddingCache(settings.cache_path)
    build_index(corpus, index, embedder, cache, BuildOptions(full=True))
    pdf = regulation_pdf(REGULATION, workdir)
    document = parse_document(pdf)
    records = to_records(document)
    CorpusStore(corpus).upsert_many(records)
    built = build_index(corpus, index, embedder, cache, BuildOptions())
    engine = Engine(LiveIndex(index, embedder), TicketQueue(connect(f"sqlite:///{workdir / 'queue.db'}")),
                    EngineConfig(corpus, index, None), cache)
    article_of = {r.id: (r.heading_path[-1] if r.heading_path else "") for r in records}
    page_of = {r.id: r.page for r in records}
    dataset = load_beir(ROOT / "eval" / "regs", part="heldout")
    labels = _labels()
    rows = []
    for query in dataset.queries:
        article, also = labels[query.id]["article"], set(labels[query.id].get("also", []))
        result = engine.assess(query.text)
        first = result.ranked[0].candidate.record_id if result.ranked else ""
        answer = result.answer
        cited = [s.id for s in answer.sources] if answer else []
        first_cited = cited[0] if cited else ""
        said = result.status == "answered"
        rows.append({"id": query.id, "text": query.text, "article": article, "status": result.status,
                     "confidence": round(result.confidence, 4), "in_scope": round(result.in_scope, 4),
                     "top": first, "top_article": article_of.get(first, ""), "first_cited": first_cited,
                     "right": said and (article_of.get(first_cited) == article or first_cited in also),
                     "citation": f"《{document.source}》第{page_of[first_cited]}页" if said and first_cited in page_of else "",
                     "top_right": article_of.get(first) == article or first in also})
    n = len(rows)
    status = Counter(r["status"] for r in rows)
    answered = [r for r in rows if r["status"] == "answered"]
    return {
        "dataset": "eval/regs heldout (questions on 煤矿防治水细则, written from its articles)",
        "document": {"source": document.source, "format": document.format, "passages": len(records),
                     "pages": max((r.page or 0) for r in records), "index_version": built.version},
        "questions": n,
        "answered": status["answered"] / n,
        "answered_right": sum(r["right"] for r in rows) / n,
        "precision": (sum(r["right"] for r in answered) / len(answered)) if answered else None,
        "answered_with_page": sum(bool(r["citation"]) for r in answered) / n,
        "escalated": status["escalated"] / n,
        "out_of_scope": status["out_of_scope"] / n,
        "top1_right": sum(r["top_right"] for r in rows) / n,
        "models": "shipped rag/models (ranker, calibration, scope), default threshold",
        "machine": machine(),
        "rows": rows,
    }


def _labels() -> dict[str, dict[str, Any]]:
    lines = (ROOT / "eval" / "regs" / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["_id"]: row for row in map(json.loads, lines)}


def markdown(report: dict[str, Any]) -> str:
    d = report["document"]
    lines = [f"# Questions about an imported regulation: {report['dataset']}", "",
             f"《{d['source']}》 printed to {d['format'].upper()} ({d['pages']} pages) and imported: {d['passages']} passages. "
             f"{report['models']}.", "",
             f"Of {report['questions']} questions: answered {report['answered']:.3f} "
             f"(right — first citation is the labelled article's passage — {report['answered_right']:.3f}; "
             f"precision {report['precision'] if report['precision'] is None else round(report['precision'], 3)}), "
             f"escalated {report['escalated']:.3f}, declined as out of scope {report['out_of_scope']:.3f}; "
             f"labelled article ranked first {report['top1_right']:.3f}.", "",
             "| id | question | article | outcome | confidence | scope | first citation |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        mark = "✓" if r["right"] else ("" if r["status"] != "answered" else "✗")
        lines.append(f"| {r['id']} | {r['text']} | {r['article']} | {r['status']} {mark} | {r['confidence']:.2f} | "
                     f"{r['in_scope']:.2f} | {r['citation'] or '-'} {r['top_article'] if r['status'] == 'answered' else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "documents")
    args = parser.parse_args(argv)
    if not REGULATION.exists():
        print(f"skipped: {REGULATION} is absent (../shared/eval holds the coal-mine regulations)", file=sys.stderr)
        return 0
    if not Path(CHROMIUM).exists():
        print("error: Debian's chromium is needed to print the regulation to PDF (make browser installs it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="jiangxin-documents-") as tmp:
        report = evaluate(Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    (args.out / "report.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report).split("\n\n")[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
