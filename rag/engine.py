"""The one entry point: ``Engine.ask(question, asker)`` → an answer, an escalation, or out of scope.

Pipeline: hybrid retrieval → ranking → calibrated confidence → three outcomes: answered (a standard
question's vetted answer verbatim, or an answer composed from the top record, leading with the fix) when
confident; else escalated to the best-placed craftsmen when the question is an industrial one (with related
material to read meanwhile); else out of scope — a polite reply and the maintainers' triage list, no ticket.
Craftsman answers, once published, become standard questions and are indexed incrementally.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from datetime import datetime, timedelta
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update

from indexer.build import BuildReport, apply_changes, withdraw_served
from indexer.embedders import EmbeddingCache
from indexer.errors import Conflict, JiangxinError, NotFound, WithdrawalPending
from indexer.milvus import MilvusSpec
from indexer.ports import NO_FILTERS, Filters
from indexer.records import Craftsman, Record, StandardQuestion, delete_record, upsert_record
from indexer.text import simplified
from indexer.version import IndexVersion, LiveIndex
from rag.answer import Answer, compose_answer, direct_match, snippet
from rag.confidence import Calibrator, confidence_features, load_calibrator
from rag.db import FeedbackRow, QuestionRow, SubjectFlagsRow, sessions, utcnow
from rag.timeline import record
from rag.generate import Generator, GeneratorConfig
from rag.leases import LEASE, Lease, recover_each
from rag.escalate import Route, Ticket, TicketQueue, candidates, route
from rag.rank import RankerWeights, Scored, rank_hybrid
from rag.scope import ScopeModel, load_scope_model, named_codes, scope_features
from rag.trades import TradeModel, load_trade_model
from rag.retrieve import DEFAULT_FUSION, FusionParams, HybridRetriever

log = logging.getLogger(__name__)
MAX_QUESTION = 2000
# A question's trades are voted by its top records (1/rank each). Fit parts' answerable questions, first routed
# craftsman in the gold trade: depth 5 0.942 (0.674 where the top record is wrong), 10 0.945 (0.733), 15 0.947
# (0.744), 20 0.947 (0.756): the records after the first few still name the right trade when the first ones miss.
ROUTING_DEPTH = 15
RELATED_NOTE = "以下资料与您的问题相关，仅供参考，并非确认的答案。"
NOT_SURE = "暂未找到足够可靠的答案"  # why an escalated question went to craftsmen: the usual reason …
NO_MATCH = "没有符合筛选条件的资料"  # … or the asker's filters left no record at all
OUT_OF_SCOPE_MESSAGE = ("这个问题似乎不属于本服务的范围。匠心解答工业生产中的技术问题（{trades}等），"
                        "如果这确实是生产中遇到的问题，请补充设备、工序或故障现象后再问。")


class InvalidQuestion(JiangxinError):
    """The question is empty, too long or not text."""


# Characters that show nothing, as a regex class (Python and the Rust regex of pydantic read it alike): C0/C1
# controls and Unicode format characters (Cf: zero-width spaces and joiners, BOM, word joiner, soft hyphen, bidi
# controls, tags). ``QuestionIn`` wants one character outside them and white space; ``clean_question`` drops them.
INVISIBLE = (r"\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
             r"\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
             r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f")
_HIDDEN = re.compile(rf"(?!\s)[{INVISIBLE}]")  # invisible and not white space (a newline stays a separator)


def clean_question(question: str) -> str:
    """The question without invisible characters, or ``InvalidQuestion`` saying why it cannot be asked.

    Format and control characters carry no meaning and split words for the tokenizer, so they are removed;
    what is left must show something. Traditional characters become simplified (``indexer.text.simplified``): the
    question is searched, deduplicated and shown to craftsmen in the script the corpus is written in.
    """
    if not isinstance(question, str):
        raise InvalidQuestion("the question must be text")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuestion("the question is not valid UTF-8 text") from None
    question = _HIDDEN.sub("", question).strip()
    if not question:
        raise InvalidQuestion("the question is empty: it has no visible characters, only spaces, zero-width or control ones")
    if len(question) > MAX_QUESTION:
        raise InvalidQuestion(f"the question has {len(question)} characters; at most {MAX_QUESTION} are allowed")
    return simplified(question)


@dataclass
class AskResult:
    """What ``ask`` returns: ``status`` is ``answered``, ``escalated`` or ``out_of_scope``."""

    status: str
    question: str
    confidence: float
    answer: Answer | None = None
    ticket: Ticket | None = None
    index_version: str = ""
    id: str = ""
    in_scope: float = 1.0
    message: str = ""
    related: dict[str, Any] = field(default_factory=dict)
    ranked: list[Scored] = field(default_factory=list, repr=False)
    version: IndexVersion | None = field(default=None, repr=False)  # the one ``ranked`` refers to
    vector: np.ndarray | None = field(default=None, repr=False)  # the question's embedding
    created_at: datetime | None = None  # when ``ask`` recorded it

    def to_dict(self) -> dict[str, Any]:
        answer = self.answer.to_dict() if self.answer else None
        related = {k: answer[k] for k in ("courses", "achievements", "craftsmen")} if answer else dict(self.related)
        return {
            "id": self.id,
            "status": self.status,
            "question": self.question,
            "message": self.message,
            "answer": answer["text"] if answer else None,
            "standard": bool(answer and answer["standard"]),
            "matched_question": answer["matched_question"] if answer else None,
            "generated": bool(answer and answer["generated"]),
            "sources": answer["sources"] if answer else [],
            "related": related,
            "confidence": round(self.confidence, 4),
            "in_scope": round(self.in_scope, 4),
            "ticket": self.ticket.to_dict() if self.ticket else None,
            "index_version": self.index_version,
        }


def related_material(version: IndexVersion, ranked: list[Scored], limit: int = 3) -> list[dict[str, Any]]:
    """The top records (not craftsmen) with a snippet each: what to read while a craftsman answers."""
    out = []
    records = version.records.get_many(s.candidate.record_id for s in ranked if s.candidate.kind != "craftsman")
    for s in ranked:
        record = records.get(s.candidate.record_id)
        if record is None or isinstance(record, Craftsman):
            continue
        out.append({"kind": record.kind, "id": record.id, "title": record.title, "snippet": snippet(record.sections()[0], 120)})
        if len(out) >= limit:
            break
    return out


def published_record_id(ticket_id: str) -> str:
    """The standard question a ticket's published answer becomes."""
    return f"sq-craft-{ticket_id.lower()}"


def published_trade(trades: list[str], covered: list[str]) -> str:
    """The trade a published answer is filed under: the ticket's first trade a craftsman covers (a trade model's label
    for an uncovered trade files the ticket, not the corpus, which keeps the craftsmen's trades), else its first."""
    return next((t for t in trades if t in covered), (trades or ["综合"])[0])


def craftsman_card(record: Craftsman) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "honours": list(record.honours),
            "skills": list(record.skills), "trades": list(record.trades), "region": record.region}


@dataclass(frozen=True)
class EngineConfig:
    corpus_dir: Path
    index_dir: Path
    threshold: float | None = None
    fusion: FusionParams = DEFAULT_FUSION
    generator: GeneratorConfig | None = None
    cross_encoder: str | None = None
    merge_after: int = 8  # delta segments at which a publish starts a background merge
    milvus: MilvusSpec | None = None  # where a full re-index puts its search rows (None: the local files)
    assess_concurrency: int = 0  # questions retrieved and ranked at once, the others wait their turn (0: one per core)


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
        self._scope: ScopeModel | None | bool = False  # False: not loaded yet
        self._trades: TradeModel | None | bool = False
        self._reranker = None
        self.build_lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._merging: threading.Thread | None = None
        self.session = sessions(queue.engine)
        # More questions assessed at once than there are cores only time-slice them: each takes longer, the slowest
        # (long questions) the most, for no more answered per second.
        self._assessing = threading.BoundedSemaphore(config.assess_concurrency or os.cpu_count() or 1)

    @property
    def calibrator(self) -> Calibrator:
        if self._calibrator is None:
            self._calibrator = load_calibrator(self.config.index_dir, self.live.embedder.model_id)
        return self._calibrator

    @property
    def scope(self) -> ScopeModel | None:
        if self._scope is False:
            self._scope = load_scope_model(self.config.index_dir, self.live.embedder.model_id)
        return self._scope  # type: ignore[return-value]

    @property
    def trade_model(self) -> TradeModel | None:
        """The trade model, or None. It only files tickets, so one that cannot be read is logged and done without
        rather than failing every escalation."""
        if self._trades is False:
            try:
                self._trades = load_trade_model(self.config.index_dir, self.live.embedder.model_id)
            except (OSError, ValueError, TypeError) as exc:
                log.error("trade model not loaded, tickets are filed under their voted trades only: %s", exc)
                self._trades = None
        return self._trades  # type: ignore[return-value]

    def uncovered_trade(self, version: IndexVersion, vector: np.ndarray) -> str | None:
        """The question's trade when no craftsman covers it and the trade model is sure of it (``rag.trades``)."""
        model = self.trade_model
        return model.uncovered_label(vector, version.directory.trades()) if model is not None else None

    def in_scope(self, version: IndexVersion, question: str, ranked: list[Scored], terms: list[str] | None = None,
                 vector: np.ndarray | None = None) -> float:
        """Probability that ``question`` is an industrial production question (1.0 without a scope model, and for
        a question naming a code its top records hold: ``rag.scope``)."""
        model = self.scope
        if model is None or self.names_known_code(version, question, ranked):
            return 1.0
        return model.probability(self.scope_input(version, question, ranked, terms, vector))

    @staticmethod
    def names_known_code(version: IndexVersion, question: str, ranked: list[Scored]) -> bool:
        """Whether ``question`` names a model number or alarm code (``named_codes``) one of its top five records holds."""
        codes = named_codes(question)
        if not codes or not ranked:  # most questions name none: no record text is read for them
            return False
        texts = version.records.texts([s.candidate.record_id for s in ranked[:5]])
        return any(code in t.full for t in texts.values() for code in codes)

    @staticmethod
    def scope_input(version: IndexVersion, question: str, ranked: list[Scored], terms: list[str] | None = None,
                    vector: np.ndarray | None = None) -> np.ndarray:
        """The scope model's input for ``question``: its embedding, the best dense cosine of its ranked records and
        the share of its terms the corpus knows (what the engine decides on and what ``jiangxin fit`` fits on)."""
        vector = version.embedder.embed_queries([question])[0] if vector is None else vector
        dense_top = max((s.candidate.dense_score for s in ranked), default=0.0)
        terms = version.tokenizer.tokenize(question) if terms is None else terms
        known = sum(1 for t in terms if version.terms.idf(t) > 0) / len(terms) if terms else 0.0
        return scope_features(vector, dense_top, known)

    @property
    def threshold(self) -> float:
        return self.config.threshold if self.config.threshold is not None else self.calibrator.threshold

    def rank(self, version: IndexVersion, question: str, terms: list[str] | None = None,
             vector: np.ndarray | None = None, filters: Filters = NO_FILTERS) -> list[Scored]:
        """Hybrid retrieval, fusion and ranking (within ``filters``); ``terms`` and ``vector`` are the question's
        tokens and embedding when already computed."""
        terms = version.tokenizer.tokenize(question) if terms is None else terms
        vector = version.embedder.embed_queries([question])[0] if vector is None else vector
        retriever = HybridRetriever(version, self.config.fusion)
        ranked = rank_hybrid(version, question, retriever.bm25(question, terms=terms, filters=filters),
                             retriever.dense(question, vector=vector, filters=filters), vector, self.ranker_weights,
                             self.config.fusion, terms)
        if self.config.cross_encoder:
            if self._reranker is None:
                from rag.cross_encoder import CrossEncoderReranker

                self._reranker = CrossEncoderReranker(self.config.cross_encoder)
            ranked = self._reranker.rerank(question, ranked, version)
        return ranked

    def assess(self, question: str, filters: Filters = NO_FILTERS) -> AskResult:
        """Retrieve, rank and decide, without recording anything (used by ``ask`` and the eval); ``filters`` restrict
        the records an answer may come from."""
        question = clean_question(question)
        version = self.live.get()
        terms = version.tokenizer.tokenize(question)  # once: BM25, ranker and scope share the terms,
        vector = version.embedder.embed_queries([question])[0]  # dense retrieval, scope and routing the embedding
        ranked = self.rank(version, question, terms, vector, filters)
        # Whether a question is in scope belongs to the question, not to the filters it is asked with: filters that
        # leave few records or none would otherwise decline a shop-floor question. A filtered ask ranks twice.
        unfiltered = ranked if filters.empty else self.rank(version, question, terms, vector)
        in_scope = self.in_scope(version, question, unfiltered, terms, vector)
        if not ranked:
            return self._not_answered(version, question, 0.0, ranked, in_scope, vector, no_match=not filters.empty)
        confidence = self.calibrator.confidence(confidence_features(ranked, in_scope))
        top = ranked[0]
        if direct_match(top) or confidence >= self.threshold:
            answer = compose_answer(question, ranked, version, terms=terms)
            if self.config.generator and not answer.standard:
                answer = Generator(self.config.generator).rewrite(question, answer)
            return AskResult("answered", question, confidence, answer, index_version=version.version, in_scope=in_scope,
                             ranked=ranked, version=version, vector=vector)
        return self._not_answered(version, question, confidence, ranked, in_scope, vector)

    def _not_answered(self, version: IndexVersion, question: str, confidence: float, ranked: list[Scored],
                      in_scope: float, vector: np.ndarray | None = None, no_match: bool = False) -> AskResult:
        """Escalate an in-scope question (with related material to read meanwhile); decline one out of scope.
        ``no_match``: the asker's filters left no record (said in the message)."""
        if self.scope is not None and in_scope < self.scope.threshold:
            trades = version.directory.trades()
            return AskResult("out_of_scope", question, confidence, index_version=version.version, in_scope=in_scope,
                             message=OUT_OF_SCOPE_MESSAGE.format(trades="、".join(trades[:6]) or "机加工、焊接、设备维护"),
                             ranked=ranked, version=version, vector=vector)
        related = {"note": RELATED_NOTE, "records": related_material(version, ranked), "craftsmen": []}
        return AskResult("escalated", question, confidence, index_version=version.version, in_scope=in_scope,
                         message=f"{NO_MATCH if no_match else NOT_SURE}，已转交劳模工匠解答。", related=related, ranked=ranked, version=version,
                         vector=vector)

    def ask(self, question: str, asker: str = "anonymous", filters: Filters = NO_FILTERS, confidential: bool = False,
            reveal: bool = False) -> AskResult:
        """Answer ``question`` or escalate it; either way the outcome is recorded durably first. A confidential
        question's ticket is never published and never offered in the open pool of a trade."""
        with self._assessing:  # first come, first served beyond the cores (Condition wakes waiters in order)
            result = self.assess(question, filters)
        result.id = "Q" + secrets.token_hex(6)
        result.created_at = utcnow()
        with self.queue.transaction() as session:  # the ticket joins it: question and ticket commit together or not at all
            if confidential or reveal:
                session.add(SubjectFlagsRow(subject=f"question:{result.id}", confidential=confidential, reveal=reveal))
            if result.status == "escalated":
                result.ticket = self._escalate(result.version or self.live.get(), result, asker, confidential, reveal)
            session.execute(insert(QuestionRow).values(  # one statement: every ask writes one (the ORM costs more)
                id=result.id, asker=asker, question=result.question, status=result.status, confidence=result.confidence,
                result=result.to_dict(), ticket_id=result.ticket.id if result.ticket else None,
                index_version=result.index_version, created_at=result.created_at))
            record(session, f"question:{result.id}", asker, "created", asker,
                   {"status": result.status, "ticket": result.ticket.id if result.ticket else None})
        return result

    def _escalate(self, version: IndexVersion, result: AskResult, asker: str = "anonymous", confidential: bool = False,
                  reveal: bool = False) -> Ticket:
        ranked = [s for s in result.ranked if s.candidate.kind != "craftsman"]
        context = []
        rows = version.chunks.get_many(s.candidate.chunk_ids[0] for s in ranked[:5] if s.candidate.chunk_ids)
        for s in ranked[:5]:
            row = rows.get(s.candidate.chunk_ids[0]) if s.candidate.chunk_ids else None
            text = row.text if row else ""
            context.append({"kind": s.candidate.kind, "id": s.candidate.record_id, "title": s.candidate.title, "snippet": text[:240]})
        trades, routes = self.routing(version, result.question, result.ranked, result.vector)
        ticket, _ = self.queue.create(result.question, asker, result.confidence, context, trades, routes,
                                      confidential=confidential, reveal=reveal)
        routed = version.records.get_many(r.craftsman_id for r in ticket.routes)
        cards = [craftsman_card(r) for r in (routed.get(x.craftsman_id) for x in ticket.routes) if isinstance(r, Craftsman)]
        result.related = {**result.related, "craftsmen": cards}
        if cards:
            result.message = result.message.replace("已转交劳模工匠", f"已转交{'、'.join(c['name'] for c in cards)}等劳模工匠")
        return ticket

    def hand_over(self, question_id: str, asker: str | None = None) -> tuple[str, bool]:
        """转人工: send an automatically answered question to the craftsmen, the ticket carrying the answer given and
        what the asker said of it (their unhelpful-feedback comments: "不对，我这是锥度" is what the craftsman needs).

        Only answered questions (a declined, out-of-scope one is not a craftsman's job: Conflict). Idempotent, also
        under a double click: a question already handed over keeps its ticket; returns (ticket id, created). Only
        the asker (or a maintainer, with ``asker=None``) may do it; another asker's question is NotFound, so
        existence does not leak."""
        with self.session() as session:
            row = session.get(QuestionRow, question_id)
            if row is None or (asker is not None and row.asker != asker):
                raise NotFound(f"question {question_id} does not exist")
            if row.ticket_id:
                return row.ticket_id, False
            if row.status != "answered":
                raise Conflict(f"question {question_id} is {row.status}; only an answered question can be handed to a craftsman")
            question, owner, given, confidence = row.question, row.asker, dict(row.result or {}), row.confidence
            flags = session.get(SubjectFlagsRow, f"question:{question_id}")  # the ticket inherits confidential / reveal
            confidential, reveal = (flags.confidential, flags.reveal) if flags else (False, False)
            said = session.scalars(select(FeedbackRow.comment).where(FeedbackRow.question_id == question_id,
                                                                     FeedbackRow.helpful.is_(False), FeedbackRow.comment != "")
                                   .order_by(FeedbackRow.id)).all()
        version = self.live.get()
        vector = version.embedder.embed_queries([question])[0]
        ranked = self.rank(version, question, vector=vector)
        context = [{"kind": "given_answer", "id": question_id, "title": "已给出的自动答案（提问者要求转人工）",
                    "snippet": (given.get("answer") or "")[:600]}]
        if said:
            context.append({"kind": "asker_feedback", "id": question_id, "title": "提问者对自动答案的意见",
                            "snippet": "；".join(said)[:600]})
        context += [{"kind": r["kind"], "id": r["id"], "title": r["title"], "snippet": r["snippet"]}
                    for r in related_material(version, ranked, 4)]
        trades, routes = self.routing(version, question, ranked, vector)
        with self.queue.transaction() as session:
            ticket, created = self.queue.create(question, owner, confidence, context, trades, routes,
                                                confidential=confidential, reveal=reveal)
            cards = [craftsman_card(r) for r in (version.records.get(x.craftsman_id) for x in ticket.routes) if isinstance(r, Craftsman)]
            names = "、".join(c["name"] for c in cards) or "劳模工匠"
            given.update(status="escalated", ticket=ticket.to_dict(), handed_over=True,
                         message=f"已按您的要求转人工，由{names}等劳模工匠解答；此前的自动答案保留在下方供参考。",
                         related={**(given.get("related") or {}), "craftsmen": cards})
            changed = session.execute(update(QuestionRow).where(QuestionRow.id == question_id, QuestionRow.ticket_id.is_(None))
                                      .values(status="escalated", ticket_id=ticket.id, result=given)).rowcount
        if changed != 1:  # a concurrent hand-over won (its ticket is this one, by the queue's dedupe)
            with self.session() as session:
                return session.get(QuestionRow, question_id).ticket_id, False
        return ticket.id, created

    def routing(self, version: IndexVersion, question: str, ranked: list[Scored],
                vector: np.ndarray | None = None) -> tuple[list[str], list[Route]]:
        """The question's trades (voted by the top records; first, a trade no craftsman covers when the trade model
        labels the question with it) and the craftsmen best placed to answer it (chosen by the voted trades alone)."""
        weight: dict[str, float] = {}
        top = [s for s in ranked if s.candidate.kind != "craftsman"][:ROUTING_DEPTH]
        records = version.records.get_many(s.candidate.record_id for s in top)
        for rank, s in enumerate(top, start=1):
            for t in getattr(records.get(s.candidate.record_id), "trades", []):
                weight[t] = weight.get(t, 0.0) + 1.0 / rank
        best = max(weight.values(), default=0.0)
        trades = [t for t, w in sorted(weight.items(), key=lambda kv: -kv[1]) if w >= 0.5 * best][:3]
        vector = version.embedder.embed_queries([question])[0] if vector is None else vector
        pool = candidates(trades, version.directory.craftsmen())  # only the load of those a route may name is read
        routes = route(question, vector, trades, pool, self.queue.open_load([p.record.id for p in pool]))
        label = self.uncovered_trade(version, vector)
        if label:  # filed under its own trade first; the voted ones found the craftsmen and keep the open pool
            trades = [label, *(t for t in trades if t != label)]
        return trades, routes

    def reject(self, ticket_id: str, reason: str) -> Ticket:
        """Close a ticket instead of publishing it (refused while publishing); whatever a failed or killed publish
        of it left in the corpus or the index is withdrawn, so a rejected answer never goes live."""
        ticket = self.queue.close(ticket_id, reason)
        self._withdraw(ticket_id)
        return ticket

    def recover(self, stale_after: timedelta = LEASE) -> list[str]:
        """Publishes abandoned by a process that died (publishing, their lease run out: ``rag/leases.py``) go back to
        answered, the records they wrote withdrawn first — while the ticket is still publishing, so no new publish of
        it can go live in between and be withdrawn. One that cannot be withdrawn now (the index busy) stays publishing
        for the next pass."""
        return recover_each(self.queue.abandoned_publishes(stale_after),
                            lambda t: self.withdraw_record("standard_question", published_record_id(t)),
                            lambda t: self.queue.recover_publish(t, stale_after), "ticket")

    def _withdraw(self, ticket_id: str) -> None:
        """A rejected ticket's record, if a failed or killed publish left one (checked against what is served now)."""
        record_id = published_record_id(ticket_id)
        with self.build_lock:
            removed = delete_record(self.config.corpus_dir, "standard_question", record_id)
            try:
                served = record_id in self.live.get().records
            except JiangxinError:
                served = False
            if removed or served:
                self._withdraw_locked("standard_question", record_id)

    def withdraw_record(self, kind: str, record_id: str) -> None:
        """Remove a record abandoned work wrote from the corpus, then from the index deciding under its writer lock,
        so a build in another process that read the corpus meanwhile loses it too (``IndexBusy`` while that build
        runs longer than ``DELTA_WAIT``: recovery tries again)."""
        with self.build_lock:
            self._withdraw_locked(kind, record_id)

    def _withdraw_locked(self, kind: str, record_id: str) -> None:
        """``withdraw_record`` for a caller that holds ``build_lock``."""
        delete_record(self.config.corpus_dir, kind, record_id)
        if withdraw_served(self.config.index_dir, self.live.embedder, self.cache, [record_id]):
            self.live.refresh(wait=True)

    def _undo_publish(self, kind: str, record_id: str, failure: BaseException, pending: str) -> None:
        """After a publish failed once its record was written (caller holds ``build_lock``): withdraw it, or
        ``WithdrawalPending`` (saying ``pending``) when the index stays busy — the caller's work stays in flight."""
        try:
            self._withdraw_locked(kind, record_id)
        except Exception:
            log.exception("%s could not be withdrawn after a failed publish; recovery withdraws it once the index is free",
                          record_id)
            raise WithdrawalPending(pending) from failure

    def publish(self, ticket_id: str, question: str | None = None, answer: str | None = None,
                answer_seen: tuple[str | None, str | None] | None = None) -> tuple[Ticket, BuildReport]:
        """Turn an answered ticket into a standard question (crediting the craftsman) and index it as a delta segment
        (the record alone is analysed and embedded), served before this returns. ``question`` and ``answer`` are the
        maintainer's edited, de-identified texts, published instead of the raw ones when given; a confidential
        ticket is never published. With ``answer_seen`` (answered by, answer: what the publish was requested for),
        Conflict if the ticket has another answer by now."""
        with self.build_lock:
            if self.queue.get(ticket_id).confidential:
                raise Conflict(f"ticket {ticket_id} is confidential: it is never published")
            ticket = self.queue.start_publish(ticket_id, answer_seen)  # answered → publishing: a reject is refused
            lease = Lease(self.queue.engine, f"ticket:{ticket_id}")  # renewed while this runs: recovery leaves it be
            written = False
            try:
                lease.take()
                version = self.live.get()
                craftsman = version.records.get(ticket.answered_by or "")
                record = StandardQuestion(
                    id=published_record_id(ticket.id), question=(question or ticket.question).strip(),
                    answer=(answer or ticket.answer or "").strip(), aliases=[],
                    trade=published_trade(ticket.trades, version.directory.trades()), keywords=[],
                    extra={"source": "craftsman_answer", "ticket": ticket.id, "craftsman": ticket.answered_by,
                           "craftsman_name": craftsman.name if isinstance(craftsman, Craftsman) else ticket.answered_by},
                )
                upsert_record(self.config.corpus_dir, record)
                written = True
                report = apply_changes(self.config.index_dir, self.live.embedder, self.cache, upserts=[record])  # a delta
                self.live.refresh(wait=True)  # served before this returns: the next asker gets the answer
                published = self.queue.mark_published(ticket_id, record.id)
            except BaseException as failure:
                if written:  # an answer that did not go live must not go live with the next re-index either,
                    self._undo_publish(  # nor with a build that read it meanwhile
                        "standard_question", record.id, failure, f"publishing ticket {ticket_id} failed and the index is "
                        f"busy: its answer is withdrawn once the index is free and the ticket is answered again")
                try:
                    self.queue.abort_publish(ticket_id)  # publishing → answered
                except Exception:
                    log.exception("ticket %s stays publishing: recovery gives it back", ticket_id)
                raise
            finally:
                lease.release()
        self._merge_when_fragmented()
        return published, report

    def publish_record(self, record: Record) -> BuildReport:
        """Write one record into the corpus and index it as a delta, served before this returns (a service case);
        on failure nothing of it stays in the corpus or the index (withdrawn under the index's writer lock), or
        ``WithdrawalPending`` when that must wait for the index: the caller leaves its work to recovery."""
        with self.build_lock:
            written = False
            try:
                upsert_record(self.config.corpus_dir, record)
                written = True
                report = apply_changes(self.config.index_dir, self.live.embedder, self.cache, upserts=[record])
                self.live.refresh(wait=True)
            except BaseException as failure:
                if written:
                    self._undo_publish(record.kind, record.id, failure, f"publishing {record.id} failed and the index is "
                                       f"busy: it is withdrawn once the index is free; try again then")
                raise
        self._merge_when_fragmented()
        return report

    def _merge_when_fragmented(self) -> None:
        """Start a background merge (one per process) once the serving version has ``merge_after`` deltas; the merge
        folds them into one segment without the index lock and switches in a moment (indexer/merge.py)."""
        try:
            deltas = len(self.live.get().manifest["segments"]) - 1
        except JiangxinError:
            return
        if deltas < self.config.merge_after:
            return
        with self._merge_lock:
            if self._merging is not None and self._merging.is_alive():
                return
            self._merging = threading.Thread(target=self._merge, name="index-merge", daemon=True)
            self._merging.start()

    def _merge(self) -> None:
        from indexer.merge import merge

        try:
            report = merge(self.config.index_dir, self.live.embedder)
            if report is not None:
                log.info("merged the index into version %s in %.1fs", report.version, report.seconds["total"])
                self.live.refresh()
        except JiangxinError as exc:
            log.warning("background merge failed (the deltas keep serving): %s", exc)
        except Exception:  # noqa: BLE001 - a background job must report, not vanish
            log.exception("background merge failed (the deltas keep serving)")

    def wait_for_merge(self, timeout: float | None = None) -> None:
        """Wait for a running background merge (tests, shutdown)."""
        thread = self._merging
        if thread is not None:
            thread.join(timeout)
