"""An exported classifier: its ONNX metadata and the ONNX Runtime (CPU) session that scores it.

Every exported file describes itself: ``metadata_props`` carry the arch, input size,
normalisation, the cache size and hair-removal params of the training preprocessing, the
validation numbers and the validation-chosen decision threshold, so ``predict`` and the benchmark
need only the ``.onnx`` file. ONNX graphs have input ``image`` (float N×3×S×S, normalised) and
output ``logits`` (N×2), with a dynamic batch axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from torch.utils.data import DataLoader

from melanoma_kd.calibration import Platt
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import model_input
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path

# `predict` loads this module and should start quickly: no scipy, scikit-learn or timm here.
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


# --------------------------------------------------------------------------- ONNX metadata


#: Names of the two nodes :func:`fold_platt` appends; quantization leaves them in float.
CALIBRATION_NODES = ("calibration_scale", "calibration_shift")


def fold_platt(model: onnx.ModelProto, platt: Platt) -> None:
    """Append ``logits·slope + [0, intercept]`` to the graph's output, in place.

    Softmax of the new logits is ``sigmoid(slope·d + intercept)`` on the old margin ``d``: the
    model then outputs calibrated P(melanoma) (:mod:`melanoma_kd.calibration`).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    raw, scaled = f"{OUTPUT_NAME}_uncalibrated", f"{OUTPUT_NAME}_scaled"
    for node in graph.node:
        node.output[:] = [raw if o == OUTPUT_NAME else o for o in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(platt.slope, np.float32), "calibration_slope"),
            numpy_helper.from_array(
                np.array([0.0, platt.intercept], np.float32), "calibration_intercept"
            ),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Mul", [raw, "calibration_slope"], [scaled], CALIBRATION_NODES[0]),
            helper.make_node(
                "Add", [scaled, "calibration_intercept"], [OUTPUT_NAME], CALIBRATION_NODES[1]
            ),
        ]
    )


def platt_logits(logits: np.ndarray, platt: Platt) -> np.ndarray:
    """What the folded graph computes, in float32 numpy (the parity reference)."""
    return logits.astype(np.float32) * np.float32(platt.slope) + np.array(
        [0.0, platt.intercept], np.float32
    )


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


def update_metadata(
    path: str | Path,
    metadata: dict[str, Any],
    out: str | Path | None = None,
    replace: bool = False,
) -> None:
    """Rewrite ``path`` (or write its model to ``out``) atomically with ``metadata`` merged into
    its ``metadata_props`` (``replace``: as all of them)."""
    model = _load_onnx(path)
    if replace:
        del model.metadata_props[:]
    set_metadata(model, metadata)
    with atomic_path(path if out is None else out) as tmp:
        onnx.save(model, str(tmp))


def same_network(a: str | Path, b: str | Path) -> bool:
    """Whether two ONNX files hold the same model apart from their ``metadata_props`` (a
    latency copy at the trained size is the native graph with other metadata)."""
    models = [_load_onnx(a), _load_onnx(b)]
    for model in models:
        del model.metadata_props[:]
    return models[0] == models[1]


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
    return score_onnx_splits(path, [cache_h5], batch_size, threads)[0]


def score_onnx_splits(
    path: str | Path,
    caches: Sequence[str | Path],
    batch_size: int = 64,
    threads: int | None = None,
) -> list[pd.DataFrame]:
    """:func:`score_onnx` of each of ``caches``, with one ONNX Runtime session."""
    clf = OnnxClassifier(path, threads)
    frames = []
    for cache_h5 in caches:
        ds = CacheDataset(cache_h5)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
        scores = np.concatenate([clf.probabilities(clf.inputs(b["image"])) for b in loader])
        frames.append(
            pd.DataFrame(
                {"image_id": ds.ids, "label": ds.labels, "score": scores, "patient_id": ds.patients}
            )
        )
    return frames


def file_mb(path: str | Path) -> float:
    """File size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6
