"""Export: one checkpoint -> ONNX, verified against PyTorch on real validation images.

The file gets the metadata :mod:`melanoma_kd.deploy.onnx_model` describes, including the
decision thresholds :func:`melanoma_kd.selection.operating_thresholds` chooses on the model's
validation predictions. The latency-only copy at ``benchmark.deploy_size`` is made at the trained
size instead when the model rejects that size (fixed-size transformers); its ``image_size``
metadata always names the size it takes.

Export uses the TorchScript-based exporter (``dynamo=False``): with torch 2.14 the dynamo exporter
cannot emit opset 17 for these timm CNNs (it falls back to 18), needs ~15 s per model and writes
weights to a side ``.data`` file; the legacy exporter honours ``export.opset``, writes one
self-contained file and matches PyTorch to ~1e-8.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from melanoma_kd.calibration import Platt, fit_platt
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.tables import read_table
from melanoma_kd.data.transforms import model_input
from melanoma_kd.deploy.onnx_model import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxClassifier,
    file_mb,
    fold_platt,
    platt_logits,
    set_metadata,
    softmax_pos,
    update_metadata,
)
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path
from melanoma_kd.metrics import calibration_errors
from melanoma_kd.models.build import load_checkpoint
from melanoma_kd.selection import operating_thresholds

PARITY_BATCH = 32  # images of the first validation batch used for the parity check


def validation_calibration(
    val_predictions: str | Path, sens_target: float, ece_bins: int
) -> tuple[Platt, dict[str, Any]]:
    """Calibration and operating points of a model, from its validation predictions
    (``image_id,label,score``) only.

    Platt scaling is fitted on the scores (:func:`melanoma_kd.calibration.fit_platt`); the
    thresholds (:func:`melanoma_kd.selection.operating_thresholds`) are chosen on the
    calibrated scores, i.e. on what the exported model outputs. The returned metadata holds
    the thresholds and a ``calibration`` record with validation ECE before and after.
    """
    df = read_table(
        val_predictions, "validation predictions", ("label", "score"), dtype={"image_id": str}
    )
    labels, scores = df["label"].to_numpy(), df["score"].to_numpy(np.float64)
    try:
        platt = fit_platt(labels, scores)
    except ValueError as exc:
        raise UserError(f"{val_predictions}: {exc}") from None
    calibrated = platt.apply(scores)
    before = calibration_errors(labels, scores, ece_bins)["ece"]
    after = calibration_errors(labels, calibrated, ece_bins)["ece"]
    record = platt.record() | {
        "fit_on": "validation",
        "val_ece_before": before,
        "val_ece_after": after,
        "ece_bins": ece_bins,
    }
    return platt, operating_thresholds(labels, calibrated, sens_target) | {"calibration": record}


def first_batch(cache_h5: str | Path, n: int = PARITY_BATCH) -> torch.Tensor:
    """The first ``n`` stored images of a cache split as uint8 NCHW (real parity inputs)."""
    ds = CacheDataset(cache_h5)
    return torch.stack([ds.read(i) for i in range(min(n, len(ds)))])


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


def onnx_props(
    model: nn.Module,
    meta: dict[str, Any],
    size: int,
    opset: int,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metadata_props`` of an exported file: what the model is and takes, and
    ``metadata``."""
    return {
        "arch": meta["arch"],
        "image_size": size,
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "num_params": count_params(model),
        "opset": opset,
        **(metadata or {}),
    }


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
    calibration: Platt | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``out`` and verify it against PyTorch on ``check_images``.

    With ``calibration`` the Platt map is folded into the graph (:func:`fold_platt`) after the
    parity check, which compares the network itself (a steep map would magnify the runtimes'
    rounding differences into the check); the folded graph must then output exactly the map of
    the checked logits.

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
    props = onnx_props(model, meta, size, opset, metadata)
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
        if calibration is not None:
            fold_platt(proto, calibration)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
            folded = OnnxClassifier(tmp, threads=1).logits(x.numpy())
            expected = platt_logits(got_logits, calibration)
            if not np.allclose(folded, expected, rtol=1e-5, atol=1e-5):
                raise UserError(f"{out}: the folded calibration does not reproduce its map")
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
    calibration: Platt | None = None,
) -> dict[str, Any]:
    """Export a checkpoint (and optionally a latency-only copy at ``deploy_size``), with
    ``calibration`` folded into both graphs.

    The parity check runs on the first batch of ``val_cache``. Metadata gets the name, source
    checkpoint, validation pAUC/ROC-AUC from the checkpoint, and ``metadata``. A model with a
    fixed input size that rejects ``deploy_size`` (SwinV2 ``window8_256``, ViT ``patch16_224``)
    gets its latency copy at its trained size instead (see :func:`deploy_input_size`); that
    copy's metadata then carries ``requested_image_size`` and ``input_size_note``, and its
    ``image_size`` is the size used. A latency copy at the trained size is the native file with
    the latency metadata (the same graph; it is not exported twice). A model that rejects even its
    trained size is a :class:`UserError` naming it.
    """
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
        "native": export_onnx(
            model,
            meta,
            out,
            images,
            opset=opset,
            atol=atol,
            metadata=base,
            calibration=calibration,
        )
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
        if size == trained:
            # The same network at the same size: the exporter would write the native graph
            # again (and fold the same calibration into it); only the metadata differs.
            props = onnx_props(model, meta, size, opset, latency_meta)
            update_metadata(out, props, out=deploy_out, replace=True)
            report["deploy"] = report["native"] | {"size_mb": file_mb(deploy_out)}
        else:
            report["deploy"] = export_onnx(
                model,
                meta,
                deploy_out,
                images,
                opset=opset,
                atol=atol,
                image_size=size,
                metadata=latency_meta,
                calibration=calibration,
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
