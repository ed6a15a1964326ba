"""Scoring every model the pipeline trains or exports, and its holdout metrics.

Each model (teachers, the scratch student, every KD grid point, the exported ONNX fp32 and INT8
student and best teacher, the ablation and the seed replicates) is scored on the validation and
the holdout split. Its decision thresholds are chosen on its own **unrounded validation** scores by
:func:`melanoma_kd.selection.operating_thresholds` — or, for a deployable ONNX model that
carries them in its metadata, are that model's own recorded thresholds — and applied unchanged to
holdout (:func:`melanoma_kd.metrics.holdout_report`); holdout labels never influence a threshold.
ROC-AUC and pAUC get 95 % confidence intervals from a bootstrap over holdout **patients**.

Holdout scores are rounded to :data:`melanoma_kd.results.DECIMALS` decimals *before* any
holdout metric is computed, so every number can be recomputed exactly from the published
predictions. :func:`evaluate_all` adds the comparisons of :mod:`melanoma_kd.paired` and
:func:`save_evaluation` writes it all (layout: :class:`melanoma_kd.catalog.EvaluationFiles`).
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
from melanoma_kd.calibration import Platt, fit_platt
from melanoma_kd.catalog import (
    ONNX_FP32,
    ONNX_INT8,
    SCRATCH,
    TEACHER_ONNX_FP32,
    TEACHER_ONNX_INT8,
    EvaluationFiles,
    ModelSpec,
)
from melanoma_kd.config import EvaluateParams
from melanoma_kd.errors import UserError
from melanoma_kd.paired import compare_models
from melanoma_kd.results import (
    DECIMALS,
    EvaluationRecord,
    rounded,
    write_predictions,
    write_record,
)
from melanoma_kd.selection import operating_thresholds, read_best_teacher

# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """One model's scores on validation (chooses thresholds) and holdout (is reported).

    ``thresholds``: a deployable model's own recorded operating points (``threshold``,
    ``threshold_max_f1``; ONNX metadata), used instead of choosing them again.
    ``calibration``: the Platt map folded into an exported model (ONNX metadata).
    ``arch``: an exported model's architecture (ONNX metadata).
    """

    val: pd.DataFrame  # image_id, label, score (full precision)
    holdout: pd.DataFrame  # image_id, label, score (rounded), patient_id
    thresholds: Mapping[str, float] | None = None
    calibration: Platt | None = None
    arch: str | None = None


def _checked_frame(df: pd.DataFrame, where: str, holdout: bool) -> pd.DataFrame:
    """Validate one prediction frame; holdout scores are rounded to ``DECIMALS`` decimals."""
    cols = ["image_id", "label", "score"] + (["patient_id"] if holdout else [])
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
    out["score"] = np.round(score, DECIMALS) if holdout else score
    return out.reset_index(drop=True)


def checked_holdout(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validated holdout predictions (``image_id, label, score, patient_id``), scores rounded
    as every reported holdout score is."""
    return _checked_frame(df, where, holdout=True)


def checked_predictions(
    name: str,
    val: pd.DataFrame,
    holdout: pd.DataFrame,
    thresholds: Mapping[str, float] | None = None,
    calibration: Platt | None = None,
    arch: str | None = None,
) -> Predictions:
    """Validated :class:`Predictions` of model ``name`` (holdout scores rounded)."""
    return Predictions(
        _checked_frame(val, f"{name} (validation)", holdout=False),
        _checked_frame(holdout, f"{name} (holdout)", holdout=True),
        thresholds,
        calibration,
        arch,
    )


def _score_torch(path: Path, caches: list[Path]) -> list[pd.DataFrame]:
    from melanoma_kd.inference import score_checkpoint_splits

    return score_checkpoint_splits(path, caches)


def _score_onnx(path: Path, caches: list[Path]) -> list[pd.DataFrame]:
    from melanoma_kd.deploy.onnx_model import score_onnx_splits

    return score_onnx_splits(path, caches)


Recorded = tuple[dict[str, float] | None, Platt | None, str | None]


def _onnx_recorded(path: Path) -> Recorded:
    """The decision thresholds, the calibration and the architecture an exported model carries
    (each ``None`` when it has none)."""
    from melanoma_kd.deploy.onnx_model import read_metadata

    meta = read_metadata(path)
    cal = meta.get("calibration")
    platt = Platt.from_record(cal) if isinstance(cal, dict) else None
    arch = str(meta["arch"]) if "arch" in meta else None
    if "threshold" not in meta:
        return None, platt, arch
    out = {"threshold": float(meta["threshold"])}
    if "threshold_max_f1" in meta:
        out["threshold_max_f1"] = float(meta["threshold_max_f1"])
    return out, platt, arch


# kind -> scorer of the given cache splits (the model is loaded once for all of them)
SCORERS: dict[str, Callable[[Path, list[Path]], list[pd.DataFrame]]] = {
    "torch": _score_torch,
    "onnx": _score_onnx,
}
RECORDED: dict[str, Callable[[Path], Recorded]] = {
    "onnx": _onnx_recorded,
}


def score_model(spec: ModelSpec, cache_dir: str | Path) -> Predictions:
    """Score ``spec`` on ``<cache_dir>/val.h5`` and ``<cache_dir>/holdout.h5``."""
    if not spec.path.is_file():
        raise UserError(f"{spec.path}: model file not found (needed for {spec.name})")
    scorer = SCORERS[spec.kind]
    recorded = RECORDED.get(spec.kind)
    thresholds, calibration, arch = (
        recorded(spec.path) if recorded is not None else (None, None, None)
    )
    cache = Path(cache_dir)
    val, holdout = scorer(spec.path, [cache / "val.h5", cache / "holdout.h5"])
    return checked_predictions(
        spec.name,
        val,
        holdout,
        thresholds,
        calibration,
        arch,
    )


# --------------------------------------------------------------------------- per-model metrics


def _arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df["label"].to_numpy(np.int64), df["score"].to_numpy(np.float64)


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


def decision_thresholds(preds: Predictions, sens_target: float) -> dict[str, float]:
    """The model's operating points: its recorded ones, else chosen on its validation scores
    by :func:`melanoma_kd.selection.operating_thresholds` (the one threshold rule)."""
    yv, sv = _arrays(preds.val)
    chosen = dict(preds.thresholds or {})
    if "threshold" not in chosen or "threshold_max_f1" not in chosen:
        rule = operating_thresholds(yv, sv, sens_target)
        chosen = {k: float(rule[k]) for k in ("threshold", "threshold_max_f1")} | chosen
    return chosen


def evaluate_model(
    preds: Predictions, cfg: EvaluateParams, name: str = "model"
) -> dict[str, float]:
    """Flat holdout metrics of one model; thresholds come from its validation scores only.

    ``ece``/``mce`` are of the scores as the model outputs them; ``ece_calibrated`` after
    Platt scaling fitted on the model's validation scores (``platt_slope``/``_intercept``),
    the map the export folds into every ONNX model (whose own scores are calibrated already).
    """
    yv, sv = _arrays(preds.val)
    yt, st = _arrays(preds.holdout)
    for split, y in (("validation", yv), ("holdout", yt)):
        if y.min() == y.max():
            raise UserError(f"{name}: {split} split has a single class; metrics are undefined")
    groups = preds.holdout["patient_id"].astype(str).to_numpy()
    t = decision_thresholds(preds, cfg.sens_target)
    rep = M.holdout_report(
        yv,
        sv,
        yt,
        st,
        cfg.sens_target,
        n_bins=cfg.ece_bins,
        t_sens=t["threshold"],
        t_f1=t["threshold_max_f1"],
    )
    try:
        platt = fit_platt(yv, sv)
    except ValueError as exc:
        raise UserError(f"{name}: validation calibration impossible ({exc})") from None
    after = M.calibration_errors(yt, platt.apply(st), cfg.ece_bins)
    roc_lo, roc_hi = _bootstrap_ci(yt, st, groups, "roc_auc", cfg, name)
    pauc_lo, pauc_hi = _bootstrap_ci(yt, st, groups, "pauc", cfg, name)
    return rounded(
        {
            **rep,
            "roc_auc_ci_lo": roc_lo,
            "roc_auc_ci_hi": roc_hi,
            "pauc_ci_lo": pauc_lo,
            "pauc_ci_hi": pauc_hi,
            "ece_calibrated": after["ece"],
            "mce_calibrated": after["mce"],
            "platt_slope": platt.slope,
            "platt_intercept": platt.intercept,
            "val_roc_auc": M.roc_auc(yv, sv),
            "val_pauc": M.pauc_above_tpr(yv, sv),
            "val_pr_auc": M.pr_auc(yv, sv),
            "n_holdout": len(yt),
            "n_holdout_melanoma": int(yt.sum()),
            "n_holdout_patients": len(np.unique(groups)),
        }
    )


# --------------------------------------------------------------------------- whole evaluation


@dataclass(kw_only=True)
class Evaluation(EvaluationRecord):
    """Everything the evaluate stage writes, computed in memory (validation scores included)."""

    predictions: dict[str, Predictions] = field(default_factory=dict)


def _check_same_holdout(predictions: Mapping[str, Predictions]) -> None:
    """All models must be scored on the same holdout images, in the same order, same labels."""
    names = list(predictions)
    ref = predictions[names[0]].holdout
    for name in names[1:]:
        h = predictions[name].holdout
        if not (h["image_id"].equals(ref["image_id"]) and h["label"].equals(ref["label"])):
            raise UserError(f"{name}: holdout images/labels differ from {names[0]}'s")


def best_teacher(record: str | Path, specs: Sequence[ModelSpec]) -> str:
    """The teacher the evaluation compares against (its model name): the one the select_teacher
    stage recorded in ``record``, best on validation — the teacher distilled (with
    ``distill.teacher: best``), exported and retrained by the other stages."""
    archs = [s.name.removeprefix("teacher_") for s in specs if s.group == "teacher"]
    if not archs:
        raise UserError("no trained teacher to compare with")
    return f"teacher_{read_best_teacher(record, archs)}"


def _check_exported_teacher(preds: Mapping[str, Predictions], teacher: str) -> None:
    """The exported teacher (export_teacher: the teacher select_teacher recorded) must be the
    best teacher the evaluation compares against (a stale export is refused)."""
    for name in (TEACHER_ONNX_FP32, TEACHER_ONNX_INT8):
        arch = preds[name].arch if name in preds else None
        if arch is not None and f"teacher_{arch}" != teacher:
            raise UserError(
                f"{name}: exported teacher is {arch}, but the best teacher on validation is "
                f"{teacher}; rerun export_teacher and quantize_teacher"
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
    """Per-model metrics, key-model roles and every comparison of :mod:`melanoma_kd.paired`.

    ``selected`` is the KD student the select_student stage chose and ``teacher`` the best
    teacher the select_teacher stage chose, both on validation by :mod:`melanoma_kd.selection`
    (see :func:`best_teacher`)."""
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
    _check_exported_teacher(preds, teacher)
    roles = {"best_teacher": teacher, "scratch_student": SCRATCH, "kd_student": selected}
    if ONNX_INT8 in metrics:
        roles["kd_student_int8"] = ONNX_INT8
    holdout = {name: p.holdout for name, p in preds.items()}
    exported_map = preds[ONNX_FP32].calibration if ONNX_FP32 in preds else None
    return Evaluation(
        specs=specs,
        metrics=metrics,
        roles=roles,
        **compare_models(specs, holdout, metrics, roles, cfg, n_hard, exported_map),
        cfg=cfg,
        holdout=holdout,
        predictions=preds,
    )


def save_evaluation(ev: EvaluationRecord, files: EvaluationFiles) -> None:
    """The holdout predictions and the evaluation folder (each replaced as a whole)."""
    write_predictions(ev.holdout, files)
    write_record(ev, files)


def summary_lines(ev: EvaluationRecord) -> list[str]:
    """What the stage prints: each model's holdout ROC-AUC / pAUC, the paired comparisons and
    the mean over seeds."""
    out = [
        f"{name:28s} holdout ROC-AUC {m['roc_auc']:.4f} "
        f"[{m['roc_auc_ci_lo']:.4f}, {m['roc_auc_ci_hi']:.4f}]  pAUC {m['pauc']:.4f}"
        for name, m in ev.metrics.items()
    ]
    pairs: list[tuple[str, Mapping[str, Any], str, str, str]] = [
        ("KD gain", ev.kd_gain, "kd_model", "scratch_model", ""),
        ("student vs teacher", ev.student_vs_teacher, "student_model", "teacher_model", ""),
    ]
    if "effect_roc_auc_delta" in ev.transfer:
        pairs.append(("transfer set", ev.transfer, "kd_model", "no_transfer_model", "effect_"))
    for what, g, a, b, pre in pairs:
        out.append(
            f"{what} ({g[a]} - {g[b]}) ΔROC-AUC {g[f'{pre}roc_auc_delta']:+.4f} "
            f"[{g[f'{pre}roc_auc_delta_ci_lo']:+.4f}, {g[f'{pre}roc_auc_delta_ci_hi']:+.4f}] "
            f"p = {g[f'{pre}roc_auc_p']:.4g}"
        )
    sd = ev.seeds
    for base in ("scratch", "kd"):
        out.append(
            f"{base} over {sd['n_seeds']} seeds: holdout ROC-AUC "
            f"{sd[f'{base}_roc_auc_mean']:.4f} ± {sd[f'{base}_roc_auc_sd'] or 0.0:.4f}, pAUC "
            f"{sd[f'{base}_pauc_mean']:.4f} ± {sd[f'{base}_pauc_sd'] or 0.0:.4f}"
        )
    return out
