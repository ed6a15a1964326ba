"""Platt scaling: fitted on validation by NLL, monotone, and checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from melanoma_kd.calibration import Platt, fit_platt, margin
from melanoma_kd.metrics import calibration_errors


def _shifted_scores(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(d) but scores reported as sigmoid(3*d + 1.5): over-confident
    and shifted towards melanoma, like a class-weighted student."""
    rng = np.random.default_rng(seed)
    d = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-d))).astype(int)
    return y, 1 / (1 + np.exp(-(3 * d + 1.5)))


def test_fit_recovers_the_inverse_map_and_lowers_ece() -> None:
    y, s = _shifted_scores()
    platt = fit_platt(y, s)
    assert platt.slope == pytest.approx(1 / 3, rel=0.1)
    assert platt.intercept == pytest.approx(-0.5, abs=0.15)
    before = calibration_errors(y, s, 15)["ece"]
    after = calibration_errors(y, platt.apply(s), 15)["ece"]
    assert before > 0.1 and after < 0.03


def test_fit_is_maximum_likelihood_like_sklearn() -> None:
    y, s = _shifted_scores(500, seed=1)
    platt = fit_platt(y, s)
    ref = LogisticRegression(C=np.inf, max_iter=10_000).fit(margin(s).reshape(-1, 1), y)
    assert platt.slope == pytest.approx(ref.coef_[0, 0], rel=1e-4)
    assert platt.intercept == pytest.approx(ref.intercept_[0], rel=1e-4, abs=1e-6)
    nll = log_loss(y, platt.apply(s))
    for da, db in ((0.02, 0), (-0.02, 0), (0, 0.05), (0, -0.05)):
        assert log_loss(y, Platt(platt.slope + da, platt.intercept + db).apply(s)) > nll


def test_calibration_keeps_the_ranking() -> None:
    """A monotone map: ROC-AUC unchanged, order unchanged (ties stay ties)."""
    y, s = _shifted_scores(300, seed=2)
    s = np.round(s, 2)  # plenty of ties
    c = fit_platt(y, s).apply(s)
    assert roc_auc_score(y, c) == roc_auc_score(y, s)
    assert (np.argsort(c, kind="stable") == np.argsort(s, kind="stable")).all()


def test_hand_computed_map() -> None:
    p = Platt(2.0, -1.0).apply([0.5, 0.75])
    # d = 0 -> sigmoid(-1); d = log 3 -> sigmoid(2 log 3 - 1) = 9 / (9 + e)
    assert p[0] == pytest.approx(1 / (1 + np.e))
    assert p[1] == pytest.approx(9 / (9 + np.e))


def test_single_class_is_refused_and_inverse_ranking_gets_the_identity() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_platt([1, 1, 1], [0.2, 0.5, 0.9])
    y, s = _shifted_scores(300, seed=3)
    platt = fit_platt(y, 1 - s)
    assert (platt.slope, platt.intercept) == (1.0, 0.0)
    assert platt.method.startswith("identity") and "inverse" in platt.method
    assert np.allclose(platt.apply(1 - s), 1 - s)
    assert fit_platt(y, s).method == "platt"
