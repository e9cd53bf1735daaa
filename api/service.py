"""Everything one server process holds: the engine, keys, question log, re-indexer and metrics."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from api.imports import ImportJobs
from api.jobs import PublishJobs
from api.settings import Settings
from api.security import KeyStore
from api.wiring import make_engine
from indexer.build import BuildOptions, build_index
from indexer.embedders import E5Small
from indexer.errors import Conflict, JiangxinError
from indexer.version import LiveIndex
from rag.background import Periodic
from rag.engine import Engine
from rag.invitations import Invitations, Sweeper, recommend
from rag.leases import RECOVER_EVERY, recover_each
from rag.programme import Programme, case_record_id
from rag.questions import QuestionLog
from rag.timeline import Timeline
from rag.webhooks import Deliverer, Webhooks

log = logging.getLogger(__name__)


class IndexCollector:
    """The live index's state as metrics, read at scrape time (a scrape never loads anything)."""

    def __init__(self, live: LiveIndex) -> None:
        self.live = live

    def collect(self):
        state = self.live.state()
        serving = GaugeMetricFamily("jiangxin_index_version_info", "Serving index version", labels=["version"])
        if state.serving:
            serving.add_metric([state.serving], 1)
        yield serving
        yield CounterMetricFamily("jiangxin_index_load_failures", "Index versions that failed to load (the old one kept serving)",
                                  value=state.failures_total)
        yield GaugeMetricFamily("jiangxin_index_loading", "1 while a new index version loads in the background",
                                value=int(state.loading is not None))
        yield GaugeMetricFamily("jiangxin_index_stale", "1 while an older version serves because the current one failed to load",
                                value=int(state.state == "stale_failed_load"))
        if state.failure is not None:
            yield GaugeMetricFamily("jiangxin_index_last_load_failure_timestamp_seconds", "When the last index load failed",
                                    value=state.failure.at)


class Metrics:
    def __init__(self, live: LiveIndex | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("jiangxin_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("jiangxin_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.outcomes = Counter("jiangxin_questions_total", "Questions by outcome", ["status"], registry=self.registry)
        self.feedback = Counter("jiangxin_feedback_total", "Askers' verdicts on automatic answers", ["helpful"], registry=self.registry)
        self.handovers = Counter("jiangxin_handovers_total", "Answered questions sent to a craftsman by the asker (转人工)",
                                 registry=self.registry)
        if live is not None:
            self.registry.register(IndexCollector(live))


@dataclass
class ReindexStatus:
    state: str = "idle"  # idle, running, done, failed
    full: bool = False
    stage: str = ""
    done: int = 0
    total: int = 0
    version: str | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    report: dict[str, Any] = field(default_factory=dict)


class Reindexer:
    """Runs one background re-index at a time and reports its progress."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.status = ReindexStatus()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, full: bool = False) -> ReindexStatus:
        with self._lock:
            if self.status.state == "running":
                raise Conflict("a re-index is already running")
            self.status = ReindexStatus("running", full, started_at=time.time())
            self._thread = threading.Thread(target=self._run, args=(full,), name="reindex", daemon=True)
            self._thread.start()
            return self.status

    def wait(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def stage(self, name: str, total: int) -> None:
        self.status.stage, self.status.total, self.status.done = name, total, 0

    def advance(self, n: int = 1) -> None:
        self.status.done += n

    def _run(self, full: bool) -> None:
        engine = self.engine
        try:
            with engine.build_lock:
                report = build_index(engine.config.corpus_dir, engine.config.index_dir, engine.live.embedder, engine.cache,
                                     BuildOptions(full=full, milvus=engine.config.milvus), self)
            engine.live.refresh(wait=True)  # serve the new version before reporting done (raises if it cannot load)
            self.status.version = report.version
            self.status.report = {"records": report.records, "chunks": report.chunks, "added": report.added,
                                  "changed": report.changed, "removed": report.removed, "embedded": report.embedded,
                                  "seconds": report.seconds}
            self.status.state = "done"
        except JiangxinError as exc:
            self.status.state, self.status.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a background job must report, not vanish
            log.exception("re-index failed")
            self.status.state, self.status.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.status.finished_at = time.time()


class Recoverer(Periodic):
    """Work abandoned by a process that died — its lease run out (``rag/leases.py``) — is recovered: publish and
    import jobs failed, tickets back to answered and visits back to confirmed, whatever they wrote withdrawn."""

    name = "recoverer"
    wait_first = True

    def __init__(self, engine: Engine, publish_jobs: PublishJobs, import_jobs: ImportJobs, programme: Programme,
                 interval: float = RECOVER_EVERY) -> None:
        super().__init__(interval)
        self.engine, self.publish_jobs, self.import_jobs, self.programme = engine, publish_jobs, import_jobs, programme

    def run_once(self) -> dict[str, list[str]]:
        """One pass; a part that fails is logged and the others still run (each item is retried at the next pass)."""
        done: dict[str, list[str]] = {}
        for name, recover in (("tickets", self.engine.recover), ("publish_jobs", self.publish_jobs.recover),
                              ("import_jobs", self.import_jobs.recover), ("visits", self._visits)):
            try:
                done[name] = recover()
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the server starting or the pass
                log.exception("recovering %s failed; the next pass tries again", name)
                done[name] = []
        return done

    def _visits(self) -> list[str]:
        return recover_each(self.programme.abandoned_cases(),
                            lambda v: self.engine.withdraw_record("service_case", case_record_id(v)),
                            self.programme.recover_case, "visit")


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        if isinstance(self.engine.live.embedder, E5Small) and settings.serve_embed_threads > 0:
            self.engine.live.embedder.threads_per_query = settings.serve_embed_threads
        self.keys = KeyStore(self.engine.queue.engine)
        self.questions = QuestionLog(self.engine.queue.engine, self.engine.queue)
        self.reindexer = Reindexer(self.engine)
        self.metrics = Metrics(self.engine.live)
        self.publish_jobs = PublishJobs(self.engine)
        self.import_jobs = ImportJobs(self.engine)
        self.programme = Programme(self.engine.queue.engine)
        self.recoverer = Recoverer(self.engine, self.publish_jobs, self.import_jobs, self.programme)
        self.recoverer.run_once()  # at start-up, then every RECOVER_EVERY: work another process left behind
        self.recoverer.start()
        self.timeline = Timeline(self.engine.queue.engine)
        self.webhooks = Webhooks(self.engine.queue.engine)
        self.deliverer = Deliverer(self.engine.queue.engine, attempts=settings.webhook_attempts,
                                   base_delay=settings.webhook_backoff, allow_private=settings.webhook_allow_private)
        self.deliverer.start()
        self.invitations = Invitations(self.engine.queue.engine, self.engine.queue,
                                       timedelta(seconds=settings.invitation_timeout))
        self.sweeper = Sweeper(self.engine.queue.engine, self.invitations, self._reroute,
                               timedelta(seconds=settings.ticket_sla), settings.sweep_interval)
        self.sweeper.start()

    def _reroute(self, ticket) -> list[tuple[str, str, float]]:
        """The craftsmen best placed for a ticket nobody claimed, best first: its trades' first, then the others."""
        version = self.engine.live.get()
        vector = version.embedder.embed_queries([ticket.question])[0]
        ranked = recommend(ticket, vector, version.directory.craftsmen(), self.engine.queue.open_load(), {})
        return [(r.id, r.name, r.score) for r in ranked]
