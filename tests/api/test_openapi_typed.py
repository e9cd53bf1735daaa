"""Every /v1 success response is typed in the served OpenAPI document, and the response models describe the bodies
the engine builds without adding to them or dropping from them."""

from __future__ import annotations

from datetime import datetime

from api.schemas import QuestionView, TicketOut
from rag.db import QuestionRow, connect, sessions
from rag.engine import AskResult
from rag.escalate import Route, Ticket


def untyped(schema: dict) -> bool:
    """The rule of the programme's check: no schema, a bare object, or an open object naming no property."""
    return (not schema or schema == {"type": "object"}
            or (schema.get("type") == "object" and schema.get("additionalProperties") is True and not schema.get("properties")))


def test_every_v1_success_response_names_its_properties(server):
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    operations, bare = 0, []
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            operations += 1
            for code, response in op.get("responses", {}).items():
                if code.startswith("2") and code != "204":
                    schema = ((response.get("content") or {}).get("application/json") or {}).get("schema") or {}
                    if untyped(schema):
                        bare.append(f"{method.upper()} {path} {code}")
    assert operations and not bare, bare


def test_ticket_model_names_every_key_of_a_ticket_in_order():
    ticket = Ticket("T1", "焊缝气孔怎么办", "ent-a", "open", 0.5, [], ["焊接"], [Route("cm-1", "李红", 0.9)],
                    created_at=datetime(2026, 1, 1), updated_at=datetime(2026, 1, 1))
    assert list(TicketOut.model_fields) == list(ticket.to_dict())


def test_question_model_names_every_key_of_an_answer_in_order():
    stored = list(AskResult("answered", "焊缝气孔怎么办", 0.9).to_dict())
    declared = list(QuestionView.model_fields)
    assert [k for k in declared if k in stored] == stored


def test_question_stored_by_an_older_version_reads_back_as_stored(server):
    # As asked before message, matched_question, generated and in_scope existed, and a related item had no snippet.
    old = {"id": "Qold000000001", "status": "answered", "question": "带式输送机跑偏怎么调整", "answer": "调整托辊。[1]",
           "standard": False, "sources": [{"n": 1, "kind": "achievement", "id": "ach-m-4", "title": "纠偏装置", "snippet": "立辊"}],
           "related": {"courses": [{"id": "course-m-1", "kind": "course", "title": "车削技巧"}], "achievements": [],
                       "craftsmen": [{"id": "cm-m-1", "kind": "craftsman", "title": "王建国"}]},
           "confidence": 0.93, "ticket": None, "index_version": "v-old", "rating": {"kept": "unknown keys too"}}
    with sessions(connect(server.env["JIANGXIN_DATABASE_URL"])).begin() as session:
        session.add(QuestionRow(id=old["id"], asker="ent-a", question=old["question"], status="answered",
                                confidence=0.93, result=old, index_version="v-old", created_at=datetime(2026, 1, 1)))
    with server.client("ent_a") as c:
        r = c.get(f"/v1/questions/{old['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {**old, "asker": "ent-a", "created_at": "2026-01-01T00:00:00Z", "feedback": []}
