"""The live index swaps versions in the background: requests keep the loaded version while a new one loads,
and a version that cannot load (corrupt, another embedder, pruned) leaves the old one serving and is reported."""

import json
import shutil
import threading
from pathlib import Path

import pytest

from indexer.build import build_index
from indexer.corpus_store import CorpusStore
from indexer.errors import IndexCorrupt, IndexMismatchError, IndexNotFound
from indexer.records import StandardQuestion
from indexer.store import MANIFEST, IndexStore, atomic_write_text
from indexer.version import IndexVersion, LiveIndex
from tests.conftest import MINI

NEW_ID = "sq-swap-1"


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder, cache):
    """An index folder with two versions: the mini corpus, then the same plus one standard question."""
    root = tmp_path_factory.mktemp("swap")
    corpus = root / "corpus"
    shutil.copytree(MINI, corpus)
    first = build_index(corpus, root / "index", embedder, cache).version
    CorpusStore(corpus).upsert(StandardQuestion(id=NEW_ID, question="液压卡盘夹紧力不足怎么办", answer="1. 检查液压站压力。",
                                                trade="数控机床"))
    second = build_index(corpus, root / "index", embedder, cache).version
    return root / "index", first, second


@pytest.fixture
def index(built, tmp_path):
    """A private copy serving the first version; tests move CURRENT as they need."""
    source, first, second = built
    target = tmp_path / "index"
    shutil.copytree(source, target)
    IndexStore(target).switch(first)
    return target, first, second


class GatedLoad:
    """Loads versions for real, but holds the load of ``held`` until ``release`` is set."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: Path, embedder) -> IndexVersion:
        if path.name == self.held:
            self.started.set()
            assert self.release.wait(60)
        return IndexVersion(path, embedder)


def in_thread(fn, timeout: float = 10.0):
    """Run ``fn`` in a thread; fail (instead of hanging) if it does not return within ``timeout``."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call blocked"
    return box[0]


def test_get_returns_the_old_version_at_once_while_the_new_one_loads(index, embedder):
    folder, first, second = index
    gate = GatedLoad(second)
    live = LiveIndex(folder, embedder, check_interval=0, load=gate)
    assert live.get().version == first
    IndexStore(folder).switch(second)
    assert in_thread(live.get).version == first
    assert gate.started.wait(30)  # the new version is loading now, held at the gate
    for _ in range(20):
        assert in_thread(live.get).version == first
    assert live.state().state == "loading" and live.state().loading == second
    gate.release.set()
    swapped = live.refresh(wait=True)
    assert swapped.version == second and NEW_ID in swapped.records and live.get() is swapped
    assert live.state().state == "ok"


def test_current_is_read_at_most_once_per_check_interval(index, embedder):
    folder, first, _ = index
    live = LiveIndex(folder, embedder, check_interval=3600)
    live.get()
    reads = []
    original = live.store.current_version
    live.store.current_version = lambda: reads.append(1) or original()
    for _ in range(1000):
        live.get()
    assert reads == []
    live.check_interval = 0
    live._next_check = 0
    for _ in range(10):
        live.get()
    assert len(reads) == 10


def test_a_corrupt_new_version_keeps_the_old_one_serving_and_is_reported(index, embedder):
    folder, first, second = index
    live = LiveIndex(folder, embedder, check_interval=0)
    live.get()
    with open(folder / "versions" / second / "terms.bin", "ab") as handle:
        handle.write("未登录".encode())
    IndexStore(folder).switch(first)  # switch verifies; CURRENT is moved by hand to the corrupted version
    atomic_write_text(folder / "CURRENT", second + "\n")
    with pytest.raises(IndexCorrupt, match=second):
        live.refresh(wait=True)
    for _ in range(5):  # no reload per request: the failure is remembered until the retry interval
        assert live.get().version == first
    state = live.state()
    assert (state.state, state.serving, state.current) == ("stale_failed_load", first, second)
    assert (state.failure.version, state.failure.error, state.failures_total) == (second, "IndexCorrupt", 1)


def test_a_version_built_with_another_embedder_keeps_the_old_one_serving(index, embedder):
    folder, first, _ = index
    live = LiveIndex(folder, embedder, check_interval=0)
    live.get()
    other = "29990101T000000-other"
    shutil.copytree(folder / "versions" / first, folder / "versions" / other)
    manifest = json.loads((folder / "versions" / other / MANIFEST).read_text(encoding="utf-8"))
    manifest["version"], manifest["model"]["id"] = other, "st/another-model@1"
    (folder / "versions" / other / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    IndexStore(folder).switch(other)
    with pytest.raises(IndexMismatchError):
        live.refresh(wait=True)
    assert live.get().version == first
    assert live.state().state == "stale_failed_load" and live.state().failure.error == "IndexMismatchError"


def test_a_pruned_version_keeps_the_old_one_serving_and_rollback_clears_the_state(index, embedder):
    folder, first, _ = index
    live = LiveIndex(folder, embedder, check_interval=0)
    live.get()
    atomic_write_text(folder / "CURRENT", "20000101T000000-gone\n")
    with pytest.raises(IndexNotFound):
        live.refresh(wait=True)
    assert live.get().version == first and live.state().state == "stale_failed_load"
    atomic_write_text(folder / "CURRENT", first + "\n")
    assert live.get().version == first and live.state().state == "ok"


def test_the_first_load_happens_in_the_caller_and_raises_when_nothing_can_serve(tmp_path, index, embedder):
    with pytest.raises(IndexNotFound):
        LiveIndex(tmp_path / "empty", embedder).get()
    folder, first, _ = index
    live = LiveIndex(folder, embedder)
    assert live.state().state == "unavailable"
    assert live.get().version == first and live.state().serving == first


def test_many_requests_noticing_a_new_version_start_one_load(index, embedder):
    folder, first, second = index
    gate = GatedLoad(second)
    loads: list[str] = []
    live = LiveIndex(folder, embedder, check_interval=0, load=lambda path, emb: loads.append(path.name) or gate(path, emb))
    live.get()
    IndexStore(folder).switch(second)
    barrier = threading.Barrier(16)
    served: list[str] = []

    def request() -> None:
        barrier.wait()
        for _ in range(20):
            served.append(live.get().version)

    threads = [threading.Thread(target=request) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert gate.started.wait(30) and served == [first] * 320
    gate.release.set()
    assert live.refresh(wait=True).version == second and loads == [first, second]


def test_a_version_loaded_after_current_moved_back_is_not_served(index, embedder):
    folder, first, second = index
    gate = GatedLoad(second)
    live = LiveIndex(folder, embedder, check_interval=0, load=gate)
    live.get()
    IndexStore(folder).switch(second)
    live.get()
    assert gate.started.wait(30)
    IndexStore(folder).switch(first)  # a rollback while the new version loads
    gate.release.set()
    assert live.refresh(wait=True).version == first and live.state().state == "ok"
