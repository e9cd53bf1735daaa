"""Ray batch indexing throughput with 1 and 2 workers, against the local engine, on generated patents.

``python -m eval.ray_bench --patents 400`` → eval/reports/ray/throughput.json

Each run is a full build of the same patents (eval/patents_gen.py) into a fresh index with no embedding cache, so
analysis and embedding both run; Ray runs in local mode (a fresh Ray per worker count, started before the clock).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from eval.patents_gen import generate
from eval.run import machine
from indexer.build import BuildOptions, build_index
from indexer.embedders import EmbedderSpec, load_embedder
from indexer.ray_engine import RaySpec, start
from indexer.records import CorpusLoad

ROOT = Path(__file__).resolve().parents[1]


def run(records, options: BuildOptions, embedder) -> dict:
    with tempfile.TemporaryDirectory(prefix="jiangxin-ray-bench-") as tmp:
        started = time.perf_counter()
        report = build_index(ROOT / "corpus", Path(tmp) / "index", embedder, None, options, load=CorpusLoad(records))
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "records_per_s": round(len(records) / seconds, 2),
            "stages_s": {k: round(v, 2) for k, v in report.seconds.items()}, "chunks": report.chunks,
            "embedded": report.embedded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patents", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "ray" / "throughput.json")
    args = parser.parse_args()
    import ray

    records = list(generate(args.patents))
    embedder = load_embedder(EmbedderSpec())
    runs = {"local engine (process pool, 2 CPUs)": run(records, BuildOptions(full=True), embedder)}
    for workers in (1, 2):
        spec = RaySpec(EmbedderSpec(), None, workers)
        start(spec)
        runs[f"ray, {workers} worker(s)"] = run(records, BuildOptions(full=True, ray=spec), embedder)
        ray.shutdown()
    result = {"patents": len(records), "runs": runs, "machine": machine(),
              "note": "no embedding cache: every head chunk is embedded; Ray in local mode on this machine"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for name, figures in runs.items():
        print(f"{name:40s} {figures['seconds']:8.1f} s  {figures['records_per_s']:7.1f} patents/s  {figures['stages_s']}")


if __name__ == "__main__":
    main()
