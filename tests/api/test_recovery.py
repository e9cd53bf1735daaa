"""What a process that died left in flight is recovered by the next recovery pass (api/service.py Recoverer): a real
index, a real SQLite file. Here the service case of a visit written into the corpus and the index, its process killed
before the visit was marked published, or failed while the index stayed busy: the visit goes back to confirmed and
the case is withdrawn from both."""

from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import update

import indexer.build as build
from api.imports import ImportJobs
from api.jobs import PublishJobs
from api.routes.visits import CaseIn, publish_case
from api.security import Principal
from api.service import Recoverer
from indexer.build import BuildOptions, build_index
from indexer.errors import WithdrawalPending
from indexer.records import ServiceCase, load_corpus
from indexer.version import LiveIndex
from rag.db import VisitRow, connect, sessions, utcnow
from rag.engine import Engine, EngineConfig
from rag.escalate import TicketQueue
from rag.leases import Lease
from rag.programme import Programme, Viewer, case_record_id
from tests.rag.concurrency import index_held

SOON = (utcnow() + timedelta(days=10)).date().isoformat()


@dataclass
class Site:
    """A corpus, its index, an engine and the programme on one SQLite file, with a visit confirmed (consent given)."""

    corpus: object
    db: object
    engine: Engine
    programme: Programme
    visit_id: str

    def recover(self) -> list[str]:
        """A recovery pass, a lease's length after the visit last changed; the visits it gave back."""
        with sessions(self.db).begin() as s:
            s.execute(update(VisitRow).where(VisitRow.id == self.visit_id).values(updated_at=utcnow() - timedelta(minutes=2)))
        return Recoverer(self.engine, PublishJobs(self.engine), ImportJobs(self.engine), self.programme).run_once()["visits"]

    def status(self) -> str:
        return self.programme.visit(self.visit_id, Viewer("maintainer", "")).status

    def case_withdrawn(self) -> bool:
        record_id = case_record_id(self.visit_id)
        return (record_id not in self.engine.live.get().records
                and record_id not in {r.id for r in load_corpus(self.corpus).records})


@pytest.fixture
def site(mini_corpus, tmp_path, embedder, cache) -> Site:
    build_index(mini_corpus, tmp_path / "index", embedder, cache, BuildOptions())
    db = connect(f"sqlite:///{tmp_path / 'q.db'}")
    engine = Engine(LiveIndex(tmp_path / "index", embedder), TicketQueue(db), EngineConfig(mini_corpus, tmp_path / "index"), cache)
    programme = Programme(db)
    visit = programme.request_visit("ent-a", "现场", "d", "焊接", "湖北", "地址", [], "cm-1", consent=True)
    programme.schedule(visit.id, "cm-1", SOON)
    programme.report(visit.id, "cm-1", {"problem": "p", "actions": "a", "results": "r", "advice": ""})
    programme.confirm(visit.id, "ent-a")
    return Site(mini_corpus, db, engine, programme, visit.id)


def test_a_service_case_whose_process_died_is_withdrawn_and_its_visit_confirmed(site):
    site.programme.start_case(site.visit_id)
    lease = Lease(site.db, f"visit:{site.visit_id}").take()
    case = ServiceCase(id=case_record_id(site.visit_id), title="焊缝气孔返修", problem="气孔", actions="烘干焊条",
                       results="合格率提升", trade="焊接", region="湖北")
    site.engine.publish_record(case)  # the case is live …
    lease._stop.set()                 # … and the process dies before it marks the visit published

    assert site.recover() == []  # its lease still runs: it may be slow, not dead
    lease.release()              # the lease runs out (here: at once)
    assert site.recover() == [site.visit_id]
    assert site.status() == "confirmed" and site.case_withdrawn()


def test_a_case_that_fails_while_the_index_stays_busy_is_left_to_recovery(site, monkeypatch):
    """The case's delta and its withdrawal both wait for an index another process holds: the maintainer hears the
    index is busy (503), the visit stays publishing, and the recovery pass after confirms it back with nothing live."""
    monkeypatch.setattr(build, "DELTA_WAIT", 0.2)
    body = CaseIn(title="焊缝气孔返修", problem="气孔", actions="烘干焊条", results="合格率提升")
    with index_held(site.engine.config.index_dir):
        with pytest.raises(WithdrawalPending):
            publish_case(site.visit_id, body, Principal("k", "maintainer", "ops", "ops"),
                         SimpleNamespace(programme=site.programme, engine=site.engine))
        assert site.status() == "publishing"
    assert site.recover() == [site.visit_id]
    assert site.status() == "confirmed" and site.case_withdrawn()
