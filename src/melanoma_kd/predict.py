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

Inputs may be files or folders: a folder stands for every image file below it (recursively, by
extension, in sorted order); a folder with none is one error entry, never "file not found".
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
from tqdm import tqdm

from melanoma_kd.config import PreprocessParams
from melanoma_kd.data.cache import resize_shorter_center_crop
from melanoma_kd.data.hair import remove_hair
from melanoma_kd.deploy.onnx_model import OnnxClassifier
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import decode_image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
CSV_COLUMNS = ("image", "p_melanoma", "decision", "threshold", "threshold_rule", "error")


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

    def __init__(self, model: str | Path, max_pixels: int, threads: int | None = None) -> None:
        self.clf = OnnxClassifier(model, threads)
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


def expand_inputs(paths: list[str | Path]) -> list[Path | Prediction]:
    """Files as given; each folder replaced by its image files (recursive, sorted by path).

    A folder without any image file becomes an error :class:`Prediction` of its own, so it is
    reported like a bad file and never mistaken for a missing one."""
    out: list[Path | Prediction] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(
            f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not found:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            out.append(Prediction(image=str(path), error=f"{path}: folder holds no image ({exts})"))
        out.extend(found)
    return out


def predict_files(
    paths: list[str | Path],
    model: str | Path,
    max_pixels: int,
    threads: int | None = None,
    progress: bool | None = None,
) -> list[Prediction]:
    """Predictions for every file (folders expanded), in order; errors included, never raised
    per file. A progress bar is shown for more than one image (``progress=None``: only on a
    terminal)."""
    predictor = Predictor(model, max_pixels, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    items = expand_inputs(paths)
    disable = True if len(items) < 2 else (None if progress is None else not progress)
    bar = tqdm(items, desc="predict", unit="img", disable=disable)  # None: only on a terminal
    return [item if isinstance(item, Prediction) else predictor.predict(item) for item in bar]


def as_csv(results: list[Prediction]) -> str:
    """One row per input (errors included), columns :data:`CSV_COLUMNS`."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()
