"""Response models shared by the routes: questions as their askers read them back, and tickets.

They describe the JSON the engine already builds (``Ticket.to_dict``, ``AskResult.to_dict``, ``QuestionLog``) so
that OpenAPI documents it; they add nothing to it and drop nothing from it. A question's result is stored as JSON
when it is asked, so a row written by an older version may lack fields added since: those fields have defaults,
and the routes returning questions leave out what was not set (``response_model_exclude_unset``). Stored parts
also keep keys the models do not name (``extra="allow"``); a ticket, rendered afresh each time, is held to
``Ticket.to_dict`` key for key by tests/api/test_openapi_typed.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.escalate import STATUSES, Ticket

# Text that is not blank, as a JSON-schema pattern meaning the same to every regex dialect that reads it: pydantic's
# (Rust: \s is Unicode White_Space, with U+0085), ECMAScript's (clients, schemathesis: \s has U+FEFF, not U+0085)
# and Python's (\s also has U+001C-U+001F). A bare "\S" let a schema-valid "\u0085" be refused with 422.
NOT_BLANK = r"[^\s\u0085\ufeff\u001c-\u001f]"

Timestamp = Annotated[str, Field(description="UTC, ISO 8601 with a Z", json_schema_extra={"format": "date-time"})]
TicketStatus = Literal[STATUSES]  # type: ignore[valid-type]
QuestionStatus = Literal["answered", "escalated", "out_of_scope"]


class _Stored(BaseModel):
    """Part of a stored JSON document: keys these models do not name pass through unchanged."""

    model_config = ConfigDict(extra="allow")


class RecordExcerpt(_Stored):
    """A record with a snippet of its text: material to read, or a ticket's context."""

    kind: str = Field(description="The record's kind; in a ticket's context also given_answer (the automatic answer "
                                   "the asker handed over) and asker_feedback (what the asker said of it)")
    id: str
    title: str
    snippet: str


class RoutedCraftsman(BaseModel):
    id: str = Field(description="The craftsman's record id")
    name: str
    score: float = Field(description="Routing score: expertise match, trade and skills, less open load")


class TicketOut(BaseModel):
    """An escalation ticket (工单): open → claimed → answered → publishing → published, or closed with a reason."""

    id: str
    question: str
    asker: str
    status: TicketStatus
    confidence: float
    context: list[RecordExcerpt] = Field(description="What the craftsman gets to start from")
    trades: list[str]
    routed_to: list[RoutedCraftsman]
    claimed_by: str | None
    answer: str | None
    answered_by: str | None
    published_record: str | None = Field(description="The standard question the answer became, once published")
    closed_reason: str | None
    created_at: Timestamp | None
    updated_at: Timestamp | None
    confidential: bool = Field(description="Never published; seen only by the craftsmen it is routed or invited to")
    reveal: bool = Field(description="Craftsmen see the asker's id rather than a pseudonym")

    @classmethod
    def of(cls, ticket: Ticket) -> TicketOut:
        """The ticket as ``Ticket.to_dict`` renders it."""
        return cls.model_validate(ticket.to_dict())


class AnswerSource(_Stored):
    """A record an answer cites as ``[n]``."""

    n: int
    kind: str
    id: str
    title: str
    snippet: str


class RelatedRecord(_Stored):
    """A course to study, an achievement to read, or (an automatic answer's) a craftsman to ask."""

    id: str
    kind: str
    title: str
    snippet: str = ""


class CraftsmanCard(_Stored):
    """A craftsman (劳模工匠) a question was routed to."""

    id: str
    name: str
    honours: list[str]
    skills: list[str]
    trades: list[str]
    region: str


class RelatedMaterial(_Stored):
    """Answered: ``courses``, ``achievements`` and ``craftsmen`` related to the answer. Escalated: a ``note``, the
    ``records`` to read meanwhile and the ``craftsmen`` it went to. Out of scope: nothing."""

    note: str = ""
    records: list[RecordExcerpt] = []
    courses: list[RelatedRecord] = []
    achievements: list[RelatedRecord] = []
    craftsmen: list[CraftsmanCard | RelatedRecord] = []


class CraftsmanAnswer(BaseModel):
    """The craftsman's answer to an escalated question, once given."""

    answer: str
    craftsman: str | None
    record: str | None = Field(description="The standard question it was published as, once published")


class FeedbackEntry(BaseModel):
    helpful: bool
    comment: str
    created_at: Timestamp


class QuestionView(_Stored):
    """A question as its asker reads it: the outcome (answered, escalated to a craftsman, or out of scope), the
    answer with its sources, related material, the ticket while a craftsman is on it, and the feedback given."""

    id: str
    status: QuestionStatus
    question: str
    message: str = Field(default="", description="What the asker is told when it is not answered automatically")
    answer: str | None = Field(description="The automatic answer, its lines citing sources as [n]")
    standard: bool = Field(description="The answer is a standard question's vetted answer")
    matched_question: str | None = Field(default=None, description="The standard question matched")
    generated: bool = Field(default=False, description="The answer was rewritten by the generator")
    sources: list[AnswerSource]
    related: RelatedMaterial
    confidence: float
    in_scope: float = Field(default=1.0, description="Probability that it is an industrial production question")
    ticket: TicketOut | None
    index_version: str
    handed_over: bool = Field(default=False, description="Present once the asker sent the answered question to a "
                                                         "craftsman (转人工)")
    asker: str
    created_at: Timestamp
    craftsman_answer: CraftsmanAnswer | None = Field(default=None, description="Present once a craftsman answered")
    feedback: list[FeedbackEntry]


class QuestionSummary(BaseModel):
    """One line of a question list."""

    id: str
    question: str
    status: QuestionStatus
    confidence: float
    ticket_id: str | None
    asker: str
    created_at: Timestamp
