"""The field sets' labels keep one standard: an answerable question has a record graded 2, an in-domain question
without one is not answerable, no course is graded 2, and eval/field's re-judged grades are the ones in qrels.tsv."""

import csv

import pytest

from eval.datasets import load_beir
from tests.conftest import ROOT

FIELD_SETS = ["eval/field", "eval/field2"]


@pytest.fixture(scope="module", params=FIELD_SETS)
def dataset(request):
    return load_beir(ROOT / request.param)


def test_a_question_is_answerable_exactly_when_a_record_is_graded_2(dataset):
    wrong = [q.id for q in dataset.queries if q.scope == "in_domain"
             and q.answerable != (2 in dataset.qrels.get(q.id, {}).values())]
    assert wrong == []


def test_no_course_is_graded_2(dataset):
    kinds = {r.id: r.kind for r in dataset.records}
    courses = [(qid, rid) for qid, grades in dataset.qrels.items() for rid, grade in grades.items()
               if kinds[rid] == "course" and grade == 2]
    assert courses == []


def test_the_re_judged_grades_are_the_ones_in_qrels():
    field = load_beir(ROOT / "eval/field")
    qrels, kinds = field.qrels, {r.id: r.kind for r in field.records}
    with (ROOT / "eval/field/rejudged.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 1003
    differ = [r for r in rows if qrels.get(r["query-id"], {}).get(r["corpus-id"], 0) != int(r["grade"])]
    assert differ == []
    for r in rows:  # a split over 2 was decided by the third judge, and only then
        split = (r["writer"] == "2") != (r["blind"] == "2") and kinds[r["corpus-id"]] != "course"
        assert bool(r["third"]) == split, r
        if split:
            assert (int(r["grade"]) == 2) == (r["third"] == "2"), r
