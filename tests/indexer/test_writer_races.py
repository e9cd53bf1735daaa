"""Index writers that overlap: a build, a publish's delta, a rollback and a merge each leave the index serving what
every one of them acknowledged. Each test forces the one interleaving that used to lose a change."""

import threading
from functools import partial

import indexer.build as build
import indexer.segment as segment
from indexer.build import BuildOptions, apply_changes, build_index
from indexer.merge import merge
from indexer.records import StandardQuestion, upsert_record
from indexer.store import IndexStore
from indexer.version import IndexVersion
from tests.rag.concurrency import Pause, interleave


def question(n: int) -> StandardQuestion:
    return StandardQuestion(id=f"sq-race-{n}", question=f"氩弧焊管道背面氧化发黑第{n}问", answer="背面充氩保护，流量10L/min",
                            aliases=[], trade="焊接", keywords=[])


def served(index, embedder) -> set[str]:
    return set(IndexVersion(IndexStore(index).current_path(), embedder).records.hashes())


def test_a_build_never_drops_a_record_published_while_it_read_the_corpus(mini_corpus, tmp_path, embedder, cache, monkeypatch):
    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache, BuildOptions())
    pause, read = Pause(), build.load_corpus

    def slow_read(path):
        load = read(path)
        pause.hit()
        return load

    def publish():  # Engine.publish's two writes: the corpus first, then the delta
        upsert_record(mini_corpus, question(1))
        return apply_changes(index, embedder, cache, upserts=[question(1)])

    monkeypatch.setattr(build, "load_corpus", slow_read)
    built, published = interleave(partial(build_index, mini_corpus, index, embedder, cache, BuildOptions()), publish, pause)
    assert not isinstance(built, Exception), built
    assert not isinstance(published, Exception), published
    assert "sq-race-1" in served(index, embedder)


def test_a_rollback_is_not_undone_by_a_delta_committed_at_the_same_moment(mini_corpus, tmp_path, embedder, cache, monkeypatch):
    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache, BuildOptions())
    apply_changes(index, embedder, cache, upserts=[question(1)])  # the version the operator wants gone
    store, pause, switch = IndexStore(index), Pause(), IndexStore.switch

    def paused_switch(self, version):
        if threading.current_thread().name != "MainThread" and version != store.manifest().get("parent"):
            pause.hit()
        return switch(self, version)

    monkeypatch.setattr(IndexStore, "switch", paused_switch)
    delta, rolled = interleave(partial(apply_changes, index, embedder, cache, upserts=[question(2)]), store.rollback, pause)
    assert not isinstance(delta, Exception) and not isinstance(rolled, Exception), (delta, rolled)
    # the rollback waited for the delta, then stepped back from it: the delta is what was rolled back
    assert rolled == store.manifest(delta.version)["parent"] and store.current_version() == rolled
    assert "sq-race-1" in served(index, embedder) and "sq-race-2" not in served(index, embedder)


def test_a_merge_survives_a_delta_committed_while_it_writes_its_segment(mini_corpus, tmp_path, embedder, cache, monkeypatch):
    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache, BuildOptions())
    apply_changes(index, embedder, cache, upserts=[question(1)])  # two segments: something to fold
    write, published = segment._write_arrays, []

    def write_then_publish(staging, data, ann):
        kinds = write(staging, data, ann)
        if not published:  # the first segment written is the merge's, half done; the delta writes its own after
            published.append(None)
            published.append(apply_changes(index, embedder, cache, upserts=[question(2)]))
        return kinds

    monkeypatch.setattr(segment, "_write_arrays", write_then_publish)
    report = merge(index, embedder)
    assert published[-1] is not None and report is not None
    assert {"sq-race-1", "sq-race-2"} <= served(index, embedder)
