"""The Milvus backend on Milvus Lite: the same hits and scores as the local engine, versioned rows (a delta is invisible
until committed, an open version keeps its view, a rollback is exact), crash recovery, racing publishers, pruning."""

import threading
from pathlib import Path

import numpy as np
import pytest

from api.cli import ranked_system
from eval.datasets import load_beir
from eval.metrics import mrr_at
from eval.run import evaluate_retrieval
from indexer.build import BuildOptions, apply_changes, build_index
from indexer.milvus import MilvusSpec, collection_base, connect
from indexer.ports import Filters
from indexer.records import Passage
from indexer.store import KEEP_VERSIONS, IndexStore
from indexer.version import IndexVersion
from tests.conftest import MINI, ROOT

QUESTIONS = ["焊缝气孔怎么办", "细长轴车削振动", "伺服报警SV0401", "输送带跑偏", "液压站油温高", "轴承温升"]
FILTERS = [Filters(kinds=("course",)), Filters(kinds=("achievement", "standard_question")), Filters(trades=("焊接",)),
           Filters(date_from="2020-01-01", date_to="2021-12-31"), Filters(kinds=("achievement",), trades=("机加工",))]


def open_current(index: Path, embedder) -> IndexVersion:
    return IndexVersion(IndexStore(index).current_path(), embedder)


def milvus_index(tmp: Path, embedder, cache, name: str = "milvus") -> tuple[Path, MilvusSpec]:
    spec = MilvusSpec(str(tmp / f"{name}.db"))
    build_index(MINI, tmp / name, embedder, cache, BuildOptions(milvus=spec))
    return tmp / name, spec


def assert_same_hits(a, b, atol=1e-5):
    """Same ids in the same order and the same scores; ids may differ only among scores tied within ``atol`` (float32
    in Milvus): swapped within the list, or a tie at its cut-off."""
    assert len(a) == len(b)
    assert np.allclose([h.score for h in a], [h.score for h in b], rtol=0, atol=atol)
    scores_b = {h.chunk_id: h.score for h in b}
    for x, y in zip(a, b):
        if x.chunk_id != y.chunk_id:
            tied = x.chunk_id in scores_b and abs(scores_b[x.chunk_id] - x.score) <= atol
            assert tied or abs(x.score - b[-1].score) <= atol, (x, y)


def searches(version: IndexVersion, filters: Filters = Filters(), k: int = 10) -> dict[str, list]:
    out = {}
    for q in QUESTIONS:
        terms = version.tokenizer.tokenize(q)
        out[f"chunks {q}"] = version.sparse.search(terms, k, filters)
        out[f"records {q}"] = version.sparse.search_records(terms, k, filters)
        out[f"dense {q}"] = version.dense.search(version.embedder.embed_queries([q])[0], k, filters=filters)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory, embedder, cache, mini_index):
    tmp = tmp_path_factory.mktemp("milvus-pair")
    index, _ = milvus_index(tmp, embedder, cache)
    return open_current(mini_index, embedder), open_current(index, embedder)


def test_a_milvus_version_serves_its_search_from_milvus_and_the_rest_from_its_files(pair):
    local, milvus = pair
    assert milvus.manifest["backend"] == "milvus" and local.manifest["backend"] == "local"
    assert type(milvus.sparse).__name__ == "MilvusSparse" and type(milvus.dense).__name__ == "MilvusDense"
    counts = milvus.milvus.count(milvus.manifest["milvus"]["seq"])
    assert counts == {milvus.milvus.chunks: milvus.manifest["counts"]["chunks"],
                      milvus.milvus.records: milvus.manifest["counts"]["records"]}


@pytest.mark.parametrize("filters", [Filters(), *FILTERS])
def test_same_hits_and_scores_as_the_local_engine_with_and_without_filters(pair, filters):
    local, milvus = pair
    a, b = searches(local, filters), searches(milvus, filters)
    for key in a:
        assert_same_hits(a[key], b[key], atol=1e-5 if not key.startswith("dense") else 1e-4)


def test_similarities_equal_the_local_engine(pair):
    local, milvus = pair
    compared = 0
    for q in QUESTIONS:
        vector = local.embedder.embed_queries([q])[0]
        ids = [h.record_id for h in local.sparse.search_records(local.tokenizer.tokenize(q), 20)] + ["no-such-record"]
        a, b = local.dense.similarities(vector, ids), milvus.dense.similarities(vector, ids)
        assert set(a) == set(b) and "no-such-record" not in a
        assert np.allclose([a[i] for i in a], [b[i] for i in a], rtol=0, atol=1e-4)
        compared += len(a)
    assert compared >= 10


def test_parity_on_the_sample(tmp_path, embedder, cache):
    """eval/sample indexed by both backends: BM25 top-10 ids and scores equal (1e-5), every mode's MRR@10 within 0.005."""
    dataset = load_beir(ROOT / "eval" / "sample")
    reports, versions = {}, {}
    for name, spec in (("local", None), ("milvus", MilvusSpec(str(tmp_path / "m.db")))):
        reports[name] = evaluate_retrieval(dataset, embedder, cache, ROOT / "corpus", index_dir=tmp_path / name,
                                           extra_systems={"ranked": ranked_system()}, milvus=spec)
        versions[name] = open_current(tmp_path / name, embedder)
    assert versions["milvus"].manifest["backend"] == "milvus"
    local, milvus = versions["local"], versions["milvus"]
    for query in dataset.judged():
        terms = local.tokenizer.tokenize(query.text)
        assert_same_hits(local.sparse.search(terms, 10), milvus.sparse.search(terms, 10))
        assert_same_hits(local.sparse.search_records(terms, 10), milvus.sparse.search_records(terms, 10))
    for mode in ("bm25", "dense", "hybrid", "ranked"):
        a, b = (np.mean([mrr_at(reports[n].systems[mode].rankings[q.id], dataset.qrels[q.id], 10) for q in dataset.judged()])
                for n in ("local", "milvus"))
        assert abs(a - b) <= 0.005, (mode, a, b)


NEW = Passage(id="p-new", text="钛合金薄壁件铣削颤振用阻尼减振刀杆解决。", title="钛合金薄壁件铣削颤振")


def test_a_delta_is_searchable_at_once_and_an_open_version_keeps_its_view(tmp_path, embedder, cache):
    index, _ = milvus_index(tmp_path, embedder, cache)
    before = open_current(index, embedder)
    seen = searches(before)
    gone = before.sparse.search(before.tokenizer.tokenize("焊缝气孔"), 1)[0].record_id
    report = apply_changes(index, embedder, cache, upserts=[NEW], deletes=[gone])
    assert report.delta
    after = open_current(index, embedder)
    assert after.manifest["milvus"]["seq"] == before.manifest["milvus"]["seq"] + 1
    assert after.sparse.search(after.tokenizer.tokenize("钛合金薄壁件颤振"), 1)[0].record_id == "p-new"
    for hits in searches(after).values():
        assert gone not in {h.record_id for h in hits}
    # the version loaded before the delta still sees exactly what it saw (a worker that has not reloaded yet)
    for key, hits in searches(before).items():
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in seen[key]]
    # the rows each version sees are exactly its chunks and records
    for version in (before, after):
        counts = version.milvus.count(version.manifest["milvus"]["seq"])
        assert list(counts.values()) == [version.manifest["counts"]["chunks"], version.manifest["counts"]["records"]]
    # a rollback serves the previous view exactly
    IndexStore(index).rollback()
    rolled = open_current(index, embedder)
    for key, hits in searches(rolled).items():
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in seen[key]]


def test_scores_after_a_delta_drift_by_at_most_the_change_of_the_average_length(tmp_path, embedder, cache):
    """Milvus rows keep the average length of their write (idf is exact): a row's weight moves by at most the relative
    change of the average length since (d ln w / d ln avgdl < 1), which one publish into a large index makes tiny."""
    index, _ = milvus_index(tmp_path, embedder, cache)
    local = tmp_path / "local"
    build_index(MINI, local, embedder, cache, BuildOptions())
    base = open_current(local, embedder).parts.stats["chunks"].avgdl
    for target in (index, local):
        apply_changes(target, embedder, cache, upserts=[NEW])
    a, b = open_current(local, embedder), open_current(index, embedder)
    moved = abs(a.parts.stats["chunks"].avgdl - base) / base
    assert 0 < moved < 0.05  # the mini corpus is small: one record moves the average visibly
    for q in [*QUESTIONS, "钛合金薄壁件颤振"]:
        terms = a.tokenizer.tokenize(q)
        x = {h.chunk_id: h.score for h in a.sparse.search(terms, 100)}
        y = {h.chunk_id: h.score for h in b.sparse.search(terms, 100)}
        assert x.keys() == y.keys()
        for cid, score in x.items():
            assert abs(y[cid] - score) <= moved * score + 1e-5, (q, cid)
        new_rows = [c for c in x if c.startswith("p-new")]
        assert all(abs(y[c] - x[c]) <= 1e-5 for c in new_rows)  # written with today's average: exact


def test_a_writer_that_crashes_before_commit_changes_nothing_and_the_next_one_clears_its_rows(tmp_path, embedder, cache,
                                                                                              monkeypatch):
    index, _ = milvus_index(tmp_path, embedder, cache)
    before = open_current(index, embedder)
    seen = searches(before)

    def crash(self, staging, manifest):
        raise OSError("disk full (simulated crash between the Milvus write and the version switch)")

    with monkeypatch.context() as patch:
        patch.setattr(IndexStore, "commit", crash)
        with pytest.raises(OSError):
            apply_changes(index, embedder, cache, upserts=[NEW],
                          deletes=[before.sparse.search(before.tokenizer.tokenize("焊缝气孔"), 1)[0].record_id])
    serving = open_current(index, embedder)
    assert serving.version == before.version
    for key, hits in searches(serving).items():
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in seen[key]]
    assert not serving.sparse.search(serving.tokenizer.tokenize("钛合金薄壁件颤振"), 10) or \
        "p-new" not in {h.record_id for h in serving.sparse.search(serving.tokenizer.tokenize("钛合金薄壁件颤振"), 10)}
    other = Passage(id="p-other", text="空压机排气温度高检查油冷却器。")
    apply_changes(index, embedder, cache, upserts=[other])
    after = open_current(index, embedder)
    counts = after.milvus.count(after.manifest["milvus"]["seq"])
    assert list(counts.values()) == [after.manifest["counts"]["chunks"], after.manifest["counts"]["records"]]
    assert "p-new" not in {h.record_id for h in after.sparse.search(after.tokenizer.tokenize("钛合金薄壁件颤振"), 50)}


def test_racing_publishers_each_land_once(tmp_path, embedder, cache):
    index, _ = milvus_index(tmp_path, embedder, cache)
    records = [Passage(id=f"p-race-{i}", text=f"第{i}号磨床主轴异响编号RACE{i}处理记录。") for i in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(records))

    def publish(record):
        try:
            start.wait()
            apply_changes(index, embedder, cache, upserts=[record])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    version = open_current(index, embedder)
    assert version.manifest["milvus"]["seq"] == 1 + len(records)
    for record in records:
        assert record.id in version.records
        hits = version.sparse.search(version.tokenizer.tokenize(record.text), 3)
        assert record.id in {h.record_id for h in hits}
    counts = version.milvus.count(version.manifest["milvus"]["seq"])
    assert list(counts.values()) == [version.manifest["counts"]["chunks"], version.manifest["counts"]["records"]]


def test_full_rebuilds_drop_the_collections_no_kept_version_names(tmp_path, embedder, cache):
    index, spec = milvus_index(tmp_path, embedder, cache)
    for _ in range(KEEP_VERSIONS + 1):
        build_index(MINI, index, embedder, cache, BuildOptions(full=True, milvus=spec))
    store = IndexStore(index)
    named = {store.manifest(v)["milvus"]["collection"] for v in store.versions()}
    prefix = collection_base(index, "")
    ours = {n.rpartition("_")[0] for n in connect(spec.location).list_collections() if n.startswith(prefix)}
    assert ours == named and len(named) <= KEEP_VERSIONS + 1
    # back to the local files: a full build, and the Milvus collections go once no version names them
    report = build_index(MINI, index, embedder, cache, BuildOptions())
    assert not report.delta and store.manifest()["backend"] == "local"


def test_milvus_without_a_uri_is_a_clear_error(tmp_path, cli_env):
    import subprocess
    import sys

    env = dict(cli_env, JIANGXIN_BACKEND="milvus")
    env.pop("JIANGXIN_MILVUS_URI", None)
    done = subprocess.run([sys.executable, "-m", "api.cli", "index", "--corpus", str(MINI), "--index", str(tmp_path / "i")],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert "JIANGXIN_MILVUS_URI" in done.stderr and "Traceback" not in done.stderr
