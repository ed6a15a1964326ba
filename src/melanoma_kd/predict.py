"""P(melanoma) and a decision for image files, from an exported ONNX model alone.

Preprocessing is the training pipeline's, step for step: OpenCV decode (as at ingest), hair
removal with the params the model was trained with, shorter-side resize + centre crop to the
cache size (as the cache stage), then :func:`model_input` to the model's input size and
normalisation. All of it is read from the ONNX metadata written by the export stage, together
with the decision threshold chosen on validation.

Each file is checked before it is decoded: the header must name a known image format and its
pixel count must be within ``predict.max_pixels`` (a decompression bomb is refused without
allocating it); a truncated or corrupt file is refused after a full decode check. A refused file
gets one error line and does not stop the other files.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from melanoma_kd.config import PreprocessParams
from melanoma_kd.data.cache import resize_shorter_center_crop
from melanoma_kd.data.hair import remove_hair
from melanoma_kd.data.sources import decode_image
from melanoma_kd.deploy import OnnxClassifier
from melanoma_kd.errors import UserError


@dataclass
class Prediction:
    """The answer for one file: a score and decision, or an error."""

    image: str
    p_melanoma: float | None = None
    decision: str | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    error: str | None = None

    def line(self) -> str:
        """One human-readable stdout line (successes only)."""
        if self.decision is None:
            return f"{self.image}\tP(melanoma)={self.p_melanoma:.4f}\tdecision=n/a (no threshold)"
        return (
            f"{self.image}\tP(melanoma)={self.p_melanoma:.4f}\tdecision={self.decision}"
            f"\t(threshold {self.threshold:.4f}: {self.threshold_rule})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON record without empty fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@contextlib.contextmanager
def _pil_limit_off() -> Iterator[None]:
    """Let PIL report any header size; our own ``max_pixels`` check is the limit."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def check_image_file(path: Path, max_pixels: int) -> tuple[int, int]:
    """Validate a file before decoding it for real; return its (width, height).

    Raises :class:`UserError` (one line, naming the file) for a missing file, a non-image, an
    image over ``max_pixels`` (from the header, nothing decoded) and a truncated/corrupt image.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with _pil_limit_off(), warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            width, height = im.size
            fmt = im.format
            if width * height > max_pixels:
                raise UserError(
                    f"{path}: image too large: {width}x{height} = {width * height:,} pixels "
                    f"> predict.max_pixels {max_pixels:,} (refused before decoding)"
                )
            im.load()  # full decode: a truncated or corrupt stream raises here
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (unrecognised format)") from None
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: truncated or corrupt image ({reason})") from None
    if width < 8 or height < 8:
        raise UserError(f"{path}: image too small ({width}x{height} {fmt}; need >= 8x8)")
    return width, height


class Predictor:
    """An exported model plus the training preprocessing, both read from its metadata."""

    def __init__(self, model: str | Path, max_pixels: int) -> None:
        self.clf = OnnxClassifier(model)
        meta = self.clf.meta
        if meta.get("latency_only"):
            raise UserError(
                f"{model}: a latency-only export (input {meta['image_size']} px, trained at "
                f"{meta.get('trained_image_size')} px); use the model exported at its trained size"
            )
        for key in ("cache_size", "preprocess"):
            if key not in meta:
                raise UserError(f"{model}: metadata lacks {key!r}; re-run the export stage")
        self.cache_size = int(meta["cache_size"])
        try:
            self.preprocess = PreprocessParams(**meta["preprocess"])
        except Exception as exc:  # pydantic ValidationError on a stale/foreign model
            raise UserError(f"{model}: bad preprocess metadata ({exc})") from None
        self.threshold = float(meta["threshold"]) if "threshold" in meta else None
        self.threshold_rule = meta.get("threshold_rule")
        self.max_pixels = max_pixels

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 H×W×3 → the model's float input (1×3×S×S), as in training."""
        if self.preprocess.hair_removal:
            rgb, _ = remove_hair(rgb, self.preprocess)
        cached = resize_shorter_center_crop(rgb, self.cache_size)
        chw = torch.from_numpy(cached).permute(2, 0, 1).unsqueeze(0).contiguous()
        return self.clf.inputs(chw)

    def load(self, path: Path) -> np.ndarray:
        """Checked, decoded RGB uint8 image (:class:`UserError` on a bad file)."""
        check_image_file(path, self.max_pixels)
        return decode_image(path.read_bytes(), str(path))

    def predict(self, path: str | Path) -> Prediction:
        """Score one file; a bad file yields a :class:`Prediction` with ``error`` set."""
        path = Path(path)
        try:
            p = float(self.clf.probabilities(self.prepare(self.load(path)))[0])
        except UserError as exc:
            return Prediction(image=str(path), error=str(exc))
        decision = None
        if self.threshold is not None:
            decision = "melanoma" if p >= self.threshold else "benign"
        return Prediction(
            image=str(path),
            p_melanoma=p,
            decision=decision,
            threshold=self.threshold,
            threshold_rule=self.threshold_rule,
        )


def predict_files(paths: list[str | Path], model: str | Path, max_pixels: int) -> list[Prediction]:
    """Predictions for every file, in order (errors included, never raised per file)."""
    predictor = Predictor(model, max_pixels)
    return [predictor.predict(p) for p in paths]
