"""Choose the fusion by measurement: collect each query's BM25 and dense lists once, then score a grid
of fusion settings offline. ``python -m eval.tune DIR... [--out eval/reports/fusion.json]``"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np

from api.settings import Settings
from eval.datasets import load_beir
from eval.metrics import mrr_at, ndcg_at, recall_at
from indexer.build import BuildOptions, build_index
from indexer.embedders import EmbeddingCache, load_embedder
from indexer.records import CorpusLoad
from indexer.version import IndexVersion
from rag.retrieve import FusionParams, HybridRetriever, fuse


def collect(folder: Path, settings: Settings, max_queries: int | None) -> dict:
    dataset = load_beir(folder, max_queries)
    embedder = load_embedder(settings.embedder_spec())
    with tempfile.TemporaryDirectory() as tmp:
        report = build_index(settings.corpus_dir, Path(tmp) / "i", embedder, EmbeddingCache(settings.cache_path),
                             BuildOptions(full=True), load=CorpusLoad(dataset.records))
        retriever = HybridRetriever(IndexVersion(report.path, embedder))
        lists = {q.id: (retriever.bm25(q.text), retriever.dense(q.text)) for q in dataset.judged()}
    return {"qrels": dataset.qrels, "lists": lists}


def score(data: dict, params: FusionParams) -> dict[str, float]:
    m, n, r = [], [], []
    for qid, (bm25, dense) in data["lists"].items():
        ranking = [c.record_id for c in fuse(bm25, dense, params)]
        qrels = data["qrels"][qid]
        m.append(mrr_at(ranking, qrels))
        n.append(ndcg_at(ranking, qrels))
        r.append(recall_at(ranking, qrels, 10))
    return {"mrr@10": float(np.mean(m)), "ndcg@10": float(np.mean(n)), "recall@10": float(np.mean(r))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("eval/reports/fusion.json"))
    args = parser.parse_args()
    settings = Settings()
    data = {}
    for folder in args.folders:
        cache = Path(tempfile.gettempdir()) / f"jx-tune-{folder.name}.pkl"
        if cache.exists():
            data[folder.name] = pickle.loads(cache.read_bytes())
        else:
            data[folder.name] = collect(folder, settings, args.max_queries)
            cache.write_bytes(pickle.dumps(data[folder.name]))
    grid = [FusionParams(k=k, w_bm25=1.0, w_dense=w) for k, w in itertools.product((1, 3, 5, 10, 20, 30, 60), (0.3, 0.5, 0.7, 0.85, 1.0, 1.2))]
    rows = []
    for params in grid:
        row = {"k": params.k, "w_dense": params.w_dense}
        for name, d in data.items():
            row[name] = score(d, params)
        rows.append(row)
    for row in sorted(rows, key=lambda r: -sum(r[n]["ndcg@10"] for n in data))[:10]:
        print(row["k"], row["w_dense"], " ".join(f"{n}: mrr {row[n]['mrr@10']:.3f} ndcg {row[n]['ndcg@10']:.3f}" for n in data))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
