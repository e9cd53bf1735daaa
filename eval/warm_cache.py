"""Embed a data set's dense chunks into the shared embedding cache ahead of an eval run.

``python -m eval.warm_cache DIR...``: the same chunks the indexer makes, so the eval's index build then
embeds nothing. Useful before evaluating large corpora (csl takes tens of minutes on 2 cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

from api.settings import Settings
from eval.datasets import load_beir
from indexer.chunking import chunk
from indexer.embedders import EmbedCounts, EmbeddingCache, embed_passages_cached, load_embedder


def main(folders: list[str]) -> None:
    settings = Settings()
    embedder = load_embedder(settings.embedder_spec())
    cache = EmbeddingCache(settings.cache_path)
    for folder in folders:
        data = load_beir(Path(folder))
        texts = [c.text for r in data.records for c in chunk(r) if c.dense]
        counts = EmbedCounts()
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if done[0] % 200 < n:
                print(f"{folder}: {done[0]}/{len(texts)}", flush=True)

        embed_passages_cached(embedder, texts, cache, counts, progress=tick)
        print(f"{folder}: {counts.embedded} embedded, {counts.cached} cached", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
