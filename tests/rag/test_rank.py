"""The ranking features and the shipped ranker agree: every feature computed is weighed, every weight has a feature."""

from rag.rank import FEATURES, QueryContext, Ranker, RankerWeights
from rag.retrieve import Candidate


def features_of(kind: str) -> dict[str, float]:
    ranker = Ranker.__new__(Ranker)  # features() needs no index version
    ctx = QueryContext("输送带跑偏怎么调", ["输送带", "跑偏"], {"输送带": 2.0, "跑偏": 3.0}, set(), set(), [])
    candidate = Candidate("r-1", kind, "输送带跑偏", bm25_score=0.8, bm25_rank=1, dense_score=0.9, dense_rank=2)
    features, _ = ranker.features(ctx, candidate, None)
    return features


def test_each_record_kind_is_told_apart_by_the_features():
    kinds = {"standard_question": "is_sq", "course": "is_course", "craftsman": "is_craftsman", "patent": "is_patent"}
    for kind, flag in kinds.items():
        f = features_of(kind)
        assert f[flag] == 1.0 and all(f[other] == 0.0 for other in kinds.values() if other != flag), kind
    assert all(features_of("achievement")[flag] == 0.0 for flag in kinds.values())


def test_the_shipped_ranker_weighs_exactly_the_computed_features():
    assert tuple(features_of("patent")) == FEATURES
    assert set(RankerWeights.load().weights) == set(FEATURES)
