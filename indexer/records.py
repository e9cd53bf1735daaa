"""Corpus record kinds and the loader that validates a corpus folder.

Each kind is one pydantic model registered in ``KINDS``; adding a kind (patents, knowledge items)
is one class and one entry there. ``load_corpus`` never stops at the first bad record: it returns the
good records and every problem as ``file:line: field: reason``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from indexer.errors import CorpusError

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, pattern=r"\S")]
# JSON Schema counts 2020.0 as an integer; accept it as such while still refusing strings and fractions.
def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]
RecordId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]


class Record(BaseModel):
    """Fields every record kind has: a stable id and an open ``extra`` map."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    kind: ClassVar[str]
    separate_sections: ClassVar[bool] = False  # chunk each section on its own (a patent's claims), not packed together
    id: RecordId
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def title(self) -> str:
        raise NotImplementedError

    @property
    def trades(self) -> list[str]:
        return []

    @property
    def terms(self) -> list[str]:
        """Domain terms worth adding to the tokenizer dictionary."""
        return []

    def head(self) -> str:
        """The short text that best says what the record is about (embedded for dense retrieval)."""
        raise NotImplementedError

    def sections(self) -> list[str]:
        """The record's full text, section by section, for chunking and answer sentences."""
        raise NotImplementedError

    def when(self) -> str:
        """The record's date as YYYY-MM-DD for date filters ("" when it has none; a year counts as its first day)."""
        return ""

    def content_hash(self) -> str:
        payload = json.dumps({"kind": self.kind, **self.model_dump()}, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Achievement(Record):
    """创新成果 — a worker innovation achievement."""

    kind: ClassVar[str] = "achievement"
    title_: Text = Field(alias="title")
    summary: Text
    problem: Text
    solution: Text
    benefits: Text
    trade: Text
    keywords: list[Text] = Field(default_factory=list)
    authors: list[Text] = Field(min_length=1)
    unit: Text
    year: WholeNumber = Field(ge=1949, le=2100)

    def when(self) -> str:
        return f"{self.year:04d}-01-01"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @property
    def title(self) -> str:
        return self.title_

    @property
    def trades(self) -> list[str]:
        return [self.trade]

    @property
    def terms(self) -> list[str]:
        return [*self.keywords, self.trade]

    def head(self) -> str:
        return f"{self.title_}。{self.summary}"

    def sections(self) -> list[str]:
        return [self.summary, f"问题：{self.problem}", f"方法：{self.solution}", f"效果：{self.benefits}"]


class Course(Record):
    """技能课程 — a skill course."""

    kind: ClassVar[str] = "course"
    title_: Text = Field(alias="title")
    description: Text
    chapters: list[Text] = Field(min_length=1)
    trade: Text
    level: Literal["初级", "中级", "高级", "技师", "高级技师"]
    duration: Text

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @property
    def title(self) -> str:
        return self.title_

    @property
    def trades(self) -> list[str]:
        return [self.trade]

    @property
    def terms(self) -> list[str]:
        return [self.trade]

    def head(self) -> str:
        return f"{self.title_}。{self.description}"

    def sections(self) -> list[str]:
        return [self.description, *self.chapters]


class StandardQuestion(Record):
    """标准问题 — a standard question with a vetted answer and its paraphrases."""

    kind: ClassVar[str] = "standard_question"
    question: Text
    answer: Text
    aliases: list[Text] = Field(default_factory=list)
    trade: Text
    keywords: list[Text] = Field(default_factory=list)

    @property
    def title(self) -> str:
        return self.question

    @property
    def trades(self) -> list[str]:
        return [self.trade]

    @property
    def terms(self) -> list[str]:
        return [*self.keywords, self.trade]

    def head(self) -> str:
        return self.question

    def sections(self) -> list[str]:
        return [self.answer]


class Craftsman(Record):
    """劳模工匠 — a master craftsman profile; the people escalated questions are routed to."""

    kind: ClassVar[str] = "craftsman"
    name: Text
    honours: list[Text] = Field(default_factory=list)
    trades_: list[Text] = Field(alias="trades", min_length=1)
    skills: list[Text] = Field(min_length=1)
    region: Text
    bio: Text

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @property
    def title(self) -> str:
        return self.name

    @property
    def trades(self) -> list[str]:
        return list(self.trades_)

    @property
    def terms(self) -> list[str]:
        return [*self.skills, *self.trades_]

    def head(self) -> str:
        return f"{self.name}：{'、'.join(self.trades_)}；擅长{'、'.join(self.skills)}"

    def sections(self) -> list[str]:
        return [self.bio]


class Passage(Record):
    """A generic text passage (knowledge items, evaluation corpora): optional title and a text."""

    kind: ClassVar[str] = "passage"
    title_: str = Field(default="", alias="title")
    text: Text
    trade: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @property
    def title(self) -> str:
        return self.title_ or self.text[:30]

    @property
    def trades(self) -> list[str]:
        return [self.trade] if self.trade else []

    def head(self) -> str:
        return f"{self.title_}。{self.text}" if self.title_ else self.text

    def sections(self) -> list[str]:
        return [self.text]


class _TitledByTrade:
    """What Knowledge and Patent share: a ``title_`` field (alias ``title``), one ``trade``, ``keywords`` as terms.
    (Properties only, no annotations: those would be collected as fields and reorder the records' JSON.)"""

    @property
    def title(self) -> str:
        return self.title_

    @property
    def trades(self) -> list[str]:
        return [self.trade] if self.trade else []

    @property
    def terms(self) -> list[str]:
        return list(self.keywords)


class Knowledge(_TitledByTrade, Record):
    """An innovation knowledge item (创新知识), or one passage of an imported document (规程、讲义、标准): the
    document, its heading path and its page travel with the text, so an answer can cite them
    (《煤矿防治水细则》第12页) and every chunk carries its headings (``title``: 煤矿防治水细则 › 第三章 防治水 › 3.2 探放水)."""

    kind: ClassVar[str] = "knowledge"
    title_: Text = Field(alias="title")
    body: Text
    source: str = ""  # the document it comes from (its name, without extension); empty for a knowledge item
    trade: str = ""
    keywords: list[str] = Field(default_factory=list)
    date: Annotated[str, StringConstraints(pattern=r"^(\d{4}-\d{2}-\d{2})?$")] = ""
    heading_path: list[str] = Field(default_factory=list)
    page: Annotated[int, Field(ge=1), BeforeValidator(_whole)] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    def when(self) -> str:
        return self.date

    @property
    def citation(self) -> str:
        """《document》第N页 for a document passage, the title for a knowledge item."""
        if not self.source:
            return f"《{self.title}》"
        return f"《{self.source}》第{self.page}页" if self.page else f"《{self.source}》"

    def head(self) -> str:
        return f"{self.title}。{self.body}"

    def sections(self) -> list[str]:
        return [self.body]


APPLICATION_NUMBER = r"^(CN)?(\d{8}|\d{12})\.[\dX]$"  # 申请号: 2003 on 12 digits (年份4+类型1+流水7), before 8; a check digit
PUBLICATION_NUMBER = r"^(CN\d{7,9}[ABCUY]\d?)?$"  # 公开/公告号 with its kind code (A 申请公布, B 授权, U 实用新型 …)
IPC_CODE = r"^[A-H]\d{2}[A-Z] ?\d{1,4}/\d{2,6}$"  # section, class, subclass, main group / subgroup: B23B 25/00
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


class Patent(_TitledByTrade, Record):
    """A patent (专利): numbers, title, abstract, claims (权利要求, one chunk each), IPC codes, applicants, inventors,
    dates, legal status and trade. Cited as 专利 CN… 《title》 权利要求 3."""

    kind: ClassVar[str] = "patent"
    separate_sections: ClassVar[bool] = True  # each claim is its own passage
    application_number: Annotated[str, StringConstraints(strip_whitespace=True, pattern=APPLICATION_NUMBER)]
    publication_number: Annotated[str, StringConstraints(strip_whitespace=True, pattern=PUBLICATION_NUMBER)] = ""
    title_: Text = Field(alias="title")
    abstract: Text
    claims: list[Text] = Field(min_length=1)
    ipc: list[Annotated[str, StringConstraints(strip_whitespace=True, pattern=IPC_CODE)]] = Field(min_length=1)
    applicants: list[Text] = Field(min_length=1)
    inventors: list[Text] = Field(default_factory=list)
    application_date: Annotated[str, StringConstraints(pattern=ISO_DATE)]
    publication_date: Annotated[str, StringConstraints(pattern=r"^(\d{4}-\d{2}-\d{2})?$")] = ""
    legal_status: Text = "公开"
    trade: str = ""
    keywords: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @property
    def number(self) -> str:
        """The publication number when published, else the application number."""
        if self.publication_number:
            return self.publication_number
        return self.application_number if self.application_number.startswith("CN") else f"CN{self.application_number}"

    def citation(self, claim: int | None = None) -> str:
        """专利 CN… 《title》, with 权利要求 n when one claim is quoted."""
        return f"专利 {self.number} 《{self.title}》" + (f" 权利要求 {claim}" if claim else "")

    def when(self) -> str:
        return self.publication_date or self.application_date

    def head(self) -> str:
        return f"{self.title}。{self.abstract}"

    def sections(self) -> list[str]:
        """The abstract, then each claim (section n is claim n)."""
        return [self.abstract, *self.claims]


class ServiceCase(_TitledByTrade, Record):
    """A completed on-site service (服务案例, 线下服务线上展示): the problem found, the actions taken, the measured
    results and the advice, as a maintainer edited and de-identified them from a craftsman's visit report (the
    enterprise consenting). Cited as 服务案例《title》（region，date）."""

    kind: ClassVar[str] = "service_case"
    title_: Text = Field(alias="title")
    problem: Text
    actions: Text
    results: Text
    advice: str = ""
    trade: str = ""
    region: str = ""
    date: Annotated[str, StringConstraints(pattern=r"^(\d{4}-\d{2}-\d{2})?$")] = ""
    craftsmen: list[str] = Field(default_factory=list)  # record ids of the craftsmen who served
    keywords: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @property
    def citation(self) -> str:
        where = "，".join(x for x in (self.region, self.date) if x)
        return f"服务案例《{self.title}》" + (f"（{where}）" if where else "")

    def when(self) -> str:
        return self.date

    def head(self) -> str:
        return f"{self.title}。{self.problem}"

    def sections(self) -> list[str]:
        """Actions first (the fix), then results, the problem and the advice."""
        return [x for x in (self.actions, self.results, self.problem, self.advice) if x]


KINDS: dict[str, type[Record]] = {
    "achievement": Achievement,
    "course": Course,
    "standard_question": StandardQuestion,
    "craftsman": Craftsman,
    "passage": Passage,
    "knowledge": Knowledge,
    "patent": Patent,
    "service_case": ServiceCase,
}
FILES: dict[str, str] = {
    "achievements.jsonl": "achievement",
    "courses.jsonl": "course",
    "standard_questions.jsonl": "standard_question",
    "craftsmen.jsonl": "craftsman",
    "passages.jsonl": "passage",
    "knowledge.jsonl": "knowledge",
    "patents.jsonl": "patent",
    "service_cases.jsonl": "service_case",
}
FILE_OF_KIND: dict[str, str] = {kind: name for name, kind in FILES.items()}


@dataclass
class CorpusLoad:
    """The valid records of a corpus and every problem found on the way."""

    records: list[Record] = field(default_factory=list)
    problems: list[CorpusError] = field(default_factory=list)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for record in sorted(self.records, key=lambda r: (r.kind, r.id)):
            digest.update(f"{record.kind}\t{record.id}\t{record.content_hash()}\n".encode())
        return digest.hexdigest()


def _field_name(loc: tuple[Any, ...], model: type[Record]) -> str:
    parts = []
    for item in loc:
        if isinstance(item, str):
            info = model.model_fields.get(item)
            parts.append(info.alias if info is not None and info.alias else item)
        else:
            parts.append(f"[{item}]")
    return ".".join(parts).replace(".[", "[") or "-"


def parse_record(kind: str, data: Any, file: str, line: int) -> Record:
    """Validate one decoded JSON value as a record of ``kind``; raise the first problem found."""
    problems = _problems(kind, data, file, line)
    if isinstance(problems, Record):
        return problems
    raise problems[0]


def _problems(kind: str, data: Any, file: str, line: int) -> Record | list[CorpusError]:
    model = KINDS[kind]
    if not isinstance(data, dict):
        return [CorpusError(file, line, "-", f"expected a JSON object, got {type(data).__name__}")]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return [
            CorpusError(file, line, _field_name(err["loc"], model), err["msg"])
            for err in exc.errors(include_url=False)
        ]


def load_corpus(corpus_dir: Path) -> CorpusLoad:
    """Read every known JSONL file in ``corpus_dir``; collect valid records and all problems."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        return CorpusLoad(problems=[CorpusError(str(corpus_dir), 0, "-", "corpus folder does not exist")])
    result = CorpusLoad()
    seen: dict[str, str] = {}
    for path in sorted(corpus_dir.glob("*.jsonl")):
        kind = FILES.get(path.name)
        if kind is None:
            known = ", ".join(sorted(FILES))
            result.problems.append(CorpusError(str(path), 0, "-", f"unknown record file; expected one of {known}"))
            continue
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    result.problems.append(CorpusError(str(path), number, "-", f"not valid UTF-8 ({exc.reason})"))
                    continue
                if not text.strip():
                    continue
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    result.problems.append(CorpusError(str(path), number, "-", f"invalid JSON: {exc.msg} at column {exc.colno}"))
                    continue
                outcome = _problems(kind, data, str(path), number)
                if not isinstance(outcome, Record):
                    result.problems.extend(outcome)
                    continue
                where = f"{path}:{number}"
                if outcome.id in seen:
                    result.problems.append(CorpusError(str(path), number, "id", f"duplicate id {outcome.id!r}, first at {seen[outcome.id]}"))
                    continue
                seen[outcome.id] = where
                result.records.append(outcome)
    return result


def record_to_json(record: Record) -> dict[str, Any]:
    """The record as it is written in its JSONL file (aliases restored)."""
    return record.model_dump(by_alias=True)


def upsert_record(corpus_dir: Path, record: Record) -> None:
    """Add a record to its kind's file or replace the one with its id (through the corpus's one writer)."""
    from indexer.corpus_store import CorpusStore

    CorpusStore(corpus_dir).upsert(record)


def delete_record(corpus_dir: Path, kind: str, record_id: str) -> bool:
    """Remove a record by id (through the corpus's one writer); False when it was not there."""
    from indexer.corpus_store import CorpusStore

    return CorpusStore(corpus_dir).delete(kind, record_id)
