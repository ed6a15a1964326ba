"""The evaluation's files: their format, their one writer and their one reader.

The evaluate stage computes an :class:`EvaluationRecord` and writes it with
:func:`write_record` / :func:`write_predictions` into the layout of
:class:`melanoma_kd.catalog.EvaluationFiles`; the plot and report stages read it back with
:func:`load_evaluation`. Nothing here imports torch or the scoring code, so the stages that only
show results never rerun for a change to scoring, and scoring never reruns for a figure.

Numbers are published with :data:`DECIMALS` decimals (holdout scores, metrics, CSV floats).
Decision thresholds (keys ending in ``threshold``) keep full precision, so the rule
``score >= threshold`` recomputed from the published files decides exactly as the evaluation did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma_kd.catalog import EvaluationFiles, ModelSpec
from melanoma_kd.config import EvaluateParams
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path, read_json, write_json

DECIMALS = 6
# Record fields written as one JSON file each, under the EvaluationFiles attribute of that name.
JSON_PARTS: dict[str, str] = {
    "roles": "key-model roles",
    "error_analysis": "error analysis",
    "kd_gain": "KD gain",
    "student_vs_teacher": "student vs teacher comparison",
    "seeds": "seed-replicate summary",
    "transfer": "transfer-set ablation",
    "pooled": "comparisons pooled over seeds",
}
PREDICTION_COLUMNS = ["image_id", "label", "score"]
# The per-model metric holding the model's decision threshold: the highest threshold keeping
# the sensitivity target on its validation scores (what ``predict`` decides with).
DECISION_THRESHOLD = "sens95_threshold"
HARD_CASE_KINDS: tuple[str, ...] = (
    "teacher_right_student_wrong",
    "student_right_teacher_wrong",
    "high_confidence_errors",
)


def rounded(d: Mapping[str, Any]) -> dict[str, Any]:
    """Floats rounded to :data:`DECIMALS`; integers, thresholds and non-numbers unchanged."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            out[k] = v
        elif isinstance(v, int | np.integer):
            out[k] = int(v)
        elif k.endswith("threshold"):
            out[k] = float(v)
        else:
            out[k] = round(float(v), DECIMALS)
    return out


def csv_text(df: pd.DataFrame) -> str:
    """Stable CSV text: no index, ``\\n`` line ends, floats with :data:`DECIMALS` decimals."""
    return df.to_csv(index=False, lineterminator="\n", float_format=f"%.{DECIMALS}f")


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` atomically with :func:`csv_text`."""
    with atomic_path(path) as tmp:
        tmp.write_text(csv_text(df))


def read_required(path: Path, what: str, stage: str = "evaluate") -> Any:
    """A JSON input that cannot be done without; a clear error naming the stage that writes it."""
    if not path.is_file():
        raise UserError(f"{path}: not found ({what}; run the {stage} stage)")
    return read_json(path)


def read_optional(path: Path) -> dict[str, Any] | None:
    """A JSON object, or ``None`` when the file is absent."""
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


@dataclass(kw_only=True)
class EvaluationRecord:
    """What the evaluation found, as written to (and read from) its folder."""

    specs: list[ModelSpec]
    metrics: dict[str, dict[str, Any]]  # model -> flat holdout metrics
    roles: dict[str, str]  # role (catalog.ROLES) -> model name
    error_analysis: dict[str, Any]
    kd_gain: dict[str, Any]
    student_vs_teacher: dict[str, Any]
    seeds: dict[str, Any]
    transfer: dict[str, Any]
    pooled: dict[str, Any]  # comparison -> seed-pooled ROC-AUC/pAUC deltas (seed_stats)
    ablation: pd.DataFrame  # validation metrics per KD grid point
    hard_cases: pd.DataFrame
    cfg: EvaluateParams = field(default_factory=EvaluateParams)
    holdout: dict[str, pd.DataFrame] = field(default_factory=dict)  # model -> image_id,label,score

    def scores(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Holdout labels and P(melanoma) of model ``name``."""
        df = self.holdout[name]
        return df["label"].to_numpy(np.int64), df["score"].to_numpy(np.float64)

    def spec(self, name: str) -> ModelSpec:
        """The catalogue entry of model ``name``."""
        return next(s for s in self.specs if s.name == name)


# --------------------------------------------------------------------------- writing


def write_predictions(holdout: Mapping[str, pd.DataFrame], files: EvaluationFiles) -> None:
    """``<predictions>/<model>.csv`` (``image_id,label,score``); the folder is replaced whole,
    so a model removed from the grid leaves no file."""
    with atomic_path(files.predictions, directory=True) as tmp:
        staged = dataclasses.replace(files, predictions=tmp)
        for name, df in holdout.items():
            staged.prediction(name).write_text(csv_text(df[PREDICTION_COLUMNS]))


def write_record(rec: EvaluationRecord, files: EvaluationFiles) -> None:
    """Every part of ``rec`` but the predictions into ``files.root``, replaced as a whole."""
    with atomic_path(files.root, directory=True) as tmp:
        staged = dataclasses.replace(files, root=tmp)
        for name, m in rec.metrics.items():
            write_json(staged.model(name), m)
        for part in JSON_PARTS:
            write_json(getattr(staged, part), getattr(rec, part))
        write_csv(staged.ablation, rec.ablation)
        write_csv(staged.hard_cases, rec.hard_cases)


# --------------------------------------------------------------------------- reading


def read_predictions(files: EvaluationFiles, name: str) -> pd.DataFrame:
    """Holdout ``image_id,label,score`` of model ``name``."""
    path = files.prediction(name)
    if not path.is_file():
        raise UserError(f"{path}: not found (holdout predictions of {name}; run evaluate)")
    df = pd.read_csv(path, dtype={"image_id": str})
    if list(df.columns) != PREDICTION_COLUMNS:
        raise UserError(f"{path}: expected columns {','.join(PREDICTION_COLUMNS)}")
    return df


def _read_table(path: Path, what: str, dtype: dict[str, Any]) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: not found ({what}; run the evaluate stage)")
    return pd.read_csv(path, dtype=dtype)


def load_evaluation(
    files: EvaluationFiles,
    specs: Sequence[ModelSpec],
    cfg: EvaluateParams,
    *,
    key_predictions: bool = False,
) -> EvaluationRecord:
    """The evaluation of ``specs`` read back; with ``key_predictions`` also the holdout
    predictions of the key models (the ones the plots draw)."""
    metrics = {s.name: read_required(files.model(s.name), f"metrics of {s.name}") for s in specs}
    parts = {p: read_required(getattr(files, p), what) for p, what in JSON_PARTS.items()}
    unknown = {r: n for r, n in parts["roles"].items() if n not in metrics}
    if unknown:
        raise UserError(
            f"{files.roles}: roles {unknown} name models this pipeline does not have; "
            "rerun the evaluate stage"
        )
    roles = parts["roles"]
    holdout = {n: read_predictions(files, n) for n in roles.values()} if key_predictions else {}
    return EvaluationRecord(
        specs=list(specs),
        metrics=metrics,
        **parts,
        ablation=_read_table(
            files.ablation, "KD ablation table", {"temperature": str, "alpha": str}
        ),
        hard_cases=_read_table(files.hard_cases, "hard cases", {"image_id": str}),
        cfg=cfg,
        holdout=holdout,
    )
