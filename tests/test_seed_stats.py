"""Seed-pooled paired comparisons (two-level bootstrap, patient permutation) and the MDE."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma_kd.seed_stats import min_detectable_effect, pooled_paired_delta


def _data(n_patients: int = 60, per: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per)
    y = (rng.random(groups.size) < 0.35).astype(int)
    y[:2] = [0, 1]
    return y, groups


def test_mde_is_z_sum_times_se() -> None:
    # z_0.975 = 1.959964, z_0.80 = 0.841621 (normal table)
    assert min_detectable_effect(1.0) == pytest.approx(2.801585, abs=1e-6)
    assert min_detectable_effect(0.01) == pytest.approx(0.02801585, abs=1e-8)
    assert min_detectable_effect(0.0) == 0.0
    with pytest.raises(ValueError):
        min_detectable_effect(-1.0)


def test_pooled_delta_is_the_mean_of_per_seed_sklearn_deltas() -> None:
    y, groups = _data()
    rng = np.random.default_rng(1)
    a = np.vstack([y + rng.normal(0, s, y.size) for s in (0.6, 0.9, 1.2)])
    b = np.vstack([y + rng.normal(0, 1.5, y.size) for _ in range(3)])
    out = pooled_paired_delta(y, a, b, groups, "roc_auc", n_boot=200, seed=0)
    expected = np.mean([roc_auc_score(y, a[s]) - roc_auc_score(y, b[s]) for s in range(3)])
    assert out["delta"] == pytest.approx(expected, abs=1e-12)
    assert out["n_seeds"] == 3
    assert out["ci_lo"] <= out["delta"] <= out["ci_hi"]
    assert out["mde"] == pytest.approx(min_detectable_effect(out["se"]))


def test_identical_models_give_zero_and_p_one() -> None:
    y, groups = _data()
    a = np.vstack([y * 0.3 + np.linspace(0, 1, y.size) for _ in range(2)])
    out = pooled_paired_delta(y, a, a.copy(), groups, "roc_auc", n_boot=100, seed=0)
    assert out["delta"] == 0.0 and out["ci_lo"] == 0.0 and out["ci_hi"] == 0.0
    assert out["p"] == 1.0


def test_a_clearly_better_model_is_detected() -> None:
    y, groups = _data(n_patients=80)
    rng = np.random.default_rng(2)
    a = np.vstack([y + rng.normal(0, 0.3, y.size) for _ in range(3)])
    b = np.vstack([rng.random(y.size) for _ in range(3)])
    out = pooled_paired_delta(y, a, b, groups, "roc_auc", n_boot=200, seed=0)
    assert out["delta"] > 0.3 and out["ci_lo"] > 0.0
    assert out["p"] < 0.01


def test_seed_disagreement_widens_the_interval() -> None:
    """The second level (seeds) matters: per-seed deltas that disagree widen the CI compared
    with the same mean reached by seeds that agree."""
    y, groups = _data(n_patients=80)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, y.size)
    b = np.vstack([y + noise * 1.0 for _ in range(4)])
    agree = np.vstack([y + noise * 0.8 for _ in range(4)])
    disagree = np.vstack([y + noise * s for s in (0.3, 0.5, 1.6, 2.5)])
    w_agree = pooled_paired_delta(y, agree, b, groups, "roc_auc", n_boot=300, seed=0)
    w_dis = pooled_paired_delta(y, disagree, b, groups, "roc_auc", n_boot=300, seed=0)
    assert (w_dis["ci_hi"] - w_dis["ci_lo"]) > 2 * (w_agree["ci_hi"] - w_agree["ci_lo"])


def test_one_comparator_row_is_broadcast_over_seeds() -> None:
    y, groups = _data()
    rng = np.random.default_rng(4)
    a = np.vstack([y + rng.normal(0, 1, y.size) for _ in range(3)])
    teacher = y + rng.normal(0, 0.5, y.size)
    one = pooled_paired_delta(y, a, teacher, groups, "pauc", n_boot=100, seed=0)
    tiled = pooled_paired_delta(y, a, np.tile(teacher, (3, 1)), groups, "pauc", n_boot=100, seed=0)
    assert one == tiled


def test_shape_errors_are_clear() -> None:
    y, groups = _data()
    with pytest.raises(ValueError, match=r"a must be \(seeds, 240\)"):
        pooled_paired_delta(y, np.zeros((2, 10)), np.zeros(240), groups, "roc_auc")
    with pytest.raises(ValueError, match="a has 2 seeds, b has 3"):
        pooled_paired_delta(y, np.zeros((2, 240)), np.zeros((3, 240)), groups, "roc_auc")
