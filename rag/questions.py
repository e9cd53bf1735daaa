"""The log of asked questions and the feedback on their answers (what enterprises read back)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from indexer.errors import Conflict, NotFound
from rag.db import FeedbackRow, Position, QuestionRow, newest_first, sessions
from rag.engine import AskResult
from rag.escalate import Ticket, TicketQueue


def question_view(result: dict[str, Any], question_id: str, asker: str, created_at: datetime, ticket: Ticket | None,
                  feedback: list[FeedbackRow]) -> dict[str, Any]:
    """A question as its asker reads it: the stored result, the ticket's state, any craftsman answer and feedback."""
    out = dict(result)
    out.update(id=question_id, asker=asker, created_at=created_at.isoformat() + "Z")
    if ticket is not None:
        out["ticket"] = ticket.to_dict()
        if ticket.status in ("answered", "publishing", "published") and ticket.answer:
            out["craftsman_answer"] = {"answer": ticket.answer, "craftsman": ticket.answered_by, "record": ticket.published_record}
            name = next((r.name for r in ticket.routes if r.craftsman_id == ticket.answered_by), "") or "劳模工匠"
            out["message"] = f"{name}已解答，答案见下方。"  # no longer "转交…解答": that was while it waited
    out["feedback"] = [{"helpful": f.helpful, "comment": f.comment, "created_at": f.created_at.isoformat() + "Z"} for f in feedback]
    return out


class QuestionLog:
    def __init__(self, engine: Engine, queue: TicketQueue) -> None:
        self.session = sessions(engine)
        self.queue = queue

    def _view(self, row: QuestionRow, feedback: list[FeedbackRow]) -> dict[str, Any]:
        """Called outside any open transaction: it reads the ticket's live state in its own."""
        ticket = self.queue.get(row.ticket_id) if row.ticket_id else None
        return question_view(row.result, row.id, row.asker, row.created_at, ticket, feedback)

    @staticmethod
    def just_asked(result: AskResult, asker: str) -> dict[str, Any]:
        """What ``get`` would read back right after ``Engine.ask`` stored ``result``, without the read: no feedback
        yet, the ticket as the ask's own transaction left it."""
        assert result.created_at is not None, "only a result Engine.ask has recorded"
        return question_view(result.to_dict(), result.id, asker, result.created_at, result.ticket, [])

    def get(self, question_id: str, asker: str | None = None) -> dict[str, Any]:
        """One question; with ``asker``, only if it is theirs (else NotFound, so existence does not leak)."""
        with self.session.begin() as session:
            row = session.get(QuestionRow, question_id)
            if row is None or (asker is not None and row.asker != asker):
                raise NotFound(f"question {question_id} does not exist")
            feedback = list(session.scalars(select(FeedbackRow).where(FeedbackRow.question_id == row.id).order_by(FeedbackRow.id)).all())
        return self._view(row, feedback)

    def list(self, asker: str | None = None, limit: int = 50, status: str | None = None,
             after: Position | None = None) -> list[dict[str, Any]]:
        """Questions newest first, of one asker and of one status (``out_of_scope``: the maintainers' triage list),
        from just after ``after`` (the last one of the previous page)."""
        with self.session.begin() as session:
            query = newest_first(select(QuestionRow), QuestionRow.created_at, QuestionRow.id, after).limit(limit)
            if asker is not None:
                query = query.where(QuestionRow.asker == asker)
            if status is not None:
                query = query.where(QuestionRow.status == status)
            rows = session.scalars(query).all()
            return [{"id": r.id, "question": r.question, "status": r.status, "confidence": r.confidence, "ticket_id": r.ticket_id,
                     "asker": r.asker, "created_at": r.created_at.isoformat() + "Z"} for r in rows]

    def feedback_counts(self) -> dict[str, int]:
        """Verdicts on answers so far: {"helpful": n, "unhelpful": m}."""
        with self.session.begin() as session:
            rows = session.execute(select(FeedbackRow.helpful, func.count()).group_by(FeedbackRow.helpful)).all()
        counts = {"helpful": 0, "unhelpful": 0}
        for helpful, n in rows:
            counts["helpful" if helpful else "unhelpful"] += n
        return counts

    def feedback(self, question_id: str, asker: str | None, helpful: bool, comment: str) -> dict[str, Any]:
        """Record a verdict on the question's answer — the automatic one or the craftsman's. A question with neither
        (escalated and not yet answered, or declined) has nothing to judge: Conflict, so analytics count verdicts on
        answers only."""
        view = self.get(question_id, asker)
        if not view.get("answer") and "craftsman_answer" not in view:
            raise Conflict(f"question {question_id} is {view.get('status')} with no answer yet: nothing to give feedback on")
        with self.session.begin() as session:
            session.add(FeedbackRow(question_id=question_id, helpful=helpful, comment=comment.strip()))
        return self.get(question_id, asker)
