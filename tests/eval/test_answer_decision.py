"""The answer / escalate / out-of-scope figures count what they say, overall and per set a question comes from."""

import numpy as np
import pytest

from eval.answers import OOD_SOURCE, Observation, answer_report, by_source, ceiling, decision, trade_labels
from eval.metrics import wilson


def observation(query_id: str, group: str, right: bool, source: str, direct: bool = False) -> Observation:
    empty = np.zeros(1)
    return Observation(query_id, group, right, direct, empty, empty.reshape(1, 1), empty, empty, source=source)


QUESTIONS = [  # (observation, confidence, in scope)
    (observation("f-1", "answerable", True, "field-heldout"), 0.95, True),     # answered right
    (observation("f-2", "answerable", False, "field-heldout"), 0.92, True),    # answered from a wrong record
    (observation("f-3", "answerable", True, "field-heldout"), 0.40, True),     # escalated
    (observation("f-4", "answerable", True, "field-heldout", direct=True), 0.10, True),  # a standard question's fast path
    (observation("f-5", "uncovered", False, "field-heldout"), 0.91, True),     # answered: wrong, the corpus lacks it
    (observation("r-1", "uncovered", False, "regs-heldout"), 0.20, False),     # declined as out of scope
    (observation("r-2", "uncovered", False, "regs-heldout"), 0.20, True),      # escalated
    (observation("o-1", "ood", False, OOD_SOURCE), 0.01, False),               # declined
    (observation("o-2", "ood", False, OOD_SOURCE), 0.01, True),                # reaches a craftsman
    (observation("o-3", "uncovered", False, OOD_SOURCE), 0.01, False),         # judged industrial, declined
]


def test_precision_counts_every_automatic_answer_and_coverage_only_answerable_questions():
    observations = [o for o, _, _ in QUESTIONS]
    confidences = np.array([c for _, c, _ in QUESTIONS])
    in_scope = np.array([s for _, _, s in QUESTIONS])
    d = decision(observations, confidences, 0.9, in_scope)
    assert d["answered"] == 4  # f-1, f-2, f-4 (direct), f-5
    assert d["precision"] == 2 / 4
    assert d["coverage"] == 3 / 4
    assert d["uncovered_declined"] == 2 / 4  # r-1 and o-3 of f-5, r-1, r-2, o-3
    assert d["ood_to_craftsman"] == 1 / 2
    assert d["intervals"]["precision"] == [round(v, 4) for v in wilson(2, 4)]
    assert d["intervals"]["uncovered_declined"] == [round(v, 4) for v in wilson(2, 4)]
    assert d["intervals"]["ood_to_craftsman"] == [round(v, 4) for v in wilson(1, 2)]


def test_the_wilson_interval_holds_the_measured_share_and_narrows_with_more_questions():
    assert wilson(0, 10) == pytest.approx((0.0, 3.8416 / 13.8416))  # nothing seen in 10: up to 28% stays plausible
    assert wilson(0, 10)[1] > wilson(0, 100)[1] > wilson(0, 1000)[1]
    lo, hi = wilson(9, 110)
    assert lo < 9 / 110 < hi and round(lo, 3) == 0.044 and round(hi, 3) == 0.148
    assert wilson(5, 10) == pytest.approx(tuple(reversed([1 - x for x in wilson(5, 10)])))
    assert wilson(0, 0) == (0.0, 1.0)


def test_each_set_says_what_its_questions_became():
    observations = [o for o, _, _ in QUESTIONS]
    confidences = np.array([c for _, c, _ in QUESTIONS])
    in_scope = np.array([s for _, _, s in QUESTIONS])
    parts = by_source(observations, confidences, 0.9, in_scope)
    assert parts["field-heldout"] == {"answerable": 4, "answered_right": 2, "answered_wrong": 2, "uncovered": 1,
                                      "uncovered_declined": 0, "ood": 0, "ood_to_craftsman": 0}
    assert parts["regs-heldout"] == {"answerable": 0, "answered_right": 0, "answered_wrong": 0, "uncovered": 2,
                                     "uncovered_declined": 1, "ood": 0, "ood_to_craftsman": 0}
    assert parts[OOD_SOURCE] == {"answerable": 0, "answered_right": 0, "answered_wrong": 0, "uncovered": 1,
                                 "uncovered_declined": 1, "ood": 2, "ood_to_craftsman": 1}
    report = answer_report(observations, confidences, 0.9, in_scope)
    assert report["by_source"] == parts
    totals = {key: sum(p[key] for p in parts.values()) for key in ("answered_right", "answered_wrong")}
    assert totals["answered_right"] + totals["answered_wrong"] == report["answered"]


def test_trade_labels_count_uncovered_trades_filed_under_their_own_and_covered_ones_mislabelled():
    def labelled(query_id, trade, covered, label):
        o = observation(query_id, "uncovered" if not covered else "answerable", False, "field-heldout")
        o.trade, o.trade_covered, o.labelled_trade = trade, covered, label
        return o

    observations = [labelled("u-1", "注塑", False, "注塑"), labelled("u-2", "注塑", False, "压铸"), labelled("u-3", "电梯", False, ""),
                    labelled("c-1", "焊接", True, ""), labelled("c-2", "焊接", True, "注塑"), observation("o-1", "ood", False, OOD_SOURCE)]
    t = trade_labels(observations)
    assert t == {"uncovered_trade_questions": 3, "labelled_own_trade": 1 / 3, "labelled_any": 2 / 3,
                 "covered_trade_questions": 2, "covered_mislabelled": 1 / 2}


def test_the_ceiling_says_which_kind_of_error_holds_coverage_back():
    """Eight answerable questions, one topped by a wrong record at 0.97, and an uncovered one at 0.99: no threshold
    reaches 85% precision (0.99 answers only the uncovered one); an oracle for either error lets the threshold fall."""
    rows = [(observation(f"a-{i}", "answerable", True, "field-fit"), c) for i, c in enumerate((0.98, 0.96, 0.9, 0.8, 0.7, 0.6, 0.2))]
    rows += [(observation("a-wrong", "answerable", False, "field-fit"), 0.97),
             (observation("u-1", "uncovered", False, "field-fit"), 0.99)]
    rows[0][0].relevant = np.array([1.0, 0.0])
    c = ceiling([o for o, _ in rows], np.array([c for _, c in rows]), 0.85)
    assert c["answerable"] == 8 and c["top_record_right"] == 7 / 8
    assert c["right_in_top3"] == 1 / 8  # only a-0 says where its best record is
    assert c["coverage"] is None  # at best 6 right of 8 answered: no threshold reaches 85%
    assert c["coverage_if_unanswerable_known"] == 7 / 8  # 6 of 7 answered right at 0.30: a-wrong still answered
    assert c["coverage_if_wrong_tops_known"] == 6 / 8  # 6 of 7 right: u-1 still answered
