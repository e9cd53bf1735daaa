"""Retrieval evaluation: index a data set with Jiangxin's own indexer, run every query through Jiangxin's
own retrieval path and the baselines, and collect per-system metrics and latencies."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.baselines import RankBM25Jieba
from eval.datasets import Dataset, load_beir
from eval.metrics import recall_curve, summarise
from indexer.build import BuildOptions, build_index
from indexer.milvus import MilvusSpec
from indexer.embedders import Embedder, EmbeddingCache
from indexer.errors import DatasetError
from indexer.records import CorpusLoad, Record, load_corpus
from indexer.version import IndexVersion
from rag.retrieve import BASELINE_RRF, DEFAULT_FUSION, FusionParams, HybridRetriever, fuse

log = logging.getLogger(__name__)
ALL_MODES = ("bm25", "dense", "hybrid")


@dataclass
class SystemRun:
    """One system's rankings (query id → ids best first) and per-query latencies in milliseconds."""

    rankings: dict[str, list[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)


def machine() -> dict[str, Any]:
    import os

    import faiss
    import numpy

    cpu = platform.processor() or ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": numpy.__version__, "faiss": faiss.__version__}


def load_distractors(folders: Sequence[Path]) -> list[Record]:
    """Records of each distractor folder: a BEIR folder (corpus.jsonl) or a Jiangxin corpus folder."""
    records: list[Record] = []
    for folder in folders:
        folder = Path(folder)
        if (folder / "corpus.jsonl").exists() or (folder / "dataset.json").exists():
            records.extend(load_beir(folder).records)
        else:
            load = load_corpus(folder)
            if load.problems:
                raise DatasetError(f"distractor corpus {folder} has problems, first: {load.problems[0]}")
            records.extend(load.records)
    return records


def merge_records(dataset: Dataset, distractors: list[Record]) -> list[Record]:
    """The data set's records plus distractors; an id used twice must name the same content."""
    seen = {r.id: r.content_hash() for r in dataset.records}
    merged = list(dataset.records)
    for record in distractors:
        if record.id in seen:
            if seen[record.id] != record.content_hash():
                raise DatasetError(f"distractor record {record.id!r} has the id of a different document in {dataset.name}")
            continue
        seen[record.id] = record.content_hash()
        merged.append(record)
    return merged


@dataclass
class RetrievalEval:
    dataset: Dataset
    systems: dict[str, SystemRun]
    build: dict[str, Any]
    distractor_count: int
    version: IndexVersion | None = None


def evaluate_retrieval(dataset: Dataset, embedder: Embedder, cache: EmbeddingCache | None, dictionary_dir: Path,
                       modes: Sequence[str] = ALL_MODES, distractors: Sequence[Path] = (),
                       fusion: FusionParams = DEFAULT_FUSION, on_query: Callable[[], None] | None = None,
                       index_dir: Path | None = None, extra_systems: dict[str, Callable] | None = None,
                       milvus: MilvusSpec | None = None) -> RetrievalEval:
    """Index ``dataset`` (plus distractors) into a temporary index (its search rows in Milvus with ``milvus``) and
    run every judged query."""
    extra = load_distractors(distractors)
    records = merge_records(dataset, extra)
    with tempfile.TemporaryDirectory(prefix="jiangxin-eval-") as tmp:
        target = Path(index_dir) if index_dir else Path(tmp) / "index"
        report = build_index(dictionary_dir, target, embedder, cache, BuildOptions(full=True, milvus=milvus),
                             load=CorpusLoad(records))
        version = IndexVersion(report.path, embedder)
        retriever = HybridRetriever(version, fusion)
        need_dense = any(m in modes for m in ("dense", "hybrid"))
        systems: dict[str, SystemRun] = {}

        def run(name: str) -> SystemRun:
            return systems.setdefault(name, SystemRun())

        baseline = RankBM25Jieba(records)
        for query in dataset.judged():
            t0 = time.perf_counter()
            bm25 = retriever.bm25(query.text)
            t1 = time.perf_counter()
            vector = version.embedder.embed_queries([query.text])[0] if need_dense else None
            dense = retriever.dense(query.text, vector=vector) if need_dense else []
            t2 = time.perf_counter()
            bm25_ms, dense_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
            if "bm25" in modes:
                run("bm25").rankings[query.id] = [c.record_id for c in bm25]
                run("bm25").latencies_ms.append(bm25_ms)
            if need_dense:
                for name in ("dense", "baseline:dense_only"):
                    run(name).rankings[query.id] = [c.record_id for c in dense]
                    run(name).latencies_ms.append(dense_ms)
            if "hybrid" in modes:
                for name, params in (("hybrid", fusion), ("baseline:rrf_k60", BASELINE_RRF)):
                    t3 = time.perf_counter()
                    fused = fuse(bm25, dense, params)
                    run(name).rankings[query.id] = [c.record_id for c in fused]
                    run(name).latencies_ms.append(bm25_ms + dense_ms + (time.perf_counter() - t3) * 1000)
                for name, system in (extra_systems or {}).items():
                    t3 = time.perf_counter()
                    ranked = system(version, query.text, bm25, dense, vector)
                    run(name).rankings[query.id] = ranked
                    run(name).latencies_ms.append(bm25_ms + dense_ms + (time.perf_counter() - t3) * 1000)
            t5 = time.perf_counter()
            run("baseline:rank_bm25_jieba").rankings[query.id] = baseline.search(query.text)
            run("baseline:rank_bm25_jieba").latencies_ms.append((time.perf_counter() - t5) * 1000)
            if on_query:
                on_query()
        if version.milvus is not None and index_dir is None:  # the temporary index's collections go with it
            version.milvus.drop()
        build = {"backend": version.manifest.get("backend", "local"), "seconds": report.seconds, "records": report.records,
                 "chunks": report.chunks,
                 "dense_chunks": report.dense_chunks, "embedded": report.embedded, "from_cache": report.from_cache}
        return RetrievalEval(dataset, systems, build, len(records) - len(dataset.records))


def report_dict(result: RetrievalEval) -> dict[str, Any]:
    """The stable, machine-readable report: modes and baselines with the same metric keys."""
    data = result.dataset
    qrels = data.qrels
    out: dict[str, Any] = {
        "dataset": data.name,
        "documents": len(data.records),
        "distractor_documents": result.distractor_count,
        "queries": len(data.judged()),
        "skipped": data.skipped,
        "machine": machine(),
        "index": result.build,
        "modes": {},
        "baselines": {},
        "by_type": {},
        "recall_curves": {},
    }
    types = sorted({q.type for q in data.judged() if q.type})
    for name, system in result.systems.items():
        group, key = ("baselines", name.split(":", 1)[1]) if name.startswith("baseline:") else ("modes", name)
        judged = {q: qrels[q] for q in system.rankings}
        out[group][key] = summarise(system.rankings, judged, system.latencies_ms)
        out["recall_curves"][name.replace("baseline:", "baseline_")] = recall_curve(system.rankings, judged)
        for qtype in types:
            ids = [q.id for q in data.judged() if q.type == qtype and q.id in system.rankings]
            if ids:
                sub = {q: system.rankings[q] for q in ids}
                out["by_type"].setdefault(qtype, {})[name.replace("baseline:", "baseline_")] = summarise(sub, {q: qrels[q] for q in ids})
    return out
