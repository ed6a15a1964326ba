"""Hair removal for dermoscopy images, and how well it works against known truth.

One image: a hair mask (``preprocess.detector``), then OpenCV Telea inpainting of its pixels.

* ``reference`` — the published pipeline: grayscale black-hat (closing minus image: dark
  structures narrower than the kernel light up; the frame edge is replicated first so the
  dermoscope's dark rim is not one) → threshold → drop detections shorter than
  ``min_hair_length`` → dilation. Dots, globules, pigment network and bubble rims are thin and
  dark too, so it marks them as well.
* ``shape`` — the same black-hat, then what rejects what is not hair (:func:`shape_mask`): an
  oriented line filter (:func:`line_response`: a hair is long and straight at the 13-px scale;
  dots, globules and network are not) with hysteresis, a threshold relative to the local ridge
  (drops the fringe beside a hair), and connected-component shape (length, elongation from the
  second moments, holes: rings and network cells). Blond hair, and grey hair over a lesion, are
  lighter than what they cross, so the black-hat misses them; a second, colour branch runs the
  same line and shape filters on :func:`light_colour_residual` (a pixel's Lab difference from its
  local median, where it is not darker than that) and its hairs join the mask. Its parameters
  were chosen on train images only (:mod:`melanoma_kd.data.hair_tuning`).

Many images: :func:`ordered_map` runs chunks of ``chunk_size`` through a process pool with at
most two chunks per worker in flight, results in input order. :func:`iter_remove_hair` ships
pixel chunks (library use); the ``remove_hair`` stage (:func:`dehair_manifest`) ships only ids
and file locations: each worker reads, dehairs, PNG-encodes and scores its own chunk. Every image
goes through the same deterministic OpenCV calls, so outputs do not depend on the worker count.
Workers start from a forkserver (which imports this module, and with it builds OpenCV's
colour tables once for all workers), so a script that runs a pool needs the usual
``if __name__ == "__main__":`` guard.

:class:`HairQuality` accumulates PSNR/SSIM and mask overlap against the synthetic data set's
hair-free images and hair masks, plus (with the generator's artefact truth) pixels changed inside
and outside the lesion on images without hair, bubble pixels changed, and per-type recall and
precision (dark, thin, grey, blond hair, ruler). The stage scores both detectors on the same
images (``by_detector`` in the metrics). Only the synthetic source has that truth:
:func:`truth_for` gives the file to score against, and ``None`` for any other ``data.source``,
so real data never opens it.
"""

from __future__ import annotations

import functools
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

from melanoma_kd.config import PreprocessParams, ShapeDetectorParams
from melanoma_kd.data.sources import open_images
from melanoma_kd.data.synthetic import SOURCE as SYNTHETIC
from melanoma_kd.data.synthetic import TRUTH_FILE, ArtefactTruth, open_truth
from melanoma_kd.data.synthetic_render import ARTEFACT_NAMES, BUBBLE
from melanoma_kd.data.tables import read_table
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import encode_png, mse, psnr, psnr_from_mse, ssim
from melanoma_kd.io import atomic_path, sha256_json

Image = NDArray[np.uint8]
Mask = NDArray[np.uint8]
T = TypeVar("T")
R = TypeVar("R")

KERNEL_SHAPES = {"ellipse": cv2.MORPH_ELLIPSE, "cross": cv2.MORPH_CROSS, "rect": cv2.MORPH_RECT}


def _build_opencv_tables() -> None:
    """Make OpenCV build its RGB→Lab lookup tables now. It builds them on a process's first
    Lab conversion (about 0.1 s of CPU); done at import, the pool's forkserver (which imports
    this module) builds them once and every worker forked from it starts with them, instead
    of each worker paying for them on its first image."""
    cv2.cvtColor(np.zeros((1, 1, 3), np.uint8), cv2.COLOR_RGB2Lab)


_build_opencv_tables()


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
    """Binary hair mask (1 = hair) of an RGB uint8 image, by ``p.detector``."""
    _check_image(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if p.detector == "shape":
        s = p.shape
        blackhat = _blackhat(gray, s.blackhat_kernel, cv2.MORPH_ELLIPSE).astype(np.float32)
        line = line_response(blackhat, s.line_length, s.line_angles)
        colour = None
        if s.colour_gain > 0:  # the line filter is linear: scale its response, not its input
            residual = light_colour_residual(rgb, s.colour_median)
            gain = np.float32(s.colour_gain)
            colour = (gain * residual, gain * line_response(residual, s.line_length, s.line_angles))
        cues = [
            (np.float32(gain), weights, threshold, relative, any_dark)
            for gain, weights, threshold, relative, any_dark in (
                (s.yellow_gain, YELLOW, s.yellow_threshold, s.yellow_relative_threshold, False),
                (s.grey_gain, GREY, s.grey_threshold, s.grey_relative_threshold, True),
            )
            if gain > 0
        ]
        chroma = []
        if cues:
            lines = chroma_lines(
                rgb, s.colour_median, s.line_length, s.line_angles, [c[1] for c in cues]
            )
            for (gain, _, threshold, relative, any_dark), (ridge, cue_line) in zip(
                cues, lines, strict=True
            ):
                chroma.append((gain * ridge, gain * cue_line, threshold, relative, any_dark))
        return shape_mask(blackhat, line, s, colour, chroma)
    mask = (_blackhat(gray, p.blackhat_kernel, KERNEL_SHAPES[p.kernel_shape]) > p.threshold).astype(
        np.uint8
    )
    if p.min_hair_length > 1:
        mask = _drop_short(mask, p.min_hair_length)
    if p.dilate:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=p.dilate)
    return mask


def _blackhat(gray: Image, size: int, shape: int) -> Image:
    """Grey black-hat (closing minus image) with a ``size`` structuring element."""
    kernel = cv2.getStructuringElement(shape, (size, size))
    # Replicate the frame edge first: a dark rim along it (the dermoscope's field-of-view
    # border) must read as a wide dark region, not a thin "hair" (morphologyEx ignores borderType).
    padded = cv2.copyMakeBorder(gray, size, size, size, size, cv2.BORDER_REPLICATE)
    return cv2.morphologyEx(padded, cv2.MORPH_BLACKHAT, kernel)[size:-size, size:-size]


@functools.lru_cache(maxsize=16)
def _line_kernels(length: int, angles: int) -> tuple[NDArray[np.float32], ...]:
    """Normalised 1-px line kernels of ``length`` px through the centre, ``angles`` directions
    evenly spaced over 180°."""
    kernels = []
    c = (length - 1) / 2
    for k in range(angles):
        theta = math.pi * k / angles
        dx, dy = c * math.cos(theta), c * math.sin(theta)
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0)
        kernels.append(kernel / kernel.sum())
    return tuple(kernels)


def light_colour_residual(rgb: Image, size: int) -> NDArray[np.float32]:
    """Per pixel not darker than the median of its ``size``×``size`` neighbourhood, the length
    of its CIE Lab difference from that median (OpenCV's 8-bit scaling); 0 where it is darker.

    A hair narrower than half the window does not move the median, so the residual is the hair's
    own colour contrast: blond hair (lighter and yellower than skin, lighter than a lesion) and
    grey hair over a lesion light up. Darker structures (dark hair, dots, pigment network, bubble
    rims) are the black-hat's: however different their hue, they score 0 here, so the colour
    branch cannot take back what the dark branch's shape filters rejected. Edges of wide regions
    (lesion border, field of view) keep the median.
    """
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    diff = lab.astype(np.float32) - cv2.medianBlur(lab, size).astype(np.float32)
    out = np.sqrt(np.einsum("...c,...c->...", diff, diff))
    out[diff[..., 0] < 0] = 0.0
    return out.astype(np.float32)


def _oriented_means(image: NDArray[np.float32], length: int, angles: int) -> NDArray[np.float32]:
    """(angles, H, W[, C]): the mean of ``image`` (channels filtered alike) along each of the
    :func:`_line_kernels`."""
    return np.stack(
        [
            cv2.filter2D(image, cv2.CV_32F, k, borderType=cv2.BORDER_REPLICATE)
            for k in _line_kernels(length, angles)
        ]
    )


def line_response(blackhat: NDArray[np.float32], length: int, angles: int) -> NDArray[np.float32]:
    """Oriented line filter of a black-hat image: the mean along the best of ``angles`` lines of
    ``length`` px minus the mean over all of them. A hair (a long thin ridge) scores about its
    contrast; dots, globules and isotropic pigment network score little: every direction sees
    about as much of them."""
    responses = _oriented_means(blackhat, length, angles)
    return responses.max(0) - responses.mean(0)


# (a*, b*) weights of the chroma cues (:func:`chroma_lines`): blond hair is yellower than the
# skin it crosses; grey hair is less red and less yellow (greyer) than skin and most lesions.
YELLOW = (0.0, 1.0)
GREY = (-0.5, -0.5)


def chroma_lines(
    rgb: Image, size: int, length: int, angles: int, weights: Sequence[tuple[float, float]]
) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Per (a*, b*) weight pair in ``weights``, the (ridge, line response) of that chroma cue:
    the weighted sum of a pixel's signed CIE Lab a* and b* differences from the median of its
    ``size``×``size`` neighbourhood (OpenCV's 8-bit scaling), averaged along each of ``angles``
    lines of ``length`` px. The ridge is the best line's mean (0 where negative), the line
    response that minus the mean over all lines (as :func:`line_response`).

    Blond hair on light skin has about the skin's lightness, so neither the black-hat nor
    :func:`light_colour_residual` sees it, but it is yellower than the skin (:data:`YELLOW`);
    faint grey hair is a little darker and clearly greyer (:data:`GREY`). Per pixel these
    differences are a few units, about the noise; the residual is signed, so the noise averages
    out along a line while a hair's colour adds up. The line means are linear, so a* and b* are
    filtered once (one two-channel pass per line) and weighted afterwards.
    """
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    diff = lab[..., 1:].astype(np.float32) - cv2.medianBlur(lab, size)[..., 1:]
    means = _oriented_means(np.ascontiguousarray(diff), length, angles)  # (angles, H, W, 2)
    out = []
    for wa, wb in weights:
        responses = np.float32(wa) * means[..., 0] + np.float32(wb) * means[..., 1]
        best = responses.max(0)
        out.append((np.maximum(best, 0), best - responses.mean(0)))
    return out


def shape_mask(
    blackhat: NDArray[np.float32],
    line: NDArray[np.float32],
    s: ShapeDetectorParams,
    colour: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
    chroma: Sequence[tuple[NDArray[np.float32], NDArray[np.float32], float, float, bool]] = (),
) -> Mask:
    """The ``shape`` detector's mask from a black-hat image and its :func:`line_response`, and
    optionally the colour branch's ridge (``colour_gain`` × :func:`light_colour_residual`) and
    its line response: steps 1-4 run on each, with ``colour_threshold`` in step 1 and
    ``colour_relative_threshold`` in step 3 for the colour branch, and a pixel is hair when
    either branch marks it. Each ``chroma`` branch (ridge, line response, step-1 threshold,
    step-3 relative threshold, vetoed near any dark structure: the yellow and grey cues, gain ×
    :func:`chroma_lines`) runs them too.

    A dark hair pulls the median of the pixels beside it down, so they read as lighter than
    their neighbourhood (and yellower, on most skin): the colour and chroma branches mark a
    shoulder along each dark hair that no hair covers; and the grey cue, averaged along lines,
    smears a dark pigment network (greyer than the lesion) into a blur the mesh filter cannot
    see. With ``colour_veto`` > 0, colour and yellow pixels within ``colour_veto`` px of a
    dark-branch (hair) pixel of black-hat ``>= colour_veto_blackhat`` are dropped (the dark hair
    itself is the dark branch's), and grey-cue pixels (a chroma branch whose last element is
    True) within ``colour_veto`` px of ANY pixel of such black-hat; faint structures (blond or
    grey hair a little darker than light skin) veto nothing, so a light hair keeps its fringe.

    The line response scales with contrast; divided by the black-hat maximum in the pixel's
    5×5 neighbourhood (the ridge) it does not: about 0.85 on a hair whatever its contrast,
    well below 0.5 on dots, globules and pigment network however dark they are.

    1. candidates: black-hat ``> threshold`` and line response ``> line_threshold_low``;
    2. hysteresis: keep candidate components holding a seed pixel, one with line response
       ``> line_threshold`` and ``> line_ratio`` × the ridge;
    3. ridge: keep pixels whose black-hat is ``>= relative_threshold`` × the ridge (drops the
       faint fringe beside a hair);
    4. shape (:func:`_hair_shaped`): drop components shorter than ``min_length``, and meshes
       (more than ``max_cells`` holes of at most ``mesh_cell`` px); keep the rest that are at
       least ``long_length`` long; in between, keep only elongated ones without holes;
    5. ``dilate`` iterations of a 3×3 dilation.
    """
    mask = _branch_mask(blackhat, line, s, s.threshold, s.relative_threshold)
    light = np.zeros_like(mask)
    if colour is not None:
        light |= _branch_mask(*colour, s, s.colour_threshold, s.colour_relative_threshold)
    greyish = np.zeros_like(mask)  # branches vetoed near any dark structure, not only hair
    for ridge_image, ridge_line, threshold, relative, any_dark in chroma:
        found = _branch_mask(ridge_image, ridge_line, s, threshold, relative)
        if any_dark:
            greyish |= found
        else:
            light |= found
    if s.colour_veto and (light.any() or greyish.any()):
        size = 2 * s.colour_veto + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        dark = blackhat >= s.colour_veto_blackhat
        light[cv2.dilate((dark & (mask > 0)).astype(np.uint8), kernel) > 0] = 0
        greyish[cv2.dilate(dark.astype(np.uint8), kernel) > 0] = 0
    mask |= light | greyish
    if s.dilate:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=s.dilate)
    return mask


def _branch_mask(
    ridge_image: NDArray[np.float32],
    line: NDArray[np.float32],
    s: ShapeDetectorParams,
    threshold: float,
    relative_threshold: float,
) -> Mask:
    """Steps 1-4 of :func:`shape_mask` on one ridge image (black-hat, colour or chroma)."""
    ridge = cv2.dilate(ridge_image, np.ones((5, 5), np.uint8))
    weak = (ridge_image > threshold) & (line > s.line_threshold_low)
    n, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    seeds = weak & (line > s.line_threshold) & (line > s.line_ratio * ridge)
    seeded = np.zeros(n, bool)
    seeded[labels[seeds]] = True
    seeded[0] = False
    mask = seeded[labels]
    if relative_threshold > 0:
        mask &= ridge_image >= relative_threshold * ridge
    return _hair_shaped(mask.astype(np.uint8), s)


def _hair_shaped(mask: Mask, s: ShapeDetectorParams) -> Mask:
    """Keep the connected components that look like hair (see :func:`shape_mask`, step 4)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(n, bool)
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        longest = max(w, h)
        if longest < s.min_length:
            continue
        crop = (labels[y : y + h, x : x + w] == i).astype(np.uint8)
        holes = hole_areas(crop)
        if np.count_nonzero(holes <= s.mesh_cell) > s.max_cells:
            continue  # a mesh of small cells: pigment network, however long
        keep[i] = longest >= s.long_length or (
            elongation(crop) >= s.min_elongation and int(holes.sum()) <= s.max_hole
        )
    return keep[labels].astype(np.uint8)


def elongation(component: Mask) -> float:
    """sqrt(major / minor) eigenvalue of a binary shape's second central moments: 1 for a disc
    or ring, large for a line."""
    m = cv2.moments(component, binaryImage=True)
    a, b, c = m["mu20"], m["mu11"], m["mu02"]
    root = math.hypot((a - c) / 2, b)
    major, minor = (a + c) / 2 + root, (a + c) / 2 - root
    return math.sqrt(major / minor) if minor > 1e-9 else math.inf


def hole_areas(component: Mask) -> NDArray[np.int64]:
    """Areas (px) of the holes of a binary shape: background regions (4-connected) that do not
    reach the outside."""
    padded = cv2.copyMakeBorder(component, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(padded, None, (0, 0), 1)
    n, _, stats, _ = cv2.connectedComponentsWithStats(
        (padded == 0).astype(np.uint8), connectivity=4
    )
    return stats[1:n, cv2.CC_STAT_AREA].astype(np.int64)


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

    With the generator's artefact truth (``detail``) also: the fraction of pixels changed by
    removal on images without hair, inside the true lesion and outside it; the fraction of
    bubble pixels changed (bubbles are not hair); and per artefact type (hair types, ruler)
    the recall over that type's true pixels and the precision over the images holding it (for
    a hair type: the images with that type of hair; for the ruler: images with a ruler and no
    hair), all pooled over pixels.
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
        detail: ArtefactTruth | None = None,
    ) -> None:
        """Add one image: its input, output and detected mask, and the truth for it."""
        if detail is not None:
            self._add_detail(image, dehaired, mask, true_mask, has_hair, detail)
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

    def _add_detail(
        self,
        image: Image,
        dehaired: Image,
        mask: Mask,
        true_mask: Mask,
        has_hair: bool,
        detail: ArtefactTruth,
    ) -> None:
        changed = np.any(dehaired != image, axis=2)
        bubble = detail.artefact == BUBBLE
        self._add("bubble_changed", float(np.count_nonzero(changed & bubble)))
        self._add("bubble_pixels", float(np.count_nonzero(bubble)))
        if not has_hair:
            lesion = detail.lesion.astype(bool)
            self._add("lesion_changed", float(np.count_nonzero(changed & lesion)))
            self._add("lesion_pixels", float(np.count_nonzero(lesion)))
            self._add("outside_changed", float(np.count_nonzero(changed & ~lesion)))
            self._add("outside_pixels", float(np.count_nonzero(~lesion)))
            return
        pred, true = mask.astype(bool), true_mask.astype(bool)
        for code in np.unique(detail.artefact[true]):
            of_type = true & (detail.artefact == code)
            name = ARTEFACT_NAMES[int(code)]
            self._add(f"{name}:found", float(np.count_nonzero(pred & of_type)))
            self._add(f"{name}:true", float(np.count_nonzero(of_type)))
        owner = ARTEFACT_NAMES[detail.hair_type] if detail.hair_type else "ruler"
        self._add(f"{owner}:tp", float(np.count_nonzero(pred & true)))
        self._add(f"{owner}:fp", float(np.count_nonzero(pred & ~true)))
        self._add(f"{owner}:images", 1.0)

    def _detail_result(self, s: dict[str, float]) -> dict[str, object]:
        out: dict[str, object] = {}
        if s.get("lesion_pixels"):
            out["hairless_lesion_changed_fraction"] = s["lesion_changed"] / s["lesion_pixels"]
        if s.get("outside_pixels"):
            out["hairless_outside_changed_fraction"] = s["outside_changed"] / s["outside_pixels"]
        if s.get("bubble_pixels"):
            out["bubble_changed_fraction"] = s["bubble_changed"] / s["bubble_pixels"]
        per_type = {}
        for name in ARTEFACT_NAMES[1:]:
            if name == "bubble" or not (s.get(f"{name}:true") or s.get(f"{name}:images")):
                continue
            tp, fp = s.get(f"{name}:tp", 0.0), s.get(f"{name}:fp", 0.0)
            found, true = s.get(f"{name}:found", 0.0), s.get(f"{name}:true", 0.0)
            per_type[name] = {
                "images": int(s.get(f"{name}:images", 0.0)),
                "precision": round(tp / (tp + fp), 6) if tp + fp else 1.0,
                "recall": round(found / true, 6) if true else 1.0,
            }
        if per_type:
            out["per_type"] = per_type
        return out

    def result(self) -> dict[str, object]:
        """Metrics dict, flat but for ``per_type`` (see the class docstring)."""
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
        out |= self._detail_result(s)
        return {k: v if isinstance(v, int | dict) else round(float(v), 6) for k, v in out.items()}


def hair_quality(
    images: Sequence[Image],
    dehaired: Sequence[Image],
    masks: Sequence[Mask],
    clean: Sequence[Image],
    true_masks: Sequence[Mask],
    has_hair: Sequence[bool],
    details: Sequence[ArtefactTruth | None] | None = None,
) -> dict[str, object]:
    """Quality of hair removal over a set of images with known truth (see :class:`HairQuality`)."""
    acc = HairQuality()
    details = details if details is not None else [None] * len(images)
    rows = zip(images, dehaired, masks, clean, true_masks, has_hair, details, strict=True)
    for row in rows:
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
    other: HairQuality = field(default_factory=HairQuality)  # the other detector, for comparison
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
                detail = truth.detail(image_id)
                result.quality.add(image, dehaired, mask, clean, true_mask, has_hair, detail)
                if p.hair_removal:
                    other_out, other_mask = _process_one(image, _other_detector(p))
                    args = (image, other_out, other_mask, clean, true_mask, has_hair, detail)
                    result.other.add(*args)
            wanted = known[2] if known is not None else bool(mask.any())
            if wanted and len(result.examples) < n_examples:
                true = known[1] if known is not None else None
                result.examples.append(Example(image_id, image, dehaired, mask, true))
    return result


def _other_detector(p: PreprocessParams) -> PreprocessParams:
    """The same params with the other detector (reference <-> shape)."""
    return p.model_copy(update={"detector": "reference" if p.detector == "shape" else "shape"})


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
    quality, other, examples, detected = HairQuality(), HairQuality(), [], 0
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
            other.merge(done.other)
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
    if p.hair_removal:
        metrics["detector"] = p.detector
        if seen:  # both detectors on the same images, for comparison
            by = {p.detector: quality.result(), _other_detector(p).detector: other.result()}
            metrics["by_detector"] = {name: by[name] for name in sorted(by)}
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
