"""The serving half of the scale benchmark, run in its own process so its memory is a serving process's alone.

``python -m eval.bench_serve INDEX POOL.npy QUERIES.json OUT.json`` loads the index as the server does, measures
load time and resident memory, BM25 / hybrid / ask latencies over never-seen questions (the query embedding is
computed for real each time), then publishes one craftsman answer and times it until a new question is answered
from it. Called by ``python -m eval.bench``.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.metrics import percentile


def rss_mib(kind: str = "VmRSS") -> float:
    """Resident memory of this process now, in MiB: ``VmRSS`` (all), ``RssAnon`` (heap) or ``RssFile`` (pages of
    memory-mapped index files, shared with other workers and reclaimable by the kernel)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3), "n": len(values)}


def main() -> None:
    index, pool_path, queries_path, out = map(Path, sys.argv[1:5])
    from eval.bench import ReusedVectors
    from indexer.embedders import E5Small
    from indexer.version import LiveIndex

    real = E5Small()
    embedder = ReusedVectors(np.load(pool_path), real)
    real.embed_queries(["预热"])  # the model's own load is not the index's
    before = rss_mib()
    t = time.perf_counter()
    live = LiveIndex(index, embedder)
    version = live.get()
    load_s = time.perf_counter() - t
    after_load = rss_mib()

    from rag.db import connect
    from rag.engine import Engine, EngineConfig
    from rag.escalate import TicketQueue
    from rag.retrieve import HybridRetriever

    queries: list[str] = json.loads(queries_path.read_text(encoding="utf-8"))
    warmup, asked = queries[:5], queries[5:]
    tmp = Path(tempfile.mkdtemp(prefix="jiangxin-bench-serve-"))
    (tmp / "corpus").mkdir()
    engine = Engine(live, TicketQueue(connect(f"sqlite:///{tmp / 'q.db'}"), quota_per_day=None), EngineConfig(tmp / "corpus", index))
    retriever = HybridRetriever(version)
    for q in warmup:
        engine.ask(q)
    lat: dict[str, list[float]] = {"bm25": [], "bm25_retriever": [], "dense": [], "hybrid": [], "ask": []}
    approximate: list[tuple[np.ndarray, set[str]]] = []
    third = len(asked) // 3
    for i, q in enumerate(asked):  # each question is used once per measure (a third each), so never seen before
        terms = version.tokenizer.tokenize(q)
        t0 = time.perf_counter()
        version.sparse.search(terms, 100)
        lat["bm25"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        retriever.bm25(q, terms=terms)
        lat["bm25_retriever"].append((time.perf_counter() - t0) * 1000)
        if i < third:
            t0 = time.perf_counter()
            vector = real.embed_queries([q])[0]
            hits = version.dense.search(vector, 10)
            lat["dense"].append((time.perf_counter() - t0) * 1000)
            approximate.append((vector, {h.chunk_id for h in hits}))
        elif i < 2 * third:
            t0 = time.perf_counter()
            retriever.retrieve(q, "hybrid")
            lat["hybrid"].append((time.perf_counter() - t0) * 1000)
        else:
            t0 = time.perf_counter()
            engine.ask(q)
            lat["ask"].append((time.perf_counter() - t0) * 1000)
    after_queries = rss_mib()
    split = {"anon": round(rss_mib("RssAnon"), 1), "file": round(rss_mib("RssFile"), 1)}
    exact_agree = []  # after the memory reading: the exact scan reads every vector
    for vector, found in approximate:
        exact = {h.chunk_id for h in version.dense.search(vector, 10, exact=True)}
        exact_agree.append(len(exact & found) / max(len(exact), 1))

    question = "基准测试：掘进工作面局部通风机停风后如何恢复送风？"
    ticket, _ = engine.queue.create(question, "bench", 0.1, [], ["煤矿安全"], [])
    engine.queue.claim(ticket.id, "bench-craftsman", ["煤矿安全"])
    engine.queue.answer(ticket.id, "bench-craftsman", "先检查瓦斯浓度，确认不超限后由专人按顺序恢复送风。")
    t = time.perf_counter()
    published, report = engine.publish(ticket.id)
    result = engine.ask(question)
    publish_s = time.perf_counter() - t
    answered_from = result.answer.sources[0].id if result.answer and result.answer.sources else None
    figures = {
        "load_s": round(load_s, 3),
        "serve_rss_mib": round(after_queries, 1),
        "rss_mib": {"before_load": round(before, 1), "after_load": round(after_load, 1), "after_queries": round(after_queries, 1),
                    "after_queries_split": split},
        "latency_ms": {name: stats(v) for name, v in lat.items()},
        "dense_recall_at_10_vs_exact": round(float(np.mean(exact_agree)), 4) if exact_agree else None,
        "dense_index": [s.meta.get("ann") or "exact" for s in version.parts.segments],
        "publish_s": round(publish_s, 3),
        "publish_seconds": {k: round(v, 3) for k, v in report.seconds.items()},
        "published_answered": result.status == "answered" and answered_from == published.published_record,
    }
    out.write_text(json.dumps(figures, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
