"""The one entry point: ``Engine.ask(question, asker)`` → an answer with sources, or an escalation.

Pipeline: hybrid retrieval → ranking → calibrated confidence → answer (standard answer verbatim, or
extractive with citations) when confident, else a ticket routed to the best-placed craftsmen.
Craftsman answers, once published, become standard questions and are indexed incrementally.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.build import BuildOptions, BuildReport, build_index
from indexer.embedders import EmbeddingCache
from indexer.errors import Conflict, JiangxinError
from indexer.records import Craftsman, StandardQuestion, upsert_record
from indexer.version import IndexVersion, LiveIndex
from rag.answer import SQ_DIRECT, Answer, compose_answer
from rag.confidence import Calibrator, confidence_features, load_calibrator
from rag.db import QuestionRow, sessions
from rag.generate import Generator, GeneratorConfig
from rag.escalate import CraftsmanProfile, Ticket, TicketQueue, route
from rag.rank import Ranker, RankerWeights, Scored
from rag.retrieve import DEFAULT_FUSION, FusionParams, HybridRetriever, fuse

log = logging.getLogger(__name__)
MAX_QUESTION = 2000


class InvalidQuestion(JiangxinError):
    """The question is empty, too long or not text."""


def clean_question(question: str) -> str:
    if not isinstance(question, str):
        raise InvalidQuestion("the question must be text")
    question = question.replace("\x00", "").strip()
    if not question:
        raise InvalidQuestion("the question is empty")
    if len(question) > MAX_QUESTION:
        raise InvalidQuestion(f"the question has {len(question)} characters; at most {MAX_QUESTION} are allowed")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuestion("the question is not valid UTF-8 text") from None
    return question


@dataclass
class AskResult:
    """What ``ask`` returns: ``status`` is ``answered`` or ``escalated``."""

    status: str
    question: str
    confidence: float
    answer: Answer | None = None
    ticket: Ticket | None = None
    index_version: str = ""
    id: str = ""
    ranked: list[Scored] = field(default_factory=list, repr=False)
    version: IndexVersion | None = field(default=None, repr=False)  # the one ``ranked`` refers to

    def to_dict(self) -> dict[str, Any]:
        answer = self.answer.to_dict() if self.answer else None
        return {
            "id": self.id,
            "status": self.status,
            "question": self.question,
            "answer": answer["text"] if answer else None,
            "standard": bool(answer and answer["standard"]),
            "generated": bool(answer and answer["generated"]),
            "sources": answer["sources"] if answer else [],
            "related": {k: answer[k] for k in ("courses", "achievements", "craftsmen")} if answer else {},
            "confidence": round(self.confidence, 4),
            "ticket": self.ticket.to_dict() if self.ticket else None,
            "index_version": self.index_version,
        }


@dataclass(frozen=True)
class EngineConfig:
    corpus_dir: Path
    index_dir: Path
    threshold: float | None = None
    fusion: FusionParams = DEFAULT_FUSION
    generator: GeneratorConfig | None = None
    cross_encoder: str | None = None


class Engine:
    """Answers questions from the live index; escalates to the ticket queue when not confident."""

    def __init__(self, live: LiveIndex, queue: TicketQueue, config: EngineConfig, cache: EmbeddingCache | None = None,
                 ranker_weights: RankerWeights | None = None, calibrator: Calibrator | None = None) -> None:
        self.live = live
        self.queue = queue
        self.config = config
        self.cache = cache
        self.ranker_weights = ranker_weights or RankerWeights.load()
        self._calibrator = calibrator
        self._reranker = None
        self.build_lock = threading.Lock()
        self.session = sessions(queue.engine)

    @property
    def calibrator(self) -> Calibrator:
        if self._calibrator is None:
            self._calibrator = load_calibrator(self.config.index_dir, self.live.embedder.model_id)
        return self._calibrator

    @property
    def threshold(self) -> float:
        return self.config.threshold if self.config.threshold is not None else self.calibrator.threshold

    def rank(self, version: IndexVersion, question: str) -> list[Scored]:
        retriever = HybridRetriever(version, self.config.fusion)
        fused = fuse(retriever.bm25(question), retriever.dense(question), self.config.fusion)
        ranked = Ranker(version, self.ranker_weights).rank(question, fused)
        if self.config.cross_encoder:
            if self._reranker is None:
                from rag.cross_encoder import CrossEncoderReranker

                self._reranker = CrossEncoderReranker(self.config.cross_encoder)
            ranked = self._reranker.rerank(question, ranked, version)
        return ranked

    def assess(self, question: str) -> AskResult:
        """Retrieve, rank and decide, without recording anything (used by ``ask`` and the eval)."""
        question = clean_question(question)
        version = self.live.get()
        ranked = self.rank(version, question)
        if not ranked:
            return AskResult("escalated", question, 0.0, index_version=version.version, version=version)
        confidence = self.calibrator.confidence(confidence_features(ranked))
        top = ranked[0]
        direct = top.candidate.kind == "standard_question" and top.sq_sim >= SQ_DIRECT
        if direct or confidence >= self.threshold:
            answer = compose_answer(question, ranked, version)
            if self.config.generator and not answer.standard:
                answer = Generator(self.config.generator).rewrite(question, answer)
            return AskResult("answered", question, confidence, answer, index_version=version.version, ranked=ranked,
                             version=version)
        return AskResult("escalated", question, confidence, index_version=version.version, ranked=ranked, version=version)

    def ask(self, question: str, asker: str = "anonymous") -> AskResult:
        """Answer ``question`` or escalate it; either way the outcome is recorded durably first."""
        result = self.assess(question)
        if result.status == "escalated":
            result.ticket = self._escalate(result.version or self.live.get(), result, asker)
        result.id = "Q" + secrets.token_hex(6)
        with self.session.begin() as session:
            session.add(QuestionRow(id=result.id, asker=asker, question=result.question, status=result.status,
                                    confidence=result.confidence, result=result.to_dict(),
                                    ticket_id=result.ticket.id if result.ticket else None,
                                    index_version=result.index_version))
        return result

    def _escalate(self, version: IndexVersion, result: AskResult, asker: str = "anonymous") -> Ticket:
        ranked = [s for s in result.ranked if s.candidate.kind != "craftsman"]
        context = []
        for s in ranked[:5]:
            text = version.chunks[s.candidate.chunk_rows[0]].text if s.candidate.chunk_rows else ""
            context.append({"kind": s.candidate.kind, "id": s.candidate.record_id, "title": s.candidate.title, "snippet": text[:240]})
        weight: dict[str, float] = {}
        for rank, s in enumerate(ranked[:5], start=1):
            for t in getattr(version.records.get(s.candidate.record_id), "trades", []):
                weight[t] = weight.get(t, 0.0) + 1.0 / rank
        best = max(weight.values(), default=0.0)
        trades = [t for t, w in sorted(weight.items(), key=lambda kv: -kv[1]) if w >= 0.5 * best]
        vector = version.embedder.embed_queries([result.question])[0]
        profiles = []
        for record in version.records.values():
            if isinstance(record, Craftsman):
                v = version.head_vector(record.id)
                if v is not None:
                    profiles.append(CraftsmanProfile(record, v))
        routes = route(result.question, vector, trades[:3], profiles, self.queue.open_load())
        ticket, _ = self.queue.create(result.question, asker, result.confidence, context, trades[:3], routes)
        return ticket

    def publish(self, ticket_id: str) -> tuple[Ticket, BuildReport]:
        """Turn an answered ticket into a standard question (crediting the craftsman) and index it."""
        with self.build_lock:
            ticket = self.queue.get(ticket_id)
            if ticket.status != "answered":
                raise Conflict(f"ticket {ticket_id} is {ticket.status}; only an answered ticket can be published")
            version = self.live.get()
            craftsman = version.records.get(ticket.answered_by or "")
            record = StandardQuestion(
                id=f"sq-craft-{ticket.id.lower()}", question=ticket.question, answer=ticket.answer or "", aliases=[],
                trade=(ticket.trades or ["综合"])[0], keywords=[],
                extra={"source": "craftsman_answer", "ticket": ticket.id, "craftsman": ticket.answered_by,
                       "craftsman_name": craftsman.name if isinstance(craftsman, Craftsman) else ticket.answered_by},
            )
            upsert_record(self.config.corpus_dir, record)
            report = build_index(self.config.corpus_dir, self.config.index_dir, self.live.embedder, self.cache, BuildOptions())
            return self.queue.mark_published(ticket_id, record.id), report
