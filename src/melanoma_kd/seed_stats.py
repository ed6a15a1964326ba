"""Comparisons pooled over training seeds, and the smallest effect a comparison can detect.

A training seed is a source of noise as large as the effects we compare (the between-seed sd
of a student's holdout ROC-AUC is several hundredths), so a KD gain measured on one seed says
little. Each seed ``s`` trains both models of a pair on the same data and views, so the pooled
effect is the mean per-seed paired difference on the same holdout images:

    Δ = mean_s [ metric(y, a_s) − metric(y, b_s) ]

* CI — a **two-level bootstrap**: resample patients (the holdout's independent units) with
  replacement, then resample seeds with replacement, and recompute Δ; percentile interval.
* p — a **paired permutation test at the patient level**: under the null the two models are
  exchangeable, so each permutation swaps a and b for a random subset of patients, on all
  their images and in every seed at once; scores are first replaced by their within-model
  ranks (ROC-AUC and pAUC depend on ranks only), as in :func:`melanoma_kd.metrics.
  paired_permutation_pvalue`.
* MDE — the minimum detectable effect at 80 % power for a two-sided test at α = 0.05:
  ``(z_{1-α/2} + z_{power}) · SE``, with SE the bootstrap sd of Δ (normal approximation).

The resampling draws come from :mod:`melanoma_kd.metrics`' group bootstrap.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata

from melanoma_kd import metrics as M

POWER = 0.80
TEST_ALPHA = 0.05


def min_detectable_effect(se: float, power: float = POWER, alpha: float = TEST_ALPHA) -> float:
    """Smallest true effect a two-sided level-``alpha`` test detects with ``power``, given the
    standard error ``se`` of the estimate (normal approximation)."""
    if not se >= 0.0:
        raise ValueError(f"se must be >= 0, got {se!r}")
    return float((norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power)) * se)


def _stack(scores: ArrayLike, n: int, name: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] < 1:
        raise ValueError(f"{name} must be (seeds, {n}) scores, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite scores")
    return arr


def pooled_paired_delta(
    y: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    groups: ArrayLike,
    metric: M.Metric | str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Seed-pooled ``metric(a) − metric(b)``: Δ, two-level bootstrap 95 % CI and SE, patient-
    level paired permutation p, and the MDE. ``a`` and ``b`` are ``(seeds, images)`` score
    arrays, row ``s`` of each trained with seed ``s`` (``b`` may be one row, broadcast: a fixed
    comparator such as a teacher). One seed reduces to the single-seed paired comparison
    with patient-level resampling."""
    yy = np.asarray(y)
    n = yy.size
    sa, sb = _stack(a, n, "a"), _stack(b, n, "b")
    if sb.shape[0] == 1:
        sb = np.repeat(sb, sa.shape[0], axis=0)
    if sb.shape[0] != sa.shape[0]:
        raise ValueError(f"a has {sa.shape[0]} seeds, b has {sb.shape[0]}")
    labels = M._labels(yy)
    fn = M._metric(metric)
    n_seeds = sa.shape[0]
    delta = float(np.mean([fn(labels, sa[s]) - fn(labels, sb[s]) for s in range(n_seeds)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resamples, _ = M._group_resamples(labels, groups, n_boot, seed)
    rng = np.random.default_rng(seed + 1)
    boots = np.empty(len(resamples))
    with M._fast_sklearn():
        for k, idx in enumerate(resamples):
            per_seed = np.array(
                [fn(labels[idx], sa[s, idx]) - fn(labels[idx], sb[s, idx]) for s in range(n_seeds)]
            )
            boots[k] = per_seed[rng.integers(0, n_seeds, n_seeds)].mean()
    lo, hi = np.quantile(boots, [0.025, 0.975])
    se = float(boots.std(ddof=1))
    return {
        "delta": delta,
        "ci_lo": float(lo),
        "ci_hi": float(hi),
        "se": se,
        "mde": min_detectable_effect(se),
        "p": _patient_permutation_p(labels, sa, sb, groups, fn, delta, n_boot, seed),
        "n_seeds": n_seeds,
    }


def _patient_permutation_p(
    y: np.ndarray,
    sa: np.ndarray,
    sb: np.ndarray,
    groups: ArrayLike,
    fn: M.Metric,
    observed: float,
    n_perm: int,
    seed: int,
) -> float:
    """Two-sided p of the pooled Δ under patient-level swaps of a and b (all seeds at once)."""
    _, gid = np.unique(np.asarray(groups), return_inverse=True)
    ra, rb = sa, sb
    if fn in (M._roc_auc_core, M._pr_auc_core, M._pauc_core):  # rank-based: compare ranks
        ra = np.vstack([rankdata(r) / r.size for r in sa])
        rb = np.vstack([rankdata(r) / r.size for r in sb])
    rng = np.random.default_rng(seed)
    flips = rng.random((n_perm, int(gid.max()) + 1)) < 0.5
    extreme = 0
    with M._fast_sklearn():
        for flip in flips:
            m = flip[gid]
            pa, pb = np.where(m, rb, ra), np.where(m, ra, rb)
            d = np.mean([fn(y, pa[s]) - fn(y, pb[s]) for s in range(sa.shape[0])])
            if abs(d) >= abs(observed) - 1e-12:
                extreme += 1
    return (1 + extreme) / (1 + n_perm)
