"""Tests for melanoma_kd.metrics: sklearn cross-checks on random data and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from melanoma_kd import metrics as M

SEEDS = [0, 1, 2, 3, 4]


def _random_data(seed: int, n: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced labels and probabilities that are informative but imperfect."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    y[:2] = [0, 1]
    logit = rng.normal(size=n) + 1.2 * y - 0.8
    p = 1.0 / (1.0 + np.exp(-logit))
    if ties:
        p = np.round(p, 1)  # many tied scores
    return y, p


# --------------------------------------------------------------------------- ROC / PR / pAUC


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_and_pr_auc_match_sklearn(seed: int) -> None:
    y, s = _random_data(seed)
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_fast_roc_core_matches_roc_auc_score(seed: int, ties: bool) -> None:
    y, s = _random_data(seed, ties=ties)
    assert M._roc_auc_core(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_vertices_match_roc_curve(seed: int) -> None:
    y, s = _random_data(seed, ties=True)
    fpr, tpr = M._roc_vertices(y, s)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-15)


def _pauc_closed_form(y: np.ndarray, s: np.ndarray, min_tpr: float) -> float:
    """Un-standardise sklearn's McClish-corrected partial AUC of the flipped problem.

    sklearn returns std = 0.5 * (1 + (A - A_min) / (A_max - A_min)) with A_min = f^2 / 2 and
    A_max = f (f = max_fpr = 1 - min_tpr), hence A = f^2/2 + (2f - f^2) * (std - 0.5).
    """
    f = 1.0 - min_tpr
    std = roc_auc_score(1 - y, -s, max_fpr=f)
    return 0.5 * f**2 + (2 * f - f**2) * (std - 0.5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_pauc_matches_isic_closed_form_at_080(seed: int, ties: bool) -> None:
    y, s = _random_data(seed, ties=ties)
    expected = 0.02 + 0.36 * (roc_auc_score(1 - y, -s, max_fpr=0.2) - 0.5)
    assert M.pauc_above_tpr(y, s) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= M.pauc_above_tpr(y, s) <= 0.2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_tpr", [0.3, 0.5, 0.8, 0.9, 0.95])
def test_pauc_matches_general_closed_form(seed: int, min_tpr: float) -> None:
    y, s = _random_data(seed, ties=seed % 2 == 0)
    assert M.pauc_above_tpr(y, s, min_tpr) == pytest.approx(
        _pauc_closed_form(y, s, min_tpr), abs=1e-12
    )


def test_pauc_hand_cases() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert M.pauc_above_tpr(y, s) == pytest.approx(0.2)  # perfect
    assert M.pauc_above_tpr(y, 1 - s) == pytest.approx(0.0)  # inverted
    assert M.pauc_above_tpr(y, np.full(6, 0.5)) == pytest.approx(0.02)  # all tied: int_0^0.2 x dx
    assert M.pauc_above_tpr(y, np.full(6, 0.5), min_tpr=0.5) == pytest.approx(0.125)
    # ROC (0,0)-(0,.5)-(.5,.5)-(.5,1)-(1,1): TPR >= 0.8 only for FPR >= 0.5 -> 0.2 * 0.5
    assert M.pauc_above_tpr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.1)
    # min_tpr = 0 is the full ROC-AUC
    y2, s2 = _random_data(7)
    assert M.pauc_above_tpr(y2, s2, min_tpr=0.0) == pytest.approx(roc_auc_score(y2, s2))


# --------------------------------------------------------------------------- calibration


def test_calibration_hand_case_two_bins() -> None:
    p = [0.1, 0.3, 0.6, 0.9, 1.0]
    y = [0, 1, 1, 1, 0]
    # bin [0, .5): mean .2, frac .5, gap .3, n 2; bin [.5, 1]: mean 2.5/3, frac 2/3, gap 1/6, n 3
    table = M.reliability_table(y, p, n_bins=2)
    assert [r["count"] for r in table] == [2, 3]
    assert table[0]["mean_p"] == pytest.approx(0.2)
    assert table[0]["frac_pos"] == pytest.approx(0.5)
    assert table[1]["mean_p"] == pytest.approx(2.5 / 3)
    assert table[1]["frac_pos"] == pytest.approx(2 / 3)
    assert (table[0]["bin_lo"], table[0]["bin_hi"], table[1]["bin_hi"]) == (0.0, 0.5, 1.0)
    err = M.calibration_errors(y, p, n_bins=2)
    assert err["ece"] == pytest.approx(0.4 * 0.3 + 0.6 / 6)
    assert err["mce"] == pytest.approx(0.3)


def test_calibration_edges_and_empty_bins() -> None:
    # 0.5 sits on the edge of 2 bins -> upper bin; 1.0 -> last bin; 0.0 -> first bin
    table = M.reliability_table([1, 0, 1], [0.5, 0.0, 1.0], n_bins=2)
    assert [r["count"] for r in table] == [1, 2]
    table15 = M.reliability_table([1, 1], [1.0, 1.0])
    assert len(table15) == 15
    assert table15[-1]["count"] == 2
    assert all(r["count"] == 0 and np.isnan(r["mean_p"]) for r in table15[:-1])
    # perfectly calibrated single bin -> 0; one-class data is allowed for calibration
    assert M.calibration_errors([1, 0, 0, 0], [0.25] * 4)["ece"] == pytest.approx(0.0)
    err = M.calibration_errors([0, 0], [0.9, 0.1], n_bins=15)
    assert err["ece"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.1)
    assert err["mce"] == pytest.approx(0.9)


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_matches_sklearn_calibration_curve(seed: int) -> None:
    y, p = _random_data(seed, n=500)
    frac_pos, mean_p = calibration_curve(y, p, n_bins=15, strategy="uniform")
    counts, _ = np.histogram(p, bins=np.linspace(0, 1, 16))
    counts = counts[counts > 0]
    gaps = np.abs(frac_pos - mean_p)
    err = M.calibration_errors(y, p)
    assert err["ece"] == pytest.approx(np.sum(counts / counts.sum() * gaps), abs=1e-12)
    assert err["mce"] == pytest.approx(gaps.max(), abs=1e-12)
    assert sum(r["count"] for r in M.reliability_table(y, p)) == len(y)


def test_calibration_rejects_non_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.calibration_errors([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError, match="n_bins"):
        M.reliability_table([0, 1], [0.2, 0.8], n_bins=0)


# --------------------------------------------------------------------------- operating points


def test_threshold_at_sensitivity_hand_case() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.1, 0.2, 0.5, 0.6])
    assert M.threshold_at_sensitivity(y, s, 0.75) == pytest.approx(0.7)  # 3 of 4 positives
    t = M.threshold_at_sensitivity(y, s, 0.95)  # needs all 4 positives
    assert t == pytest.approx(0.3)
    m = M.metrics_at_threshold(y, s, t)
    assert m["sensitivity"] == 1.0
    assert m["specificity"] == pytest.approx(0.5)  # the lowest threshold (0.1) would give 0
    assert M.threshold_at_sensitivity(y, s, 1.0) == pytest.approx(0.3)
    # ties: positives 0.9, 0.5, 0.5; need 2 of 3 -> 0.5; need 1 of 3 -> 0.9
    assert M.threshold_at_sensitivity([1, 1, 1, 0, 0], [0.9, 0.5, 0.5, 0.5, 0.1], 0.5) == 0.5
    assert M.threshold_at_sensitivity([1, 1, 1, 0, 0], [0.9, 0.5, 0.5, 0.5, 0.1], 1 / 3) == 0.9


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_threshold_at_sensitivity_brute_force(seed: int, target: float) -> None:
    y, s = _random_data(seed, n=100, ties=seed % 2 == 1)
    ok = [t for t in np.unique(s) if recall_score(y, (s >= t).astype(int)) >= target]
    t = M.threshold_at_sensitivity(y, s, target)
    assert t == max(ok)
    assert recall_score(y, (s >= t).astype(int)) >= target


def test_threshold_at_sensitivity_gives_nonzero_specificity() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(100, int), np.zeros(400, int)]
    s = np.r_[rng.normal(2.0, 1.0, 100), rng.normal(-2.0, 1.0, 400)]
    t = M.threshold_at_sensitivity(y, s, 0.95)
    m = M.metrics_at_threshold(y, s, t)
    assert m["sensitivity"] >= 0.95
    assert m["specificity"] > 0.5
    assert t > s.min()


@pytest.mark.parametrize("seed", SEEDS)
def test_threshold_max_f1_brute_force(seed: int) -> None:
    y, s = _random_data(seed, n=100, ties=seed % 2 == 0)
    cand = np.unique(s)
    f1s = np.array([f1_score(y, (s >= t).astype(int)) for t in cand])
    best = cand[np.flatnonzero(np.isclose(f1s, f1s.max(), rtol=0, atol=1e-12))].max()
    assert M.threshold_max_f1(y, s) == best


def test_threshold_max_f1_hand_cases() -> None:
    # t=.9: F1 2/3; t=.8: 1/2; t=.7: P 2/3 R 1 -> 0.8; t=.1: 2/3
    assert M.threshold_max_f1([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == 0.7
    # t=.9 and t=.3 both give F1 2/3 -> the higher one
    assert M.threshold_max_f1([1, 0, 0, 1], [0.9, 0.6, 0.5, 0.3]) == 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_at_threshold_matches_sklearn(seed: int) -> None:
    y, s = _random_data(seed)
    t = float(np.quantile(s, 0.6))
    pred = (s >= t).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    m = M.metrics_at_threshold(y, s, t)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["accuracy"] == pytest.approx((tp + tn) / len(y))


def test_metrics_at_threshold_zero_division() -> None:
    m = M.metrics_at_threshold([0, 1, 1], [0.1, 0.2, 0.3], 0.9)  # nothing predicted positive
    assert (m["tp"], m["fp"], m["precision"], m["f1"], m["sensitivity"]) == (0, 0, 0.0, 0.0, 0.0)
    assert m["specificity"] == 1.0
    m = M.metrics_at_threshold([0, 0], [0.1, 0.7], 0.5)  # no positives at all
    assert (m["sensitivity"], m["recall"], m["precision"], m["f1"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["specificity"] == 0.5
    m = M.metrics_at_threshold([1, 1], [0.1, 0.7], 0.5)  # no negatives at all
    assert (m["specificity"], m["sensitivity"], m["precision"]) == (0.0, 0.5, 1.0)
    assert all(isinstance(v, float) for v in m.values())


# --------------------------------------------------------------------------- holdout report


HOLDOUT_KEYS = {
    "roc_auc",
    "pr_auc",
    "pauc",
    "ece",
    "mce",
    "sens95_threshold",
    "sens95_sensitivity",
    "sens95_specificity",
    "f1_threshold",
    "f1",
    "precision",
    "recall",
    "accuracy",
}


def test_holdout_report_uses_validation_thresholds_only() -> None:
    yv, sv = _random_data(10)
    yt, st = _random_data(11)
    rep = M.holdout_report(yv, sv, yt, st)
    assert set(rep) == HOLDOUT_KEYS
    assert all(isinstance(v, float) for v in rep.values())
    assert rep["sens95_threshold"] == M.threshold_at_sensitivity(yv, sv, 0.95)
    assert rep["f1_threshold"] == M.threshold_max_f1(yv, sv)
    at = M.metrics_at_threshold(yt, st, rep["sens95_threshold"])
    assert rep["sens95_sensitivity"] == at["sensitivity"]
    assert rep["sens95_specificity"] == at["specificity"]
    assert rep["roc_auc"] == pytest.approx(roc_auc_score(yt, st))
    assert rep["pr_auc"] == pytest.approx(average_precision_score(yt, st))
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = M.holdout_report(yv, sv, rng.permutation(yt), st)
        assert perm["sens95_threshold"] == rep["sens95_threshold"]
        assert perm["f1_threshold"] == rep["f1_threshold"]
    # ...while changing validation does move them
    other = M.holdout_report(yt, st, yt, st)
    assert (other["sens95_threshold"], other["f1_threshold"]) != (
        rep["sens95_threshold"],
        rep["f1_threshold"],
    )


def test_holdout_report_sens_target() -> None:
    yv, sv = _random_data(3)
    rep = M.holdout_report(yv, sv, yv, sv, sens_target=0.8)
    assert rep["sens95_threshold"] == M.threshold_at_sensitivity(yv, sv, 0.8)
    assert rep["sens95_sensitivity"] >= 0.8  # same data, so the target holds exactly


# --------------------------------------------------------------------------- bootstrap


def _patients(seed: int, n_patients: int = 40, per_patient: int = 15) -> tuple[np.ndarray, ...]:
    """Images clustered by patient: label and score level are shared within a patient."""
    rng = np.random.default_rng(seed)
    y_pat = (rng.random(n_patients) < 0.4).astype(int)
    y_pat[:2] = [0, 1]
    level = rng.normal(size=n_patients) + 1.0 * y_pat
    groups = np.repeat(np.arange(n_patients), per_patient)
    y = y_pat[groups]
    s = level[groups] + 0.05 * rng.normal(size=groups.size)
    return y, s, groups


def test_group_bootstrap_resamples_groups_not_images() -> None:
    # duplicating every sample k times inside its own group must not change a group bootstrap
    y, s = _random_data(5, n=80)
    lo1, hi1 = M.group_bootstrap_ci(y, s, np.arange(80), "roc_auc", n_boot=200, seed=3)
    k = 4
    lo2, hi2 = M.group_bootstrap_ci(
        np.repeat(y, k), np.repeat(s, k), np.repeat(np.arange(80), k), "roc_auc", n_boot=200, seed=3
    )
    assert (lo2, hi2) == pytest.approx((lo1, hi1), abs=1e-12)
    # clustered images: patient-level CI is much wider than a (wrong) image-level one
    y, s, groups = _patients(0)
    g_lo, g_hi = M.group_bootstrap_ci(y, s, groups, "roc_auc", n_boot=300)
    i_lo, i_hi = M.group_bootstrap_ci(y, s, np.arange(y.size), "roc_auc", n_boot=300)
    assert g_hi - g_lo > 2 * (i_hi - i_lo)


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "pauc", M.roc_auc, roc_auc_score])
def test_group_bootstrap_ci_brackets_point_estimate(metric: object) -> None:
    y, s, groups = _patients(1)
    lo, hi = M.group_bootstrap_ci(y, s, groups, metric, n_boot=200, seed=1)
    name = metric if isinstance(metric, str) else "roc_auc"
    point = {"roc_auc": M.roc_auc, "pr_auc": M.pr_auc, "pauc": M.pauc_above_tpr}[name](y, s)
    assert lo <= point <= hi
    assert lo < hi
    wide = M.group_bootstrap_ci(y, s, groups, metric, n_boot=200, seed=1, level=0.99)
    assert wide[0] <= lo and hi <= wide[1]


def test_group_bootstrap_reproducible_and_callable_equivalent() -> None:
    y, s, groups = _patients(2)
    a = M.group_bootstrap_ci(y, s, groups, "roc_auc", n_boot=100, seed=5)
    assert a == M.group_bootstrap_ci(y, s, groups, "roc_auc", n_boot=100, seed=5)
    b = M.group_bootstrap_ci(y, s, groups, lambda yy, ss: roc_auc_score(yy, ss), n_boot=100, seed=5)
    assert a == pytest.approx(b, abs=1e-12)


def test_group_bootstrap_counts_single_class_resamples() -> None:
    # all positives in 1 of 10 patients: ~ (9/10)^10 = 35 % of resamples miss them
    y = np.r_[np.ones(5, int), np.zeros(45, int)]
    s = np.linspace(1, 0, 50)
    groups = np.repeat(np.arange(10), 5)
    with pytest.warns(UserWarning, match=r"skipped \d+ of 1000") as rec:
        M.group_bootstrap_ci(y, s, groups, "roc_auc")
    n_skipped = int(str(rec[0].message).split()[1])
    assert 250 < n_skipped < 450


def test_group_bootstrap_raises_when_most_resamples_single_class() -> None:
    # two patients, one per class: a single resample is single-class with probability 1/2
    y, s, groups = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), np.array([7, 7, 9, 9])
    outcomes = []
    for seed in range(40):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lo, hi = M.group_bootstrap_ci(y, s, groups, "roc_auc", n_boot=1, seed=seed)
            assert lo == hi == 1.0
            outcomes.append("ok")
        except ValueError as exc:
            assert "single class" in str(exc)
            outcomes.append("raised")
    assert set(outcomes) == {"ok", "raised"}


# --------------------------------------------------------------------------- paired comparisons


def test_paired_bootstrap_identical_and_monotone_transform() -> None:
    y, s, groups = _patients(3)
    d = M.paired_bootstrap_delta(y, s, s.copy(), groups, "roc_auc", n_boot=200)
    assert d == {"delta": 0.0, "ci_lo": 0.0, "ci_hi": 0.0, "se": 0.0}
    # a monotone transform has the same AUC on *every* shared resample -> CI exactly 0
    d = M.paired_bootstrap_delta(y, s, np.exp(s), groups, "roc_auc", n_boot=200)
    assert d["ci_lo"] == pytest.approx(0.0, abs=1e-12)
    assert d["ci_hi"] == pytest.approx(0.0, abs=1e-12)
    assert d["se"] == pytest.approx(0.0, abs=1e-12)


def test_paired_bootstrap_better_model() -> None:
    y, _, groups = _patients(4, n_patients=80, per_patient=5)
    rng = np.random.default_rng(4)
    good = 3.0 * y + rng.normal(size=y.size)
    noise = rng.normal(size=y.size)
    d = M.paired_bootstrap_delta(y, good, noise, groups, "roc_auc", n_boot=300)
    assert d["delta"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, noise))
    assert 0.0 < d["ci_lo"] <= d["delta"] <= d["ci_hi"]
    # se: the sd of the bootstrap deltas; a 95 % percentile interval spans ~3.9 of them
    assert 0.0 < d["se"] < d["ci_hi"] - d["ci_lo"]
    flipped = M.paired_bootstrap_delta(y, noise, good, groups, "roc_auc", n_boot=300)
    assert flipped["ci_hi"] < 0.0
    assert flipped["se"] == pytest.approx(d["se"], rel=1e-9)  # the same resamples, negated


def test_paired_permutation_pvalue() -> None:
    y, s = _random_data(6, n=200)
    assert M.paired_permutation_pvalue(y, s, s.copy(), "roc_auc", n_perm=200) == 1.0
    rng = np.random.default_rng(6)
    good = 3.0 * y + rng.normal(size=y.size)
    noise = rng.random(y.size)
    p = M.paired_permutation_pvalue(y, good, noise, "roc_auc", n_perm=200)
    assert p == pytest.approx(1 / 201)  # no permutation reaches the observed gap
    # two equally good models (null holds): two-sided, so swapping a and b gives the same p
    p_values = []
    for seed in range(3):
        r = np.random.default_rng(seed)
        a, b = y + r.normal(size=y.size), y + r.normal(size=y.size)
        p_ab = M.paired_permutation_pvalue(y, a, b, "roc_auc", n_perm=99, seed=2)
        assert p_ab == M.paired_permutation_pvalue(y, b, a, "roc_auc", n_perm=99, seed=2)
        assert round(p_ab * 100) == pytest.approx(p_ab * 100)  # (1 + k) / 100
        p_values.append(p_ab)
    assert max(p_values) > 0.3  # not everything is "significant" under the null


def test_permutation_pvalue_ignores_calibration_of_rank_metrics() -> None:
    # two correlated models, a modest real gap, one model's probabilities squeezed near 0.5:
    # swapping raw scores mixes two scales and hides the gap (p ≈ 0.46 here); the test compares
    # within-model ranks, so calibration cannot matter
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.2).astype(int)
    z = rng.normal(size=y.size)
    good = 1.0 / (1.0 + np.exp(-(2.0 * y + z)))
    latent = 2.0 * y + z + 0.7 * rng.normal(size=y.size)
    for squeeze in (1.0, 0.01):
        weak = 0.5 + squeeze * np.tanh(latent) / 2
        assert M.roc_auc(y, good) - M.roc_auc(y, weak) == pytest.approx(0.0257, abs=1e-3)
        assert M.paired_permutation_pvalue(y, good, weak, "roc_auc", n_perm=300) < 0.08
    # same ranks, different calibration: nothing to detect
    assert M.paired_permutation_pvalue(y, good, good**4, "roc_auc", n_perm=50) == 1.0


def test_mcnemar_hand_cases() -> None:
    # 1 pair only A right, 5 only B right, 4 concordant: 2 * (C(6,0) + C(6,1)) / 2^6 = 14/64
    a = [1, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    b = [0, 1, 1, 1, 1, 1, 1, 1, 0, 1]
    assert M.mcnemar_pvalue(a, b) == pytest.approx(14 / 64)
    assert M.mcnemar_pvalue(b, a) == pytest.approx(14 / 64)
    assert M.mcnemar_pvalue([0] * 6, [1] * 6) == pytest.approx(2 / 64)
    assert M.mcnemar_pvalue([1, 0, 1], [1, 0, 1]) == 1.0
    assert M.mcnemar_pvalue([True, False], [False, True]) == 1.0  # 1 vs 1: symmetric


# --------------------------------------------------------------------------- input validation


def _two_arg_calls() -> list[object]:
    return [
        M.roc_auc,
        M.pr_auc,
        M.pauc_above_tpr,
        M.calibration_errors,
        M.reliability_table,
        M.threshold_at_sensitivity,
        M.threshold_max_f1,
        lambda y, s: M.metrics_at_threshold(y, s, 0.5),
        lambda y, s: M.holdout_report(y, s, [0, 1, 0, 1], [0.2, 0.8, 0.3, 0.6]),
        lambda y, s: M.holdout_report([0, 1, 0, 1], [0.2, 0.8, 0.3, 0.6], y, s),
        lambda y, s: M.group_bootstrap_ci(y, s, np.arange(len(s)), "roc_auc", n_boot=10),
        lambda y, s: M.paired_bootstrap_delta(y, s, s, np.arange(len(s)), "roc_auc", n_boot=10),
        lambda y, s: M.paired_permutation_pvalue(y, s, s, "roc_auc", n_perm=10),
    ]


BAD_INPUTS = {
    "2-D": ([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "1-D"),
    "length": ([0, 1, 0, 1], [0.1, 0.2, 0.3], "equal length"),
    "labels": ([0, 2, 0, 1], [0.1, 0.2, 0.3, 0.4], "labels 0 and 1"),
    "nan score": ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], "NaN"),
    "nan label": ([0, np.nan, 0, 1], [0.1, 0.2, 0.3, 0.4], "NaN"),
    "empty": ([], [], "empty"),
    "text": (["a", "b"], [0.1, 0.2], "numeric"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("fn", _two_arg_calls())
def test_bad_inputs_raise_one_line_value_error(fn, case: str) -> None:  # type: ignore[no-untyped-def]
    y, s, fragment = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=fragment) as exc:
        fn(y, s)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "fn",
    [
        M.roc_auc,
        M.pr_auc,
        M.pauc_above_tpr,
        M.threshold_at_sensitivity,
        M.threshold_max_f1,
        lambda y, s: M.group_bootstrap_ci(y, s, np.arange(len(s)), "roc_auc", n_boot=10),
        lambda y, s: M.paired_permutation_pvalue(y, s, s, "roc_auc", n_perm=10),
    ],
)
def test_single_class_raises(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="both classes"):
        fn([1, 1, 1], [0.2, 0.5, 0.9])


def test_parameter_validation() -> None:
    y, s = [0, 1, 0, 1], [0.1, 0.9, 0.3, 0.6]
    with pytest.raises(ValueError, match="min_tpr"):
        M.pauc_above_tpr(y, s, min_tpr=1.0)
    with pytest.raises(ValueError, match="min_sensitivity"):
        M.threshold_at_sensitivity(y, s, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        M.metrics_at_threshold(y, s, float("nan"))
    with pytest.raises(ValueError, match="groups"):
        M.group_bootstrap_ci(y, s, [0, 1, 2], "roc_auc")
    with pytest.raises(ValueError, match="unknown metric"):
        M.group_bootstrap_ci(y, s, [0, 1, 2, 3], "auroc")
    with pytest.raises(ValueError, match="n_boot"):
        M.group_bootstrap_ci(y, s, [0, 1, 2, 3], "roc_auc", n_boot=0)
    with pytest.raises(ValueError, match="level"):
        M.group_bootstrap_ci(y, s, [0, 1, 2, 3], "roc_auc", level=1.5)
    with pytest.raises(ValueError, match="n_perm"):
        M.paired_permutation_pvalue(y, s, s, "roc_auc", n_perm=0)
    with pytest.raises(ValueError, match="equal length"):
        M.paired_bootstrap_delta(y, s, s[:3], [0, 1, 2, 3], "roc_auc")
    with pytest.raises(ValueError, match="equal length"):
        M.mcnemar_pvalue([1, 0], [1])
    with pytest.raises(ValueError, match="labels 0 and 1"):
        M.mcnemar_pvalue([1, 2], [1, 0])
