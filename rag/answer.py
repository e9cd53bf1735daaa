"""Compose an answer from ranked records: a standard question's vetted answer verbatim, or the few most
relevant sentences of the top records, each cited; then what to study and whom to ask.

Every sentence of an extractive answer is copied from a cited source; nothing else is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from indexer.chunking import split_sentences
from indexer.records import Achievement, Course, Craftsman, StandardQuestion
from indexer.text import normalise
from indexer.version import IndexVersion
from rag.rank import Scored

SQ_DIRECT = 0.8  # question-to-standard-question similarity at which the vetted answer is given verbatim


@dataclass
class Source:
    n: int
    kind: str
    id: str
    title: str
    snippet: str


@dataclass
class Related:
    id: str
    kind: str
    title: str


@dataclass
class Answer:
    text: str
    sources: list[Source]
    standard: bool = False
    generated: bool = False
    courses: list[Related] = field(default_factory=list)
    achievements: list[Related] = field(default_factory=list)
    craftsmen: list[Related] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _snippet(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _related(version: IndexVersion, ranked: list[Scored], trades: list[str]) -> tuple[list[Related], list[Related], list[Related]]:
    courses, achievements, craftsmen = [], [], []
    for s in ranked[:15]:
        record = version.records.get(s.candidate.record_id)
        entry = Related(s.candidate.record_id, s.candidate.kind, s.candidate.title)
        if isinstance(record, Course) and len(courses) < 3:
            courses.append(entry)
        elif isinstance(record, Achievement) and len(achievements) < 3:
            achievements.append(entry)
        elif isinstance(record, Craftsman) and len(craftsmen) < 3:
            craftsmen.append(entry)
    if len(craftsmen) < 2 and trades:
        for record in version.records.values():
            if isinstance(record, Craftsman) and set(record.trades) & set(trades) and record.id not in {c.id for c in craftsmen}:
                craftsmen.append(Related(record.id, record.kind, record.name))
                if len(craftsmen) >= 2:
                    break
    return courses, achievements, craftsmen


def compose_answer(question: str, ranked: list[Scored], version: IndexVersion, max_sentences: int = 4,
                   max_sources: int = 3) -> Answer:
    """The answer to ``question`` from the ranked records (``ranked`` must not be empty)."""
    top = ranked[0]
    record = version.records[top.candidate.record_id]
    trades = [t for s in ranked[:3] for t in getattr(version.records.get(s.candidate.record_id), "trades", [])]
    courses, achievements, craftsmen = _related(version, ranked, trades)
    if isinstance(record, StandardQuestion) and top.sq_sim >= SQ_DIRECT:
        source = Source(1, record.kind, record.id, record.title, _snippet(record.answer))
        return Answer(record.answer, [source], standard=True, courses=courses, achievements=achievements, craftsmen=craftsmen)

    terms = {t: version.bm25.idf(t) for t in dict.fromkeys(version.tokenizer.tokenize(question))}
    candidates: list[tuple[float, int, int, str]] = []
    usable = [s for s in ranked if s.candidate.kind != "craftsman"][:max_sources]
    for position, s in enumerate(usable):
        rec = version.records[s.candidate.record_id]
        for order, sentence in enumerate(s for section in rec.sections() for s in split_sentences(section)):
            text = normalise(sentence)
            overlap = sum(w for t, w in terms.items() if t in text)
            if overlap > 0 and len(sentence) >= 8:
                candidates.append((overlap / (1 + 0.35 * position), position, order, sentence))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen = sorted(candidates[:max_sentences], key=lambda c: (c[1], c[2]))
    if not chosen:
        chosen = [(0.0, 0, 0, split_sentences(version.records[usable[0].candidate.record_id].sections()[0])[0])] if usable else []
    numbers: dict[int, int] = {}
    sources: list[Source] = []
    lines = []
    for _, position, _, sentence in chosen:
        if position not in numbers:
            s = usable[position]
            numbers[position] = len(sources) + 1
            passages = [version.chunks[r] for r in s.candidate.chunk_rows if version.chunks[r].role != "alias"]
            best = passages[0].text if passages else sentence
            sources.append(Source(numbers[position], s.candidate.kind, s.candidate.record_id, s.candidate.title, _snippet(best)))
        lines.append(f"{sentence}[{numbers[position]}]")
    return Answer("\n".join(lines), sources, courses=courses, achievements=achievements, craftsmen=craftsmen)
