import json

from typer.testing import CliRunner

from api.cli import app
from tests.conftest import MINI

KEYS = {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "latency_ms_p50", "latency_ms_p95"}


def small_beir(folder):
    folder.mkdir()
    docs = [json.loads(line) for line in (MINI / "achievements.jsonl").read_text(encoding="utf-8").splitlines()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": "doc-" + d["id"], "title": d["title"], "text": d["solution"]},
                                                            ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    queries = [("q1", "长轴车削中间让刀怎么办", "ach-m-1", "colloquial"), ("q2", "二保焊出气孔", "ach-m-2", "colloquial"),
               ("q3", "0i系统伺服没准备好", "ach-m-3", "model_number"), ("q4", "皮带机老是往一边跑", "ach-m-4", "symptom")]
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t, "type": ty}, ensure_ascii=False) + "\n"
                                                  for q, t, _, ty in queries), encoding="utf-8")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\tdoc-{d}\t1\n" for q, _, d, _ in queries))
    return folder


def test_eval_command_writes_report_with_modes_baselines_and_plots(tmp_path, cli_env, monkeypatch):
    monkeypatch.setenv("JIANGXIN_CACHE_PATH", cli_env["JIANGXIN_CACHE_PATH"])
    beir = small_beir(tmp_path / "beir")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--beir", str(beir), "--mode", "all", "--out", str(out),
                                      "--corpus", str(MINI), "--distractors", str(MINI)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["modes"]) == {"bm25", "dense", "hybrid", "ranked"}
    assert set(report["baselines"]) == {"rank_bm25_jieba", "dense_only", "rrf_k60"}
    for figures in [*report["modes"].values(), *report["baselines"].values()]:
        assert KEYS <= set(figures) and figures["queries"] == 4
    assert report["distractor_documents"] == 14
    assert report["modes"]["hybrid"]["recall@10"] == 1.0
    assert set(report["by_type"]) == {"colloquial", "model_number", "symptom"}
    assert {p.name for p in out.glob("*.png")} == {"recall_at_k.png", "latency.png"}
    assert "| hybrid |" in (out / "report.md").read_text(encoding="utf-8")


def test_missing_data_set_is_skipped_with_a_message(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--beir", str(tmp_path / "absent"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0 and "not on this machine" in result.output
    assert not (tmp_path / "r").exists()


def test_malformed_data_set_fails_with_the_location(tmp_path):
    beir = small_beir(tmp_path / "beir")
    (beir / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc-ach-m-1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "--beir", str(beir), "--corpus", str(MINI)])
    assert result.exit_code == 1 and "qrels.tsv:2:" in result.output
