"""Holdout evaluation of every model the pipeline trains or exports.

Each model (teachers, the scratch student, every KD grid point, the exported ONNX fp32 and INT8
students) is scored on the validation and the holdout split. Operating points are chosen on the
model's own **validation** scores and applied to holdout
(:func:`melanoma_kd.metrics.holdout_report`); holdout labels never influence a threshold.
ROC-AUC and pAUC get 95 % confidence intervals from a bootstrap over holdout **patients**.
On top of the per-model metrics this module computes

* the error analysis of the best teacher (by validation pAUC) against the selected KD student
  (the grid point chosen on validation by the export stage), McNemar p included;
* paired comparisons on the same holdout images — KD gain over the scratch student and selected
  KD student vs best teacher (patient bootstrap CI of the delta + paired permutation test);
* the seed replicates (``replicates.seeds``): mean ± sd of holdout ROC-AUC and pAUC over the main
  run and its replicates, for the scratch student and the selected KD point;
* the INT8 vs fp32 holdout ROC-AUC drop;
* the KD ablation table (validation metrics per grid point) and the hardest holdout cases.

Scores are rounded to :data:`DECIMALS` decimals *before* any metric is computed, so every number
can be recomputed exactly from the published ``metrics/predictions/<model>.csv`` files.
Every metric comes from :mod:`melanoma_kd.metrics`; nothing is re-implemented here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma_kd import metrics as M
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
from melanoma_kd.io import atomic_path, write_json
from melanoma_kd.selection import SUMMARY, best_by_validation

DECIMALS = 6
HARD_CASE_KINDS: tuple[str, ...] = (
    "teacher_right_student_wrong",
    "student_right_teacher_wrong",
    "high_confidence_errors",
)
LABEL_NAMES = {0: "benign", 1: "melanoma"}


# --------------------------------------------------------------------------- model list


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """One model's scores on validation (chooses thresholds) and holdout (is reported)."""

    val: pd.DataFrame  # image_id, label, score
    holdout: pd.DataFrame  # image_id, label, score, patient_id


def _checked_frame(df: pd.DataFrame, where: str, need_patients: bool) -> pd.DataFrame:
    """Validate one prediction frame and round its scores to :data:`DECIMALS` decimals."""
    cols = ["image_id", "label", "score"] + (["patient_id"] if need_patients else [])
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}")
    if df.empty:
        raise UserError(f"{where}: no predictions")
    out = df[cols].copy()
    out["image_id"] = out["image_id"].astype(str)
    score = pd.to_numeric(out["score"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(score) | (score < 0) | (score > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{where}: row {i} ({out['image_id'].iloc[i]}): score "
            f"{out['score'].iloc[i]!r} is not a probability in [0, 1]"
        )
    label = pd.to_numeric(out["label"], errors="coerce").to_numpy()
    if not np.isin(label, [0, 1]).all():
        raise UserError(f"{where}: labels must be 0 or 1")
    if out["image_id"].duplicated().any():
        raise UserError(
            f"{where}: duplicated image_id {out['image_id'][out['image_id'].duplicated()].iloc[0]}"
        )
    out["label"] = label.astype(np.int64)
    out["score"] = np.round(score, DECIMALS)
    return out.reset_index(drop=True)


def checked_predictions(name: str, val: pd.DataFrame, holdout: pd.DataFrame) -> Predictions:
    """Validated, rounded :class:`Predictions` of model ``name``."""
    return Predictions(
        _checked_frame(val, f"{name} (validation)", need_patients=False),
        _checked_frame(holdout, f"{name} (holdout)", need_patients=True),
    )


def _score_torch(path: Path, cache: Path) -> pd.DataFrame:
    from melanoma_kd.inference import score_checkpoint

    return score_checkpoint(path, cache)


def _score_onnx(path: Path, cache: Path) -> pd.DataFrame:
    from melanoma_kd.deploy import score_onnx  # written by the export stage's module

    return score_onnx(path, cache)


SCORERS: dict[str, Callable[[Path, Path], pd.DataFrame]] = {
    "torch": _score_torch,
    "onnx": _score_onnx,
}


def score_model(spec: ModelSpec, cache_dir: str | Path) -> Predictions:
    """Score ``spec`` on ``<cache_dir>/val.h5`` and ``<cache_dir>/holdout.h5``."""
    if not spec.path.is_file():
        raise UserError(f"{spec.path}: model file not found (needed for {spec.name})")
    scorer = SCORERS[spec.kind]
    cache = Path(cache_dir)
    return checked_predictions(
        spec.name, scorer(spec.path, cache / "val.h5"), scorer(spec.path, cache / "holdout.h5")
    )


# --------------------------------------------------------------------------- per-model metrics


def _arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df["label"].to_numpy(np.int64), df["score"].to_numpy(np.float64)


def _round(d: Mapping[str, float]) -> dict[str, float]:
    """Floats rounded to :data:`DECIMALS` decimals; counts stay integers."""
    return {
        k: (int(v) if isinstance(v, int | np.integer) else round(float(v), DECIMALS))
        for k, v in d.items()
    }


def _bootstrap_ci(
    y: np.ndarray, s: np.ndarray, groups: np.ndarray, metric: str, cfg: EvaluateParams, name: str
) -> tuple[float, float]:
    """Patient-bootstrap CI; a degenerate holdout becomes one clear error line.

    Single-class resamples are skipped by :mod:`melanoma_kd.metrics`; their count is printed.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ci = M.group_bootstrap_ci(y, s, groups, metric, cfg.n_boot, cfg.seed)
        except ValueError as exc:
            raise UserError(f"{name}: holdout {metric} bootstrap impossible ({exc})") from None
    for w in caught:
        print(f"evaluate: {name}: {metric} CI: {w.message}")
    return ci


def evaluate_model(
    preds: Predictions, cfg: EvaluateParams, name: str = "model"
) -> dict[str, float]:
    """Flat holdout metrics of one model; thresholds come from its validation scores only."""
    yv, sv = _arrays(preds.val)
    yt, st = _arrays(preds.holdout)
    for split, y in (("validation", yv), ("holdout", yt)):
        if y.min() == y.max():
            raise UserError(f"{name}: {split} split has a single class; metrics are undefined")
    groups = preds.holdout["patient_id"].astype(str).to_numpy()
    rep = M.holdout_report(yv, sv, yt, st, cfg.sens_target)
    rep.update(M.calibration_errors(yt, st, cfg.ece_bins))  # ECE/MCE with the configured bins
    roc_lo, roc_hi = _bootstrap_ci(yt, st, groups, "roc_auc", cfg, name)
    pauc_lo, pauc_hi = _bootstrap_ci(yt, st, groups, "pauc", cfg, name)
    return _round(
        {
            **rep,
            "roc_auc_ci_lo": roc_lo,
            "roc_auc_ci_hi": roc_hi,
            "pauc_ci_lo": pauc_lo,
            "pauc_ci_hi": pauc_hi,
            "val_roc_auc": M.roc_auc(yv, sv),
            "val_pauc": M.pauc_above_tpr(yv, sv),
            "val_pr_auc": M.pr_auc(yv, sv),
            "n_holdout": len(yt),
            "n_holdout_melanoma": int(yt.sum()),
            "n_holdout_patients": len(np.unique(groups)),
        }
    )


# --------------------------------------------------------------------------- comparisons


def _correct(y: np.ndarray, s: np.ndarray, t: float) -> np.ndarray:
    return (s >= t).astype(np.int64) == y


def error_analysis(
    y: np.ndarray, s_teacher: np.ndarray, t_teacher: float, s_student: np.ndarray, t_student: float
) -> dict[str, float]:
    """Teacher vs student on the same images, each at its own validation-chosen threshold."""
    ct, cs = _correct(y, s_teacher, t_teacher), _correct(y, s_student, t_student)
    pt, ps = s_teacher >= t_teacher, s_student >= t_student
    n = len(y)
    both_wrong = ~ct & ~cs
    return {
        "n": n,
        "agreement": round(float(np.mean(pt == ps)), DECIMALS),
        "teacher_accuracy": round(float(ct.mean()), DECIMALS),
        "student_accuracy": round(float(cs.mean()), DECIMALS),
        "both_right": int(np.sum(ct & cs)),
        "teacher_only_right": int(np.sum(ct & ~cs)),
        "student_only_right": int(np.sum(~ct & cs)),
        "both_wrong": int(np.sum(both_wrong)),
        "both_missed_melanoma": int(np.sum(both_wrong & (y == 1))),
        "both_false_alarm": int(np.sum(both_wrong & (y == 0))),
        "mcnemar_p": round(M.mcnemar_pvalue(ct.astype(int), cs.astype(int)), DECIMALS),
        "teacher_threshold": round(float(t_teacher), DECIMALS),
        "student_threshold": round(float(t_student), DECIMALS),
    }


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
                }
            )
    return _round(out)


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
    rows = []
    base = pd.DataFrame(
        {
            "image_id": holdout["image_id"].to_numpy(),
            "label": y,
            "teacher_score": s_teacher,
            "student_score": s_student,
        }
    )
    for kind in HARD_CASE_KINDS:
        mask, err = kinds[kind]
        sel = base[mask].assign(error=err[mask])
        sel = sel.sort_values(["error", "image_id"], ascending=[False, True], kind="mergesort")
        sel = sel.head(k).drop(columns="error")
        rows.append(sel.assign(kind=kind, rank=np.arange(1, len(sel) + 1)))
    cols = ["kind", "rank", "image_id", "label", "teacher_score", "student_score"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


# --------------------------------------------------------------------------- whole evaluation


@dataclass
class Evaluation:
    """Everything the evaluate stage writes, computed in memory."""

    specs: list[ModelSpec]
    predictions: dict[str, Predictions]
    metrics: dict[str, dict[str, float]]
    roles: dict[str, str]  # role -> model name
    error_analysis: dict[str, Any]
    kd_gain: dict[str, Any]
    ablation: pd.DataFrame
    hard_cases: pd.DataFrame
    cfg: EvaluateParams = field(default_factory=EvaluateParams)
    student_vs_teacher: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, Any] = field(default_factory=dict)

    def role_predictions(self, role: str) -> Predictions:
        return self.predictions[self.roles[role]]


def _check_same_holdout(predictions: Mapping[str, Predictions]) -> None:
    """All models must be scored on the same holdout images, in the same order, same labels."""
    names = list(predictions)
    ref = predictions[names[0]].holdout
    for name in names[1:]:
        h = predictions[name].holdout
        if not (h["image_id"].equals(ref["image_id"]) and h["label"].equals(ref["label"])):
            raise UserError(f"{name}: holdout images/labels differ from {names[0]}'s")


def best_teacher(specs: Sequence[ModelSpec]) -> str:
    """The teacher the evaluation compares against: the same rule, on the same run summaries,
    as the teacher_outputs stage uses to choose whom to distil
    (:func:`melanoma_kd.selection.best_by_validation`)."""
    teachers = [s for s in specs if s.group == "teacher" and s.run_dir is not None]
    if not teachers:
        raise UserError("no trained teacher to compare with")
    return best_by_validation({s.name: s.run_dir / SUMMARY for s in teachers})


def ablation_table(
    specs: Sequence[ModelSpec], metrics: Mapping[str, Mapping[str, float]], selected: str
) -> pd.DataFrame:
    """Validation metrics of every KD grid point (the numbers the selection was made on)."""
    rows = [
        {
            "model": s.name,
            "temperature": s.point[0],
            "alpha": s.point[1],
            "method": s.point[2],
            "val_roc_auc": metrics[s.name]["val_roc_auc"],
            "val_pauc": metrics[s.name]["val_pauc"],
            "val_pr_auc": metrics[s.name]["val_pr_auc"],
            "selected": s.name == selected,
        }
        for s in specs
        if s.group == "kd" and s.point is not None
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "temperature",
            "alpha",
            "method",
            "val_roc_auc",
            "val_pauc",
            "val_pr_auc",
            "selected",
        ],
    )


def evaluate_all(
    specs: Sequence[ModelSpec],
    predictions: Mapping[str, Predictions],
    selected: str,
    cfg: EvaluateParams,
    *,
    teacher: str,
    n_hard: int = 12,
) -> Evaluation:
    """Per-model metrics, key-model roles, error analysis, paired comparisons (KD vs scratch,
    student vs teacher), seed-replicate summary, ablation and hard cases.

    ``selected`` is the KD student the export stage chose and ``teacher`` the best teacher, both
    chosen on validation by :mod:`melanoma_kd.selection` (see :func:`best_teacher`)."""
    specs = list(specs)
    missing = [s.name for s in specs if s.name not in predictions]
    if missing:
        raise UserError(f"no predictions for {missing}")
    preds = {s.name: predictions[s.name] for s in specs}
    _check_same_holdout(preds)
    metrics = {name: evaluate_model(p, cfg, name) for name, p in preds.items()}
    if selected not in metrics or SCRATCH not in metrics:
        raise UserError(f"need the scratch student and the selected KD student {selected!r}")
    if teacher not in metrics or teacher not in {s.name for s in specs if s.group == "teacher"}:
        raise UserError(f"best teacher {teacher!r} is not a teacher of this pipeline")

    roles = {
        "best_teacher": teacher,
        "scratch_student": SCRATCH,
        "kd_student": selected,
    }
    if ONNX_INT8 in metrics:
        roles["kd_student_int8"] = ONNX_INT8

    teacher, student = roles["best_teacher"], roles["kd_student"]
    hold = preds[student].holdout
    y = hold["label"].to_numpy(np.int64)
    groups = hold["patient_id"].astype(str).to_numpy()
    s_t, s_s = _arrays(preds[teacher].holdout)[1], _arrays(hold)[1]
    t_t, t_s = metrics[teacher]["f1_threshold"], metrics[student]["f1_threshold"]
    errors: dict[str, Any] = {
        "teacher": teacher,
        "student": student,
        **error_analysis(y, s_t, t_t, s_s, t_s),
    }
    if ONNX_FP32 in metrics and ONNX_INT8 in metrics:
        s_fp32, s_int8 = _arrays(preds[ONNX_FP32].holdout)[1], _arrays(preds[ONNX_INT8].holdout)[1]
        errors.update(
            _round(
                {
                    "int8_roc_auc_drop": metrics[ONNX_FP32]["roc_auc"]
                    - metrics[ONNX_INT8]["roc_auc"],
                    "int8_pauc_drop": metrics[ONNX_FP32]["pauc"] - metrics[ONNX_INT8]["pauc"],
                    "int8_max_abs_score_diff": float(np.max(np.abs(s_fp32 - s_int8))),
                    "onnx_fp32_max_abs_score_diff_vs_torch": float(np.max(np.abs(s_fp32 - s_s))),
                }
            )
        )

    s_scratch = _arrays(preds[SCRATCH].holdout)[1]
    gain = {
        "kd_model": student,
        "scratch_model": SCRATCH,
        **kd_gain(y, s_s, s_scratch, groups, cfg),
    }
    vs_teacher = {
        "student_model": student,
        "teacher_model": teacher,
        **paired_comparison(y, s_s, s_t, groups, cfg, "student vs teacher"),
    }
    transfer: dict[str, Any] = {}
    if NO_TRANSFER in preds:
        transfer = transfer_ablation(
            y, s_s, _arrays(preds[NO_TRANSFER].holdout)[1], s_scratch, groups, cfg, student
        )
    return Evaluation(
        specs=specs,
        predictions=preds,
        metrics=metrics,
        roles=roles,
        error_analysis=errors,
        kd_gain=gain,
        ablation=ablation_table(specs, metrics, selected),
        hard_cases=hard_cases(hold, s_t, t_t, s_s, t_s, n_hard),
        cfg=cfg,
        student_vs_teacher=vs_teacher,
        seeds=seed_summary(specs, metrics, selected),
        transfer=transfer,
    )


# --------------------------------------------------------------------------- outputs


def csv_text(df: pd.DataFrame) -> str:
    """Stable CSV text: no index, ``\\n`` line ends, floats with :data:`DECIMALS` decimals."""
    return df.to_csv(index=False, lineterminator="\n", float_format=f"%.{DECIMALS}f")


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` atomically with :func:`csv_text`."""
    with atomic_path(path) as tmp:
        tmp.write_text(csv_text(df))


def save_evaluation(
    ev: Evaluation,
    *,
    predictions_dir: str | Path,
    metrics_dir: str | Path,
    error_analysis_path: str | Path,
    kd_gain_path: str | Path,
    student_vs_teacher_path: str | Path | None = None,
    seeds_path: str | Path | None = None,
    transfer_path: str | Path | None = None,
) -> None:
    """Predictions CSVs, one flat metrics JSON per model, error analysis, KD gain JSON and
    (when paths are given) the student-vs-teacher comparison, the seed-replicate summary and
    the transfer-set ablation.

    The two folders are replaced as a whole, so a model removed from the grid leaves no file.
    """
    with atomic_path(predictions_dir, directory=True) as tmp:
        for name, p in ev.predictions.items():
            (tmp / f"{name}.csv").write_text(csv_text(p.holdout[["image_id", "label", "score"]]))
    with atomic_path(metrics_dir, directory=True) as tmp:
        for name, m in ev.metrics.items():
            write_json(tmp / f"{name}.json", m)
    write_json(error_analysis_path, ev.error_analysis)
    write_json(kd_gain_path, ev.kd_gain)
    if student_vs_teacher_path is not None:
        write_json(student_vs_teacher_path, ev.student_vs_teacher)
    if seeds_path is not None:
        write_json(seeds_path, ev.seeds)
    if transfer_path is not None:
        write_json(transfer_path, ev.transfer)


def training_curves(run_dir: Path) -> pd.DataFrame:
    """dvclive curves of one run (``live/plots/metrics/*.tsv``) merged on ``step``."""
    folder = run_dir / "live" / "plots" / "metrics"
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise UserError(f"{folder}: no dvclive curves (*.tsv) found")
    merged: pd.DataFrame | None = None
    for f in files:
        df = pd.read_csv(f, sep="\t")
        if "step" not in df.columns or len(df.columns) < 2:
            raise UserError(f"{f}: expected columns step,<metric>")
        metric = f.stem if f.stem in df.columns else df.columns[-1]
        df = df[["step", metric]]
        merged = df if merged is None else merged.merge(df, on="step", how="outer")
    assert merged is not None
    return merged.sort_values("step", kind="mergesort").reset_index(drop=True)
