"""Batch indexing on Ray Data: analysis and embedding in parallel tasks, the global statistics reduced in the driver.

``jiangxin index --engine ray [--address auto]`` runs the same full build as the local engine with two stages moved
onto a Ray cluster (local mode on one machine, ``ray.init(address=...)`` against a cluster):

- **analyse**: the corpus as a Ray dataset of records (JSON), ``map_batches`` into ``AnalysedBatch`` arrays by actors
  that each hold the tokenizer (built once per actor from the version's dictionary);
- **embed**: the texts the cache lacks, ``map_batches`` through actors that each load the configured embedder;
  the driver takes cached vectors first and stores new ones, so the cache is honoured as in a local build.

The reduce step — one global vocabulary, document frequencies and lengths over every batch — is the build's
accumulator in the driver (its input is arrays, not strings, so it is cheap); the segment, the version and the
Milvus rows are then written exactly as by a local build, so both engines produce the same index (tested).
Cluster nodes need Jiangxin installed in the same environment (the workers import ``indexer``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.analysis import AnalysedBatch, analyse_batch
from indexer.embedders import EmbedderSpec, load_embedder
from indexer.records import KINDS, Record, record_to_json
from indexer.text import Tokenizer

log = logging.getLogger(__name__)
ANALYSE_BATCH = 500  # records per analysis task
EMBED_BATCH = 64  # texts per embedding task
EMBED_ROUND = 4096  # texts per Ray job (what the cache stores at once: an interrupted build loses at most this many)


@dataclass(frozen=True)
class RaySpec:
    """Where and how wide to run: ``address`` None starts Ray locally (``auto`` joins a running cluster);
    ``workers`` actors per stage (0: one per CPU Ray reports)."""

    embedder: EmbedderSpec = EmbedderSpec()
    address: str | None = None
    workers: int = 0


def start(spec: RaySpec):
    """Ray, initialised once per process (local mode with ``workers`` CPUs when no address is given)."""
    import ray

    if not ray.is_initialized():
        kwargs = {"address": spec.address} if spec.address else {"num_cpus": spec.workers or os.cpu_count() or 1}
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, logging_level=logging.WARNING,
                 **kwargs)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray.data.DataContext.get_current().execution_options.preserve_order = True
    return ray


def _width(ray, spec: RaySpec) -> int:
    return spec.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))


class _Analyse:
    """A Ray actor: records (JSON) → one ``AnalysedBatch`` per batch, with its own tokenizer."""

    def __init__(self, words: list[str], stopwords: list[str]) -> None:
        self.tokenizer = Tokenizer(words, set(stopwords))

    def __call__(self, batch: dict) -> dict:
        records = [KINDS[kind].model_validate(json.loads(data)) for kind, data in zip(batch["kind"], batch["json"])]
        out = np.empty(1, dtype=object)
        out[0] = analyse_batch(records, self.tokenizer)
        return {"analysed": out}


class _Embed:
    """A Ray actor: passage texts → unit vectors, with its own embedder."""

    def __init__(self, embedder: EmbedderSpec) -> None:
        self.embedder = load_embedder(embedder)

    def __call__(self, batch: dict) -> dict:
        vectors = self.embedder.embed_passages(list(batch["text"]))
        return {"vector": np.asarray(vectors, dtype=np.float32)}


def analyse_on_ray(records: Sequence[Record], tokenizer: Tokenizer, spec: RaySpec) -> Iterator[AnalysedBatch]:
    """Analysed batches of ``records`` (in corpus order), computed by Ray actors."""
    ray = start(spec)
    rows = [{"kind": r.kind, "json": json.dumps(record_to_json(r), ensure_ascii=False)} for r in records]
    if not rows:
        return
    width = _width(ray, spec)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // ANALYSE_BATCH + 1, 4 * width)))
    analysed = dataset.map_batches(_Analyse, fn_constructor_args=(tokenizer.words, sorted(tokenizer.stopwords)),
                                   batch_size=ANALYSE_BATCH, concurrency=width, batch_format="numpy")
    for batch in analysed.iter_batches(batch_size=None, batch_format="numpy"):
        yield from batch["analysed"]


class RayEmbedder:
    """The configured embedder's ``embed_passages`` run as Ray tasks (queries stay with the local embedder)."""

    def __init__(self, local, spec: RaySpec) -> None:
        self.local, self.spec = local, spec
        self.model_id, self.dim = local.model_id, local.dim

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ray = start(self.spec)
        width = _width(ray, self.spec)
        dataset = ray.data.from_items([{"text": t} for t in texts],
                                      override_num_blocks=max(1, min(len(texts) // EMBED_BATCH + 1, 4 * width)))
        vectors = dataset.map_batches(_Embed, fn_constructor_args=(self.spec.embedder,), batch_size=EMBED_BATCH,
                                      concurrency=width, batch_format="numpy")
        out = [batch["vector"] for batch in vectors.iter_batches(batch_size=None, batch_format="numpy")]
        return np.concatenate(out).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.local.embed_queries(texts)
