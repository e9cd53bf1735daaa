"""Builds the engine and its parts from ``Settings`` (shared by the CLI and the HTTP server)."""

from __future__ import annotations

from api.settings import Settings
from indexer.embedders import EmbeddingCache, load_embedder
from indexer.version import LiveIndex
from rag.db import connect
from rag.engine import Engine, EngineConfig
from rag.escalate import TicketQueue
from rag.generate import GeneratorConfig


def make_engine(settings: Settings) -> Engine:
    embedder = load_embedder(settings.embedder_spec())
    live = LiveIndex(settings.index_dir, embedder)
    queue = TicketQueue(connect(settings.database_url), quota_per_day=settings.escalation_quota_per_day or None)
    generator = (GeneratorConfig(settings.generator_url, settings.generator_model, settings.generator_key, settings.generator_timeout)
                 if settings.generator_url else None)
    config = EngineConfig(settings.corpus_dir, settings.index_dir, settings.answer_threshold, generator=generator,
                          cross_encoder=settings.cross_encoder, milvus=settings.milvus_spec(),
                          assess_concurrency=settings.assess_concurrency)
    return Engine(live, queue, config, EmbeddingCache(settings.cache_path))
