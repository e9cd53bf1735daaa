"""What a process that died left in flight is recovered by the next recovery pass (api/service.py Recoverer): a real
index, a real SQLite file. Here the service case of a visit written into the corpus and the index, its process killed
before the visit was marked published, or failed while the index stayed busy: the visit goes back to confirmed and
the case is withdrawn from both."""

from datetime import timedelta

import pytest
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



def test_a_case_that_fails_while_the_index_stays_busy_is_left_to_recovery(mini_corpus, tmp_path, embedder, cache,
                                                                          monkeypatch):
    """The case's delta and its withdrawal both wait for an index another process holds: the maintainer hears the
    index is busy (503), the visit stays publishing, and the recovery pass after confirms it back with nothing live."""
    import threading
    from types import SimpleNamespace

    import indexer.build as build
    from api.routes.visits import CaseIn, publish_case
    from api.security import Principal
    from indexer.errors import WithdrawalPending
    from indexer.store import IndexStore

    build_index(mini_corpus, tmp_path / "index", embedder, cache, BuildOptions())
    db = connect(f"sqlite:///{tmp_path / 'q.db'}")
    engine = Engine(LiveIndex(tmp_path / "index", embedder), TicketQueue(db), EngineConfig(mini_corpus, tmp_path / "index"), cache)
    programme = Programme(db)
    visit = programme.request_visit("ent-a", "现场", "d", "焊接", "湖北", "地址", [], "cm-1", consent=True)
    programme.schedule(visit.id, "cm-1", SOON)
    programme.report(visit.id, "cm-1", {"problem": "p", "actions": "a", "results": "r", "advice": ""})
    programme.confirm(visit.id, "ent-a")
    monkeypatch.setattr(build, "DELTA_WAIT", 0.2)
    held, done = threading.Event(), threading.Event()

    def other_build():
        with IndexStore(tmp_path / "index").writing():
            held.set()
            done.wait(30)

    thread = threading.Thread(target=other_build)
    thread.start()
    held.wait(10)
    try:
        body = CaseIn(title="焊缝气孔返修", problem="气孔", actions="烘干焊条", results="合格率提升")
        with pytest.raises(WithdrawalPending):
            publish_case(visit.id, body, Principal("k", "maintainer", "ops", "ops"), SimpleNamespace(programme=programme, engine=engine))
        assert programme.visit(visit.id, Viewer("maintainer", "")).status == "publishing"
    finally:
        done.set()
        thread.join()
    with sessions(db).begin() as s:  # a lease's length later
        s.execute(update(VisitRow).where(VisitRow.id == visit.id).values(updated_at=utcnow() - timedelta(minutes=2)))
    assert Recoverer(engine, PublishJobs(engine), ImportJobs(engine), programme).run_once()["visits"] == [visit.id]
    assert programme.visit(visit.id, Viewer("maintainer", "")).status == "confirmed"
    assert case_record_id(visit.id) not in engine.live.get().records
    assert case_record_id(visit.id) not in {r.id for r in load_corpus(mini_corpus).records}
