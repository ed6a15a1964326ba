"""Comparisons between models on the same holdout images.

Given every model's holdout scores and flat metrics (:mod:`melanoma_kd.evaluate`), this module
computes what the evaluation says *about pairs and groups* of models:

* paired comparisons — KD gain over the scratch student, selected KD student vs best teacher,
  and the transfer-set ablation: delta, patient-bootstrap 95 % CI and paired permutation p
  (:func:`paired_comparison`, the one place every comparison goes through);
* the seed replicates: mean ± sd of holdout ROC-AUC / pAUC over the main run and its replicates;
* the error analysis of the best teacher against the selected KD student and the hardest
  holdout cases, each model at its **deployed** decision threshold
  (:data:`melanoma_kd.results.DECISION_THRESHOLD`: the highest threshold keeping the
  sensitivity target on validation, the one ``predict`` uses —
  :func:`melanoma_kd.selection.operating_thresholds`);
* the INT8 vs fp32 drift and the KD ablation table (validation metrics per grid point).

Every statistic comes from :mod:`melanoma_kd.metrics`; nothing is re-implemented here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from melanoma_kd import metrics as M
from melanoma_kd.calibration import Platt
from melanoma_kd.catalog import (
    NO_TRANSFER,
    ONNX_FP32,
    ONNX_INT8,
    SCRATCH,
    ModelSpec,
    replicate_name,
)
from melanoma_kd.config import EvaluateParams
from melanoma_kd.errors import UserError
from melanoma_kd.results import DECIMALS, DECISION_THRESHOLD, HARD_CASE_KINDS, rounded
from melanoma_kd.seed_stats import min_detectable_effect, pooled_paired_delta

ABLATION_COLUMNS = [
    "model",
    "temperature",
    "alpha",
    "method",
    "val_roc_auc",
    "val_pauc",
    "val_pr_auc",
    "selected",
]


# --------------------------------------------------------------------------- paired statistics


def paired_comparison(
    y: np.ndarray,
    s_a: np.ndarray,
    s_b: np.ndarray,
    groups: np.ndarray,
    cfg: EvaluateParams,
    what: str = "paired comparison",
) -> dict[str, float]:
    """Model a minus model b on the same holdout images: delta, patient-bootstrap 95 % CI and
    two-sided paired permutation p, for ROC-AUC and pAUC (the one place every comparison uses)."""
    out: dict[str, float] = {"n_boot": cfg.n_boot, "n_perm": cfg.n_boot}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for metric in ("roc_auc", "pauc"):
            try:
                d = M.paired_bootstrap_delta(y, s_a, s_b, groups, metric, cfg.n_boot, cfg.seed)
            except ValueError as exc:
                raise UserError(f"{what}: {metric} bootstrap impossible ({exc})") from None
            p = M.paired_permutation_pvalue(y, s_a, s_b, metric, cfg.n_boot, cfg.seed)
            out.update(
                {
                    f"{metric}_delta": d["delta"],
                    f"{metric}_delta_ci_lo": d["ci_lo"],
                    f"{metric}_delta_ci_hi": d["ci_hi"],
                    f"{metric}_p": p,
                    f"{metric}_mde": min_detectable_effect(d["se"]),
                }
            )
    return rounded(out)


def kd_gain(
    y: np.ndarray, s_kd: np.ndarray, s_scratch: np.ndarray, groups: np.ndarray, cfg: EvaluateParams
) -> dict[str, float]:
    """KD student minus scratch student: :func:`paired_comparison`."""
    return paired_comparison(y, s_kd, s_scratch, groups, cfg, "KD gain")


def transfer_ablation(
    y: np.ndarray,
    s_kd: np.ndarray,
    s_no_transfer: np.ndarray,
    s_scratch: np.ndarray,
    groups: np.ndarray,
    cfg: EvaluateParams,
    kd_model: str,
) -> dict[str, Any]:
    """Does the transfer set widen the KD gain? Flat: ``effect_*`` is KD with minus KD without
    the transfer set, ``gain_without_*`` is KD without it minus scratch (both paired)."""
    effect = paired_comparison(y, s_kd, s_no_transfer, groups, cfg, "transfer-set effect")
    without = paired_comparison(y, s_no_transfer, s_scratch, groups, cfg, "KD gain w/o transfer")
    return {
        "kd_model": kd_model,
        "no_transfer_model": NO_TRANSFER,
        "scratch_model": SCRATCH,
        **{f"effect_{k}": v for k, v in effect.items()},
        **{f"gain_without_{k}": v for k, v in without.items()},
    }


def seed_summary(
    specs: Sequence[ModelSpec], metrics: Mapping[str, Mapping[str, float]], selected: str
) -> dict[str, Any]:
    """Holdout ROC-AUC/pAUC of scratch and selected KD over the main run + its seed replicates.

    Flat: ``<base>_<metric>_mean`` / ``_sd`` (sample sd, n - 1; null with one seed) for base
    ``scratch``, ``kd`` and ``gain`` (per-seed KD minus scratch), plus the model names used.
    """
    reps = [s for s in specs if s.group == "replicate"]
    seeds = sorted({s.seed for s in reps if s.seed is not None})
    models = {
        "scratch": [SCRATCH] + [replicate_name("scratch", x) for x in seeds],
        "kd": [selected] + [replicate_name("kd", x) for x in seeds],
    }
    out: dict[str, Any] = {
        "n_seeds": 1 + len(seeds),
        "replicate_seeds": ",".join(str(x) for x in seeds),
        "scratch_models": ",".join(models["scratch"]),
        "kd_models": ",".join(models["kd"]),
    }
    for metric in ("roc_auc", "pauc"):
        values = {b: np.array([metrics[n][metric] for n in names]) for b, names in models.items()}
        values["gain"] = values["kd"] - values["scratch"]
        for base, v in values.items():
            out[f"{base}_{metric}_mean"] = round(float(v.mean()), DECIMALS)
            out[f"{base}_{metric}_sd"] = (
                round(float(v.std(ddof=1)), DECIMALS) if v.size > 1 else None
            )
    return out


def _pooled(
    y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray], groups: np.ndarray, cfg: EvaluateParams
) -> dict[str, Any]:
    """:func:`melanoma_kd.seed_stats.pooled_paired_delta` for ROC-AUC and pAUC, flat."""
    out: dict[str, Any] = {"n_boot": cfg.n_boot, "n_perm": cfg.n_boot}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for metric in ("roc_auc", "pauc"):
            d = pooled_paired_delta(
                y, np.vstack(a), np.vstack(b), groups, metric, cfg.n_boot, cfg.seed
            )
            out["n_seeds"] = d.pop("n_seeds")
            out.update({f"{metric}_{k}": v for k, v in d.items()})
    return rounded(out)


def pooled_comparisons(
    specs: Sequence[ModelSpec],
    holdout: Mapping[str, pd.DataFrame],
    roles: Mapping[str, str],
    cfg: EvaluateParams,
) -> dict[str, Any]:
    """The comparisons pooled over the main run and its seed replicates (same holdout images):
    KD gain (selected KD − scratch, paired per seed), KD student − best teacher (one teacher),
    and — when every seed has a no-transfer run — KD with − without the transfer set.
    Keyed by comparison; each holds the model lists and ``roc_auc_*`` / ``pauc_*`` delta, CI,
    SE, MDE and p of :func:`melanoma_kd.seed_stats.pooled_paired_delta`."""
    student, teacher = roles["kd_student"], roles["best_teacher"]
    seeds = sorted({s.seed for s in specs if s.group == "replicate" and s.seed is not None})
    names = {
        "scratch": [SCRATCH] + [replicate_name("scratch", x) for x in seeds],
        "kd": [student] + [replicate_name("kd", x) for x in seeds],
        "no_transfer": [NO_TRANSFER] + [replicate_name("no_transfer", x) for x in seeds],
    }
    hold = holdout[student]
    y = hold["label"].to_numpy(np.int64)
    groups = hold["patient_id"].astype(str).to_numpy()

    def scores(models: list[str]) -> list[np.ndarray]:
        return [holdout[n]["score"].to_numpy(np.float64) for n in models]

    pairs = {
        "kd_gain": ("kd", "scratch"),
        "student_vs_teacher": ("kd", None),
        "transfer": ("kd", "no_transfer"),
    }
    out: dict[str, Any] = {}
    for what, (a, b) in pairs.items():
        b_names = [teacher] if b is None else names[b]
        if not all(n in holdout for n in names[a] + b_names):
            continue
        out[what] = {
            "a_models": ",".join(names[a]),
            "b_models": ",".join(b_names),
            **_pooled(y, scores(names[a]), scores(b_names), groups, cfg),
        }
    return out


# --------------------------------------------------------------------------- error analysis


def _correct(y: np.ndarray, s: np.ndarray, t: float) -> np.ndarray:
    return (s >= t).astype(np.int64) == y


def error_analysis(
    y: np.ndarray, s_teacher: np.ndarray, t_teacher: float, s_student: np.ndarray, t_student: float
) -> dict[str, float]:
    """Teacher vs student on the same images, each deciding ``score >= t`` at its own deployed
    threshold (chosen on its validation scores)."""
    ct, cs = _correct(y, s_teacher, t_teacher), _correct(y, s_student, t_student)
    pt, ps = s_teacher >= t_teacher, s_student >= t_student
    both_wrong = ~ct & ~cs
    out = rounded(
        {
            "n": len(y),
            "agreement": float(np.mean(pt == ps)),
            "teacher_accuracy": float(ct.mean()),
            "student_accuracy": float(cs.mean()),
            "both_right": int(np.sum(ct & cs)),
            "teacher_only_right": int(np.sum(ct & ~cs)),
            "student_only_right": int(np.sum(~ct & cs)),
            "both_wrong": int(np.sum(both_wrong)),
            "both_missed_melanoma": int(np.sum(both_wrong & (y == 1))),
            "both_false_alarm": int(np.sum(both_wrong & (y == 0))),
            "teacher_threshold": float(t_teacher),
            "student_threshold": float(t_student),
        }
    )
    # an exact p can be far below 1e-6: keep 6 significant digits, never a rounded 0
    out["mcnemar_p"] = float(f"{M.mcnemar_pvalue(ct.astype(int), cs.astype(int)):.6g}")
    return out


def hard_cases(
    holdout: pd.DataFrame,
    s_teacher: np.ndarray,
    t_teacher: float,
    s_student: np.ndarray,
    t_student: float,
    k: int = 12,
) -> pd.DataFrame:
    """The ``k`` hardest holdout images of each kind in :data:`HARD_CASE_KINDS`.

    Hardness = how confidently the wrong model was wrong (``|label - P(melanoma)|``); high-
    confidence errors are the student's (the deployed model). Ties break by image_id.
    """
    y = holdout["label"].to_numpy(np.int64)
    ct, cs = _correct(y, s_teacher, t_teacher), _correct(y, s_student, t_student)
    err_t, err_s = np.abs(y - s_teacher), np.abs(y - s_student)
    kinds = {
        "teacher_right_student_wrong": (ct & ~cs, err_s),
        "student_right_teacher_wrong": (~ct & cs, err_t),
        "high_confidence_errors": (~cs, err_s),
    }
    base = pd.DataFrame(
        {
            "image_id": holdout["image_id"].to_numpy(),
            "label": y,
            "teacher_score": s_teacher,
            "student_score": s_student,
        }
    )
    rows = []
    for kind in HARD_CASE_KINDS:
        mask, err = kinds[kind]
        sel = base[mask].assign(error=err[mask])
        sel = sel.sort_values(["error", "image_id"], ascending=[False, True], kind="mergesort")
        sel = sel.head(k).drop(columns="error")
        rows.append(sel.assign(kind=kind, rank=np.arange(1, len(sel) + 1)))
    cols = ["kind", "rank", "image_id", "label", "teacher_score", "student_score"]
    return pd.concat(rows, ignore_index=True)[cols]


def int8_drift(
    metrics: Mapping[str, Mapping[str, float]],
    s_fp32: np.ndarray,
    s_int8: np.ndarray,
    s_torch: np.ndarray,
    exported_map: Platt | None = None,
) -> dict[str, float]:
    """Holdout ROC-AUC / pAUC lost by INT8 quantization and the largest score differences.

    The ONNX fp32 model is compared with the PyTorch scores under the calibration map folded
    into it (``exported_map``), so the difference measures the export alone."""
    if exported_map is not None:
        s_torch = exported_map.apply(s_torch)
    return rounded(
        {
            "int8_roc_auc_drop": metrics[ONNX_FP32]["roc_auc"] - metrics[ONNX_INT8]["roc_auc"],
            "int8_pauc_drop": metrics[ONNX_FP32]["pauc"] - metrics[ONNX_INT8]["pauc"],
            "int8_max_abs_score_diff": float(np.max(np.abs(s_fp32 - s_int8))),
            "onnx_fp32_max_abs_score_diff_vs_torch": float(np.max(np.abs(s_fp32 - s_torch))),
        }
    )


# --------------------------------------------------------------------------- tables


def ablation_table(
    specs: Sequence[ModelSpec], metrics: Mapping[str, Mapping[str, float]], selected: str
) -> pd.DataFrame:
    """Validation metrics of every KD grid point (the numbers the selection was made on)."""
    rows = [
        {
            "model": s.name,
            # as the grid names them (strings); feature KD has no temperature
            "temperature": "—" if s.point.temperature is None else f"{s.point.temperature:g}",
            "alpha": f"{s.point.alpha:g}",
            "method": s.point.method,
            "val_roc_auc": metrics[s.name]["val_roc_auc"],
            "val_pauc": metrics[s.name]["val_pauc"],
            "val_pr_auc": metrics[s.name]["val_pr_auc"],
            "selected": s.name == selected,
        }
        for s in specs
        if s.group == "kd" and s.point is not None
    ]
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


# --------------------------------------------------------------------------- all of it


def compare_models(
    specs: Sequence[ModelSpec],
    holdout: Mapping[str, pd.DataFrame],
    metrics: Mapping[str, Mapping[str, Any]],
    roles: Mapping[str, str],
    cfg: EvaluateParams,
    n_hard: int = 12,
    exported_map: Platt | None = None,
) -> dict[str, Any]:
    """Every comparison of the evaluation, keyed like :class:`melanoma_kd.results.EvaluationRecord`.

    ``exported_map``: the calibration folded into the exported KD student (its metadata).

    ``holdout`` maps each model to its holdout ``image_id,label,score,patient_id`` (same images,
    same order for all); ``roles`` names the best teacher, the scratch and the KD student.
    """
    teacher, student = roles["best_teacher"], roles["kd_student"]
    hold = holdout[student]
    y = hold["label"].to_numpy(np.int64)
    groups = hold["patient_id"].astype(str).to_numpy()

    def scores(name: str) -> np.ndarray:
        return holdout[name]["score"].to_numpy(np.float64)

    s_t, s_s, s_scratch = scores(teacher), scores(student), scores(SCRATCH)
    t_t, t_s = metrics[teacher][DECISION_THRESHOLD], metrics[student][DECISION_THRESHOLD]
    errors: dict[str, Any] = {
        "teacher": teacher,
        "student": student,
        **error_analysis(y, s_t, t_t, s_s, t_s),
    }
    if ONNX_FP32 in holdout and ONNX_INT8 in holdout:
        errors.update(int8_drift(metrics, scores(ONNX_FP32), scores(ONNX_INT8), s_s, exported_map))
    transfer: dict[str, Any] = {}
    if NO_TRANSFER in holdout:
        transfer = transfer_ablation(y, s_s, scores(NO_TRANSFER), s_scratch, groups, cfg, student)
    return {
        "error_analysis": errors,
        "kd_gain": {
            "kd_model": student,
            "scratch_model": SCRATCH,
            **kd_gain(y, s_s, s_scratch, groups, cfg),
        },
        "student_vs_teacher": {
            "student_model": student,
            "teacher_model": teacher,
            **paired_comparison(y, s_s, s_t, groups, cfg, "student vs teacher"),
        },
        "transfer": transfer,
        "seeds": seed_summary(specs, metrics, student),
        "pooled": pooled_comparisons(specs, holdout, roles, cfg),
        "ablation": ablation_table(specs, metrics, student),
        "hard_cases": hard_cases(hold, s_t, t_t, s_s, t_s, n_hard),
    }
