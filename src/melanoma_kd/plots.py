"""Plot data (CSV for ``dvc plots``) of the holdout evaluation, read from the evaluation's files.

The plot stage reads what the evaluate stage wrote (:func:`melanoma_kd.results.load_evaluation`)
— never the scoring code, torch or dvclive — and writes small, stable CSVs (fixed decimals,
fixed order) named by *role* for the key models (``best_teacher``, ``scratch_student``,
``kd_student``, ``kd_student_int8``) so the top-level ``plots:`` definitions in ``dvc.yaml``
overlay them on any branch and any grid:

    plots/roc/<role>.csv          fpr,tpr
    plots/pr/<role>.csv           recall,precision
    plots/reliability/<role>.csv  bin_lo,bin_hi,count,mean_p,frac_pos (+ perfect.csv diagonal;
                                  <role>_platt.csv: after the model's validation Platt map)
    plots/thresholds/<role>.csv   threshold,sensitivity,specificity,f1
    plots/confusion/<role>.csv    actual,predicted (one record per holdout image, at the
                                  model's deployed decision threshold)
    plots/training/<role>.csv     step,<metrics of the run's training curves>

The PNG figures are :mod:`melanoma_kd.figures`'.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from melanoma_kd import metrics as M
from melanoma_kd.calibration import Platt
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path
from melanoma_kd.results import DECISION_THRESHOLD, EvaluationRecord, csv_text

LABEL_NAMES = {0: "benign", 1: "melanoma"}
THRESHOLD_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
PLOT_DIRS = ("roc", "pr", "reliability", "thresholds", "confusion", "training")
ImageLoader = Callable[[str], np.ndarray]  # image_id -> uint8 H×W×3


def roc_points(y: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """``fpr,tpr`` of the ROC curve (scikit-learn's points)."""
    fpr, tpr, _ = roc_curve(y, s)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr})


def pr_points(y: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """``recall,precision`` of the precision-recall curve, recall ascending."""
    precision, recall, _ = precision_recall_curve(y, s)
    return pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})


def reliability_points(y: np.ndarray, s: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Non-empty bins of :func:`melanoma_kd.metrics.reliability_table` (the ECE's bins)."""
    table = pd.DataFrame(M.reliability_table(y, s, n_bins))
    return table[table["count"] > 0].reset_index(drop=True)


def threshold_sweep(y: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """Sensitivity, specificity and F1 of the rule ``s >= t`` for t = 0, 0.01, …, 1.

    Vectorised counts over the grid; tests check every row against
    :func:`melanoma_kd.metrics.metrics_at_threshold` (the definition).
    """
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(s, dtype=np.float64)[None, :] >= THRESHOLD_GRID[:, None]
    pos = y == 1
    tp = (pred & pos).sum(axis=1)
    fp = (pred & ~pos).sum(axis=1)
    fn = pos.sum() - tp
    tn = (~pos).sum() - fp

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)

    return pd.DataFrame(
        {
            "threshold": THRESHOLD_GRID,
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
        }
    )


def confusion_records(y: np.ndarray, s: np.ndarray, t: float) -> pd.DataFrame:
    """One ``actual,predicted`` record per image for DVC's confusion template."""
    pred = (s >= t).astype(np.int64)
    return pd.DataFrame(
        {
            "actual": [LABEL_NAMES[int(v)] for v in y],
            "predicted": [LABEL_NAMES[int(v)] for v in pred],
        }
    )


def training_curves(run_dir: Path) -> pd.DataFrame:
    """A run's training curves (``live/plots/metrics/*.tsv``, one metric each) merged on
    ``step``; read as plain TSV files."""
    folder = run_dir / "live" / "plots" / "metrics"
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise UserError(f"{folder}: no training curves (*.tsv) found")
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


def platt_of(model_metrics: dict) -> Platt:
    """The Platt map the evaluation fitted on a model's validation scores."""
    return Platt(float(model_metrics["platt_slope"]), float(model_metrics["platt_intercept"]))


def write_plot_data(ev: EvaluationRecord, plots_dir: str | Path, curves: bool = True) -> None:
    """Write every CSV listed in the module docstring (folders replaced as a whole)."""
    root = Path(plots_dir)
    data: dict[str, dict[str, pd.DataFrame]] = {d: {} for d in PLOT_DIRS}
    for role, name in ev.roles.items():
        y, s = ev.scores(name)
        data["roc"][role] = roc_points(y, s)
        data["pr"][role] = pr_points(y, s)
        data["reliability"][role] = reliability_points(y, s, ev.cfg.ece_bins)
        data["reliability"][f"{role}_platt"] = reliability_points(
            y, platt_of(ev.metrics[name]).apply(s), ev.cfg.ece_bins
        )
        data["thresholds"][role] = threshold_sweep(y, s)
        data["confusion"][role] = confusion_records(y, s, ev.metrics[name][DECISION_THRESHOLD])
        run_dir = ev.spec(name).run_dir
        if curves and run_dir is not None:
            data["training"][role] = training_curves(run_dir)
    data["reliability"]["perfect"] = pd.DataFrame(
        {
            "bin_lo": [0.0, 1.0],
            "bin_hi": [0.0, 1.0],
            "count": [0, 0],
            "mean_p": [0.0, 1.0],
            "frac_pos": [0.0, 1.0],
        }
    )
    for folder, frames in data.items():
        if not frames:
            continue
        with atomic_path(root / folder, directory=True) as tmp:
            for role, df in frames.items():
                (tmp / f"{role}.csv").write_text(csv_text(df))


def cache_images(cache_h5: str | Path) -> ImageLoader:
    """``image_id -> uint8 H×W×3`` from one HDF5 cache split (``ids`` and ``images``)."""
    path = Path(cache_h5)
    if not path.is_file():
        raise UserError(f"{path}: cache file not found")
    try:
        with h5py.File(path, "r") as h5:
            index = {image_id: i for i, image_id in enumerate(h5["ids"].asstr()[()])}
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: not a readable image cache ({exc})") from None

    def load(image_id: str) -> np.ndarray:
        if image_id not in index:
            raise UserError(f"{path}: image {image_id} not found")
        with h5py.File(path, "r") as h5:
            return np.asarray(h5["images"][index[image_id]])

    return load
