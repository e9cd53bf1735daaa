"""p50/p95 of the ask path's decision (``Engine.assess``: retrieval, ranking, scope, confidence, answer) over the
first 200 questions of eval/field, query embedding included (remembered query vectors dropped before each).

Compares two trees in one run, e.g. before and after a change:

    git worktree add /tmp/before <rev> && (cd /tmp/before && jiangxin index --index /tmp/before-index)
    python eval/ask_latency.py /tmp/before /tmp/before-index before
    python eval/ask_latency.py . ./index after

Each call imports the engine from ROOT (put first on sys.path), so the same virtualenv measures both trees.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

FIELD = Path(__file__).resolve().parent / "field" / "queries.jsonl"


def main(root: Path, index: Path, label: str, count: int = 200) -> dict:
    sys.path.insert(0, str(root))
    os.chdir(root)
    import rag
    from api.settings import Settings
    from api.wiring import make_engine

    if not rag.__file__.startswith(str(root)):
        raise SystemExit(f"imported {rag.__file__}, not the tree at {root}")
    engine = make_engine(Settings(index_dir=index, corpus_dir=root / "corpus", database_url="sqlite:///:memory:"))
    questions = [json.loads(line)["text"] for line in FIELD.open(encoding="utf-8")][:count]
    engine.assess(questions[0])
    times = []
    for question in questions:
        engine.live.embedder.forget_queries()
        start = time.perf_counter()
        engine.assess(question)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"tree": label, "questions": len(times), "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(0.95 * len(times)) - 1], 1), "mean_ms": round(statistics.mean(times), 1)}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), sys.argv[3])))
