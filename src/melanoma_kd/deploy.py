"""Deployment: pick the KD student on validation, export to ONNX with a parity check, quantize
with ONNX Runtime (static QDQ INT8), score ONNX models, and measure CPU latency.

Every exported file describes itself: ``metadata_props`` carry the arch, input size,
normalisation, the cache size and hair-removal params of the training preprocessing, the
validation numbers and the validation-chosen decision threshold, so ``predict`` and the benchmark
need only the ``.onnx`` file. ONNX graphs have input ``image`` (float N×3×S×S, normalised) and
output ``logits`` (N×2), with a dynamic batch axis. The latency-only copy at
``benchmark.deploy_size`` is made at the trained size instead when the model rejects that size
(fixed-size transformers); its ``image_size`` metadata always names the size it takes.

Export uses the TorchScript-based exporter (``dynamo=False``): with torch 2.14 the dynamo exporter
cannot emit opset 17 for these timm CNNs (it falls back to 18), needs ~15 s per model and writes
weights to a side ``.data`` file; the legacy exporter honours ``export.opset``, writes one
self-contained file and matches PyTorch to ~1e-8.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import model_input
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path
from melanoma_kd.selection import SUMMARY, operating_thresholds, rank_by_validation, run_summaries

# scipy, scikit-learn (metrics) and timm (checkpoints) are imported where used: `predict` loads
# this module and should start quickly.
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
PARITY_BATCH = 32  # images of the first validation batch used for the parity check
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


# --------------------------------------------------------------------------- student selection


def rank_students(
    distill_metrics_root: str | Path, points: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """KD points with a ``summary.json``, best first by :data:`melanoma_kd.selection.RULE`
    (candidates listed in name order, so an exact tie goes to the first name).

    ``points`` restricts the candidates to the current grid (a point removed from params.yaml
    leaves its old outputs behind); each of them must have a summary. Holdout is never read.
    """
    root = Path(distill_metrics_root)
    if not root.is_dir():
        raise UserError(f"{root}: KD metrics directory not found")
    if points is None:
        names = sorted(p.parent.name for p in root.glob(f"*/{SUMMARY}"))
    else:
        names = sorted(points)
        missing = [str(root / n / SUMMARY) for n in names if not (root / n / SUMMARY).is_file()]
        if missing:
            raise UserError(f"{missing[0]}: KD summary not found ({len(missing)} missing)")
    if not names:
        raise UserError(f"{root}: no KD point has a summary.json")
    ranked = rank_by_validation(run_summaries(root, names))
    return [{"point": r.name, "val_pauc": r.val_pauc, "val_roc_auc": r.val_roc_auc} for r in ranked]


def select_student(distill_metrics_root: str | Path, points: Collection[str] | None = None) -> str:
    """Name of the best KD point on validation (:func:`rank_students`)."""
    return rank_students(distill_metrics_root, points)[0]["point"]


# --------------------------------------------------------------------------- thresholds


def validation_thresholds(val_predictions: str | Path, sens_target: float) -> dict[str, Any]:
    """Operating points chosen on validation predictions (``image_id,label,score``).

    ``threshold`` (the one ``predict`` decides with) is the highest threshold keeping
    sensitivity >= ``sens_target``; the max-F1 threshold is stored beside it.
    """
    path = Path(val_predictions)
    if not path.is_file():
        raise UserError(f"{path}: validation predictions not found")
    df = pd.read_csv(path)
    if not {"label", "score"} <= set(df.columns):
        raise UserError(f"{path}: needs columns label, score")
    return operating_thresholds(df["label"].to_numpy(), df["score"].to_numpy(), sens_target)


# --------------------------------------------------------------------------- ONNX metadata


def _meta_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Set (add or replace) ``metadata_props``; non-strings are stored as JSON."""
    existing = {p.key: p.value for p in model.metadata_props}
    existing.update({k: _meta_str(v) for k, v in metadata.items()})
    del model.metadata_props[:]
    for key in sorted(existing):
        model.metadata_props.add(key=key, value=existing[key])


def parse_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Decode ``metadata_props`` written by :func:`set_metadata` (JSON where it parses)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of an exported ONNX file (no weights are loaded)."""
    model = _load_onnx(path, load_external_data=False)
    return parse_metadata({p.key: p.value for p in model.metadata_props})


def update_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Rewrite ``path`` atomically with ``metadata`` merged into its ``metadata_props``."""
    model = _load_onnx(path)
    set_metadata(model, metadata)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _load_onnx(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX model not found")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf raises several kinds on a bad file
        raise UserError(f"{path}: not a readable ONNX model ({exc})") from None


# --------------------------------------------------------------------------- ONNX Runtime


def session_options(threads: int | None) -> ort.SessionOptions:
    """Sequential execution; ``threads`` intra-op threads (``None``: ONNX Runtime's default)."""
    opts = ort.SessionOptions()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    return opts


class OnnxClassifier:
    """An exported classifier on the CPU provider, with its embedded metadata."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: ONNX model not found")
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types on a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self.meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in ("arch", "image_size", "mean", "std") if k not in self.meta]
        if missing:
            raise UserError(
                f"{self.path}: ONNX model lacks melanoma-kd metadata ({', '.join(missing)}); "
                "export it with the export stage"
            )
        self.image_size = int(self.meta["image_size"])
        self.mean = tuple(float(v) for v in self.meta["mean"])
        self.std = tuple(float(v) for v in self.meta["std"])

    def inputs(self, images: torch.Tensor) -> np.ndarray:
        """uint8 NCHW images → the model's normalised float input."""
        return model_input(images, self.image_size, self.mean, self.std).numpy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N×2) for an already normalised float32 batch."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(melanoma) (float64) for an already normalised float32 batch."""
        return softmax_pos(self.logits(x))


def softmax_pos(logits: np.ndarray) -> np.ndarray:
    """P(class 1) of 2-class logits, in float64 (as :func:`inference.probabilities`)."""
    return torch.softmax(torch.from_numpy(np.asarray(logits)).double(), dim=1)[:, 1].numpy()


def score_onnx(
    path: str | Path, cache_h5: str | Path, batch_size: int = 64, threads: int | None = None
) -> pd.DataFrame:
    """``image_id, label, score, patient_id`` for one cache split scored by an ONNX model."""
    clf = OnnxClassifier(path, threads)
    ds = CacheDataset(cache_h5)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    scores = np.concatenate([clf.probabilities(clf.inputs(b["image"])) for b in loader])
    return pd.DataFrame(
        {"image_id": ds.ids, "label": ds.labels, "score": scores, "patient_id": ds.patients}
    )


def first_batch(cache_h5: str | Path, n: int = PARITY_BATCH) -> torch.Tensor:
    """The first ``n`` stored images of a cache split as uint8 NCHW (real parity inputs)."""
    ds = CacheDataset(cache_h5)
    return torch.stack([ds.read(i) for i in range(min(n, len(ds)))])


# --------------------------------------------------------------------------- export


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to ``/dev/null`` for the block.

    The TorchScript exporter prints the whole IR graph (tens of kB) to the C-level stdout when
    it fails; the caller reports one line instead. A successful export prints nothing there.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@torch.inference_mode()
def export_onnx(
    model: nn.Module,
    meta: dict[str, Any],
    out: str | Path,
    check_images: torch.Tensor,
    *,
    opset: int,
    atol: float,
    image_size: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``out`` and verify it against PyTorch on ``check_images``.

    ``check_images`` are real uint8 NCHW images; both runtimes see them through
    :func:`model_input`. If the max abs difference of softmax probabilities exceeds ``atol`` a
    :class:`UserError` is raised and no file is left at ``out``. ``image_size`` overrides the
    checkpoint's input size (a deploy-size copy for latency). Returns the parity report.
    """
    size = int(image_size or meta["image_size"])
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    model = model.eval()
    x = model_input(check_images, size, mean, std).contiguous()
    ref_logits = model(x).float().numpy()
    ref = softmax_pos(ref_logits)
    props = {
        "arch": meta["arch"],
        "image_size": size,
        "mean": list(mean),
        "std": list(std),
        "num_params": count_params(model),
        "opset": opset,
        **(metadata or {}),
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            with warnings.catch_warnings(), _c_stdout_silenced():
                warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
                torch.onnx.export(
                    model,
                    (x[:1],),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
        except Exception as exc:  # the exporter raises many kinds (unsupported op, tracing)
            who = f"{props['name']} ({meta['arch']})" if "name" in props else str(meta["arch"])
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(
                f"{out}: {who}: ONNX export at {size} px, opset {opset} failed "
                f"({type(exc).__name__}: {first})"
            ) from None
        proto = onnx.load(str(tmp))
        set_metadata(proto, props)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        got_logits = OnnxClassifier(tmp, threads=1).logits(x.numpy())
        diff = float(np.max(np.abs(softmax_pos(got_logits) - ref)))
        logit_diff = float(np.max(np.abs(got_logits - ref_logits)))
        if not diff <= atol:  # also catches NaN
            raise UserError(
                f"{out}: ONNX/PyTorch parity failed on {len(x)} validation images: max abs "
                f"probability difference {diff:.3g} > export.atol {atol:g}; no file written"
            )
    return {
        "max_abs_prob_diff": diff,
        "max_abs_logit_diff": logit_diff,
        "parity_images": len(x),
        "image_size": size,
        "size_mb": file_mb(out),
    }


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    val_cache: str | Path,
    *,
    name: str,
    opset: int,
    atol: float,
    metadata: dict[str, Any] | None = None,
    deploy_out: str | Path | None = None,
    deploy_size: int | None = None,
) -> dict[str, Any]:
    """Export a checkpoint (and optionally a latency-only copy at ``deploy_size``).

    The parity check runs on the first batch of ``val_cache``. Metadata gets the name, source
    checkpoint, validation pAUC/ROC-AUC from the checkpoint, and ``metadata``. A model with a
    fixed input size that rejects ``deploy_size`` (SwinV2 ``window8_256``, ViT ``patch16_224``)
    gets its latency copy at its trained size instead (see :func:`deploy_input_size`); that
    copy's metadata then carries ``requested_image_size`` and ``input_size_note``, and its
    ``image_size`` is the size used. A model that rejects even its trained size is a
    :class:`UserError` naming it.
    """
    from melanoma_kd.models.build import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    arch, trained = str(meta["arch"]), int(meta["image_size"])
    problem = input_size_problem(model, trained)
    if problem is not None:
        raise UserError(
            f"{name} ({arch}): the model rejects its trained input size {trained} px ({problem})"
        )
    images = first_batch(val_cache)
    base = {
        "name": name,
        "source_checkpoint": str(checkpoint),
        **{k: float(meta[k]) for k in ("val_pauc", "val_roc_auc") if k in meta},
        **(metadata or {}),
    }
    report = {
        "native": export_onnx(model, meta, out, images, opset=opset, atol=atol, metadata=base)
    }
    if deploy_out is not None:
        if deploy_size is None:
            raise ValueError("deploy_out needs deploy_size")
        latency_meta = {
            k: v for k, v in base.items() if not k.startswith("threshold") and k != "preprocess"
        }
        latency_meta |= {"latency_only": True, "trained_image_size": trained}
        size, note = deploy_input_size(model, arch, trained, deploy_size)
        if note is not None:
            latency_meta |= {"requested_image_size": deploy_size, "input_size_note": note}
        report["deploy"] = export_onnx(
            model,
            meta,
            deploy_out,
            images,
            opset=opset,
            atol=atol,
            image_size=size,
            metadata=latency_meta,
        )
    return report


@torch.inference_mode()
def input_size_problem(model: nn.Module, size: int) -> str | None:
    """Why ``model`` cannot take a ``size``×``size`` input, or ``None`` when it can.

    The model itself is asked: one batch-1 forward pass on zeros in eval mode. Models with a
    fixed input size (timm's ViT and Swin patch embeddings, MaxViT windows, CoAtNet relative
    position tables) reject other sizes with an exception, whose first line is returned.
    """
    try:
        model.eval()(torch.zeros(1, 3, size, size))
    except Exception as exc:  # timm raises AssertionError or RuntimeError, depending on the model
        text = str(exc).strip()
        return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
    return None


def deploy_input_size(
    model: nn.Module, arch: str, trained_size: int, deploy_size: int
) -> tuple[int, str | None]:
    """The input size of the latency copy and, when it is not ``deploy_size``, why.

    ``deploy_size`` when the model accepts it; otherwise the size it was trained at (which the
    checkpoint's own export already used), with a one-line note naming the arch and the reason.
    """
    if deploy_size == trained_size:
        return deploy_size, None
    problem = input_size_problem(model, deploy_size)
    if problem is None:
        return deploy_size, None
    return trained_size, (
        f"{arch} does not accept {deploy_size} px input ({problem}); "
        f"exported and timed at its trained size {trained_size} px"
    )


def file_mb(path: str | Path) -> float:
    """File size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6


# --------------------------------------------------------------------------- quantization


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


def _calibration_reader(batches: list[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="melanoma-kd-quant-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
) -> dict[str, Any]:
    """``quant_pre_process`` then static QDQ INT8 with a seeded calibration set from train.

    Metadata of ``fp32`` is carried over, plus the quantization settings.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
    n_calib = sum(len(b) for b in batches)
    with _scratch_dir() as scratch, atomic_path(out) as tmp:
        pre = scratch / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(pre),
                str(scratch / "int8.onnx"),
                _calibration_reader(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType[activation_type],
                weight_type=QuantType[WEIGHT_TYPE],
                calibrate_method=CalibrationMethod[method],
            )
        model = onnx.load(str(scratch / "int8.onnx"))
        settings = {
            "quantization": "static_qdq",
            "calibration_method": method,
            "calibration_images": n_calib,
            "per_channel": per_channel,
            "reduce_range": reduce_range,
            "activation_type": activation_type,
            "weight_type": WEIGHT_TYPE,
        }
        set_metadata(model, {**meta, **settings})
        onnx.save(model, str(tmp))
    return settings


def quantize_dynamic_int8(
    fp32: str | Path, out: str | Path, *, per_channel: bool, reduce_range: bool = True
) -> dict[str, Any]:
    """ONNX Runtime dynamic INT8 quantization (weights only, activations at run time).

    For comparison only: the static QDQ model is the one deployed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = read_metadata(fp32)
    with _scratch_dir() as scratch, atomic_path(out) as tmp:
        pre = scratch / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(pre),
                str(scratch / "int8.onnx"),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType[WEIGHT_TYPE],
            )
        model = onnx.load(str(scratch / "int8.onnx"))
        settings = {
            "quantization": "dynamic",
            "per_channel": per_channel,
            "reduce_range": reduce_range,
            "weight_type": WEIGHT_TYPE,
        }
        set_metadata(model, {**meta, **settings})
        onnx.save(model, str(tmp))
    return settings


def compare_scores(fp32: pd.DataFrame, quant: pd.DataFrame, sens_target: float) -> dict[str, float]:
    """Validation ROC-AUC / pAUC of a quantized model next to fp32, and score agreement."""
    from scipy.stats import spearmanr

    from melanoma_kd.metrics import pauc_above_tpr, roc_auc, threshold_at_sensitivity

    y = fp32["label"].to_numpy()
    a, b = fp32["score"].to_numpy(), quant["score"].to_numpy()
    rho = spearmanr(a, b).statistic
    fp_auc, q_auc = roc_auc(y, a), roc_auc(y, b)
    t = threshold_at_sensitivity(y, a, sens_target)
    return {
        "val_roc_auc": q_auc,
        "val_roc_auc_drop": fp_auc - q_auc,
        "val_pauc": pauc_above_tpr(y, b),
        "spearman_vs_fp32": float(rho) if np.isfinite(rho) else 0.0,
        "max_abs_prob_diff": float(np.max(np.abs(a - b))),
        "decision_agreement": float(np.mean((a >= t) == (b >= t))),
    }


def quantize_student(
    fp32: str | Path,
    out_static: str | Path,
    out_dynamic: str | Path,
    train_cache: str | Path,
    val_cache: str | Path,
    *,
    calibration_size: int,
    method: str,
    per_channel: bool,
    seed: int,
    sens_target: float,
    reduce_range: bool = True,
    deploy_fp32: str | Path | None = None,
    deploy_out: str | Path | None = None,
) -> dict[str, Any]:
    """The quantize stage: static QDQ (deployed) and dynamic (comparison) INT8 models.

    Each INT8 model gets its own validation-chosen thresholds in its metadata (its scores differ
    slightly from fp32). Returns the flat ``metrics/quantize.json`` dict.
    """
    from melanoma_kd.metrics import pauc_above_tpr, roc_auc

    settings = quantize_static_qdq(
        fp32,
        out_static,
        train_cache,
        calibration_size=calibration_size,
        method=method,
        per_channel=per_channel,
        seed=seed,
        reduce_range=reduce_range,
    )
    quantize_dynamic_int8(fp32, out_dynamic, per_channel=per_channel, reduce_range=reduce_range)
    val_fp32 = score_onnx(fp32, val_cache)
    report: dict[str, Any] = {
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
    for tag, path in (("int8", out_static), ("int8_dynamic", out_dynamic)):
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
        quantize_static_qdq(
            deploy_fp32,
            deploy_out,
            train_cache,
            calibration_size=calibration_size,
            method=method,
            per_channel=per_channel,
            seed=seed,
            reduce_range=reduce_range,
        )
        report["deploy_int8_size_mb"] = file_mb(deploy_out)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in report.items()}


# --------------------------------------------------------------------------- latency

ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model name, logical cores and the ISA flags that matter for fp32/int8 kernels."""
    text = Path(cpuinfo).read_text() if Path(cpuinfo).is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    info: dict[str, Any] = {
        "model": model.group(1).strip() if model else platform.processor() or "unknown",
        "logical_cores": all_cores(),
        "vnni": any("vnni" in f for f in flags),
    }
    info |= {f"isa_{f}": f in flags for f in ISA_FLAGS}
    info["isa_flags"] = " ".join(sorted(f for f in flags if re.match(r"(avx|amx|fma|sse4)", f)))
    return info


def all_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def time_runs(fn: Callable[[], object], warmup: int, runs: int) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` timed calls: p50/p90/mean in ms.

    CPU only, so each call has finished when it returns (no device synchronisation needed).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    arr = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "mean_ms": float(statistics.fmean(times)),
        "runs": runs,
    }


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set PyTorch's intra-op thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_input(image_size: int, seed: int = 0) -> np.ndarray:
    """A fixed batch-1 float32 input."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, image_size, image_size), dtype=np.float32)


def torch_latency(
    model: nn.Module, image_size: int, threads: int, warmup: int, runs: int
) -> dict[str, float]:
    """PyTorch eager fp32, batch 1, under ``inference_mode``."""
    x = torch.from_numpy(bench_input(image_size))
    model = model.eval()
    with torch_threads(threads), torch.inference_mode():
        return time_runs(lambda: model(x), warmup, runs)


def ort_latency(path: str | Path, threads: int, warmup: int, runs: int) -> dict[str, float]:
    """ONNX Runtime CPU, batch 1, ``threads`` intra-op threads."""
    clf = OnnxClassifier(path, threads)
    x = bench_input(clf.image_size)
    feed = {INPUT_NAME: x}
    run = clf.session.run
    return time_runs(lambda: run([OUTPUT_NAME], feed), warmup, runs)


def discover_models(onnx_dir: str | Path, teachers: list[str], deploy_size: int) -> dict[str, Any]:
    """The benchmark's model list from the export/quantize naming convention.

    ``{model: {"onnx": fp32 path, "int8": {...}, "deploy": bool}}``. Missing required files
    (student_kd, student_scratch, each teacher) are a :class:`UserError`.
    """
    d = Path(onnx_dir)
    models: dict[str, Any] = {}
    for name in ("student_kd", "student_scratch", *(f"teacher_{a}" for a in teachers)):
        path = d / f"{name}.onnx"
        if not path.is_file():
            raise UserError(f"{path}: exported model not found (run the export stages)")
        models[name] = {"onnx": path, "int8": {}, "deploy": False}
        deploy = d / f"{name}_{deploy_size}.onnx"
        if deploy.is_file():
            models[f"{name}_{deploy_size}"] = {"onnx": deploy, "int8": {}, "deploy": True}
    for key, runtime, fname in (
        ("student_kd", "ort_int8", "student_kd_int8.onnx"),
        ("student_kd", "ort_int8_dynamic", "student_kd_int8_dynamic.onnx"),
        (f"student_kd_{deploy_size}", "ort_int8", f"student_kd_{deploy_size}_int8.onnx"),
    ):
        if key in models and (d / fname).is_file():
            models[key]["int8"][runtime] = d / fname
    return models


def benchmark(
    onnx_dir: str | Path,
    teachers: list[str],
    *,
    warmup: int,
    runs: int,
    deploy_size: int,
    quantize_metrics: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Latency of every model × runtime at 1 thread and at all cores, plus sizes and params.

    PyTorch eager runs from the checkpoint named in each ONNX file's metadata. The result is a
    nested dict of scalars (no lists), ``metrics/benchmark.json``.
    """
    from melanoma_kd.models.build import load_checkpoint

    cores = all_cores()
    thread_settings = {"threads_1": 1, "threads_all": cores}
    result: dict[str, Any] = {
        "cpu": cpu_info(),
        "settings": {
            "batch": 1,
            "warmup": warmup,
            "runs": runs,
            "threads_all": cores,
            "deploy_size": deploy_size,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
        "models": {},
    }
    q = quantize_metrics or {}
    for name, spec in discover_models(onnx_dir, teachers, deploy_size).items():
        meta = read_metadata(spec["onnx"])
        size = int(meta["image_size"])
        entry: dict[str, Any] = {
            "arch": meta["arch"],
            "image_size": size,
            "params": int(meta["num_params"]),
            "latency_only": bool(meta.get("latency_only", False)),
        }
        if "val_pauc" in meta:
            entry["val_pauc"] = float(meta["val_pauc"])
        if "requested_image_size" in meta:  # a fixed-size model: timed at the size it accepts
            entry["requested_image_size"] = int(meta["requested_image_size"])
            entry["input_size_note"] = str(meta.get("input_size_note", ""))
        ckpt = Path(str(meta.get("source_checkpoint", "")))
        runners: dict[str, tuple[Path, Callable[[int], dict[str, float]]]] = {}
        if ckpt.is_file():
            model, _ = load_checkpoint(ckpt)
            runners["torch_fp32"] = (
                ckpt,
                lambda t, m=model, s=size: torch_latency(m, s, t, warmup, runs),
            )
        runners["ort_fp32"] = (
            spec["onnx"],
            lambda t, p=spec["onnx"]: ort_latency(p, t, warmup, runs),
        )
        for runtime, path in spec["int8"].items():
            runners[runtime] = (path, lambda t, p=path: ort_latency(p, t, warmup, runs))
        for runtime, (path, run) in runners.items():
            if progress:
                progress(f"{name} {runtime} @ {size}px")
            row: dict[str, Any] = {"size_mb": round(file_mb(path), 4)}
            for key, threads in thread_settings.items():
                row[key] = {k: round(v, 4) for k, v in run(threads).items()}
            entry[runtime] = row
        if name == "student_kd" and "int8_val_pauc" in q:
            entry["ort_int8"]["val_pauc"] = q["int8_val_pauc"]
        if name == "student_kd" and "int8_dynamic_val_pauc" in q and "ort_int8_dynamic" in entry:
            entry["ort_int8_dynamic"]["val_pauc"] = q["int8_dynamic_val_pauc"]
        result["models"][name] = entry
    result["ratios"] = latency_ratios(result["models"], teachers, deploy_size)
    return result


def timed_models(result: dict[str, Any]) -> dict[str, Any]:
    """What a :func:`benchmark` result timed, without any timing or machine detail.

    This is the benchmark stage's one declared DVC output: it is the same on every machine, so
    the committed ``dvc.lock`` stays reproducible while the timings themselves (which are not)
    live in untracked files.
    """
    settings = result["settings"]
    return {
        "batch": settings["batch"],
        "warmup": settings["warmup"],
        "runs": settings["runs"],
        "deploy_size": settings["deploy_size"],
        "models": {
            name: {
                "image_size": entry["image_size"],
                "runtimes": sorted(k for k, v in entry.items() if isinstance(v, dict)),
            }
            for name, entry in sorted(result["models"].items())
        },
    }


def _p50(entry: dict[str, Any], runtime: str, threads: str = "threads_1") -> float | None:
    row = entry.get(runtime)
    return row[threads]["p50_ms"] if row else None


def latency_ratios(models: dict[str, Any], teachers: list[str], deploy_size: int) -> dict[str, Any]:
    """Best teacher (highest validation pAUC) vs student latency, INT8 vs fp32 size/latency."""
    out: dict[str, Any] = {}
    scored = [a for a in teachers if "val_pauc" in models.get(f"teacher_{a}", {})]
    best = max(scored, key=lambda a: models[f"teacher_{a}"]["val_pauc"]) if scored else teachers[0]
    out["teacher_best"] = best
    for suffix in ("", f"_{deploy_size}"):
        t, s = models.get(f"teacher_{best}{suffix}"), models.get(f"student_kd{suffix}")
        if not (t and s):
            continue
        if t["image_size"] != s["image_size"]:  # trained sizes differ, or a fixed-size model
            out[f"input_px{suffix}"] = f"teacher {t['image_size']}, student {s['image_size']}"
        for runtime in ("ort_fp32", "torch_fp32"):
            tp, sp = _p50(t, runtime), _p50(s, runtime)
            if tp and sp:
                out[f"teacher_best_over_student_{runtime}_p50_t1{suffix}"] = round(tp / sp, 3)
        int8 = s.get("ort_int8")
        if int8:
            fp = s["ort_fp32"]
            out[f"student_int8_over_fp32_p50_t1{suffix}"] = round(
                int8["threads_1"]["p50_ms"] / fp["threads_1"]["p50_ms"], 3
            )
            out[f"student_fp32_over_int8_size{suffix}"] = round(fp["size_mb"] / int8["size_mb"], 3)
    return out


# --------------------------------------------------------------------------- report and plot

RUNTIME_LABELS = {
    "torch_fp32": "PyTorch eager fp32",
    "ort_fp32": "ORT fp32",
    "ort_int8": "ORT INT8 static QDQ",
    "ort_int8_dynamic": "ORT INT8 dynamic",
}


def _row_pauc(entry: dict[str, Any], runtime: str) -> float | None:
    """Validation pAUC of one model × runtime: INT8 rows carry their own, fp32 rows the model's."""
    row = entry.get(runtime)
    if not row:
        return None
    if runtime.startswith("ort_int8"):
        return row.get("val_pauc")
    return entry.get("val_pauc")


def deployment_table(bench: dict[str, Any], quantize_metrics: dict[str, Any] | None = None) -> str:
    """The deployment table (markdown) from a benchmark result."""
    cpu, st = bench["cpu"], bench["settings"]
    lines = [
        "# Deployment: size and CPU latency",
        "",
        f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores available; VNNI: "
        f"{'yes' if cpu['vnni'] else 'no'}; ISA: {cpu['isa_flags'] or 'n/a'}.",
        f"Batch {st['batch']}, {st['warmup']} warm-up + {st['runs']} timed runs per cell; "
        f"torch {st['torch']}, onnxruntime {st['onnxruntime']}. Latency in ms; "
        f'"all" = {st["threads_all"]} threads. Validation pAUC (TPR ≥ 0.8, max 0.2) — holdout '
        "numbers are in the evaluation report.",
        "",
        "| model | runtime | input px | params (M) | file (MB) | p50 1 thr | p90 1 thr "
        "| mean 1 thr | p50 all | p90 all | val pAUC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for name, entry in bench["models"].items():
        px = str(entry["image_size"])
        if "requested_image_size" in entry:
            px += " *"
            notes.append(f"- \\* {name}: {entry.get('input_size_note') or 'fixed input size'}.")
        for runtime, label in RUNTIME_LABELS.items():
            row = entry.get(runtime)
            if not row:
                continue
            t1, ta = row["threads_1"], row["threads_all"]
            pauc = _row_pauc(entry, runtime)
            pauc_s = "—" if pauc is None or entry["latency_only"] else f"{pauc:.4f}"
            lines.append(
                f"| {name} | {label} | {px} | {entry['params'] / 1e6:.2f} "
                f"| {row['size_mb']:.2f} | {t1['p50_ms']:.3f} | {t1['p90_ms']:.3f} "
                f"| {t1['mean_ms']:.3f} | {ta['p50_ms']:.3f} | {ta['p90_ms']:.3f} | {pauc_s} |"
            )
    if notes:
        lines += [
            "",
            f"Input px is the size each row was timed at. \\* A model with a fixed input size "
            f"that rejects benchmark.deploy_size ({st['deploy_size']} px) is timed at its trained "
            "size; its `_<deploy_size>` file name still carries the requested size.",
            *notes,
        ]
    lines += ["", "## Ratios", ""]
    lines += [f"- {k}: {v}" for k, v in bench["ratios"].items()]
    if quantize_metrics:
        q = quantize_metrics
        lines += [
            "",
            "## INT8 (validation set)",
            "",
            f"- static QDQ ({q['method']}, per-channel {q['per_channel']}, "
            f"{q['calibration_images']} train images, activations {q['activation_type']}): "
            f"{q['fp32_size_mb']:.2f} MB → {q['int8_size_mb']:.2f} MB "
            f"({q['int8_size_ratio']:.2f}× smaller); val ROC-AUC {q['fp32_val_roc_auc']:.4f} → "
            f"{q['int8_val_roc_auc']:.4f} (drop {q['int8_val_roc_auc_drop']:+.4f}); "
            f"Spearman vs fp32 {q['int8_spearman_vs_fp32']:.4f}",
            f"- dynamic (comparison only): {q['int8_dynamic_size_mb']:.2f} MB; val ROC-AUC "
            f"{q['int8_dynamic_val_roc_auc']:.4f}; Spearman vs fp32 "
            f"{q['int8_dynamic_spearman_vs_fp32']:.4f}",
        ]
    return "\n".join(lines) + "\n"


def pareto_points(bench: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(label, ORT p50 ms at 1 thread, validation pAUC) for every scored model at its own size."""
    points = []
    for name, entry in bench["models"].items():
        if entry["latency_only"]:
            continue
        for runtime in ("ort_fp32", "ort_int8", "ort_int8_dynamic"):
            row = entry.get(runtime)
            pauc = _row_pauc(entry, runtime)
            if row and pauc is not None:
                label = name if runtime == "ort_fp32" else f"{name} ({RUNTIME_LABELS[runtime]})"
                points.append((label, row["threads_1"]["p50_ms"], float(pauc)))
    return points


def pareto_front(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points no other point beats on both latency (lower) and pAUC (higher)."""
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (p[1], -p[2])):
        if p[2] > best:
            front.append(p)
            best = p[2]
    return front


def plot_latency_pareto(bench: dict[str, Any], path: str | Path) -> None:
    """Latency at 1 thread (ORT, batch 1, log scale) vs validation pAUC, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = pareto_points(bench)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, ms, pauc in points:
        ax.scatter(ms, pauc, s=40, color="tab:orange" if "student" in label else "tab:blue")
        ax.annotate(label, (ms, pauc), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(
            [p[1] for p in front],
            [p[2] for p in front],
            "--",
            color="grey",
            lw=1,
            label="Pareto front",
        )
        ax.legend(loc="center right", fontsize=8)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("ONNX Runtime p50 latency, batch 1, 1 thread, trained input size (ms, log)")
    ax.set_ylabel("validation pAUC (TPR ≥ 0.8; max 0.2)")
    ax.set_title(f"Latency vs validation pAUC — {bench['cpu']['model']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
