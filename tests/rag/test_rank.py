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


def test_a_top_record_naming_another_key_object_is_never_an_automatic_answer():
    """PLC输出点不动作怎么查 against sq-dq-009 (PLC inputs) on the bundled corpus: its features (measured) make the
    shipped calibrator sure without the key-object rule; with it the confidence stays under any threshold, and the
    standard-question fast path does not take such a record either."""
    import numpy as np

    from rag.answer import direct_match
    from rag.confidence import CONF_FEATURES, CONFLICT_CEILING, Calibrator
    from rag.rank import MODELS, Scored, conflict

    assert conflict([(("输入", "输出"), {"输出"})], "plc输入点在开关没动作时也会误亮") == 1.0
    measured = {"top_score": 1.981, "margin": 1.378, "dense_cos": 0.915, "bm25_rel": 0.771, "bm25_cover": 0.742, "agree": 1.0,
                "sq_sim": 0.323, "title_match": 0.527, "conflict": 1.0, "is_sq": 1.0, "rr_bm25": 0.5, "rr_dense": 1.0,
                "dense_gap": 0.0, "in_scope": 0.787}
    calibrator = Calibrator.load(MODELS / "calibration.json")
    features = np.array([measured[name] for name in CONF_FEATURES])
    assert calibrator.probability(features) >= calibrator.threshold  # the fitted weights alone would answer it
    assert calibrator.confidence(features) <= CONFLICT_CEILING < calibrator.threshold
    top = Scored(Candidate("sq-dq-009", "standard_question", "PLC输入点误亮"), {"conflict": 1.0}, 2.0, 0.9)
    assert not direct_match(top)
    top.features["conflict"] = 0.0
    assert direct_match(top)
