"""Indexer benchmark at 100k+ chunks on real Chinese text (csl abstracts, coal-mine regulations).

``python -m eval.bench [--chunks 100000] [--queries 200] [--out eval/reports/bench]``

Documents are recombined from real sentences to reach the size. The dense side uses *reused real
vectors*: every passage gets a real multilingual-e5-small vector taken from the shared embedding cache
(filled by ``python -m eval.warm_cache`` or earlier evals) chosen by hash, plus small noise; queries are
embedded for real. Embedding 100k passages for real would take hours on 2 cores, so the report gives the
measured real embedding rate instead. rank-bm25 runs on the same tokens in the same run.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from api.settings import Settings
from eval.metrics import percentile
from eval.run import machine
from indexer.bm25 import BM25Index
from indexer.build import BuildOptions, build_index
from indexer.chunking import split_sentences
from indexer.embedders import E5Small, load_embedder
from indexer.errors import JiangxinError
from indexer.records import CorpusLoad, Passage
from indexer.store import atomic_write_text
from indexer.version import IndexVersion
from rag.retrieve import HybridRetriever

SHARED = Path(__file__).resolve().parents[2] / "shared" / "eval"


class ReusedVectors:
    """Passages get real e5 vectors from a pool (by text hash, plus noise); queries are embedded for real."""

    def __init__(self, pool: np.ndarray, real: E5Small) -> None:
        self.pool, self.real = pool, real
        self.model_id = real.model_id + "+bench-reused"
        self.dim = real.dim

    def embed_queries(self, texts):
        return self.real.embed_queries(texts)

    def embed_passages(self, texts):
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            rng = np.random.default_rng(seed)
            v = self.pool[seed % len(self.pool)] + rng.normal(0, 0.02, self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


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
        record = Passage(id=f"bench-{i}", title=f"文献{i}", text="".join(sentences) + extra)
        chunks += len(chunk(record))
        records.append(record)
        i += 1
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rank-bm25-queries", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("eval/reports/bench"))
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()
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
    rng = random.Random(11)
    drawn = rng.sample(queries, args.queries + 5)
    warmup, sample_queries = drawn[:5], drawn[5:]  # distinct: the embedder remembers recent queries

    heads = [r.head()[:200] for r in records[:40]]
    t = time.perf_counter()
    real.embed_passages(heads)
    real_rate = len(heads) / (time.perf_counter() - t)

    embedder = ReusedVectors(pool, real)
    with tempfile.TemporaryDirectory(prefix="jiangxin-bench-") as tmp:
        report = build_index(Path("corpus"), Path(tmp) / "index", embedder, None, BuildOptions(full=True),
                             load=CorpusLoad(records))
        t = time.perf_counter()
        version = IndexVersion(report.path, embedder)
        load_seconds = time.perf_counter() - t
        t = time.perf_counter()
        BM25Index.load(report.path)
        bm25_load = time.perf_counter() - t
        retriever = HybridRetriever(version)
        lat: dict[str, list[float]] = {"bm25": [], "dense": [], "hybrid": [], "rank_bm25": []}
        tokenised = [version.tokenizer.tokenize(q) for q in sample_queries]
        for q in warmup:
            retriever.retrieve(q, "hybrid")
        for q, toks in zip(sample_queries, tokenised):
            t0 = time.perf_counter()
            version.bm25.search(toks, 100)
            lat["bm25"].append((time.perf_counter() - t0) * 1000)
            for mode in ("dense", "hybrid"):
                real.forget_queries()
                t0 = time.perf_counter()
                retriever.retrieve(q, mode)
                lat[mode].append((time.perf_counter() - t0) * 1000)
        del retriever
        from rank_bm25 import BM25Okapi

        chunk_tokens = [version.tokenizer.tokenize(c.text if c.role != "body" else f"{c.title}。{c.text}") for c in version.chunks]
        t = time.perf_counter()
        reference = BM25Okapi(chunk_tokens)
        rank_build = time.perf_counter() - t
        for toks in tokenised[: args.rank_bm25_queries]:
            t0 = time.perf_counter()
            scores = reference.get_scores(toks)
            np.argsort(scores)[::-1][:100]
            lat["rank_bm25"].append((time.perf_counter() - t0) * 1000)
        ours_top = version.bm25.search(tokenised[0], 10)
        same = bool(np.allclose(np.sort(reference.get_scores(tokenised[0]))[::-1][: len(ours_top[1])], ours_top[1], atol=1e-6))
        del reference, chunk_tokens
        gc.collect()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "machine": machine(),
        "records": report.records, "chunks": report.chunks, "dense_vectors": report.dense_chunks,
        "build_seconds": {"recombine_text": round(prepare, 2), **{k: round(v, 2) for k, v in report.seconds.items()}},
        "note_embed": "embed stage uses reused real e5 vectors; real passage embedding measured separately",
        "real_embedding_passages_per_second": round(real_rate, 2),
        "real_embedding_hours_for_dense_vectors": round(report.dense_chunks / real_rate / 3600, 2),
        "load_seconds": {"version": round(load_seconds, 3), "bm25_mmap": round(bm25_load, 4)},
        "peak_rss_mib": round(peak_mib, 1),
        "latency_ms": {name: {"p50": round(percentile(v, 50), 3), "p95": round(percentile(v, 95), 3), "n": len(v)}
                       for name, v in lat.items()},
        "rank_bm25_build_seconds": round(rank_build, 2),
        "bm25_speedup_vs_rank_bm25_p50": round(percentile(lat["rank_bm25"], 50) / max(percentile(lat["bm25"], 50), 1e-9), 1),
        "bm25_top10_scores_equal_rank_bm25": same,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench.json", json.dumps(figures, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(figures, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
