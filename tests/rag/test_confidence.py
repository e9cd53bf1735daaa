"""The confidence calibration's boosted trees: the stored arrays give scikit-learn's own probabilities, survive a
save and load, and learn an interaction a logistic regression cannot."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from rag.confidence import BOOSTING, Calibrator


def interaction(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Right only when both of two features are high (a top score means little when the question is out of scope)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 4))
    y = ((x[:, 0] > 0.5) & (x[:, 1] > 0.5)).astype(float)
    flip = rng.uniform(size=n) < 0.05
    return x, np.where(flip, 1 - y, y)


def test_stored_trees_give_scikit_learns_probabilities_after_a_round_trip(tmp_path):
    x, y = interaction(600, 1)
    calibrator = Calibrator.fit_boosted(x, y, threshold=0.8, model_id="m")
    calibrator.save(tmp_path / "calibration.json")
    loaded = Calibrator.load(tmp_path / "calibration.json")

    reference = HistGradientBoostingClassifier(**BOOSTING).fit(x, y)
    probe, _ = interaction(200, 2)
    expected = reference.predict_proba(probe)[:, 1]
    got = np.array([loaded.confidence(row) for row in probe])
    assert len(loaded.trees) == BOOSTING["max_iter"] and loaded.threshold == 0.8
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_trees_separate_an_interaction_the_logistic_regression_blurs():
    x, y = interaction(800, 3)
    probe, truth = interaction(400, 4)
    trees = np.array([Calibrator.fit_boosted(x, y).confidence(r) for r in probe])
    linear = np.array([Calibrator.fit(x, y).confidence(r) for r in probe])
    brier = lambda p: float(np.mean((p - truth) ** 2))  # noqa: E731
    assert brier(trees) < 0.07 < brier(linear)


def test_a_calibration_without_trees_is_the_logistic_regression():
    x, y = interaction(300, 5)
    linear = Calibrator.fit(x, y)
    assert not linear.trees
    z = (x[0] - np.array(linear.mean)) / np.array(linear.scale)
    assert linear.confidence(x[0]) == 1 / (1 + np.exp(-(z @ np.array(linear.weights) + linear.bias)))
