import pytest

from eval.datasets import load_beir
from indexer.errors import DatasetError


def make(folder, corpus='{"_id": "d1", "title": "t", "text": "细长轴"}\n', queries='{"_id": "q1", "text": "长轴", "type": "x"}\n',
         qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n"):
    folder.mkdir(exist_ok=True)
    for name, content in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels.tsv", qrels)):
        if content is not None:
            (folder / name).write_text(content, encoding="utf-8")
    return folder


def test_loads_corpus_queries_and_graded_qrels(tmp_path):
    data = load_beir(make(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\n"))
    assert [r.id for r in data.records] == ["d1"] and data.queries[0].type == "x"
    assert data.qrels == {"q1": {"d1": 2}} and [q.id for q in data.judged()] == ["q1"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"queries\.jsonl: file is missing"):
        load_beir(make(tmp_path, queries=None))


def test_bad_qrels_line_is_located(tmp_path):
    with pytest.raises(DatasetError, match=r"qrels\.tsv:3: expected 'query-id<TAB>corpus-id<TAB>score', got 2"):
        load_beir(make(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d1\t1\n"))
    with pytest.raises(DatasetError, match=r"qrels\.tsv:2: score 'high' is not an integer"):
        load_beir(make(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh\n"))


def test_bad_json_and_unknown_judged_document_are_reported(tmp_path):
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: invalid JSON"):
        load_beir(make(tmp_path, corpus='{"_id": "d1", "text": "a"}\n{oops\n'))
    with pytest.raises(DatasetError, match="judges unknown document 'd9'"):
        load_beir(make(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td9\t1\n"))


def test_empty_query_is_skipped_and_reported(tmp_path):
    data = load_beir(make(tmp_path, queries='{"_id": "q1", "text": "长轴"}\n{"_id": "q2", "text": ""}\n'))
    assert [q.id for q in data.queries] == ["q1"] and "q2" in data.skipped[0]


def test_generated_patents_validate_and_have_distinct_ids():
    from eval.patents_gen import SHARED, generate

    if not (SHARED / "csl" / "corpus.jsonl").exists():
        import pytest

        pytest.skip(f"{SHARED}/csl is not on this machine")
    records = list(generate(60))
    assert len({r.id for r in records}) == 60 and all(r.kind == "patent" and r.claims for r in records)
    assert all(c.startswith(f"{i}.") for r in records for i, c in enumerate(r.claims, start=1))
