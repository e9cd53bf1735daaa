"""Write an evaluation report: ``report.json`` (stable keys), ``report.md`` and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from indexer.store import atomic_write_text  # noqa: E402

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "latency_ms_p50", "latency_ms_p95")


def systems(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    rows = {name: figures for name, figures in report.get("modes", {}).items()}
    rows.update({f"baseline: {name}": figures for name, figures in report.get("baselines", {}).items()})
    return rows


def markdown(report: dict[str, Any]) -> str:
    if "documents" not in report:  # an answers-only report
        return "\n".join([f"# Answer / escalate evaluation: {report['dataset']}", ""] + _answers_md(report)) + "\n"
    lines = [f"# Retrieval evaluation: {report['dataset']}", "",
             f"{report['documents']} documents (+{report['distractor_documents']} distractors), "
             f"{report['queries']} judged queries. Machine: {report['machine']['cpu']}, "
             f"{report['machine']['cores']} cores, Python {report['machine']['python']}.", "",
             "| system | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, figures in systems(report).items():
        lines.append(f"| {name} | " + " | ".join(f"{figures.get(m, 0):.3f}" if "latency" not in m else f"{figures.get(m, 0):.1f}" for m in METRICS) + " |")
    if report.get("by_type"):
        lines += ["", "## MRR@10 by query type", "", "| type | " + " | ".join(report["recall_curves"]) + " |",
                  "|---" * (len(report["recall_curves"]) + 1) + "|"]
        for qtype, per in report["by_type"].items():
            lines.append(f"| {qtype} | " + " | ".join(f"{per.get(s, {}).get('mrr@10', 0):.3f}" for s in report["recall_curves"]) + " |")
    build = report.get("index", {})
    if build.get("seconds"):
        lines += ["", "## Index build", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {secs:.2f} |" for stage, secs in build["seconds"].items()]
        lines += ["", f"{build.get('chunks')} chunks, {build.get('dense_chunks')} embedded for dense retrieval "
                      f"({build.get('embedded')} newly embedded, {build.get('from_cache')} from the embedding cache)."]
    return "\n".join(lines + _answers_md(report)) + "\n"


def interval(answers: dict[str, Any], name: str) -> str:
    """`` [lo–hi]``: the 95% interval of one of the decision's shares, when the report has it."""
    lo_hi = (answers.get("intervals") or {}).get(name)
    return f" [{lo_hi[0]:.3f}–{lo_hi[1]:.3f}]" if lo_hi else ""


def reached(coverage: float | None) -> str:
    """A coverage at a target precision, or that no threshold reaches the target."""
    return f"{coverage:.3f}" if coverage is not None else "none (no threshold reaches the precision)"


def ceiling_sentence(bound: dict[str, Any]) -> str:
    """What bounds coverage (``eval.answers.ceiling``), in one sentence for reports and the CLI."""
    return (f"What bounds coverage (at precision {bound['target_precision']:.2f}, the threshold chosen on these questions): the "
            f"top record is a best-grade one for {bound['top_record_right']:.3f} of {bound['answerable']} answerable questions "
            f"(one is in the top 3 for {bound['right_in_top3']:.3f}); coverage {reached(bound['coverage'])}, "
            f"{reached(bound['coverage_if_unanswerable_known'])} if the questions the corpus cannot answer were never answered "
            f"(an oracle), {reached(bound['coverage_if_wrong_tops_known'])} if wrong top records never were.")


def trade_model_sentence(fitted: dict[str, Any]) -> str:
    """The trade model's out-of-fold figures (``rag.trades.fit_trade_model``), for reports and the CLI."""
    return (f"Trade model (rag/trades.py), out of fold: {fitted['uncovered_labelled_own_trade']:.3f} of "
            f"{fitted['uncovered_trade_questions']} questions of trades no craftsman covers labelled with their own "
            f"trade, {fitted['covered_mislabelled']:.3f} of {fitted['covered_trade_questions']} of covered trades with an "
            f"uncovered one (threshold {fitted['threshold']:.3f}).")


def _answers_md(report: dict[str, Any]) -> list[str]:
    answers = report.get("answers")
    if not answers:
        return []
    ci = lambda name: interval(answers, name)  # noqa: E731
    lines = ["", "## Answer or escalate", "", f"Questions: {answers.get('groups')}. Calibration: {report.get('calibration', 'fitted here')}.",
             "In brackets: 95% (Wilson) intervals, how far a share measured on this many questions can lie from the true one.", "",
             f"At the default threshold {answers['threshold']:.2f}: precision {answers['precision']:.3f}{ci('precision')} of "
             f"{answers['answered']} automatic answers, coverage {answers['coverage']:.3f}{ci('coverage')} of answerable questions, "
             f"unanswerable escalated {answers['unanswerable_escalated']:.3f}{ci('unanswerable_escalated')}, out-of-domain escalated "
             f"{answers['ood_escalated']:.3f} ({answers['ood_questions']} questions).", ""]
    if "ood_to_craftsman" in answers:
        lines += [f"Three outcomes: {answers['ood_to_craftsman']:.3f}{ci('ood_to_craftsman')} of out-of-domain questions reach a craftsman "
                  f"(goal ≤ 0.02); {answers['uncovered_declined']:.3f}{ci('uncovered_declined')} of in-domain uncovered questions are declined as out of "
                  f"scope (goal ≤ 0.05); {answers['answerable_declined']:.3f} of answerable ones. Calibration error: ECE "
                  f"{answers['ece']:.3f} over all questions, {answers.get('ece_in_domain', float('nan')):.3f} over the in-domain ones.", ""]
    sources = answers.get("by_source") or {}
    if sources:
        lines += [f"Where each question comes from, at the threshold {answers['threshold']:.2f}:", "",
                  "| part | answerable | answered right | answered wrong | uncovered | uncovered declined | out of domain | "
                  "out of domain to a craftsman |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {r['answerable']} | {r['answered_right']} | {r['answered_wrong']} | {r['uncovered']} | "
                  f"{r['uncovered_declined']} | {r['ood']} | {r['ood_to_craftsman']} |" for name, r in sources.items()]
        lines.append("")
    routing = answers.get("routing") or {}
    if routing.get("first_craftsman_in_gold_trade") is not None:
        lines += [f"Routing: the first routed craftsman works in the question's gold trade for "
                  f"{routing['first_craftsman_in_gold_trade']:.3f} of {routing['escalated_answerable']} escalated answerable questions "
                  f"({routing['first_craftsman_in_gold_trade_all']:.3f} of all {routing['all_answerable']} answerable ones).", ""]
    labels = answers.get("trade_labels") or {}
    if labels.get("uncovered_trade_questions"):
        lines += [f"Trade labels (rag/trades.py): {labels['labelled_own_trade']:.3f} of {labels['uncovered_trade_questions']} in-domain "
                  f"questions of trades no craftsman covers are labelled with their own trade ({labels['labelled_any']:.3f} with "
                  f"any uncovered one; escalated, a question is filed under its label), {labels['covered_mislabelled']:.3f} of "
                  f"{labels['covered_trade_questions']} questions of covered trades with an uncovered one.", ""]
    if report.get("trade_model_out_of_fold"):
        lines += [trade_model_sentence(report["trade_model_out_of_fold"]), ""]
    baseline = answers.get("raw_cosine_baseline") or {}
    if baseline:
        lines += [f"The anchors' recipe (RAGFlow, MaxKB, Dify: a raw threshold on the top dense cosine), its threshold "
                  f"chosen on these very questions for precision ≥ {baseline['target_precision']:.3f}: coverage "
                  f"{baseline['coverage']:.3f} (threshold {baseline['threshold']}).", ""]
    if answers.get("ceiling"):
        lines += [ceiling_sentence(answers["ceiling"]), ""]
    lines += ["| threshold | precision | coverage | out-of-domain escalated |", "|---|---|---|---|"]
    for point in answers.get("curve", [])[::5]:
        lines.append(f"| {point['threshold']:.2f} | {point['precision']:.3f} | {point['coverage']:.3f} | {point['ood_escalated']:.3f} |")
    lines += ["", "| confidence bin | questions | mean confidence | share right |", "|---|---|---|---|"]
    for b in answers.get("reliability", []):
        lines.append(f"| {b['low']:.1f}–{b['high']:.1f} | {b['count']} | {b['confidence']:.3f} | {b['accuracy']:.3f} |")
    if report.get("ranker_out_of_fold"):
        cv = report["ranker_out_of_fold"]
        lines += ["", f"Ranker, out of fold: MRR@10 {cv['ranked_mrr@10']:.3f} against {cv['fused_mrr@10']:.3f} for the fused order on the same candidates."]
    return lines


def plot_recall(report: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in report["recall_curves"].items():
        ks = [int(k) for k in curve]
        ax.plot(ks, list(curve.values()), marker="o", label=name, linestyle="--" if name.startswith("baseline") else "-")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_title(f"Recall at k — {report['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(latencies: dict[str, list[float]], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in latencies.items():
        if values:
            ax.hist(values, bins=40, alpha=0.5, label=name)
    ax.set_xlabel("latency per query (ms)")
    ax.set_ylabel("queries")
    ax.set_title(f"Query latency — {title}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_precision_coverage(curve: list[dict[str, float]], path: Path, threshold: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ts = [p["threshold"] for p in curve]
    ax.plot(ts, [p["precision"] for p in curve], label="precision of automatic answers")
    ax.plot(ts, [p["coverage"] for p in curve], label="coverage of answerable questions")
    if threshold is not None:
        ax.axvline(threshold, color="grey", linestyle=":", label=f"default threshold {threshold:.2f}")
    ax.set_xlabel("confidence threshold")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(bins: list[dict[str, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    xs = [b["confidence"] for b in bins if b["count"]]
    ys = [b["accuracy"] for b in bins if b["count"]]
    ax.plot(xs, ys, marker="o", label="observed share right")
    ax.set_xlabel("predicted confidence")
    ax.set_ylabel("share right")
    ax.set_title("Reliability of confidence")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path, latencies: dict[str, list[float]] | None = None) -> list[Path]:
    """Write JSON, Markdown and the plots that the report's content allows; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    atomic_write_text(written[0], json.dumps(report, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
    atomic_write_text(written[1], markdown(report))
    if report.get("recall_curves"):
        plot_recall(report, out / "recall_at_k.png")
        written.append(out / "recall_at_k.png")
    if latencies:
        plot_latency(latencies, report["dataset"], out / "latency.png")
        written.append(out / "latency.png")
    answers = report.get("answers")
    if answers and answers.get("curve"):
        plot_precision_coverage(answers["curve"], out / "precision_coverage.png", answers.get("threshold"))
        written.append(out / "precision_coverage.png")
    if answers and answers.get("reliability"):
        plot_reliability(answers["reliability"], out / "reliability.png")
        written.append(out / "reliability.png")
    return written
