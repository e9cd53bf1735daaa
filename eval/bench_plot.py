"""Scaling figure from the indexer benchmarks: latency and memory against the number of chunks.

``python -m eval.bench_plot [--reports eval/reports/bench] [--out eval/reports/bench/scaling.png]``
Reads every ``bench-*.json`` in the reports folder (one per corpus size N, from ``eval.bench``), draws
latency (ms) and serving memory (MiB) against N on a log axis with the goals at one million chunks as dashed
lines, and prints the figures per N as a markdown table. A figure missing from an older report is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The figures a report may hold, in table order, with their column headings.
COLUMNS = {"serve_rss_mib": "RSS MiB", "load_s": "load s", "build_s": "build s", "bm25_p50_ms": "BM25 p50 ms",
           "bm25_p95_ms": "BM25 p95 ms", "hybrid_p50_ms": "hybrid p50 ms", "hybrid_p95_ms": "hybrid p95 ms",
           "ask_p50_ms": "ask p50 ms", "publish_s": "publish s", "rank_bm25_p50_ms": "rank-bm25 p50 ms"}
# Latency series: figure -> (legend label, colour, line style); p95 dotted beside its p50.
LATENCY_SERIES = {"bm25_p50_ms": ("BM25 p50", "C0", "-"), "bm25_p95_ms": ("BM25 p95", "C0", ":"),
                  "hybrid_p50_ms": ("hybrid p50", "C1", "-"), "hybrid_p95_ms": ("hybrid p95", "C1", ":"),
                  "ask_p50_ms": ("ask p50", "C2", "-"), "rank_bm25_p50_ms": ("rank-bm25 p50", "C7", "-")}
# Goals at 1M chunks, drawn in the colour of the figure they bound.
LATENCY_GOALS_MS = {"bm25_p50_ms": 5.0, "hybrid_p50_ms": 30.0, "ask_p50_ms": 50.0}
RSS_GOAL_MIB = 2048.0
GOAL_N = 1_000_000


@dataclass(frozen=True)
class BenchPoint:
    """One benchmark report: its corpus size in chunks and the figures it holds."""

    chunks: int
    figures: dict[str, float]
    source: Path


def load_points(reports: Path) -> list[BenchPoint]:
    """The reports in ``reports/bench-*.json`` ordered by N; one without ``chunks`` cannot be placed and is skipped."""
    by_n: dict[int, BenchPoint] = {}
    for path in sorted(reports.glob("bench-*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(report.get("chunks"), (int, float)):
            print(f"{path}: no 'chunks' figure, skipped", file=sys.stderr)
            continue
        figures = {k: float(report[k]) for k in COLUMNS if isinstance(report.get(k), (int, float))}
        n = int(report["chunks"])
        if n in by_n:
            print(f"{path}: N={n} also in {by_n[n].source.name}; the later file is used", file=sys.stderr)
        by_n[n] = BenchPoint(n, figures, path)
    return [by_n[n] for n in sorted(by_n)]


def markdown_table(points: list[BenchPoint]) -> str:
    """Figures per N; only the columns some report has, '–' where a report lacks one."""
    columns = [k for k in COLUMNS if any(k in p.figures for p in points)]
    lines = ["| N | " + " | ".join(COLUMNS[k] for k in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for p in points:
        cells = [_cell(p.figures[k]) if k in p.figures else "–" for k in columns]
        lines.append(f"| {p.chunks:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def plot_scaling(points: list[BenchPoint], path: Path) -> None:
    """Two panels over N (log): latency figures with their goals, serving RSS with its goal."""
    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 5.5))
    for key, (label, colour, style) in LATENCY_SERIES.items():
        xs = [p.chunks for p in points if key in p.figures]
        if xs:
            lat.plot(xs, [p.figures[key] for p in points if key in p.figures], marker="o", color=colour,
                     linestyle=style, label=label)
    for key, goal in LATENCY_GOALS_MS.items():
        lat.axhline(goal, color=LATENCY_SERIES[key][1], linestyle="--", linewidth=1,
                    label=f"{LATENCY_SERIES[key][0]} goal at 1M: {goal:g} ms")
    lat.set_yscale("log")
    lat.set_ylabel("latency per query (ms)")
    lat.set_title("Latency")
    xs = [p.chunks for p in points if "serve_rss_mib" in p.figures]
    if xs:
        mem.plot(xs, [p.figures["serve_rss_mib"] for p in points if "serve_rss_mib" in p.figures], marker="o",
                 color="C3", label="serving RSS")
    mem.axhline(RSS_GOAL_MIB, color="C3", linestyle="--", linewidth=1, label=f"RSS goal at 1M: {RSS_GOAL_MIB:g} MiB")
    mem.set_ylim(bottom=0)
    mem.set_ylabel("resident memory (MiB)")
    mem.set_title("Memory while serving")
    right = max([p.chunks for p in points] + [GOAL_N]) * 1.5  # the goals are for 1M: keep it in view
    left = min([p.chunks for p in points] + [GOAL_N]) / 1.5
    for ax in (lat, mem):
        ax.set_xscale("log")
        ax.set_xlim(left, right)
        ax.axvline(GOAL_N, color="grey", linewidth=0.6, alpha=0.5)
        ax.set_xlabel("chunks indexed (N)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    fig.suptitle(f"Indexer scaling: {len(points)} reports in {points[0].source.parent}", fontsize=9)
    fig.tight_layout()
    partial = path.with_name(path.name + ".partial.png")  # renamed into place: a reader never sees half a file
    fig.savefig(partial, dpi=110)
    plt.close(fig)
    os.replace(partial, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=Path("eval/reports/bench"))
    parser.add_argument("--out", type=Path, default=None, help="default: REPORTS/scaling.png")
    args = parser.parse_args()
    points = load_points(args.reports)
    if not points:
        sys.exit(f"no bench-*.json report with a 'chunks' figure in {args.reports}")
    out = args.out or args.reports / "scaling.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_scaling(points, out)
    print(markdown_table(points))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
