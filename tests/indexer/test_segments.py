"""Deltas: an index grown by random upserts and deletes scores exactly as one fresh build of the same records."""

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from indexer.build import BuildOptions, LocalWriter, apply_changes, build_index
from indexer.records import CorpusLoad, Passage
from indexer.store import IndexStore
from indexer.version import IndexVersion

WORDS = ["细长轴", "振动", "跟刀架", "焊缝", "气孔", "直线度", "变频器", "过电流", "输送带", "跑偏", "托辊", "主轴",
         "轴承", "温升", "液压", "泄漏", "密封圈", "伺服", "报警", "编码器"]
QUESTIONS = [["细长轴", "振动"], ["焊缝", "气孔", "气孔"], ["变频器", "过电流", "报警"], ["输送带", "跑偏", "托辊"],
             ["轴承", "温升"], ["液压", "泄漏", "密封圈", "未登录词"]]
NO_VECTORS = BuildOptions(dense_roles=())  # BM25 is what is compared; nothing needs embedding

sentences = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(lambda ws: "".join(ws) + "。")
texts = st.lists(sentences, min_size=1, max_size=8).map("".join)
ids = st.sampled_from([f"p-{i}" for i in range(12)])
operations = st.lists(st.one_of(st.tuples(st.just("upsert"), ids, texts), st.tuples(st.just("delete"), ids, st.just(""))),
                      min_size=1, max_size=10)


def corpus_folder(tmp: Path) -> Path:
    folder = tmp / "corpus"
    folder.mkdir()
    (folder / "dictionary.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    return folder


def all_scores(version: IndexVersion) -> dict[str, dict[str, float]]:
    out = {}
    for n, q in enumerate(QUESTIONS):
        out[f"chunks{n}"] = {h.chunk_id: h.score for h in version.sparse.search(q, 10_000)}
        out[f"records{n}"] = {h.record_id: h.score for h in version.sparse.search_records(q, 10_000)}
        out[f"idf{n}"] = {t: version.terms.idf(t) for t in q}
    return out


def assert_same(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> None:
    for key in a:
        assert a[key].keys() == b[key].keys(), key
        assert np.allclose([a[key][i] for i in a[key]], [b[key][i] for i in a[key]], rtol=0, atol=1e-6), key


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(texts, min_size=1, max_size=6), operations, st.booleans())
def test_deltas_score_as_a_fresh_full_build(tmp_path_factory, embedder, initial, ops, batched):
    tmp = tmp_path_factory.mktemp("delta")
    corpus = corpus_folder(tmp)
    live = {f"p-{i}": Passage(id=f"p-{i}", text=t) for i, t in enumerate(initial)}
    build_index(corpus, tmp / "grown", embedder, None, NO_VECTORS, load=CorpusLoad(list(live.values())))
    writer = LocalWriter(tmp / "grown", embedder, None, NO_VECTORS)  # a batch carries each id's last change
    for op, rid, text in ops:
        if op == "upsert":
            live[rid] = Passage(id=rid, text=text)
            writer.upsert([live[rid]])
        else:
            live.pop(rid, None)
            writer.delete([rid])
        if not batched:
            writer.commit()
    writer.commit()
    build_index(corpus, tmp / "fresh", embedder, None, NO_VECTORS, load=CorpusLoad(list(live.values())))
    grown = IndexVersion(IndexStore(tmp / "grown").current_path(), embedder)
    fresh = IndexVersion(IndexStore(tmp / "fresh").current_path(), embedder)
    assert grown.records.count() == fresh.records.count() == len(live)
    assert sorted(grown.records.hashes()) == sorted(live)
    assert_same(all_scores(grown), all_scores(fresh))
    every_id = [f"p-{i}#{j}" for i in range(12) for j in range(12)]  # the deleted and replaced ones' too
    assert grown.chunks.labels(every_id) == fresh.chunks.labels(every_id)
    assert {c: (r.record_id, r.kind, r.title) for c, r in fresh.chunks.get_many(every_id).items()} == fresh.chunks.labels(every_id)


def test_merge_folds_deltas_into_one_segment_with_the_same_scores(tmp_path, embedder):
    from indexer.merge import merge

    corpus = corpus_folder(tmp_path)
    records = [Passage(id=f"p-{i}", text="细长轴振动。跟刀架。" * (i + 1)) for i in range(5)]
    build_index(corpus, tmp_path / "i", embedder, None, NO_VECTORS, load=CorpusLoad(records))
    apply_changes(tmp_path / "i", embedder, None, [Passage(id="p-1", text="焊缝气孔。")], ["p-2"], NO_VECTORS)
    apply_changes(tmp_path / "i", embedder, None, [Passage(id="p-9", text="变频器过电流报警。")], [], NO_VECTORS)
    before = IndexVersion(IndexStore(tmp_path / "i").current_path(), embedder)
    assert len(before.manifest["segments"]) == 3
    merge(tmp_path / "i", embedder, NO_VECTORS)
    after = IndexVersion(IndexStore(tmp_path / "i").current_path(), embedder)
    assert len(after.manifest["segments"]) == 1 and not after.manifest["dead"]
    assert_same(all_scores(before), all_scores(after))


def test_what_is_published_while_a_merge_runs_is_kept(tmp_path, embedder):
    from indexer.merge import prepare, switch

    corpus = corpus_folder(tmp_path)
    live = {f"p-{i}": Passage(id=f"p-{i}", text="细长轴振动。跟刀架。" * (i + 1)) for i in range(6)}
    build_index(corpus, tmp_path / "i", embedder, None, NO_VECTORS, load=CorpusLoad(list(live.values())))
    apply_changes(tmp_path / "i", embedder, None, [Passage(id="p-1", text="焊缝气孔。")], ["p-2"], NO_VECTORS)
    live["p-1"] = Passage(id="p-1", text="焊缝气孔。")
    del live["p-2"]
    pending = prepare(tmp_path / "i", embedder, NO_VECTORS)  # the merged segment is written from this snapshot ...
    changes = [Passage(id="p-3", text="变频器过电流报警。"), Passage(id="p-1", text="输送带跑偏。托辊。"), Passage(id="p-7", text="液压泄漏。")]
    apply_changes(tmp_path / "i", embedder, None, changes, ["p-0", "p-5"], NO_VECTORS)  # ... while these are published
    live.update({r.id: r for r in changes})
    del live["p-0"], live["p-5"]
    report = switch(pending)
    assert report is not None
    merged = IndexVersion(IndexStore(tmp_path / "i").current_path(), embedder)
    assert len(merged.manifest["segments"]) == 2  # the merged segment, then the delta published meanwhile
    build_index(corpus, tmp_path / "fresh", embedder, None, NO_VECTORS, load=CorpusLoad(list(live.values())))
    fresh = IndexVersion(IndexStore(tmp_path / "fresh").current_path(), embedder)
    assert sorted(merged.records.hashes()) == sorted(live)
    assert_same(all_scores(merged), all_scores(fresh))
