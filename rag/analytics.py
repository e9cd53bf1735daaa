"""Figures for the maintainers' dashboard (运营看板): demand and answers per trade and week, knowledge gaps (clusters of
similar escalated questions), capacity per trade, feedback on answers, and what each craftsman contributed.

Read-only, over the database and the live index. Each report's queries run in one read transaction (one snapshot)
and aggregate in SQL, so their cost follows the rows in the report's window, not the whole history.

A question or ticket counts in one trade, its primary one: the first of its ticket's trades (routing orders them, most
likely first), else the first trade of the record its automatic answer cites first, else 未分类 (unclassified). So
per-trade figures add up to the totals.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, case, exists, func, literal, select, true

from indexer.embedders import Embedder, EmbeddingCache, text_hash
from indexer.version import LiveIndex
from rag.db import ApplicationRow, FeedbackRow, QuestionRow, SubjectFlagsRow, TicketRow, VisitRow, utcnow

log = logging.getLogger(__name__)

UNCLASSIFIED = "未分类"
GAP_SIMILARITY = 0.93
MAX_GAP_TICKETS = 2000  # the newest tickets of a gaps window that are clustered (the similarity matrix is n²)
OPEN_VISITS = ("requested", "scheduled")
VISIT_STAGES = ("reported", "confirmed", "publishing", "published")  # in order; a visit passed every stage before its own


class TradeWeek(BaseModel):
    """One trade in one ISO week."""

    trade: str
    week: str = Field(description="ISO week, e.g. 2025-W07")
    week_start: date = Field(description="The Monday the week starts on")
    questions: int = Field(description="Questions asked")
    answered_automatically: int = Field(description="Of those, answered by the engine (not handed to a craftsman)")
    out_of_scope: int = Field(description="Of those, declined as not an industrial question")
    escalated: int = Field(description="Tickets created (escalations and hand-overs; one ticket may serve repeated askings)")
    answered_by_craftsmen: int = Field(description="Of those tickets, answered by a craftsman so far")
    answer_rate: float | None = Field(description="(answered_automatically + answered_by_craftsmen) / (answered_automatically "
                                                  "+ escalated): the share of the week's in-scope demand that got an answer; "
                                                  "null without any")


class TradesReport(BaseModel):
    weeks: int
    since: date = Field(description="Monday of the first week counted (UTC)")
    trade_weeks: list[TradeWeek] = Field(description="Weeks with any activity, oldest first, then by trade")


class GapCluster(BaseModel):
    """Escalated questions that ask the same thing: a knowledge gap (知识缺口) to fill with a standard question."""

    size: int = Field(description="Tickets in the cluster")
    trades: list[str] = Field(description="Their primary trades, most frequent first")
    representative: str = Field(description="The question most others are similar to")
    examples: list[str] = Field(description="Up to 5 other questions of the cluster, newest first")
    published: int = Field(description="Tickets of the cluster whose answer is already published")


class GapsReport(BaseModel):
    days: int
    similarity: float = Field(description="Cosine similarity to the representative at which a question joins its cluster")
    tickets: int = Field(description="Tickets clustered (confidential ones are never included)")
    clusters: list[GapCluster] = Field(description="Largest first")


class TradeCapacity(BaseModel):
    trade: str
    open_tickets: int = Field(description="Tickets waiting for a craftsman to claim them")
    claimed_tickets: int = Field(description="Tickets claimed, not yet answered")
    open_visits: int = Field(description="On-site visits requested or scheduled")
    craftsmen: int = Field(description="Craftsmen in the live index covering the trade")
    demand_per_craftsman: float | None = Field(description="(open + claimed tickets + open visits) / craftsmen; null without craftsmen")
    no_expert: bool = Field(description="There is demand and no craftsman covers the trade")


class CapacityReport(BaseModel):
    trades: list[TradeCapacity] = Field(description="Trades without an expert first, then by demand per craftsman")


class TradeFeedback(BaseModel):
    trade: str
    helpful: int
    unhelpful: int
    unhelpful_rate: float = Field(description="unhelpful / (helpful + unhelpful)")


class FeedbackReport(BaseModel):
    days: int
    helpful: int = Field(description="All helpful verdicts in the window")
    unhelpful: int = Field(description="All unhelpful verdicts in the window")
    trades: list[TradeFeedback] = Field(description="Most unhelpful first")


class CraftsmanContribution(BaseModel):
    """What one craftsman has done, all time (for incentive schemes, 激励)."""

    craftsman: str = Field(description="The craftsman's record id")
    name: str = Field(description="From the live index; empty for a craftsman no longer in it")
    trades: list[str]
    tickets_answered: int
    answers_published: int
    helpful_votes: int = Field(description="Helpful verdicts on automatic answers citing first a record published from their answers")
    unhelpful_votes: int
    visits_reported: int = Field(description="Visits they reported (whatever happened after)")
    visits_confirmed: int = Field(description="Of those, confirmed by the enterprise")
    visits_published: int = Field(description="Of those, published as a service case")
    challenges_picked: int = Field(description="Challenges where the application picked was theirs or named them in its team")


class CraftsmenReport(BaseModel):
    craftsmen: list[CraftsmanContribution] = Field(description="Most tickets answered first")


CONTRIBUTIONS = tuple(f for f in CraftsmanContribution.model_fields if f not in ("craftsman", "name", "trades"))  # the counts


def _primary_trade():
    return TicketRow.trades[0].as_string()


def _cited_record():
    """The id of the record a question's automatic answer cites first (null for one without sources)."""
    return QuestionRow.result[("sources", 0, "id")].as_string()


def monday(day: date) -> date:
    """The Monday the ISO week of ``day`` starts on."""
    return day - timedelta(days=day.weekday())


def _day(value: object) -> date:
    """``date(created_at)`` as the database returns it: a date (PostgreSQL) or an ISO string (SQLite)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def cluster(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Greedy leader clustering of unit vectors: the question with the most unclustered neighbours (cosine ≥
    ``threshold``) leads a cluster of itself and those neighbours; repeat until every question is in one.

    Every member is within ``threshold`` of its leader (no chaining through intermediate questions), and the leader is
    the most central question, the cluster's representative. Ties go to the lower index. O(n²) time and memory."""
    n = len(vectors)
    near = np.zeros((n, n), dtype=bool)
    for start in range(0, n, 512):
        near[start:start + 512] = vectors[start:start + 512] @ vectors.T >= threshold
    np.fill_diagonal(near, True)
    free = np.ones(n, dtype=bool)
    degree = near.sum(axis=1)  # neighbours still free, itself included
    clusters: list[list[int]] = []
    while free.any():
        leader = int(np.argmax(np.where(free, degree, -1)))
        members = np.flatnonzero(near[leader] & free)
        free[members] = False
        degree -= near[:, members].sum(axis=1)
        clusters.append([leader, *(int(m) for m in members if m != leader)])
    return clusters


def embed_questions(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None) -> np.ndarray:
    """Query embeddings of ``texts``, kept in ``cache`` (apart from passages: a query is embedded differently), so a
    dashboard refresh embeds only the tickets new since the last one."""
    model = f"{embedder.model_id}#query:{getattr(embedder, 'query_prefix', '')}"
    hashes = [text_hash(t) for t in texts]
    known = cache.get_many(model, hashes) if cache else {}
    missing = [i for i, h in enumerate(hashes) if h not in known]
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        if h in known:
            out[i] = known[h]
    if missing:
        vectors = embedder.embed_queries([texts[i] for i in missing])
        out[missing] = vectors
        if cache:
            cache.put_many(model, [(hashes[i], vectors[j]) for j, i in enumerate(missing)])
    return out


class Analytics:
    """The dashboard's reports over one database and the live index."""

    def __init__(self, engine: Engine, live: LiveIndex, cache: EmbeddingCache | None = None) -> None:
        self.engine = engine
        self.live = live
        self.cache = cache

    def _record_trades(self, record_ids: Iterable[str | None]) -> dict[str, str]:
        """Primary trade of each record still in the live index."""
        records = self.live.get().records.get_many({r for r in record_ids if r})
        return {rid: r.trades[0] for rid, r in records.items() if r.trades}

    @staticmethod
    def _trade(ticket_trade: str | None, cited: str | None, record_trades: dict[str, str]) -> str:
        return ticket_trade or record_trades.get(cited or "") or UNCLASSIFIED

    def trades(self, weeks: int = 12, now: datetime | None = None) -> TradesReport:
        """Questions, automatic answers, tickets and craftsmen's answers per trade and ISO week, for the last ``weeks``
        weeks (the current one included). A ticket counts in the week it was created, its answer with it."""
        today = (now or utcnow()).date()
        since = monday(today) - timedelta(weeks=weeks - 1)
        start = datetime.combine(since, time.min)
        q_day, trade, cited = func.date(QuestionRow.created_at), _primary_trade(), _cited_record()
        t_day = func.date(TicketRow.created_at)
        with self.engine.connect() as conn:
            asked = conn.execute(
                select(q_day, QuestionRow.status, trade, cited, func.count())
                .select_from(QuestionRow).outerjoin(TicketRow, TicketRow.id == QuestionRow.ticket_id)
                .where(QuestionRow.created_at >= start).group_by(q_day, QuestionRow.status, trade, cited)).all()
            tickets = conn.execute(
                select(t_day, trade, func.count(), func.count(TicketRow.answered_by))
                .where(TicketRow.created_at >= start).group_by(t_day, trade)).all()
        record_trades = self._record_trades(row[3] for row in asked)
        counts: dict[tuple[date, str], Counter] = defaultdict(Counter)
        for day, status, ticket_trade, source, n in asked:
            week = counts[(monday(_day(day)), self._trade(ticket_trade, source, record_trades))]
            week["questions"] += n
            if status == "answered":
                week["answered_automatically"] += n
            elif status == "out_of_scope":
                week["out_of_scope"] += n
        for day, ticket_trade, n, answered in tickets:
            week = counts[(monday(_day(day)), ticket_trade or UNCLASSIFIED)]
            week["escalated"] += n
            week["answered_by_craftsmen"] += answered
        rows = []
        for (week_start, trade_name), c in sorted(counts.items()):
            year, week, _ = week_start.isocalendar()
            rows.append(TradeWeek(
                trade=trade_name, week=f"{year}-W{week:02d}", week_start=week_start,
                questions=c["questions"], answered_automatically=c["answered_automatically"], out_of_scope=c["out_of_scope"],
                escalated=c["escalated"], answered_by_craftsmen=c["answered_by_craftsmen"],
                answer_rate=_ratio(c["answered_automatically"] + c["answered_by_craftsmen"],
                                   c["answered_automatically"] + c["escalated"])))
        return TradesReport(weeks=weeks, since=since, trade_weeks=rows)

    def gaps(self, days: int = 90, limit: int = 20, threshold: float = GAP_SIMILARITY,
             now: datetime | None = None) -> GapsReport:
        """Clusters of similar questions among the tickets of the last ``days`` days, largest first.

        ``threshold`` 0.93 was measured with the default embedder (multilingual-e5-small, whose cosines crowd together:
        unrelated industrial questions score 0.82–0.89). Over the bundled corpus's 204 standard questions and their 606
        aliases (rewordings of the same question), 35 % of question–alias pairs reach 0.93 and rewordings that keep the
        wording 0.98–0.99, while 0.3 % of mismatched question–alias pairs and 0.08 % of pairs of distinct standard
        questions do (0.92 doubles those false merges, 0.95 drops all but 10 % of aliases). A false merge hides a gap
        inside another; a missed one only splits a gap in two, so the threshold leans strict. Another embedder needs
        its own threshold.

        Tickets the enterprise marked confidential (the ticket or its question, ``subject_flags``) and tickets a
        confidential visit was requested from are left out."""
        since = (now or utcnow()) - timedelta(days=days)
        query = (select(TicketRow.question, _primary_trade().label("trade"), TicketRow.status)
                 .where(TicketRow.created_at >= since, *_not_confidential())
                 .order_by(TicketRow.created_at.desc(), TicketRow.id.desc()).limit(MAX_GAP_TICKETS))
        with self.engine.connect() as conn:
            tickets = conn.execute(query).all()
        if len(tickets) == MAX_GAP_TICKETS:
            log.info("knowledge gaps: clustering the newest %d tickets of the last %d days", MAX_GAP_TICKETS, days)
        embedder = self.live.get().embedder
        vectors = embed_questions(embedder, [t.question for t in tickets], self.cache)
        clusters = cluster(vectors, threshold) if tickets else []
        clusters.sort(key=lambda members: (-len(members), members[0]))
        out = []
        for members in clusters[:limit]:
            leader = tickets[members[0]].question
            examples = list(dict.fromkeys(tickets[m].question for m in members[1:] if tickets[m].question != leader))[:5]
            trades = Counter(tickets[m].trade or UNCLASSIFIED for m in members)
            out.append(GapCluster(size=len(members), trades=sorted(trades, key=lambda t: (-trades[t], t)), representative=leader,
                                  examples=examples, published=sum(tickets[m].status == "published" for m in members)))
        return GapsReport(days=days, similarity=threshold, tickets=len(tickets), clusters=out)

    def capacity(self) -> CapacityReport:
        """Work waiting per trade against the craftsmen who cover it, now."""
        trade = _primary_trade()
        with self.engine.connect() as conn:
            tickets = conn.execute(select(trade, TicketRow.status, func.count())
                                   .where(TicketRow.status.in_(("open", "claimed"))).group_by(trade, TicketRow.status)).all()
            visits = conn.execute(select(VisitRow.trade, func.count())
                                  .where(VisitRow.status.in_(OPEN_VISITS)).group_by(VisitRow.trade)).all()
        covering = Counter(t for p in self.live.get().directory.craftsmen() for t in dict.fromkeys(p.record.trades))
        work: dict[str, Counter] = defaultdict(Counter)
        for trade_name, status, n in tickets:
            work[trade_name or UNCLASSIFIED][status] += n
        for trade_name, n in visits:
            work[trade_name or UNCLASSIFIED]["visits"] += n
        rows = []
        for trade_name in sorted(set(work) | set(covering)):
            w, experts = work[trade_name], covering[trade_name]
            demand = w["open"] + w["claimed"] + w["visits"]
            # an unclassified ticket is routed to every craftsman, so it never lacks an expert
            rows.append(TradeCapacity(trade=trade_name, open_tickets=w["open"], claimed_tickets=w["claimed"], open_visits=w["visits"],
                                      craftsmen=experts, demand_per_craftsman=_ratio(demand, experts),
                                      no_expert=bool(demand and not experts and trade_name != UNCLASSIFIED)))
        rows.sort(key=lambda r: (not r.no_expert, -(r.demand_per_craftsman or 0.0), r.trade))
        return CapacityReport(trades=rows)

    def feedback(self, days: int = 90, now: datetime | None = None) -> FeedbackReport:
        """Helpful and unhelpful verdicts given in the last ``days`` days, per primary trade of the question."""
        since = (now or utcnow()) - timedelta(days=days)
        trade, cited = _primary_trade(), _cited_record()
        with self.engine.connect() as conn:
            verdicts = conn.execute(
                select(trade, cited, FeedbackRow.helpful, func.count())
                .select_from(FeedbackRow).join(QuestionRow, QuestionRow.id == FeedbackRow.question_id)
                .outerjoin(TicketRow, TicketRow.id == QuestionRow.ticket_id)
                .where(FeedbackRow.created_at >= since).group_by(trade, cited, FeedbackRow.helpful)).all()
        record_trades = self._record_trades(v[1] for v in verdicts)
        counts: dict[str, Counter] = defaultdict(Counter)
        for ticket_trade, source, helpful, n in verdicts:
            counts[self._trade(ticket_trade, source, record_trades)]["helpful" if helpful else "unhelpful"] += n
        rows = [TradeFeedback(trade=t, helpful=c["helpful"], unhelpful=c["unhelpful"],
                              unhelpful_rate=_ratio(c["unhelpful"], c["helpful"] + c["unhelpful"]) or 0.0) for t, c in counts.items()]
        rows.sort(key=lambda r: (-r.unhelpful, -r.unhelpful_rate, r.trade))
        return FeedbackReport(days=days, helpful=sum(r.helpful for r in rows), unhelpful=sum(r.unhelpful for r in rows), trades=rows)

    def craftsmen(self) -> CraftsmenReport:
        """Each craftsman's answers, their published answers' votes, visits and challenges, all time."""
        with self.engine.connect() as conn:
            answered = conn.execute(
                select(TicketRow.answered_by, func.count(), func.sum(case((TicketRow.status == "published", 1), else_=0)))
                .where(TicketRow.answered_by.is_not(None)).group_by(TicketRow.answered_by)).all()
            votes = conn.execute(
                select(TicketRow.answered_by, FeedbackRow.helpful, func.count())
                .select_from(FeedbackRow).join(QuestionRow, QuestionRow.id == FeedbackRow.question_id)
                .join(TicketRow, TicketRow.published_record == _cited_record())
                .where(TicketRow.answered_by.is_not(None)).group_by(TicketRow.answered_by, FeedbackRow.helpful)).all()
            visits = conn.execute(
                select(VisitRow.craftsman, VisitRow.status, func.count())
                .where(VisitRow.craftsman.is_not(None), VisitRow.status.in_(VISIT_STAGES))
                .group_by(VisitRow.craftsman, VisitRow.status)).all()
            picked = _picked(conn)
        counts: dict[str, Counter] = defaultdict(Counter)
        for who, n, published in answered:
            counts[who].update(tickets_answered=n, answers_published=int(published or 0))
        for who, helpful, n in votes:
            counts[who]["helpful_votes" if helpful else "unhelpful_votes"] += n
        for who, status, n in visits:  # a visit at a stage has passed the ones before it
            counts[who]["visits_reported"] += n
            counts[who]["visits_confirmed"] += n if VISIT_STAGES.index(status) >= VISIT_STAGES.index("confirmed") else 0
            counts[who]["visits_published"] += n if status == "published" else 0
        for who, n in picked.items():
            counts[who]["challenges_picked"] += n
        directory = {p.record.id: p.record for p in self.live.get().directory.craftsmen()}
        rows = []
        for who in sorted(set(directory) | set(counts)):
            record, c = directory.get(who), counts[who]
            rows.append(CraftsmanContribution(craftsman=who, name=record.name if record else "",
                                              trades=list(record.trades) if record else [], **{f: c[f] for f in CONTRIBUTIONS}))
        rows.sort(key=lambda r: (-r.tickets_answered, -r.answers_published, r.craftsman))
        return CraftsmenReport(craftsmen=rows)


def _picked(conn: Connection) -> Counter:
    """Challenges picked per craftsman: the applicant and each team mate of a picked application (a loop over the
    picked applications only: team mates are a JSON list)."""
    picked: Counter = Counter()
    for lead, team in conn.execute(select(ApplicationRow.craftsman, ApplicationRow.team).where(ApplicationRow.status == "picked")):
        picked.update({lead, *(m for m in team or [] if isinstance(m, str))})
    return picked


def _not_confidential() -> list:
    """Conditions keeping confidential subjects out of a ticket query: the ticket or any of its questions marked
    confidential by the enterprise (``subject_flags``), or a confidential visit requested from the ticket."""
    secret = SubjectFlagsRow.confidential == true()
    return [~exists().where(VisitRow.source == literal("ticket:") + TicketRow.id, VisitRow.confidential == true()),
            ~exists().where(SubjectFlagsRow.subject == literal("ticket:") + TicketRow.id, secret),
            ~exists().where(QuestionRow.ticket_id == TicketRow.id,
                            SubjectFlagsRow.subject == literal("question:") + QuestionRow.id, secret)]
