"""The never-seen-questions pool of the HTTP load benchmark (eval/bench_api.py --fresh), on the real question sets."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from eval.bench_api import OPENINGS, FreshQuestions, QuestionSet, load_question_sets, memo_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sets() -> list[QuestionSet]:
    # eval/field and eval/sample ship with the repository; the shared sets join when present.
    return load_question_sets(ROOT / "eval", ROOT.parent / "shared" / "eval")


def test_question_sets_hold_each_question_once_across_sets(sets):
    keys = [memo_key(q) for s in sets for q in s.questions]
    assert len(set(keys)) == len(keys)


def test_fresh_pool_draws_every_set_in_turn_without_repeats(sets):
    pool = FreshQuestions(sets)
    drawn = [pool.next() for _ in range(len(sets) * 50)]
    assert Counter(name for name, _ in drawn) == {s.name: 50 for s in sets}
    assert len(sets) >= 2 and {"field", "sample"} <= {s.name for s in sets}
    assert len({memo_key(text) for _, text in drawn}) == len(drawn)


def test_fresh_pool_never_repeats_past_the_real_questions_from_threads(sets):
    # Five questions a set, so most draws are variants; four threads draw at once as the benchmark's clients do.
    pool = FreshQuestions([QuestionSet(s.name, s.questions[:5]) for s in sets])
    barrier = threading.Barrier(4)
    drawn: list[list[tuple[str, str]]] = [[] for _ in range(4)]

    def client(i: int) -> None:
        barrier.wait()
        while (question := pool.next()) is not None:
            drawn[i].append(question)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = [text for part in drawn for _, text in part]
    assert pool.exhausted and pool.variants > 0
    assert len(texts) == sum(pool.available.values()) + pool.variants
    assert len({memo_key(text) for text in texts}) == len(texts)
    originals = {q for s in sets for q in s.questions[:5]}
    assert all(text in originals or any(text == o + q for o in OPENINGS for q in originals) for text in texts)
