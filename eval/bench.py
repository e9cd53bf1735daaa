"""Indexer benchmark at 100k+ chunks on real Chinese text (csl abstracts, coal-mine regulations).

``python -m eval.bench [--chunks 100000] [--queries 200] [--out eval/reports/bench] [--keep DIR]`` → ``bench-<chunks>.json``

Documents are recombined from real sentences to reach the size. The dense side uses *reused real
vectors*: every chunk gets a real multilingual-e5-small vector taken from the shared embedding cache
(filled by ``python -m eval.warm_cache`` or earlier evals) chosen by hash, plus small noise; queries are
embedded for real. Embedding a million chunks for real would take days on 2 cores, so the report gives the
measured real embedding rate instead. The serving figures come from a separate process (``eval/bench_serve.py``)
so that its memory is a server's alone. rank-bm25 runs on the same tokens in the same run (on a subsample above
100k chunks).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from api.settings import Settings
from eval.metrics import percentile
from eval.run import machine
from indexer.build import BuildOptions, build_index
from indexer.chunking import split_sentences
from indexer.embedders import E5Small, load_embedder
from indexer.errors import JiangxinError
from indexer.records import CorpusLoad, Passage
from indexer.store import atomic_write_text
from indexer.version import IndexVersion

SHARED = Path(__file__).resolve().parents[2] / "shared" / "eval"


class ReusedVectors:
    """Passages get real e5 vectors from a pool (two chosen by text hash, mixed 1 : 0.15, so every text has its own
    direction near a real one); queries are embedded for real."""

    def __init__(self, pool: np.ndarray, real: E5Small) -> None:
        self.pool, self.real = pool, real
        self.model_id = real.model_id + "+bench-reused"
        self.dim = real.dim

    def embed_queries(self, texts):
        return self.real.embed_queries(texts)

    def embed_passages(self, texts):
        seeds = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts),
                            dtype=np.uint64, count=len(texts))
        n = np.uint64(len(self.pool))
        v = self.pool[(seeds % n).astype(np.int64)] + 0.15 * self.pool[((seeds >> np.uint64(24)) % n).astype(np.int64)]
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def real_vector_pool(cache_path: Path, model_id: str, limit: int = 20000) -> np.ndarray:
    db = sqlite3.connect(cache_path)
    rows = db.execute("SELECT vector FROM embedding WHERE model = ? LIMIT ?", (model_id, limit)).fetchall()
    db.close()
    return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows]) if rows else np.zeros((0, 384), np.float32)


def source_sentences(shared: Path) -> tuple[list[str], list[str], list[str]]:
    abstracts = [json.loads(l)["text"] for l in open(shared / "csl" / "corpus.jsonl", encoding="utf-8")]
    queries = [json.loads(l)["text"] for l in open(shared / "csl" / "queries.jsonl", encoding="utf-8")]
    regs = []
    for path in sorted((shared / "coal-mine-regs").glob("*.txt")):
        for line in path.read_text(encoding="utf-8").replace("\\n", "\n").splitlines():
            if len(line.strip()) >= 15:
                regs.extend(split_sentences(line.strip()))
    return abstracts, regs, queries


def recombined_records(abstracts: list[str], regs: list[str], target_chunks: int, seed: int = 7) -> list[Passage]:
    """Records of one abstract plus 2–5 regulation sentences, until the chunker yields ``target_chunks``."""
    from indexer.chunking import chunk

    rng = random.Random(seed)
    records, chunks = [], 0
    i = 0
    while chunks < target_chunks:
        abstract = abstracts[i % len(abstracts)]
        extra = "".join(rng.choice(regs) for _ in range(rng.randint(2, 5)))
        sentences = split_sentences(abstract)
        rng.shuffle(sentences) if i >= len(abstracts) else None
        record = Passage(id=f"bench-{i}", title=f"文献{i}", text="".join(sentences) + extra, trade="煤矿安全")
        chunks += len(chunk(record))
        records.append(record)
        i += 1
    return records


def rank_bm25_figures(records: list[Passage], tokenizer, version, queries: list[str], limit: int, n_queries: int) -> dict:
    """rank-bm25 (BM25Okapi) over the first ``limit`` chunks, same tokens: its latency, and whether its top-10 scores
    equal ours when the subsample is the whole index."""
    from rank_bm25 import BM25Okapi

    from indexer.analysis import analyse

    docs: list[list[str]] = []
    for record in records:
        docs.extend(analyse(record, tokenizer).chunk_terms)
        if len(docs) >= limit:
            break
    whole = len(docs) == version.manifest["counts"]["chunks"]
    docs = docs[:limit]
    t = time.perf_counter()
    reference = BM25Okapi(docs)
    build = time.perf_counter() - t
    lat = []
    for q in queries[:n_queries]:
        terms = tokenizer.tokenize(q)
        t0 = time.perf_counter()
        scores = reference.get_scores(terms)
        np.argsort(scores)[::-1][:100]
        lat.append((time.perf_counter() - t0) * 1000)
    same = None
    if whole:
        terms = tokenizer.tokenize(queries[0])
        ours = [h.score for h in version.sparse.search(terms, 10)]
        same = bool(np.allclose(np.sort(reference.get_scores(terms))[::-1][: len(ours)], ours, atol=1e-6))
    return {"chunks": len(docs), "build_s": round(build, 2), "p50_ms": round(percentile(lat, 50), 3), "n": len(lat),
            "top10_scores_equal_ours": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="never-seen questions per measure (BM25/dense, hybrid, ask)")
    parser.add_argument("--rank-bm25-queries", type=int, default=20)
    parser.add_argument("--rank-bm25-chunks", type=int, default=100_000, help="rank-bm25 runs on a subsample this large")
    parser.add_argument("--exact-max", type=int, default=50_000, help="vectors above which a segment gets an IVF index")
    parser.add_argument("--out", type=Path, default=Path("eval/reports/bench"))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--keep", type=Path, default=None,
                        help="build in this empty folder and keep the index, vector pool and questions there (to profile the "
                             "serving side again: python -m eval.bench_serve DIR/index DIR/pool.npy DIR/queries.json OUT); "
                             "the kept index holds the one answer the run published, each later bench_serve run adds one more")
    args = parser.parse_args()
    if args.keep is not None:
        if args.keep.exists() and (not args.keep.is_dir() or any(args.keep.iterdir())):
            raise JiangxinError(f"--keep {args.keep}: not an empty folder")
        args.keep.mkdir(parents=True, exist_ok=True)
    if not (args.shared / "csl" / "corpus.jsonl").exists():
        print(f"skipped: {args.shared}/csl is not on this machine")
        return
    settings = Settings()
    real = load_embedder(settings.embedder_spec())
    assert isinstance(real, E5Small)
    pool = real_vector_pool(settings.cache_path, real.model_id)
    if len(pool) < 1000:
        raise JiangxinError(f"only {len(pool)} real vectors in {settings.cache_path}; run `python -m eval.warm_cache ../shared/eval/cmrc2018` first")
    abstracts, regs, queries = source_sentences(args.shared)
    t = time.perf_counter()
    records = recombined_records(abstracts, regs, args.chunks)
    prepare = time.perf_counter() - t
    drawn = random.Random(11).sample(queries, 3 * args.queries + 5)  # distinct: every question is new to the server

    heads = [r.head()[:200] for r in records[:40]]
    t = time.perf_counter()
    real.embed_passages(heads)
    real_rate = len(heads) / (time.perf_counter() - t)

    embedder = ReusedVectors(pool, real)
    options = BuildOptions(full=True, exact_max=args.exact_max, dense_roles=("head", "alias", "body"))
    with (contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(prefix="jiangxin-bench-")) as tmp:
        index = Path(tmp) / "index"
        report = build_index(Path(tmp) / "corpus", index, embedder, None, options, load=CorpusLoad(records))
        build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        np.save(Path(tmp) / "pool.npy", pool)
        (Path(tmp) / "queries.json").write_text(json.dumps(drawn, ensure_ascii=False), encoding="utf-8")
        subprocess.run([sys.executable, "-m", "eval.bench_serve", str(index), str(Path(tmp) / "pool.npy"),
                        str(Path(tmp) / "queries.json"), str(Path(tmp) / "serve.json")], check=True)
        serve = json.loads((Path(tmp) / "serve.json").read_text(encoding="utf-8"))
        version = IndexVersion(report.path, embedder)
        reference = rank_bm25_figures(records, version.tokenizer, version, drawn, args.rank_bm25_chunks, args.rank_bm25_queries)
        del version
        gc.collect()
    lat = serve["latency_ms"]
    figures = {
        "chunks": report.chunks,
        "records": report.records,
        "dense_vectors": report.dense_chunks,
        "build_s": round(report.seconds["total"], 2),
        "serve_rss_mib": serve["serve_rss_mib"],
        "load_s": serve["load_s"],
        "bm25_p50_ms": lat["bm25"]["p50"], "bm25_p95_ms": lat["bm25"]["p95"],
        "hybrid_p50_ms": lat["hybrid"]["p50"], "hybrid_p95_ms": lat["hybrid"]["p95"],
        "ask_p50_ms": lat["ask"]["p50"],
        "publish_s": serve["publish_s"],
        "rank_bm25_p50_ms": reference["p50_ms"],
        "machine": machine(),
        "build_seconds": {"recombine_text": round(prepare, 2), **{k: round(v, 2) for k, v in report.seconds.items()}},
        "build_peak_rss_mib": round(build_peak, 1),
        "serve": serve,
        "rank_bm25": reference,
        "bm25_speedup_vs_rank_bm25_p50": round(reference["p50_ms"] / max(lat["bm25"]["p50"], 1e-9), 1),
        "note": ("Passage text is real (csl abstracts + coal-mine regulation sentences, recombined); every chunk has a "
                 "dense vector, reused from real e5 vectors in the embedding cache plus noise, so embedding is not in "
                 "build_s (real rate below); questions are csl queries, each asked once, embedded for real. BM25 = "
                 "chunk search over all segments incl. id lookup; hybrid = both retrievers, folding and fusion, query "
                 "embedding included; ask = Engine.ask (rank, decide, record); publish = craftsman answer → delta "
                 "segment → served → the same question answered from it."),
        "real_embedding_passages_per_second": round(real_rate, 2),
        "real_embedding_hours_for_dense_vectors": round(report.dense_chunks / real_rate / 3600, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"bench-{args.chunks}.json", json.dumps(figures, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("serve", "build_seconds", "note")}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
