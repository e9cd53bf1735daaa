"""Compose an answer from ranked records, leading with the fix.

Per kind of the top record: a standard question (标准问题) → its vetted answer verbatim, with the matched
question shown; an achievement (创新成果) → its solution steps (做法) and measured benefits (效果), the problem
as one line of context at the end; a course (技能课程) → a recommendation with the chapters that matter; a
craftsman (劳模工匠) → whom to ask. Other kinds (passages, knowledge) get the most relevant sentences of the
top records. Every line is copied from the record it cites; nothing else is written.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from indexer.chunking import split_sentences
from indexer.records import Achievement, Course, Craftsman, Knowledge, Patent, Record, ServiceCase, StandardQuestion
from indexer.text import normalise
from indexer.version import IndexVersion
from rag.rank import Scored

SQ_DIRECT = 0.8  # question-to-standard-question similarity at which the vetted answer is the fast path


def direct_match(top: Scored) -> bool:
    """The fast path: the top record is a standard question worded like the question (bigram Dice ≥ ``SQ_DIRECT``
    over its question and aliases) and names no other key object than the question's (``conflict``)."""
    return top.candidate.kind == "standard_question" and top.sq_sim >= SQ_DIRECT and not top.features.get("conflict")


_STEP = re.compile(r"(?=(?<![\d.])(?:\d{1,2}|[①-⑩])[.、．）)](?!\d))")


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
    snippet: str = ""


@dataclass
class Answer:
    text: str
    sources: list[Source]
    standard: bool = False
    generated: bool = False
    matched_question: str | None = None
    courses: list[Related] = field(default_factory=list)
    achievements: list[Related] = field(default_factory=list)
    craftsmen: list[Related] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def snippet(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def related_lists(version: IndexVersion, ranked: list[Scored], exclude: set[str] = frozenset()) -> tuple[list[Related], list[Related], list[Related]]:
    """Courses to study, achievements to read and craftsmen to ask, from the ranked records."""
    courses, achievements, craftsmen = [], [], []
    records = version.records.get_many(s.candidate.record_id for s in ranked[:15])
    for s in ranked[:15]:
        record = records.get(s.candidate.record_id)
        if record is None or record.id in exclude:
            continue
        entry = Related(record.id, record.kind, record.title, snippet(record.head(), 80))
        if isinstance(record, Course) and len(courses) < 3:
            courses.append(entry)
        elif isinstance(record, Achievement) and len(achievements) < 3:
            achievements.append(entry)
        elif isinstance(record, Craftsman) and len(craftsmen) < 3:
            craftsmen.append(entry)
    return courses, achievements, craftsmen


def steps(text: str) -> list[str]:
    """A solution split into its numbered steps (``1.…；2.…``), else into sentences."""
    parts = [p.strip().rstrip("；;") for p in _STEP.split(text) if p.strip()]
    if len(parts) >= 2:
        return parts
    return [s.strip() for s in split_sentences(text) if s.strip()]


def _terms(question: str, version: IndexVersion, terms: list[str] | None = None) -> dict[str, float]:
    terms = version.tokenizer.tokenize(question) if terms is None else terms
    return {t: version.terms.idf(t) for t in dict.fromkeys(terms)}


def _standard(record: StandardQuestion) -> tuple[list[str], str | None]:
    return [record.answer], record.question


def _achievement(record: Achievement, max_steps: int = 6) -> tuple[list[str], None]:
    lines = steps(record.solution)[:max_steps]
    lines.append("效果：" + split_sentences(record.benefits)[0])
    lines.append("背景：" + split_sentences(record.problem)[0])
    return lines, None


def _course(record: Course, terms: dict[str, float], max_chapters: int = 3) -> tuple[list[str], None]:
    scored = [(sum(w for t, w in terms.items() if t in normalise(ch)), i, ch) for i, ch in enumerate(record.chapters)]
    chosen = [ch for score, _, ch in sorted(scored, key=lambda c: (-c[0], c[1])) if score > 0][:max_chapters]
    chosen = chosen or record.chapters[:max_chapters]
    lead = split_sentences(record.description)[0]
    return [f"推荐学习课程《{record.title}》（{record.level}，{record.duration}）：{lead}", "重点章节：" + "；".join(chosen)], None


def _craftsman(record: Craftsman) -> tuple[list[str], None]:
    honours = f"（{'、'.join(record.honours)}）" if record.honours else ""
    return [f"建议咨询{record.name}{honours}，擅长：{'、'.join(record.skills)}"], None


def _cited(record: Record, title: str, section: int = 0) -> tuple[str, str]:
    """(source title, note after the answer line): a document passage names its document and page
    (《煤矿防治水细则》第12页 › 第三十九条), a patent its number, title and the claim quoted (section n is claim n:
    专利 CN… 《…》 权利要求 3); any other record keeps its title and adds nothing."""
    if isinstance(record, Patent):
        return record.citation(), f"（{record.citation(section or None)}）"
    if isinstance(record, ServiceCase):
        return record.citation, f"（{record.citation}）"
    if not isinstance(record, Knowledge) or not record.source:
        return title, ""
    heading = f" › {record.heading_path[-1]}" if record.heading_path else ""
    return record.citation + heading, f"（{record.citation}）"


def _extractive(question: str, ranked: list[Scored], version: IndexVersion, max_sentences: int,
                max_sources: int, question_terms: list[str] | None = None) -> tuple[list[tuple[int, str, int]], list[Scored]]:
    """The most relevant sentences of the top records: (position in ``usable``, sentence, section of the record)."""
    terms = _terms(question, version, question_terms)
    usable = [s for s in ranked if s.candidate.kind != "craftsman"][:max_sources]
    found: list[tuple[float, int, int, str, int]] = []
    for position, s in enumerate(usable):
        rec = version.records[s.candidate.record_id]
        sentences = ((n, x) for n, section in enumerate(rec.sections()) for x in split_sentences(section))
        for order, (section, sentence) in enumerate(sentences):
            overlap = sum(w for t, w in terms.items() if t in normalise(sentence))
            if overlap > 0 and len(sentence) >= 8:
                found.append((overlap / (1 + 0.35 * position), position, order, sentence, section))
    found.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen = sorted(found[:max_sentences], key=lambda c: (c[1], c[2]))
    if not chosen and usable:
        first = version.records[usable[0].candidate.record_id]
        return [(0, split_sentences(first.sections()[0])[0], 0)], usable
    return [(position, sentence, section) for _, position, _, sentence, section in chosen], usable


def compose_answer(question: str, ranked: list[Scored], version: IndexVersion, max_sentences: int = 4,
                   max_sources: int = 3, terms: list[str] | None = None) -> Answer:
    """The answer to ``question`` from the ranked records (``ranked`` must not be empty), led by the top one."""
    top = ranked[0]
    record: Record = version.records[top.candidate.record_id]
    courses, achievements, craftsmen = related_lists(version, ranked, {record.id})
    extra = {"courses": courses, "achievements": achievements, "craftsmen": craftsmen}
    source = Source(1, record.kind, record.id, record.title, snippet(record.head()))
    if isinstance(record, StandardQuestion):
        return Answer(record.answer, [source], standard=True, matched_question=record.question, **extra)
    if isinstance(record, Achievement):
        lines, _ = _achievement(record)
    elif isinstance(record, Course):
        lines, _ = _course(record, _terms(question, version, terms))
    elif isinstance(record, Craftsman):
        lines, _ = _craftsman(record)
    else:
        chosen, usable = _extractive(question, ranked, version, max_sentences, max_sources, terms)
        numbers: dict[int, int] = {}
        sources: list[Source] = []
        out = []
        for position, sentence, section in chosen:
            cand = usable[position].candidate
            rec = version.records[cand.record_id]
            title, note = _cited(rec, cand.title, section)
            if position not in numbers:
                numbers[position] = len(sources) + 1
                sources.append(Source(numbers[position], cand.kind, cand.record_id, title, snippet(rec.head())))
            out.append(f"{sentence}[{numbers[position]}]{note}")
        return Answer("\n".join(out), sources, **extra)
    source.snippet = snippet(record.sections()[0])
    return Answer("\n".join(f"{line}[1]" for line in lines), [source], **extra)
