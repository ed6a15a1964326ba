"""Hair removal for dermoscopy images, and how well it works against known truth.

One image: grayscale black-hat (closing minus image: dark structures narrower than the kernel
light up; the frame edge is replicated first so the dermoscope's dark rim is not one) →
threshold → drop detections shorter than ``min_hair_length`` (dots, network fragments) →
dilation → OpenCV Telea inpainting of the masked pixels.

Many images: :func:`ordered_map` runs chunks of ``chunk_size`` through a process pool with at
most two chunks per worker in flight, results in input order. :func:`iter_remove_hair` ships
pixel chunks (library use); the ``remove_hair`` stage (:func:`dehair_manifest`) ships only ids
and file locations: each worker reads, dehairs, PNG-encodes and scores its own chunk. Every image
goes through the same deterministic OpenCV calls, so outputs do not depend on the worker count.
Workers start from a forkserver, so a script that runs a pool needs the usual
``if __name__ == "__main__":`` guard.

:class:`HairQuality` accumulates PSNR/SSIM and mask overlap against the synthetic data set's
hair-free images and hair masks. Only the synthetic source has that truth: :func:`truth_for`
gives the file to score against, and ``None`` for any other ``data.source``, so real data never
opens it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TypeVar

import cv2
import h5py
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from tqdm import tqdm

from melanoma_kd.config import PreprocessParams
from melanoma_kd.data.sources import open_images
from melanoma_kd.data.synthetic import SOURCE as SYNTHETIC
from melanoma_kd.data.synthetic import TRUTH_FILE, open_truth
from melanoma_kd.data.tables import read_table
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import encode_png, mse, psnr, psnr_from_mse, ssim
from melanoma_kd.io import atomic_path, sha256_json

Image = NDArray[np.uint8]
Mask = NDArray[np.uint8]
T = TypeVar("T")
R = TypeVar("R")

KERNEL_SHAPES = {"ellipse": cv2.MORPH_ELLIPSE, "cross": cv2.MORPH_CROSS, "rect": cv2.MORPH_RECT}


def output_params(p: PreprocessParams) -> dict:
    """The params that change the output images (not ``workers`` / ``chunk_size``)."""
    return {k: v for k, v in p.model_dump().items() if k not in ("workers", "chunk_size")}


def resolve_workers(workers: int) -> int:
    """``0`` means every core."""
    return workers if workers > 0 else (os.cpu_count() or 1)


def _check_image(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")


def hair_mask(rgb: Image, p: PreprocessParams) -> Mask:
    """Binary hair mask (1 = hair) of an RGB uint8 image."""
    _check_image(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    size = p.blackhat_kernel
    kernel = cv2.getStructuringElement(KERNEL_SHAPES[p.kernel_shape], (size, size))
    # Replicate the frame edge first: a dark rim along it (the dermoscope's field-of-view
    # border) must read as a wide dark region, not a thin "hair" (morphologyEx ignores borderType).
    padded = cv2.copyMakeBorder(gray, size, size, size, size, cv2.BORDER_REPLICATE)
    blackhat = cv2.morphologyEx(padded, cv2.MORPH_BLACKHAT, kernel)[size:-size, size:-size]
    mask = (blackhat > p.threshold).astype(np.uint8)
    if p.min_hair_length > 1:
        mask = _drop_short(mask, p.min_hair_length)
    if p.dilate:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=p.dilate)
    return mask


def _drop_short(mask: Mask, min_length: int) -> Mask:
    """Keep connected components whose bounding box is at least ``min_length`` px long: hairs
    are long, while dots, globules and network fragments are short."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    longest = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = longest >= min_length
    keep[0] = False  # background
    return keep[labels].astype(np.uint8)


def remove_hair(rgb: Image, p: PreprocessParams) -> tuple[Image, Mask]:
    """(dehaired image, hair mask): Telea inpainting of the black-hat mask."""
    mask = hair_mask(rgb, p)
    if not mask.any():
        return rgb.copy(), mask
    return cv2.inpaint(rgb, mask, p.inpaint_radius, cv2.INPAINT_TELEA), mask


def _process_one(rgb: Image, p: PreprocessParams) -> tuple[Image, Mask]:
    if not p.hair_removal:
        return rgb, np.zeros(rgb.shape[:2], np.uint8)
    return remove_hair(rgb, p)


def _process_chunk(images: list[Image], p: PreprocessParams) -> list[tuple[Image, Mask]]:
    return [_process_one(img, p) for img in images]


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _pool_context() -> multiprocessing.context.BaseContext:
    """Workers fork from a clean, pre-imported server process, never from the caller: a fork of
    a process holding open HDF5 files or OpenCV/BLAS thread pools can deadlock in the child."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def ordered_map(
    fn: Callable[..., R], tasks: Iterable[tuple], workers: int
) -> Iterator[tuple[tuple, R]]:
    """Yield ``(args, fn(*args))`` for each task, in task order.

    ``workers == 1`` runs in this process; otherwise a process pool with at most two tasks per
    worker in flight, so ``tasks`` may be a lazy generator over any amount of data. OpenCV is
    held to one thread per process either way (one process per core, no nested threads).
    """
    if workers == 1:
        before = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for args in tasks:
                yield args, fn(*args)
        finally:
            cv2.setNumThreads(before)
        return
    with ProcessPoolExecutor(
        workers, mp_context=_pool_context(), initializer=cv2.setNumThreads, initargs=(1,)
    ) as pool:
        pending: deque[tuple[tuple, Future[R]]] = deque()
        for args in tasks:
            pending.append((args, pool.submit(fn, *args)))
            if len(pending) >= 2 * workers:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


def iter_remove_hair(
    images: Iterable[Image],
    p: PreprocessParams,
    *,
    total: int | None = None,
    desc: str = "remove_hair",
) -> Iterator[tuple[Image, Image, Mask]]:
    """Yield ``(input, dehaired, mask)`` per image, in input order, using ``p.workers`` processes
    and chunks of ``p.chunk_size`` images.

    With ``hair_removal: false`` the image passes through unchanged with an empty mask.
    """
    workers = resolve_workers(p.workers) if p.hair_removal else 1
    tasks = ((chunk, p) for chunk in _chunks(images, p.chunk_size))
    with tqdm(total=total, desc=desc, unit="img", disable=None) as bar:
        for (chunk, _), done in ordered_map(_process_chunk, tasks, workers):
            bar.update(len(chunk))
            for image, (out, mask) in zip(chunk, done, strict=True):
                yield image, out, mask


def remove_hair_batch(
    images: Sequence[Image], p: PreprocessParams
) -> tuple[list[Image], list[Mask]]:
    """Dehair a list of images in parallel; returns (dehaired images, masks) in input order."""
    outs, masks = [], []
    for _, out, mask in iter_remove_hair(images, p, total=len(images)):
        outs.append(out)
        masks.append(mask)
    return outs, masks


@dataclass
class HairQuality:
    """Accumulates hair-removal quality over images with known truth.

    Images with hair: mean per-image PSNR and SSIM of input-vs-clean and dehaired-vs-clean, and
    mask IoU/precision/recall pooled over all their pixels. Images without hair: PSNR of the
    pooled mean squared error of dehaired-vs-input (removal should leave them alone) and the
    fraction of them in which any hair was detected. Sums are exact (``math.fsum``), so merging
    partial results in any grouping gives identical numbers.
    """

    _values: dict[str, list[float]] = field(default_factory=dict)
    hairy: int = 0
    hairless: int = 0

    def _add(self, key: str, value: float) -> None:
        self._values.setdefault(key, []).append(value)

    def _sum(self, key: str) -> float:
        return math.fsum(self._values.get(key, []))

    def merge(self, other: HairQuality) -> None:
        """Add another accumulator's images to this one."""
        for key, values in other._values.items():
            self._values.setdefault(key, []).extend(values)
        self.hairy += other.hairy
        self.hairless += other.hairless

    def add(
        self,
        image: Image,
        dehaired: Image,
        mask: Mask,
        clean: Image,
        true_mask: Mask,
        has_hair: bool,
    ) -> None:
        """Add one image: its input, output and detected mask, and the truth for it."""
        if has_hair:
            self.hairy += 1
            self._add("psnr_in", psnr(image, clean))
            self._add("psnr_out", psnr(dehaired, clean))
            self._add("ssim_in", ssim(image, clean))
            self._add("ssim_out", ssim(dehaired, clean))
            pred, true = mask.astype(bool), true_mask.astype(bool)
            self._add("tp", float(np.count_nonzero(pred & true)))
            self._add("fp", float(np.count_nonzero(pred & ~true)))
            self._add("fn", float(np.count_nonzero(~pred & true)))
        else:
            self.hairless += 1
            self._add("mse_clean", mse(dehaired, image))
            self._add("detected_clean", float(mask.any()))

    def result(self) -> dict[str, float | int]:
        """Flat metrics dict (see the class docstring)."""
        s = {key: self._sum(key) for key in self._values}
        out: dict[str, float | int] = {
            "truth_available": 1,
            "hairy_images": self.hairy,
            "hairless_images": self.hairless,
        }
        if self.hairy:
            n = self.hairy
            tp, fp, fn = s["tp"], s["fp"], s["fn"]
            out |= {
                "hairy_psnr_input_vs_clean": s["psnr_in"] / n,
                "hairy_psnr_dehaired_vs_clean": s["psnr_out"] / n,
                "hairy_psnr_gain_db": (s["psnr_out"] - s["psnr_in"]) / n,
                "hairy_ssim_input_vs_clean": s["ssim_in"] / n,
                "hairy_ssim_dehaired_vs_clean": s["ssim_out"] / n,
                "hairy_ssim_gain": (s["ssim_out"] - s["ssim_in"]) / n,
                "mask_iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
                "mask_precision": tp / (tp + fp) if tp + fp else 1.0,
                "mask_recall": tp / (tp + fn) if tp + fn else 1.0,
            }
        if self.hairless:
            out |= {
                "hairless_psnr_dehaired_vs_input": psnr_from_mse(s["mse_clean"] / self.hairless),
                "hairless_detected_fraction": s["detected_clean"] / self.hairless,
            }
        return {k: v if isinstance(v, int) else round(float(v), 6) for k, v in out.items()}


def hair_quality(
    images: Sequence[Image],
    dehaired: Sequence[Image],
    masks: Sequence[Mask],
    clean: Sequence[Image],
    true_masks: Sequence[Mask],
    has_hair: Sequence[bool],
) -> dict[str, float | int]:
    """Quality of hair removal over a set of images with known truth (see :class:`HairQuality`)."""
    acc = HairQuality()
    for row in zip(images, dehaired, masks, clean, true_masks, has_hair, strict=True):
        acc.add(*row)
    return acc.result()


# ---------------------------------------------------------------------------------------------
# the remove_hair stage: manifest in, PNG-per-image HDF5 out


@dataclass
class Example:
    """One image for the before/after figure."""

    image_id: str
    image: Image
    dehaired: Image
    mask: Mask
    true_mask: Mask | None


@dataclass
class ChunkResult:
    """What a worker sends back for a chunk of manifest rows: small, no raw pixels except the
    few examples."""

    pngs: list[bytes] = field(default_factory=list)
    detected: int = 0
    quality: HairQuality = field(default_factory=HairQuality)
    examples: list[Example] = field(default_factory=list)


def truth_for(source: str, path: str | Path | None) -> Path | None:
    """The hair-truth file to score against: ``path`` (the file or its folder) when the data
    source is synthetic, ``None`` otherwise or when no path is given. A synthetic source whose
    truth file is missing is a one-line :class:`UserError`."""
    if source != SYNTHETIC or path is None:
        return None
    path = Path(path)
    file = path / TRUTH_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: hair-truth file of the synthetic data set not found")
    return file


def _dehair_rows(
    rows: pd.DataFrame, p: PreprocessParams, truth_path: Path | None, n_examples: int
) -> ChunkResult:
    """Worker task: read, dehair, PNG-encode and score one chunk of manifest rows.

    The task carries only ids and file locations; each worker opens the image container and the
    truth file itself, so no image arrays cross process boundaries.
    """
    result = ChunkResult()
    with open_images(rows) as store, open_truth(truth_path) as truth:
        for image_id in rows["image_id"]:
            image = store.get(image_id)
            dehaired, mask = _process_one(image, p)
            result.pngs.append(encode_png(dehaired))
            result.detected += bool(mask.any())
            known = truth.get(image_id) if truth is not None else None
            if known is not None:
                clean, true_mask, has_hair = known
                _check_truth(image_id, image, clean)
                result.quality.add(image, dehaired, mask, clean, true_mask, has_hair)
            wanted = known[2] if known is not None else bool(mask.any())
            if wanted and len(result.examples) < n_examples:
                true = known[1] if known is not None else None
                result.examples.append(Example(image_id, image, dehaired, mask, true))
    return result


def dehair_manifest(
    manifest: pd.DataFrame,
    p: PreprocessParams,
    out: Path,
    truth_path: Path | None = None,
    n_examples: int = 4,
) -> tuple[dict[str, float | int], list[Example]]:
    """Dehair every manifest image into ``out`` (HDF5, written atomically), in parallel.

    ``out`` holds ``ids`` (utf-8, manifest order) and ``images`` (variable-length uint8 PNG
    bytes), with attrs ``hair_removal``, ``params_hash`` (of the params that change the pixels)
    and ``manifest_hash``; its bytes do not depend on ``workers`` or ``chunk_size``. Returns the
    metrics (quality against the synthetic truth at ``truth_path`` for the ids it knows,
    otherwise ``truth_available: 0``) and the first few images with hair, for the figure.
    """
    with open_truth(truth_path) as truth:  # fail once, here, if the truth file is unreadable
        truth_path = truth.path if truth is not None else None
    ids = manifest["image_id"].astype(str).tolist()
    rows = manifest[["image_id", "location"]].astype(str)
    quality, examples, detected = HairQuality(), [], 0
    tasks = (  # lazy: once enough examples have come back, later chunks send none
        (rows.iloc[i : i + p.chunk_size], p, truth_path, n_examples - len(examples))
        for i in range(0, len(rows), p.chunk_size)
    )
    with (
        atomic_path(out) as tmp,
        h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as h5,
        tqdm(total=len(ids), desc="remove_hair", unit="img", disable=None) as bar,
    ):
        pngs = h5.create_dataset(
            "images", shape=(len(ids),), dtype=h5py.vlen_dtype(np.uint8), track_times=False
        )
        start = 0
        for _, done in ordered_map(_dehair_rows, tasks, resolve_workers(p.workers)):
            block = np.empty(len(done.pngs), dtype=object)  # one write per chunk
            block[:] = [np.frombuffer(png, np.uint8) for png in done.pngs]
            pngs[start : start + len(block)] = block
            start += len(block)
            bar.update(len(done.pngs))
            detected += done.detected
            quality.merge(done.quality)
            examples += done.examples[: n_examples - len(examples)]
        h5.create_dataset(
            "ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype(), track_times=False
        )
        h5.attrs["hair_removal"] = bool(p.hair_removal)
        h5.attrs["params_hash"] = sha256_json(output_params(p))
        h5.attrs["manifest_hash"] = sha256_json(manifest.astype(str).to_dict("list"))
    seen = quality.hairy + quality.hairless
    metrics = quality.result() if seen else {"truth_available": 0}
    metrics |= {"images": len(ids), "detected_hair_fraction": round(detected / max(1, len(ids)), 6)}
    return metrics, examples


def _check_truth(image_id: str, image: Image, clean: Image) -> None:
    if clean.shape != image.shape:
        raise UserError(
            f"image {image_id}: shape {image.shape} does not match its hair truth {clean.shape}"
        )


def plot_examples(examples: Sequence[Example], path: Path) -> None:
    """Figure: before / detected mask / after / true mask, one row per example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    titles = ("before", "detected mask", "after", "true mask")
    for r, ex in enumerate(examples):
        panels = (ex.image, ex.mask, ex.dehaired, ex.true_mask)
        for c, (ax, img) in enumerate(zip(axes[r], panels, strict=True)):
            if img is None:
                ax.text(0.5, 0.5, "no truth", ha="center", va="center")
            else:
                ax.imshow(
                    img,
                    cmap="gray" if img.ndim == 2 else None,
                    vmin=0,
                    vmax=255 if img.ndim == 3 else 1,
                    interpolation="nearest",
                )
            ax.set_title(f"{titles[c]}" + (f"\n{ex.image_id}" if c == 0 else ""), fontsize=8)
    if not examples:
        axes[0, 0].text(0.5, 0.5, "no image with hair", ha="center", va="center")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read ``manifest.csv`` (ids as strings); one-line :class:`UserError` if unusable."""
    return read_table(path, "manifest", ("image_id", "location"))
