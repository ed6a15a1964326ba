"""Quantization: an exported fp32 ONNX model (the KD student, the best teacher) -> ONNX Runtime
static QDQ INT8 (deployed; the student also gets dynamic INT8 for comparison), calibrated on
seeded train images and compared with fp32 on validation.

Each INT8 model carries the fp32 file's metadata, its quantization settings and its own decision
thresholds, chosen by :func:`melanoma_kd.selection.operating_thresholds` on its own validation
scores.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from scipy.stats import spearmanr

from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import model_input
from melanoma_kd.deploy.onnx_model import (
    CALIBRATION_NODES,
    INPUT_NAME,
    file_mb,
    read_metadata,
    same_network,
    score_onnx,
    set_metadata,
    update_metadata,
)
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path
from melanoma_kd.metrics import pauc_above_tpr, roc_auc
from melanoma_kd.selection import operating_thresholds

# Static QDQ: signed int8 weights (per channel when asked), unsigned int8 activations. Measured
# here (AMD EPYC, AVX-512 VNNI, onnxruntime 1.32) on the 224 px student: U8S8 ran at fp32 speed
# while S8S8 was ~3.5x slower, with the same validation scores (Spearman vs fp32 0.989 both).
# Without VNNI (AVX2 only) ONNX Runtime multiplies u8·s8 pairs with VPMADDUBSW, whose int16
# sums saturate: measured here on an AVX2-only EPYC, Spearman vs fp32 fell to 0.85. With
# ``quantize.reduce_range`` (default) weights use 7 bits, no pair sum can saturate, and the
# integer results are the same on AVX2 and VNNI machines, so INT8 scores do not depend on the
# CPU; the file itself never depends on the build machine (the setting is a param).
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"


def calibration_indices(n_items: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct indices (all when fewer), drawn with ``seed`` and sorted."""
    rng = np.random.default_rng(seed)
    k = min(size, n_items)
    return np.sort(rng.choice(n_items, size=k, replace=False))


def calibration_batches(
    cache_h5: str | Path,
    size: int,
    seed: int,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Normalised float32 calibration batches of ``size`` seeded train images."""
    ds = CacheDataset(cache_h5)
    idx = calibration_indices(len(ds), size, seed)
    batches = []
    for start in range(0, len(idx), batch_size):
        images = torch.stack([ds.read(int(i)) for i in idx[start : start + batch_size]])
        batches.append(model_input(images, image_size, mean, std).numpy())
    return batches


class _CalibrationReader(CalibrationDataReader):
    """Calibration batches for ``quantize_static``, one ``{input name: batch}`` at a time."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = batches
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="melanoma-kd-quant-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _pre_process(fp32: str | Path, pre: Path) -> dict[str, Any]:
    """ONNX Runtime's ``quant_pre_process``; the metadata to add about how it went.

    Its symbolic shape inference gives up on some transformer graphs (SwinV2's windowed
    attention: "Incomplete symbolic shape inference"); those are pre-processed with ONNX's own
    shape inference only, which quantization needs no more than, and say so in their metadata.
    """
    src, dst = str(Path(fp32).resolve()), str(Path(pre).resolve())
    # ONNX Runtime leaves temporary files (sym_shape_infer_temp.onnx, external data) in the
    # working directory when a step fails: run it in a scratch one.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(src, dst)
        except Exception as exc:  # ONNX Runtime raises a bare Exception here
            if "symbolic shape inference" not in str(exc):
                raise
            quant_pre_process(src, dst, skip_symbolic_shape=True)
            return {"symbolic_shape_inference": False}
    return {}


@dataclass(frozen=True)
class Quantized:
    """A quantization's input file, its output model without the input's own metadata (what
    ONNX Runtime adds stays) and the notes :func:`_pre_process` made: the same input network
    quantized with the same options gives this output again."""

    source: Path
    int8: onnx.ModelProto
    notes: dict[str, Any]


def _without_own_metadata(model: onnx.ModelProto, own: set[str]) -> onnx.ModelProto:
    """A copy of ``model`` without the ``metadata_props`` keys in ``own``."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in own]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    for key, value in kept:
        copy.metadata_props.add(key=key, value=value)
    return copy


def _quantize_file(
    fp32: str | Path,
    out: str | Path,
    quantize: Callable[..., None],
    options: dict[str, Any],
    metadata: dict[str, Any],
    own: set[str],
    like: Quantized | None = None,
) -> Quantized:
    """``quant_pre_process`` ``fp32``, run ``quantize(pre, int8, **options)`` (ONNX Runtime's
    ``quantize_static`` or ``quantize_dynamic``) and write the result to ``out`` atomically, with
    ``metadata`` as its ``metadata_props`` (``own``: the keys ``fp32`` has, which ONNX Runtime
    copies into its output).

    ``like`` is an earlier result with the same options: when its source is ``fp32``'s network
    (metadata aside: a deploy-size copy at the trained size), its output is reused instead.
    """
    if like is not None and same_network(fp32, like.source):
        result = Quantized(Path(fp32), like.int8, like.notes)
    else:
        with _scratch_dir() as scratch:
            pre, int8 = scratch / "pre.onnx", scratch / "int8.onnx"
            notes = _pre_process(fp32, pre)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize(str(pre), str(int8), **options)
            # ONNX Runtime copies the input's metadata; ``metadata`` holds all of it (re-encoded)
            result = Quantized(Path(fp32), _without_own_metadata(onnx.load(str(int8)), own), notes)
    model = _without_own_metadata(result.int8, set())
    set_metadata(model, {**metadata, **result.notes})
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return result


def quantize_static_qdq(
    fp32: str | Path,
    out: str | Path,
    train_cache: str | Path,
    *,
    calibration_size: int,
    method: str,
    per_channel: bool,
    seed: int,
    reduce_range: bool = True,
    activation_type: str = ACTIVATION_TYPE,
    like: Quantized | None = None,
) -> tuple[dict[str, Any], Quantized]:
    """``quant_pre_process`` then static QDQ INT8 with a seeded calibration set from train;
    returns the settings and the :class:`Quantized` (pass it as ``like`` to reuse its output for
    the same graph with the same settings).

    Metadata of ``fp32`` is carried over, plus the quantization settings. The folded
    probability calibration (:data:`CALIBRATION_NODES`) stays in float: the INT8 model keeps
    the fp32 model's Platt map and gets its own thresholds on its own validation scores.
    """
    meta = read_metadata(fp32)
    if meta.get("image_size") is None:
        raise UserError(f"{fp32}: ONNX model lacks melanoma-kd metadata")
    batches = calibration_batches(
        train_cache,
        calibration_size,
        seed,
        int(meta["image_size"]),
        tuple(meta["mean"]),
        tuple(meta["std"]),
    )
    settings = {
        "quantization": "static_qdq",
        "calibration_method": method,
        "calibration_images": sum(len(b) for b in batches),
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "activation_type": activation_type,
        "weight_type": WEIGHT_TYPE,
    }
    options = {
        "calibration_data_reader": _CalibrationReader(batches),
        "quant_format": QuantFormat.QDQ,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "activation_type": QuantType[activation_type],
        "weight_type": QuantType[WEIGHT_TYPE],
        "calibrate_method": CalibrationMethod[method],
        "nodes_to_exclude": list(CALIBRATION_NODES),
    }
    return settings, _quantize_file(
        fp32, out, quantize_static, options, {**meta, **settings}, set(meta), like
    )


def quantize_dynamic_int8(
    fp32: str | Path, out: str | Path, *, per_channel: bool, reduce_range: bool = True
) -> dict[str, Any]:
    """ONNX Runtime dynamic INT8 quantization (weights only, activations at run time).

    For comparison only: the static QDQ model is the one deployed.
    """
    meta = read_metadata(fp32)
    settings = {
        "quantization": "dynamic",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "weight_type": WEIGHT_TYPE,
    }
    options = {
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "weight_type": QuantType[WEIGHT_TYPE],
        "nodes_to_exclude": list(CALIBRATION_NODES),
    }
    _quantize_file(fp32, out, quantize_dynamic, options, {**meta, **settings}, set(meta))
    return settings


def compare_scores(fp32: pd.DataFrame, quant: pd.DataFrame, sens_target: float) -> dict[str, float]:
    """Validation ROC-AUC / pAUC of a quantized model next to fp32, and score agreement.

    Decisions are compared at fp32's operating threshold (:func:`operating_thresholds`).
    """
    y = fp32["label"].to_numpy()
    a, b = fp32["score"].to_numpy(), quant["score"].to_numpy()
    rho = spearmanr(a, b).statistic
    fp_auc, q_auc = roc_auc(y, a), roc_auc(y, b)
    t = operating_thresholds(y, a, sens_target)["threshold"]
    return {
        "val_roc_auc": q_auc,
        "val_roc_auc_drop": fp_auc - q_auc,
        "val_pauc": pauc_above_tpr(y, b),
        "spearman_vs_fp32": float(rho) if np.isfinite(rho) else 0.0,
        "max_abs_prob_diff": float(np.max(np.abs(a - b))),
        "decision_agreement": float(np.mean((a >= t) == (b >= t))),
    }


def quantize_model(
    fp32: str | Path,
    out_static: str | Path,
    train_cache: str | Path,
    val_cache: str | Path,
    *,
    calibration_size: int,
    method: str,
    per_channel: bool,
    seed: int,
    sens_target: float,
    reduce_range: bool = True,
    out_dynamic: str | Path | None = None,
    deploy_fp32: str | Path | None = None,
    deploy_out: str | Path | None = None,
) -> dict[str, Any]:
    """The quantize stages: static QDQ INT8 (deployed) of an exported model, the same settings
    for the KD student (``quantize``) and the best teacher (``quantize_teacher``); with
    ``out_dynamic`` also a dynamic INT8 model (comparison only); with ``deploy_fp32`` /
    ``deploy_out`` the latency-only deploy-size copy too (the static model's graph again when
    the copy is at the trained size: the same graph is not quantized twice).

    Each scored INT8 model gets its own validation-chosen thresholds in its metadata (its scores
    differ slightly from fp32). Returns the flat metrics dict (``metrics/quantize*.json``).
    """
    static = functools.partial(
        quantize_static_qdq,
        train_cache=train_cache,
        calibration_size=calibration_size,
        method=method,
        per_channel=per_channel,
        seed=seed,
        reduce_range=reduce_range,
    )
    settings, native = static(fp32, out_static)
    scored_models = {"int8": out_static}
    if out_dynamic is not None:
        quantize_dynamic_int8(fp32, out_dynamic, per_channel=per_channel, reduce_range=reduce_range)
        scored_models["int8_dynamic"] = out_dynamic
    val_fp32 = score_onnx(fp32, val_cache)
    report: dict[str, Any] = {
        "arch": read_metadata(fp32).get("arch"),
        "method": method,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "calibration_images": settings["calibration_images"],
        "activation_type": settings["activation_type"],
        "weight_type": settings["weight_type"],
        "fp32_size_mb": file_mb(fp32),
        "fp32_val_roc_auc": roc_auc(val_fp32["label"], val_fp32["score"]),
        "fp32_val_pauc": pauc_above_tpr(val_fp32["label"], val_fp32["score"]),
        "val_images": len(val_fp32),
    }
    for tag, path in scored_models.items():
        scored = score_onnx(path, val_cache)
        update_metadata(
            path,
            operating_thresholds(
                scored["label"].to_numpy(), scored["score"].to_numpy(), sens_target
            ),
        )
        report[f"{tag}_size_mb"] = file_mb(path)
        report[f"{tag}_size_ratio"] = report["fp32_size_mb"] / report[f"{tag}_size_mb"]
        for key, value in compare_scores(val_fp32, scored, sens_target).items():
            report[f"{tag}_{key}"] = value
    if deploy_fp32 is not None and deploy_out is not None:
        static(deploy_fp32, deploy_out, like=native)
        report["deploy_int8_size_mb"] = file_mb(deploy_out)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in report.items()}
