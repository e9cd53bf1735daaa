"""What a process that died left in flight is recovered by the next recovery pass (api/service.py Recoverer): a real
index, a real SQLite file. Here the service case of a visit written into the corpus and the index, its process killed
before the visit was marked published: the visit goes back to confirmed and the case is withdrawn from both."""

from datetime import timedelta

from sqlalchemy import update

from api.imports import ImportJobs
from api.jobs import PublishJobs
from api.service import Recoverer
from indexer.build import BuildOptions, build_index
from indexer.records import ServiceCase, load_corpus
from indexer.version import LiveIndex
from rag.db import VisitRow, connect, sessions, utcnow
from rag.engine import Engine, EngineConfig
from rag.escalate import TicketQueue
from rag.leases import Lease
from rag.programme import Programme, Viewer, case_record_id

SOON = (utcnow() + timedelta(days=10)).date().isoformat()


def test_a_service_case_whose_process_died_is_withdrawn_and_its_visit_confirmed(mini_corpus, tmp_path, embedder, cache):
    build_index(mini_corpus, tmp_path / "index", embedder, cache, BuildOptions())
    db = connect(f"sqlite:///{tmp_path / 'q.db'}")
    engine = Engine(LiveIndex(tmp_path / "index", embedder), TicketQueue(db), EngineConfig(mini_corpus, tmp_path / "index"), cache)
    programme = Programme(db)
    visit = programme.request_visit("ent-a", "现场", "d", "焊接", "湖北", "地址", [], "cm-1", consent=True)
    programme.schedule(visit.id, "cm-1", SOON)
    programme.report(visit.id, "cm-1", {"problem": "p", "actions": "a", "results": "r", "advice": ""})
    programme.confirm(visit.id, "ent-a")
    programme.start_case(visit.id)
    lease = Lease(db, f"visit:{visit.id}").take()
    case = ServiceCase(id=case_record_id(visit.id), title="焊缝气孔返修", problem="气孔", actions="烘干焊条", results="合格率提升",
                       trade="焊接", region="湖北")
    engine.publish_record(case)  # the case is live …
    lease._stop.set()            # … and the process dies before it marks the visit published

    recoverer = Recoverer(engine, PublishJobs(engine), ImportJobs(engine), programme)
    assert recoverer.run_once()["visits"] == []  # its lease still runs: it may be slow, not dead
    lease.release()              # the lease runs out (here: at once) …
    with sessions(db).begin() as s:  # … and a lease's length has passed since the visit last changed
        s.execute(update(VisitRow).where(VisitRow.id == visit.id).values(updated_at=utcnow() - timedelta(minutes=2)))
    assert recoverer.run_once()["visits"] == [visit.id]
    assert programme.visit(visit.id, Viewer("maintainer", "")).status == "confirmed"
    assert case.id not in engine.live.get().records
    assert case.id not in {r.id for r in load_corpus(mini_corpus).records}

