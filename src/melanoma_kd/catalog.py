"""What the pipeline makes and where it lives: the one catalogue of models, KD grid points and
their names, read by the stages, evaluation, the report and the plots.

Names follow ``dvc.yaml``: a KD grid point is ``<T>-<alpha>-response`` or ``<alpha>-feature``, built
here from the raw params (:func:`kd_points`) and parsed back only from the select_student
stage's record (:func:`read_selected`). The evaluation's files, which the evaluate stage
writes and the plot and report stages read, are laid out once, in :class:`EvaluationFiles`.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from melanoma_kd.errors import UserError
from melanoma_kd.io import read_json
from melanoma_kd.points import KD_METHODS, KDPoint, kd_point  # the point values, named here

Group = Literal["teacher", "scratch", "kd", "onnx", "replicate", "ablation"]
Kind = Literal["torch", "onnx"]

# Key models: their curves are overlaid in one plot per kind; files are named by role so the
# top-level plot definitions in dvc.yaml stay valid whatever the archs and grid are.
ROLES: tuple[str, ...] = ("best_teacher", "scratch_student", "kd_student", "kd_student_int8")
ROLE_LABELS: dict[str, str] = {
    "best_teacher": "best teacher",
    "scratch_student": "scratch student",
    "kd_student": "KD student",
    "kd_student_int8": "KD student INT8",
}
SCRATCH = "student_scratch"
ONNX_FP32 = "kd_onnx_fp32"
ONNX_INT8 = "kd_onnx_int8"
TEACHER_ONNX_FP32 = "teacher_onnx_fp32"  # the teacher best on validation, exported
TEACHER_ONNX_INT8 = "teacher_onnx_int8"
# Exported files, ``models/onnx/<stem>.onnx``: the selected KD student and the teacher best on
# validation (export_student / export_teacher), each with ``<stem>_int8.onnx`` (quantize /
# quantize_teacher) and the latency-only copies ``<stem>_<deploy_size>[_int8].onnx``.
STUDENT_STEM = "student_kd"
TEACHER_STEM = "teacher_best"
# The deployment Pareto (benchmark stage): (family, precision) -> exported file stem and the
# evaluation's name of that model.
DEPLOYED: dict[tuple[str, str], tuple[str, str]] = {
    ("teacher", "fp32"): (TEACHER_STEM, TEACHER_ONNX_FP32),
    ("teacher", "int8"): (TEACHER_STEM, TEACHER_ONNX_INT8),
    ("student", "fp32"): (STUDENT_STEM, ONNX_FP32),
    ("student", "int8"): (STUDENT_STEM, ONNX_INT8),
}
REPLICATE_BASES: tuple[str, ...] = ("scratch", "kd", "no_transfer")  # a seed replicate retrains
NO_TRANSFER = "kd_selected_no_transfer"  # the selected KD point retrained without transfer set


def parse_point(key: str) -> KDPoint:
    """``"4-0.5-response"`` / ``"0.5-feature"`` → :class:`KDPoint`; numbers may contain ``-``
    (``1e-05``). The key is kept as spelled (``1.0-0.5-response``): it is DVC's name of the
    stage's outputs."""
    head, _, method = key.rpartition("-")
    if method not in KD_METHODS:
        raise UserError(
            f"KD point {key!r}: unknown method {method!r} (known: {sorted(KD_METHODS)})"
        )
    try:
        if method == "feature":
            return dataclasses.replace(kd_point(None, float(head), method), key=key)
        splits = []
        for i, ch in enumerate(head):
            if ch != "-":
                continue
            try:
                splits.append((float(head[:i]), float(head[i + 1 :])))
            except ValueError:
                continue
        ok = [(t, a) for t, a in splits if t > 0 and 0 <= a <= 1 and math.isfinite(t)]
        if len(ok) != 1:
            raise ValueError(key)
        return dataclasses.replace(kd_point(ok[0][0], ok[0][1], method), key=key)
    except ValueError:
        form = "<alpha>-feature" if method == "feature" else "<temperature>-<alpha>-response"
        raise UserError(f"KD point {key!r}: expected {form}") from None


def read_selected(path: str | Path) -> KDPoint:
    """The KD point chosen on validation, from the select_student stage's record."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found (written by the select_student stage)")
    data = read_json(path)
    point = data.get("point") if isinstance(data, dict) else None
    if not isinstance(point, str):
        raise UserError(f"{path}: field 'point' (e.g. \"4-0.5-response\") is missing")
    return parse_point(point)


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: its report name, family, file and (for trained ones) run folder."""

    name: str
    group: Group
    kind: Kind
    path: Path
    run_dir: Path | None = None  # metrics/<group>/<name>: summary.json and dvclive curves
    point: KDPoint | None = None  # KD grid point
    seed: int | None = None  # seed replicates: the init/shuffle seed
    base: str | None = None  # seed replicates: "scratch" or "kd" (the selected point)


def dvc_str(value: object) -> str:
    """A param value as DVC writes it into a foreach/matrix key (``1``, ``0.5``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def kd_points(distill: Mapping[str, Any]) -> list[str]:
    """Grid point keys in DVC order — ``distill_response`` (matrix T x alpha:
    ``<T>-<alpha>-response``) then ``distill_feature`` (foreach alpha: ``<alpha>-feature``) —
    named from the raw YAML values as DVC spells them."""
    axes = []
    for path in ("response.temperature", "response.alpha", "feature.alpha"):
        section, key = path.split(".")
        axis = (distill.get(section) or {}).get(key, None)
        if not isinstance(axis, list):
            raise UserError(f"params: distill.{path} must be a list, got {axis!r}")
        axes.append(axis)
    temps, alphas, feature = axes
    keys = [f"{dvc_str(t)}-{dvc_str(a)}-response" for t, a in itertools.product(temps, alphas)]
    return keys + [f"{dvc_str(a)}-feature" for a in feature]


def replicate_name(base: str, seed: int) -> str:
    """Report name of a seed replicate: ``student_scratch_seed1``, ``kd_selected_seed1``,
    ``kd_selected_no_transfer_seed1``."""
    prefix = {"scratch": SCRATCH, "kd": "kd_selected", "no_transfer": NO_TRANSFER}[base]
    return f"{prefix}_seed{seed}"


def replicate_seeds(raw_params: Mapping[str, Any]) -> list[int]:
    """``replicates.seeds`` from the raw YAML (none when the section is absent)."""
    seeds = (raw_params.get("replicates") or {}).get("seeds", [])
    if not isinstance(seeds, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in seeds
    ):
        raise UserError(f"params: replicates.seeds must be a list of integers, got {seeds!r}")
    return seeds


def read_raw_params(path: str | Path) -> dict[str, Any]:
    """``params.yaml`` as plain YAML (validate it with ``load_params`` first)."""
    return yaml.safe_load(Path(path).read_text()) or {}


def model_specs(
    raw_params: Mapping[str, Any],
    models_dir: str | Path = "models",
    metrics_root: str | Path = "metrics",
) -> list[ModelSpec]:
    """Every model in report order: teachers, scratch, KD grid, ONNX fp32/INT8 (the selected KD
    student, then the teacher best on validation), the selected KD point without transfer set,
    seed replicates."""
    models, runs = Path(models_dir), Path(metrics_root)
    archs = raw_params.get("teachers", {}).get("archs")
    if not isinstance(archs, list) or not archs:
        raise UserError("params: teachers.archs must be a non-empty list")
    specs = [
        ModelSpec(
            f"teacher_{a}",
            "teacher",
            "torch",
            models / "teachers" / f"{a}.pt",
            runs / "teachers" / str(a),
        )
        for a in archs
    ]
    specs.append(
        ModelSpec(
            SCRATCH,
            "scratch",
            "torch",
            models / "student" / "scratch.pt",
            runs / "student" / "scratch",
        )
    )
    for key in kd_points(raw_params.get("distill", {})):
        specs.append(
            ModelSpec(
                f"kd_{key}",
                "kd",
                "torch",
                models / "distill" / f"{key}.pt",
                runs / "distill" / key,
                parse_point(key),
            )
        )
    onnx_dir = models / "onnx"
    specs += [
        ModelSpec(ONNX_FP32, "onnx", "onnx", onnx_dir / f"{STUDENT_STEM}.onnx"),
        ModelSpec(ONNX_INT8, "onnx", "onnx", onnx_dir / f"{STUDENT_STEM}_int8.onnx"),
        ModelSpec(TEACHER_ONNX_FP32, "onnx", "onnx", onnx_dir / f"{TEACHER_STEM}.onnx"),
        ModelSpec(TEACHER_ONNX_INT8, "onnx", "onnx", onnx_dir / f"{TEACHER_STEM}_int8.onnx"),
    ]
    specs.append(
        ModelSpec(
            NO_TRANSFER,
            "ablation",
            "torch",
            models / "ablation" / "no_transfer.pt",
            runs / "ablation" / "no_transfer",
        )
    )
    for seed in replicate_seeds(raw_params):
        specs += [
            ModelSpec(
                replicate_name(base, seed),
                "replicate",
                "torch",
                models / "replicates" / str(seed) / f"{base}.pt",
                runs / "replicates" / str(seed) / base,
                seed=seed,
                base=base,
            )
            for base in REPLICATE_BASES
        ]
    return specs


def _in_root(name: str, what: str) -> property:
    """A path attribute ``<root>/<name>`` of :class:`EvaluationFiles`."""

    def path(self: EvaluationFiles) -> Path:
        return self.root / name

    return property(path, doc=f"``{name}``: {what}")


@dataclass(frozen=True)
class EvaluationFiles:
    """What the evaluate stage writes and the plot and report stages read.

    One folder (``root``, replaced as a whole on every run) holds the per-model holdout metrics
    (``models/<name>.json``) and the files below. The holdout predictions (``<name>.csv``:
    ``image_id,label,score``) are a DVC-cached folder of their own, which ``compare`` reads
    across revisions.
    """

    root: Path = Path("metrics/evaluate")
    predictions: Path = Path("metrics/predictions")

    roles = _in_root("roles.json", "key-model role (ROLES) -> model name")
    error_analysis = _in_root("error_analysis.json", "best teacher vs selected KD student")
    kd_gain = _in_root("kd_gain.json", "selected KD student minus scratch (paired)")
    student_vs_teacher = _in_root("student_vs_teacher.json", "KD student minus teacher (paired)")
    seeds = _in_root("seed_replicates.json", "mean and sd over the seed replicates")
    transfer = _in_root("transfer_ablation.json", "KD with minus without the transfer set")
    pooled = _in_root("pooled.json", "KD gain, student vs teacher, transfer: pooled over seeds")
    ablation = _in_root("kd_ablation.csv", "validation metrics per KD grid point")
    hard_cases = _in_root("hard_cases.csv", "the images of the hard-case grids")

    @property
    def models(self) -> Path:
        """Folder of the flat per-model metrics JSONs."""
        return self.root / "models"

    def model(self, name: str) -> Path:
        """Holdout metrics of model ``name``."""
        return self.models / f"{name}.json"

    def prediction(self, name: str) -> Path:
        """Holdout predictions of model ``name``."""
        return self.predictions / f"{name}.csv"


def selected_point(path: str | Path, specs: Sequence[ModelSpec]) -> str:
    """Name of the KD model chosen on validation (select_student's ``selected_student.json``)."""
    point = read_selected(path).key
    name = f"kd_{point}"
    known = [s.name for s in specs if s.group == "kd"]
    if name not in known:
        raise UserError(f"{path}: point {point!r} is not in the distill grid {known}")
    return name
