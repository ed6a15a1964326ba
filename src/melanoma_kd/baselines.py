"""Classical baselines: hand-crafted lesion features + scikit-learn classifiers.

Every deep model is compared with these. Each cached image (``data/cache/<split>.h5``) is turned
into a fixed-length feature vector by :func:`melanoma_kd.handcrafted.extract_features` (shape of
the lesion segmentation, colour and variegation in Lab/HSV, LBP and GLCM texture).

Four class-balanced models (:data:`MODELS`) are fitted on train only; validation scores pick the
operating points and holdout is scored with :func:`melanoma_kd.metrics.holdout_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from melanoma_kd.errors import UserError
from melanoma_kd.handcrafted import extract_features
from melanoma_kd.io import atomic_path, write_json
from melanoma_kd.metrics import holdout_report, pauc_above_tpr, roc_auc

__all__ = [
    "MODELS",
    "SPLITS",
    "BaselineResults",
    "SplitFeatures",
    "fit_and_score",
    "load_split_features",
    "make_model",
    "run_baselines",
    "save_results",
]

SPLITS = ("train", "val", "holdout")
SEED = 0


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SplitFeatures:
    """One split of the cache turned into features."""

    path: Path
    ids: NDArray[np.str_]
    labels: NDArray[np.int64]
    features: NDArray[np.float64]


def _dataset(handle: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """The dataset ``name`` of an open HDF5 file, or a :class:`UserError` naming the file."""
    obj = handle.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: missing dataset '{name}'")
    return obj


def _read_labels_ids(handle: h5py.File, path: Path, n: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Validated labels (0/1, both classes) and unique string ids of an open cache file."""
    labels = np.asarray(_dataset(handle, "labels", path)[()]).reshape(-1)
    ids_ds = _dataset(handle, "ids", path)
    if h5py.check_string_dtype(ids_ds.dtype) is None:
        raise UserError(f"{path}: dataset 'ids' must hold strings, got {ids_ds.dtype}")
    ids = np.asarray(ids_ds.asstr()[()], dtype=str).reshape(-1)
    if labels.size != n or ids.size != n:
        sizes = f"{n}, {labels.size}, {ids.size}"
        raise UserError(f"{path}: 'images', 'labels' and 'ids' differ in length ({sizes})")
    if labels.dtype.kind not in "iub" or not np.isin(labels, (0, 1)).all():
        raise UserError(f"{path}: dataset 'labels' must hold only 0 and 1")
    if len(np.unique(labels)) < 2:
        raise UserError(f"{path}: 'labels' hold a single class; baselines need both classes")
    if len(np.unique(ids)) != n:
        raise UserError(f"{path}: dataset 'ids' has duplicate image ids")
    return labels.astype(np.int64), ids


def load_split_features(path: str | Path, *, desc: str | None = None) -> SplitFeatures:
    """Read one cache HDF5 file and extract features; any unreadable or malformed file raises a
    one-line :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: cache file not found")
    try:
        with h5py.File(path, "r") as handle:
            images = _dataset(handle, "images", path)
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise UserError(
                    f"{path}: dataset 'images' must be uint8 N×H×W×3, "
                    f"got {images.dtype} {images.shape}"
                )
            if min(images.shape[1:3]) < 8 or images.shape[0] == 0:
                raise UserError(f"{path}: dataset 'images' is empty or smaller than 8×8 pixels")
            labels, ids = _read_labels_ids(handle, path, images.shape[0])
            features = extract_features(images, desc=desc or path.stem)
    except OSError as exc:  # not HDF5, truncated, or a corrupt chunk
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read HDF5 cache ({reason})") from None
    return SplitFeatures(path=path, ids=ids, labels=labels, features=features)


# --------------------------------------------------------------------------- models


def _logreg(seed: int) -> ClassifierMixin:
    """Standardised L2 logistic regression."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed),
    )


def _random_forest(seed: int) -> ClassifierMixin:
    """Random forest, single-threaded: a parallel ``predict_proba`` sums the trees in thread
    order, which changes the last bits of the scores from run to run."""
    return RandomForestClassifier(
        n_estimators=300, min_samples_leaf=2, class_weight="balanced", n_jobs=1, random_state=seed
    )


def _hist_gbm(seed: int) -> ClassifierMixin:
    """Histogram gradient boosting without early stopping (fit on train only)."""
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=200,
        max_leaf_nodes=15,
        max_bins=63,  # plenty for ~1e3 samples; a third of the default's cost
        l2_regularization=1.0,
        early_stopping=False,
        class_weight="balanced",
        random_state=seed,
    )


def _svm(seed: int) -> ClassifierMixin:
    """RBF SVM on standardised features, Platt-calibrated by 5-fold cross-validation on train."""
    svm = make_pipeline(
        StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale", class_weight="balanced")
    )
    del seed  # SVC and stratified (unshuffled) folds are deterministic
    return CalibratedClassifierCV(svm, method="sigmoid", cv=5, ensemble=False)


MODELS: Mapping[str, Callable[[int], ClassifierMixin]] = {
    "logreg": _logreg,
    "random_forest": _random_forest,
    "hist_gbm": _hist_gbm,
    "svm": _svm,
}


def make_model(name: str, seed: int = SEED) -> ClassifierMixin:
    """A fresh, unfitted baseline model from :data:`MODELS`."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown baseline model {name!r}; choose from {sorted(MODELS)}") from None
    return factory(seed)


# --------------------------------------------------------------------------- fit and score


@dataclass(frozen=True)
class BaselineResults:
    """Per-model holdout metrics and holdout predictions."""

    metrics: dict[str, dict[str, float]]
    predictions: dict[str, pd.DataFrame]
    n_features: int

    def table(self) -> pd.DataFrame:
        """One row per model, one column per metric."""
        return pd.DataFrame.from_dict(self.metrics, orient="index").rename_axis("model")


def fit_and_score(
    train: SplitFeatures,
    val: SplitFeatures,
    holdout: SplitFeatures,
    *,
    sens_target: float = 0.95,
    seed: int = SEED,
    models: Mapping[str, Callable[[int], ClassifierMixin]] = MODELS,
) -> BaselineResults:
    """Fit every model on train, choose thresholds on val, report on holdout.

    Besides :func:`~melanoma_kd.metrics.holdout_report`'s keys, each model gets ``val_roc_auc``
    and ``val_pauc`` (for choosing among baselines without looking at holdout).
    """
    metrics: dict[str, dict[str, float]] = {}
    predictions: dict[str, pd.DataFrame] = {}
    for name, factory in models.items():
        # one OpenMP thread: these fits are small, and busy-waiting OpenMP threads slow to a
        # crawl when the cores are shared with other stages or experiment workers
        with threadpool_limits(limits=1, user_api="openmp"):
            model = factory(seed).fit(train.features, train.labels)
            s_val = model.predict_proba(val.features)[:, 1]
            s_hold = model.predict_proba(holdout.features)[:, 1]
        report = holdout_report(val.labels, s_val, holdout.labels, s_hold, sens_target)
        report["val_roc_auc"] = roc_auc(val.labels, s_val)
        report["val_pauc"] = pauc_above_tpr(val.labels, s_val)
        metrics[name] = report
        predictions[name] = pd.DataFrame(
            {"image_id": holdout.ids, "label": holdout.labels, "score": s_hold}
        )
    return BaselineResults(metrics, predictions, train.features.shape[1])


def run_baselines(
    cache_dir: str | Path, *, sens_target: float = 0.95, seed: int = SEED
) -> BaselineResults:
    """Features for ``<cache_dir>/{train,val,holdout}.h5``, then :func:`fit_and_score`."""
    splits = [load_split_features(Path(cache_dir) / f"{s}.h5", desc=s) for s in SPLITS]
    return fit_and_score(*splits, sens_target=sens_target, seed=seed)


def save_results(
    results: BaselineResults,
    *,
    metrics_path: str | Path,
    predictions_dir: str | Path,
    table_path: str | Path,
) -> None:
    """Write metrics JSON (nested one level by model), ``baseline_<name>.csv`` predictions and
    the summary table, each atomically."""
    write_json(metrics_path, {"n_features": results.n_features, **results.metrics})
    for name, frame in results.predictions.items():
        with atomic_path(Path(predictions_dir) / f"baseline_{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(table_path) as tmp:
        results.table().to_csv(tmp, float_format="%.4f")
