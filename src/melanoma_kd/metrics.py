"""Evaluation metrics for binary melanoma classification (positive class = melanoma, label 1).

Scores are P(melanoma) (or any score that grows with it). This module holds the one definition of
every number the pipeline reports: ROC-AUC, PR-AUC (average precision), the ISIC-2024 partial AUC
above a TPR floor, calibration errors (ECE/MCE) and their reliability table, operating points chosen
on validation and applied to holdout, patient-level (group) bootstrap confidence intervals, and
paired comparisons of two models (bootstrap delta, permutation test, McNemar).

Every public function validates its inputs and raises :class:`ValueError` with a one-line message.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Metric = Callable[[NDArray[Any], NDArray[Any]], float]

#: TPR floor of the ISIC-2024 partial AUC: pAUC integrates the ROC curve above it (max 0.2).
PAUC_MIN_TPR = 0.8
#: Equal-width probability bins of ECE/MCE and the reliability diagram (``evaluate.ece_bins``).
ECE_BINS = 15
#: Sensitivity the deployed decision threshold keeps on validation (``evaluate.sens_target``).
SENS_TARGET = 0.95

__all__ = [
    "ECE_BINS",
    "PAUC_MIN_TPR",
    "SENS_TARGET",
    "calibration_errors",
    "group_bootstrap_ci",
    "holdout_report",
    "mcnemar_pvalue",
    "metrics_at_threshold",
    "paired_bootstrap_delta",
    "paired_permutation_pvalue",
    "pauc_above_tpr",
    "pr_auc",
    "reliability_table",
    "roc_auc",
    "threshold_at_sensitivity",
    "threshold_max_f1",
]


def _sk() -> ModuleType:
    """``sklearn.metrics``, imported on first use.

    Training stages need only the numpy ROC cores below; importing scikit-learn (and SciPy with
    it) would add ~1.5 s to every one of them.
    """
    import sklearn.metrics

    return sklearn.metrics


# --------------------------------------------------------------------------- input validation


def _as_1d(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``x`` as a finite 1-D float array or raise ``ValueError``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _labels(y: ArrayLike, name: str = "y") -> NDArray[np.int64]:
    """Return binary labels as an int array or raise ``ValueError``."""
    arr = _as_1d(y, name)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only labels 0 and 1")
    return arr.astype(np.int64)


def _check(
    y: ArrayLike,
    s: ArrayLike,
    *,
    both_classes: bool = True,
    y_name: str = "y",
    s_name: str = "s",
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Validate a (labels, scores) pair: 1-D, same length, binary, finite, optional both classes."""
    yy = _labels(y, y_name)
    ss = _as_1d(s, s_name)
    if yy.shape != ss.shape:
        raise ValueError(
            f"{y_name} and {s_name} must have equal length, got {yy.size} and {ss.size}"
        )
    if both_classes:
        n_pos = int(yy.sum())
        if n_pos == 0 or n_pos == yy.size:
            raise ValueError(f"{y_name} must contain both classes (0 and 1)")
    return yy, ss


def _check_probs(p: NDArray[np.float64], name: str = "p") -> None:
    """Raise ``ValueError`` unless every probability lies in [0, 1]."""
    if np.any(p < 0.0) or np.any(p > 1.0):
        raise ValueError(f"{name} must be probabilities in [0, 1]")


def _check_unit_interval(value: float, name: str, *, low_open: bool, high_open: bool) -> None:
    """Raise ``ValueError`` unless ``value`` is in the (half-)open unit interval requested."""
    lo_ok = value > 0.0 if low_open else value >= 0.0
    hi_ok = value < 1.0 if high_open else value <= 1.0
    if not (np.isfinite(value) and lo_ok and hi_ok):
        lb, rb = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lb}0, 1{rb}, got {value!r}")


# --------------------------------------------------------------------------- ranking metrics


def roc_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the ROC curve; equals scikit-learn's ``roc_auc_score`` (tested)."""
    yy, ss = _check(y, s)
    return _roc_auc_core(yy, ss)


def pr_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the precision-recall curve as average precision (``average_precision_score``)."""
    yy, ss = _check(y, s)
    return float(_sk().average_precision_score(yy, ss))


def pauc_above_tpr(y: ArrayLike, s: ArrayLike, min_tpr: float = PAUC_MIN_TPR) -> float:
    """Partial ROC-AUC above a TPR floor, as scored in ISIC 2024; range ``0 .. 1 - min_tpr``.

    Labels are flipped and scores negated, so the region TPR >= ``min_tpr`` of the original ROC
    curve becomes FPR <= ``1 - min_tpr`` of the flipped one; that curve is cut at
    FPR = ``1 - min_tpr`` (linear interpolation) and integrated with the trapezoid rule.
    """
    yy, ss = _check(y, s)
    _check_unit_interval(min_tpr, "min_tpr", low_open=False, high_open=True)
    return _pauc_core(yy, ss, min_tpr)


def _roc_vertices(
    y: NDArray[np.int64], s: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve ``(fpr, tpr)`` from the origin, one vertex per distinct score (highest first).

    The curve of ``roc_curve(y, s, drop_intermediate=False)`` computed in numpy alone: inside
    bootstrap and permutation loops scikit-learn's per-call input checks cost ~50x the sort.
    """
    order = np.argsort(-s, kind="mergesort")
    ranked = s[order]
    ends = np.append(np.flatnonzero(np.diff(ranked)), ranked.size - 1)  # last of each tie group
    tps = np.cumsum(y[order], dtype=np.float64)[ends]
    fps = (ends + 1.0) - tps
    return np.append(0.0, fps / fps[-1]), np.append(0.0, tps / tps[-1])


def _pauc_core(
    y: NDArray[np.int64], s: NDArray[np.float64], min_tpr: float = PAUC_MIN_TPR
) -> float:
    """:func:`pauc_above_tpr` on already validated inputs."""
    max_fpr = 1.0 - min_tpr
    fpr, tpr = _roc_vertices(1 - y, -s)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:stop] <= max_fpr
    if stop >= fpr.size:  # max_fpr >= 1: the whole curve
        return float(np.trapezoid(tpr, fpr))
    tpr_cut = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    return float(np.trapezoid(np.append(tpr[:stop], tpr_cut), np.append(fpr[:stop], max_fpr)))


def _roc_auc_core(y: NDArray[np.int64], s: NDArray[np.float64]) -> float:
    """ROC-AUC on validated inputs (trapezoid rule over :func:`_roc_vertices`)."""
    fpr, tpr = _roc_vertices(y, s)
    return float(np.trapezoid(tpr, fpr))


def _pr_auc_core(y: NDArray[np.int64], s: NDArray[np.float64]) -> float:
    """Average precision on validated inputs."""
    return float(_sk().average_precision_score(y, s))


# --------------------------------------------------------------------------- calibration


def reliability_table(y: ArrayLike, p: ArrayLike, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per-bin calibration table over ``n_bins`` equal-width bins of P(melanoma) on [0, 1].

    Bin ``b`` holds ``bin_lo <= p < bin_hi``; ``p == 1.0`` goes in the last bin. Every bin is
    listed; empty bins have ``count == 0`` and NaN ``mean_p`` / ``frac_pos``.
    """
    yy, pp = _check(y, p, both_classes=False, s_name="p")
    _check_probs(pp)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.digitize(pp, edges[1:-1], right=False)  # 0 .. n_bins-1, p == 1.0 -> last bin
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=pp, minlength=n_bins)
    sum_y = np.bincount(idx, weights=yy.astype(np.float64), minlength=n_bins)
    table: list[dict[str, float]] = []
    for b in range(n_bins):
        n_b = int(counts[b])
        table.append(
            {
                "bin_lo": float(edges[b]),
                "bin_hi": float(edges[b + 1]),
                "count": n_b,
                "mean_p": float(sum_p[b] / n_b) if n_b else float("nan"),
                "frac_pos": float(sum_y[b] / n_b) if n_b else float("nan"),
            }
        )
    return table


def calibration_errors(y: ArrayLike, p: ArrayLike, n_bins: int = ECE_BINS) -> dict[str, float]:
    """Expected and maximum calibration error (``ece``, ``mce``) from :func:`reliability_table`.

    ECE = sum over non-empty bins of (n_b / N) * |mean(p_b) - frac_pos_b|; MCE = max of the gaps.
    """
    table = reliability_table(y, p, n_bins)
    rows = [r for r in table if r["count"] > 0]
    counts = np.array([r["count"] for r in rows], dtype=np.float64)
    gaps = np.abs(np.array([r["mean_p"] - r["frac_pos"] for r in rows]))
    return {"ece": float(np.sum(counts / counts.sum() * gaps)), "mce": float(gaps.max())}


# --------------------------------------------------------------------------- operating points


def threshold_at_sensitivity(
    y_val: ArrayLike, s_val: ArrayLike, min_sensitivity: float = SENS_TARGET
) -> float:
    """Highest threshold ``t`` whose rule ``s >= t`` keeps sensitivity >= ``min_sensitivity``.

    Choose it on validation data only. (Taking the *lowest* such threshold gives specificity 0.)
    """
    yy, ss = _check(y_val, s_val, y_name="y_val", s_name="s_val")
    _check_unit_interval(min_sensitivity, "min_sensitivity", low_open=True, high_open=False)
    # drop_intermediate=False: a dropped collinear point could be the exact first one reaching
    # the target, which would yield a lower (worse) threshold.
    _, tpr, thresholds = _sk().roc_curve(yy, ss, drop_intermediate=False)
    # thresholds are decreasing and tpr increasing: the first hit is the highest threshold
    return float(thresholds[np.argmax(tpr >= min_sensitivity - 1e-12)])


def threshold_max_f1(y_val: ArrayLike, s_val: ArrayLike) -> float:
    """Threshold ``t`` (rule ``s >= t``) maximising F1 on validation data; ties -> highest ``t``."""
    yy, ss = _check(y_val, s_val, y_name="y_val", s_name="s_val")
    precision, recall, thresholds = _sk().precision_recall_curve(yy, ss)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = p + r
    f1 = np.divide(2.0 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(thresholds[best].max())


def metrics_at_threshold(y: ArrayLike, s: ArrayLike, t: float) -> dict[str, float]:
    """Confusion counts and rates of the rule ``s >= t``; undefined ratios are 0.0."""
    yy, ss = _check(y, s, both_classes=False)
    if not isinstance(t, int | float | np.integer | np.floating) or np.isnan(t):
        raise ValueError(f"threshold t must be a number, got {t!r}")
    pred = (ss >= t).astype(np.int64)
    tn, fp, fn, tp = _sk().confusion_matrix(yy, pred, labels=[0, 1]).ravel()
    kw: dict[str, Any] = {"labels": [0, 1], "zero_division": 0.0}
    recall = float(_sk().recall_score(yy, pred, pos_label=1, **kw))
    return {
        "sensitivity": recall,
        "specificity": float(_sk().recall_score(yy, pred, pos_label=0, **kw)),
        "precision": float(_sk().precision_score(yy, pred, pos_label=1, **kw)),
        "recall": recall,
        "f1": float(_sk().f1_score(yy, pred, pos_label=1, **kw)),
        "accuracy": float(_sk().accuracy_score(yy, pred)),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }


def holdout_report(
    y_val: ArrayLike,
    s_val: ArrayLike,
    y_test: ArrayLike,
    s_test: ArrayLike,
    sens_target: float = SENS_TARGET,
    n_bins: int = ECE_BINS,
    *,
    t_sens: float | None = None,
    t_f1: float | None = None,
) -> dict[str, float]:
    """Holdout metrics, with operating points chosen on validation and applied to holdout.

    ``s_test`` must be probabilities (for ECE/MCE). Keys: roc_auc, pr_auc, pauc, ece, mce,
    sens95_threshold, sens95_sensitivity, sens95_specificity, f1_threshold, f1, precision,
    recall, accuracy (the ``sens95`` prefix is kept whatever ``sens_target`` is).
    ``t_sens`` / ``t_f1``, when given, are thresholds already chosen on this validation set by
    the same rules (a deployed model's recorded ones); otherwise they are chosen here.
    """
    yv, sv = _check(y_val, s_val, y_name="y_val", s_name="s_val")
    yt, st = _check(y_test, s_test, y_name="y_test", s_name="s_test")
    _check_probs(st, "s_test")
    if t_sens is None:
        t_sens = threshold_at_sensitivity(yv, sv, sens_target)
    if t_f1 is None:
        t_f1 = threshold_max_f1(yv, sv)
    at_sens = metrics_at_threshold(yt, st, t_sens)
    at_f1 = metrics_at_threshold(yt, st, t_f1)
    cal = calibration_errors(yt, st, n_bins)
    return {
        "roc_auc": roc_auc(yt, st),
        "pr_auc": pr_auc(yt, st),
        "pauc": pauc_above_tpr(yt, st),
        "ece": cal["ece"],
        "mce": cal["mce"],
        "sens95_threshold": t_sens,
        "sens95_sensitivity": at_sens["sensitivity"],
        "sens95_specificity": at_sens["specificity"],
        "f1_threshold": t_f1,
        "f1": at_f1["f1"],
        "precision": at_f1["precision"],
        "recall": at_f1["recall"],
        "accuracy": at_f1["accuracy"],
    }


# --------------------------------------------------------------------------- uncertainty


def _metric(metric: Metric | str) -> Metric:
    """Resolve ``metric`` (a callable ``metric(y, s) -> float`` or a name) for repeated calls.

    The names ``"roc_auc"``, ``"pr_auc"``, ``"pauc"`` and this module's own public functions map
    to cores that skip the per-call input checks (inputs are validated once by the caller).
    """
    fast: dict[Any, Metric] = {
        "roc_auc": _roc_auc_core,
        "pr_auc": _pr_auc_core,
        "pauc": _pauc_core,
        roc_auc: _roc_auc_core,
        pr_auc: _pr_auc_core,
        pauc_above_tpr: _pauc_core,
    }
    if isinstance(metric, str):
        if metric not in fast:
            names = sorted(k for k in fast if isinstance(k, str))
            raise ValueError(f"unknown metric {metric!r}; choose from {names} or pass a callable")
        return fast[metric]
    if not callable(metric):
        raise ValueError(f"metric must be a callable or a name, got {metric!r}")
    return fast.get(metric, metric)


def _fast_sklearn() -> Any:
    """Context that skips scikit-learn's per-call checks inside resampling loops."""
    import sklearn

    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def _group_resamples(
    y: NDArray[np.int64], groups: Sequence[Any] | ArrayLike, n_boot: int, seed: int
) -> tuple[list[NDArray[np.intp]], int]:
    """Draw ``n_boot`` group-level resamples; return the sample indices of usable ones and #skipped.

    Groups (patients) are drawn with replacement; a group drawn k times contributes all its
    samples k times. Resamples containing a single class are skipped and counted.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != y.size:
        raise ValueError(f"groups must be 1-D with one entry per sample ({y.size}), got {g.shape}")
    if g.dtype.kind == "f" and np.any(np.isnan(g)):
        raise ValueError("groups contains NaN")
    _, gid = np.unique(g, return_inverse=True)
    n_groups = int(gid.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    # counts[b, k] = how often group k was drawn in resample b
    offsets = np.arange(n_boot)[:, None] * n_groups
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_groups)
    counts = counts.reshape(n_boot, n_groups)
    weights = counts[:, gid]  # (n_boot, n_samples) multiplicity of each sample
    n_pos = weights @ y
    n_tot = weights.sum(axis=1)
    usable = (n_pos > 0) & (n_pos < n_tot)
    skipped = int(n_boot - usable.sum())
    if skipped > n_boot / 2:
        raise ValueError(
            f"{skipped} of {n_boot} bootstrap resamples contain a single class; "
            "too few groups with each class for a bootstrap"
        )
    if skipped:
        warnings.warn(
            f"skipped {skipped} of {n_boot} single-class bootstrap resamples", stacklevel=3
        )
    arange = np.arange(y.size)
    return [np.repeat(arange, w) for w in weights[usable]], skipped


def group_bootstrap_ci(
    y: ArrayLike,
    s: ArrayLike,
    groups: ArrayLike,
    metric: Metric | str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``metric(y, s)`` from a bootstrap over groups (patients), not images.

    ``metric`` is a callable ``metric(y, s) -> float`` or one of ``"roc_auc"``, ``"pr_auc"``,
    ``"pauc"``. Single-class resamples are skipped (a warning counts them); more than half
    skipped raises ``ValueError``.
    """
    yy, ss = _check(y, s)
    fn = _metric(metric)
    _check_unit_interval(level, "level", low_open=True, high_open=True)
    resamples, _ = _group_resamples(yy, groups, n_boot, seed)
    with _fast_sklearn():
        stats = np.array([fn(yy[i], ss[i]) for i in resamples], dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap_delta(
    y: ArrayLike,
    s_a: ArrayLike,
    s_b: ArrayLike,
    groups: ArrayLike,
    metric: Metric | str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``metric(a) - metric(b)`` with a 95 % group-bootstrap CI and the bootstrap sd (``se``);
    both models share each resample."""
    yy, sa = _check(y, s_a, s_name="s_a")
    _, sb = _check(yy, s_b, s_name="s_b")
    fn = _metric(metric)
    resamples, _ = _group_resamples(yy, groups, n_boot, seed)
    with _fast_sklearn():
        deltas = [fn(yy[i], sa[i]) - fn(yy[i], sb[i]) for i in resamples]
    boots = np.asarray(deltas, dtype=np.float64)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {
        "delta": float(fn(yy, sa) - fn(yy, sb)),
        "ci_lo": float(lo),
        "ci_hi": float(hi),
        "se": float(boots.std(ddof=1)) if boots.size > 1 else 0.0,
    }


def paired_permutation_pvalue(
    y: ArrayLike,
    s_a: ArrayLike,
    s_b: ArrayLike,
    metric: Metric | str,
    n_perm: int = 1000,
    seed: int = 0,
) -> float:
    """Two-sided paired permutation p-value for ``metric(a) - metric(b)``.

    Under the null the two models are exchangeable, so each permutation swaps the two models'
    scores on a random subset of samples. For the rank-based metrics (ROC-AUC, pAUC, PR-AUC)
    scores are first replaced by their within-model normalised ranks: these metrics depend only
    on ranks, so the observed delta is unchanged, while swapping raw scores of differently
    calibrated models (one squeezed near 0.5, say) would scramble both rankings and inflate the
    null spread. p = (1 + #{|Δ_perm| ≥ |Δ_obs|}) /
    (1 + n_perm).
    """
    yy, sa = _check(y, s_a, s_name="s_a")
    _, sb = _check(yy, s_b, s_name="s_b")
    fn = _metric(metric)
    if isinstance(n_perm, bool) or not isinstance(n_perm, int | np.integer) or n_perm < 1:
        raise ValueError(f"n_perm must be a positive integer, got {n_perm!r}")
    if fn in (_roc_auc_core, _pr_auc_core, _pauc_core):  # rank-based: compare ranks
        from scipy.stats import rankdata

        sa, sb = rankdata(sa) / sa.size, rankdata(sb) / sb.size
    observed = abs(fn(yy, sa) - fn(yy, sb))
    rng = np.random.default_rng(seed)
    swap = rng.random((n_perm, yy.size)) < 0.5
    n_extreme = 0
    with _fast_sklearn():
        for m in swap:
            pa, pb = np.where(m, sb, sa), np.where(m, sa, sb)
            if abs(fn(yy, pa) - fn(yy, pb)) >= observed - 1e-12:
                n_extreme += 1
    return (1 + n_extreme) / (1 + n_perm)


def mcnemar_pvalue(correct_a: ArrayLike, correct_b: ArrayLike) -> float:
    """Exact McNemar test: two-sided binomial test on the discordant pairs (1.0 if none)."""
    ca = _labels(correct_a, "correct_a").astype(bool)
    cb = _labels(correct_b, "correct_b").astype(bool)
    if ca.shape != cb.shape:
        raise ValueError(
            f"correct_a and correct_b must have equal length, got {ca.size} and {cb.size}"
        )
    only_a = int(np.count_nonzero(ca & ~cb))
    only_b = int(np.count_nonzero(~ca & cb))
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
