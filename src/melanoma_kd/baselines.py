"""Classical baselines: hand-crafted lesion features + scikit-learn classifiers.

Every deep model is compared with these. Each cached image (``data/cache/<split>.h5``) is turned
into a fixed-length feature vector:

- **shape** of a lesion segmentation (:func:`segment_lesion`: Otsu on the blurred Lab L channel
  inside the field of view, the most central component grown by hysteresis, holes filled): area
  fraction, diameters, eccentricity, asymmetry about the two principal axes, border
  irregularity (perimeter² / 4π·area), solidity, convexity-defect depth;
- **colour** statistics in Lab and HSV inside the lesion and of the surrounding skin (mean, std,
  10/50/90th percentiles; circular hue statistics) and lesion-vs-skin contrast;
- **colour variegation**: number of distinct Lab colour bins that cover the lesion, and their
  entropy;
- **texture** inside the lesion: rotation-invariant uniform LBP histogram and GLCM contrast,
  homogeneity, energy, correlation and entropy (both in numpy, vectorised over images).

Four class-balanced models (:data:`MODELS`) are fitted on train only; validation scores pick the
operating points and holdout is scored with :func:`melanoma_kd.metrics.holdout_report`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path, write_json
from melanoma_kd.metrics import holdout_report, pauc_above_tpr, roc_auc

__all__ = [
    "FEATURE_NAMES",
    "MODELS",
    "SPLITS",
    "BaselineResults",
    "SplitFeatures",
    "extract_features",
    "field_of_view",
    "fit_and_score",
    "glcm_features",
    "lbp_histograms",
    "load_split_features",
    "make_model",
    "run_baselines",
    "save_results",
    "segment_lesion",
    "shape_features",
]

SPLITS = ("train", "val", "holdout")
SEED = 0
BLOCK = 256  # images read from HDF5 and vectorised over at a time

SHAPE_NAMES = (
    "area_fraction",
    "equivalent_diameter",
    "max_diameter",
    "eccentricity",
    "asymmetry_major",
    "asymmetry_minor",
    "border_irregularity",
    "solidity",
    "convexity_defect",
)
_CHANNELS = ("L", "a", "b", "S", "V")  # Lab (L 0-100) and HSV saturation/value (0-1)
_STATS = ("mean", "std", "p10", "p50", "p90")
_REGIONS = ("lesion", "skin")
COLOUR_NAMES = (
    *(f"{r}_{c}_{s}" for r in _REGIONS for c in _CHANNELS for s in _STATS),
    *(f"{r}_hue_{s}" for r in _REGIONS for s in ("cos", "sin", "circstd")),
    "contrast_L",
    "contrast_a",
    "contrast_b",
    "contrast_deltaE",
    "n_colours",
    "colour_entropy",
)
LBP_BINS = 10  # P = 8 neighbours: uniform patterns with 0..8 ones, plus "non-uniform"
GLCM_LEVELS = 16
TEXTURE_NAMES = (
    *(f"lbp_{i}" for i in range(LBP_BINS)),
    "glcm_contrast",
    "glcm_homogeneity",
    "glcm_energy",
    "glcm_correlation",
    "glcm_entropy",
)
FEATURE_NAMES: tuple[str, ...] = (*SHAPE_NAMES, *COLOUR_NAMES, *TEXTURE_NAMES)

# Lab quantisation for colour variegation: L in 8 bins over [0, 100], a and b in 8 bins each
# over [-64, 64]; a bin "is a colour of the lesion" when it holds >= 5 % of its pixels.
_VAR_BINS = 8
_VAR_MIN_FRACTION = 0.05
_EPS = 1e-9
_VIGNETTE_L = 30.0  # Lab L (0..255) below which a border-connected region is vignette


# --------------------------------------------------------------------------- segmentation


def _fallback_mask(shape: tuple[int, int]) -> NDArray[np.bool_]:
    """A centred disc of radius min(H, W)/8, used when segmentation finds nothing."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (w // 2, h // 2), max(1, min(h, w) // 8), 1, thickness=-1)
    return mask.astype(bool)


@functools.lru_cache(maxsize=8)
def _centre_distance(shape: tuple[int, int]) -> NDArray[np.float64]:
    """Distance of every pixel from the image centre, in pixels (cached, read-only)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    dist.flags.writeable = False
    return dist


def _centre_weight(shape: tuple[int, int]) -> NDArray[np.float64]:
    """Gaussian weight (sigma = side/4) around the image centre, where lesions are framed."""
    return np.exp(-(_centre_distance(shape) ** 2) / (2.0 * (min(shape) / 4.0) ** 2))


def _central_component(candidates: NDArray[np.uint8]) -> NDArray[np.bool_] | None:
    """The connected component with the largest centre-weighted area, or None if there is none.

    Weighting by closeness to the centre keeps a large dark region at the image edge (vignette,
    shadow) from beating a smaller, centred lesion.
    """
    n, labels = cv2.connectedComponents(candidates, connectivity=8)
    if n <= 1:
        return None
    weight = _centre_weight(candidates.shape)
    score = np.bincount(labels.ravel(), weights=weight.ravel(), minlength=n)
    return labels == 1 + int(np.argmax(score[1:]))


def _fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` with every hole inside its outer contours filled."""
    m8 = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(m8)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled.astype(bool)


def field_of_view(lightness: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Pixels inside the dermatoscope's field: all but near-black regions touching the border.

    ``lightness`` is Lab L scaled to 0..255. Dermoscopy images often have a black vignette
    around a circular field of view; it is darker than any skin and must not count as lesion.
    """
    dark = (lightness < _VIGNETTE_L).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = lightness.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]
    on_border = (x == 0) | (y == 0) | (right == w) | (bottom == h)
    on_border[0] = False  # label 0 is the non-dark background
    fov = ~on_border[labels]
    return fov if fov.sum() >= 16 else np.ones_like(fov)


def _otsu(values: NDArray[np.float32]) -> float:
    """Otsu threshold of a set of 0..255 values."""
    row = np.clip(values, 0, 255).astype(np.uint8).reshape(1, -1)
    t, _ = cv2.threshold(row, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return float(t)


def _segment_lightness(lightness: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Lesion mask from Lab L (0..255): see :func:`segment_lesion`."""
    h, w = lightness.shape
    blurred = cv2.GaussianBlur(lightness, (0, 0), sigmaX=max(1.0, min(h, w) / 64))
    fov = field_of_view(blurred)
    t_core = _otsu(blurred[fov])
    small = np.ones((3, 3), np.uint8)
    core = _central_component(
        cv2.morphologyEx(((blurred <= t_core) & fov).astype(np.uint8), cv2.MORPH_OPEN, small)
    )
    if core is None:
        return _fallback_mask((h, w))
    # grow the dark core into the lesion's lighter parts: hysteresis at halfway to the skin
    outer = _centre_distance((h, w)) > 0.3 * min(h, w)
    for skin_region in (fov & outer & ~core, fov & ~core):
        if skin_region.sum() >= 16:
            t_loose = max(t_core, (t_core + float(np.median(blurred[skin_region]))) / 2.0)
            break
    else:
        t_loose = t_core
    side = max(3, 2 * round(min(h, w) / 32) + 1)  # 5 px at 64 px: cuts thin leaks into skin
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    loose = cv2.morphologyEx(((blurred <= t_loose) & fov).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    _, labels = cv2.connectedComponents(loose | core.astype(np.uint8), connectivity=8)
    grown = np.isin(labels, np.unique(labels[core]))
    lesion = _central_component(grown.astype(np.uint8))
    return _fill_holes(lesion if lesion is not None else core)


def segment_lesion(image: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Lesion mask of one RGB image.

    On the blurred Lab L channel, inside the field of view (vignette removed): Otsu gives the
    dark core, the most central dark component is kept and grown by hysteresis to every
    connected pixel darker than halfway between the Otsu threshold and the skin, then holes
    are filled. If nothing is found, a small centred disc is used so every feature is defined.
    """
    return _segment_lightness(_lightness(image.astype(np.float32) / 255.0))


def _lightness(rgb01: NDArray[np.float32]) -> NDArray[np.float32]:
    """Lab L of float RGB in [0, 1], scaled to 0..255."""
    return cv2.cvtColor(rgb01, cv2.COLOR_RGB2Lab)[..., 0] * np.float32(2.55)


# --------------------------------------------------------------------------- shape


def _axis_asymmetry(
    mask: NDArray[np.uint8], centroid: tuple[float, float], angle_deg: float
) -> tuple[float, float]:
    """Asymmetry about the major and minor axis: |mask XOR mirrored mask| / area.

    The mask is rotated so its major axis is horizontal, centred on a canvas whose centre is the
    lesion centroid, then mirrored about the horizontal (major) and vertical (minor) axis.
    """
    size = 2 * max(mask.shape)
    centre = (size - 1) / 2.0
    rot = cv2.getRotationMatrix2D(centroid, angle_deg, 1.0)
    rot[:, 2] += (centre - centroid[0], centre - centroid[1])
    warped = cv2.warpAffine(mask.astype(np.float32), rot, (size, size), flags=cv2.INTER_LINEAR)
    aligned = warped > 0.5
    area = max(int(aligned.sum()), 1)
    about_major = np.count_nonzero(aligned ^ aligned[::-1, :]) / area
    about_minor = np.count_nonzero(aligned ^ aligned[:, ::-1]) / area
    return float(about_major), float(about_minor)


def shape_features(mask: NDArray[np.bool_]) -> dict[str, float]:
    """Shape descriptors of a binary lesion mask (sizes relative to the image side).

    ``border_irregularity`` is perimeter² / (4π·area): about 1 for a disc, larger for a ragged
    border. Asymmetries are 0 for a shape that is mirror-symmetric about that principal axis.
    """
    h, w = mask.shape
    side = float(max(h, w))
    m8 = mask.astype(np.uint8)
    area = float(m8.sum())
    if area == 0:
        return dict.fromkeys(SHAPE_NAMES, 0.0) | {"solidity": 1.0}
    mom = cv2.moments(m8, binaryImage=True)
    cx, cy = mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]
    mu20, mu02, mu11 = mom["mu20"] / area, mom["mu02"] / area, mom["mu11"] / area
    spread = np.hypot((mu20 - mu02) / 2.0, mu11)
    lam1 = (mu20 + mu02) / 2.0 + spread
    lam2 = max((mu20 + mu02) / 2.0 - spread, 0.0)
    angle = 0.5 * np.degrees(np.arctan2(2.0 * mu11, mu20 - mu02))
    asym_major, asym_minor = _axis_asymmetry(m8, (cx, cy), float(angle))

    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    perimeter = cv2.arcLength(contour, closed=True)
    hull = cv2.convexHull(contour)
    contour_area = cv2.contourArea(contour)
    hull_area = cv2.contourArea(hull)
    _, radius = cv2.minEnclosingCircle(contour)
    equivalent = np.sqrt(4.0 * area / np.pi)
    defect = 0.0
    if len(contour) > 3:
        try:
            defects = cv2.convexityDefects(contour, cv2.convexHull(contour, returnPoints=False))
        except cv2.error:  # hull indices not monotonous on some self-touching contours
            defects = None
        if defects is not None and len(defects):
            defect = float(defects.reshape(-1, 4)[:, 3].max() / 256.0 / equivalent)
    return {
        "area_fraction": area / (h * w),
        "equivalent_diameter": float(equivalent) / side,
        "max_diameter": 2.0 * float(radius) / side,
        "eccentricity": float(np.sqrt(1.0 - lam2 / lam1)) if lam1 > _EPS else 0.0,
        "asymmetry_major": asym_major,
        "asymmetry_minor": asym_minor,
        "border_irregularity": float(perimeter**2 / (4.0 * np.pi * area)),
        "solidity": float(contour_area / hull_area) if hull_area > _EPS else 1.0,
        "convexity_defect": defect,
    }


# --------------------------------------------------------------------------- colour


def _skin_mask(lesion: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Skin = outside a 2-pixel band around the lesion; the image frame if that is too small."""
    grown = cv2.dilate(lesion.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    skin = ~grown
    if skin.sum() < 16:
        skin = np.zeros_like(lesion)
        skin[:2, :] = skin[-2:, :] = skin[:, :2] = skin[:, -2:] = True
    return skin


def _region_stats(values: NDArray[np.float32]) -> NDArray[np.float64]:
    """Mean, std and 10/50/90th percentiles of each column of ``values`` (pixels × channels)."""
    v = values.astype(np.float64)
    pct = np.percentile(v, [10.0, 50.0, 90.0], axis=0)
    return np.stack([v.mean(axis=0), v.std(axis=0), *pct], axis=1).ravel()  # channel-major


def _hue_stats(hue_deg: NDArray[np.float32], weight: NDArray[np.float32]) -> NDArray[np.float64]:
    """Saturation-weighted circular mean (as cos, sin) and circular std (radians) of hue."""
    rad = np.radians(hue_deg.astype(np.float64))
    wsum = float(weight.sum())
    if wsum <= _EPS:
        c = s = 0.0
    else:
        c = float(np.dot(weight, np.cos(rad)) / wsum)
        s = float(np.dot(weight, np.sin(rad)) / wsum)
    r = min(max(np.hypot(c, s), 1e-12), 1.0)
    return np.array([c, s, np.sqrt(-2.0 * np.log(r))])


def _variegation(lab: NDArray[np.float32]) -> NDArray[np.float64]:
    """Number of Lab colour bins covering >= 5 % of the lesion, and the bins' entropy (bits)."""
    lq = np.clip((lab[:, 0] / 100.0 * _VAR_BINS).astype(np.int64), 0, _VAR_BINS - 1)
    ab = np.clip(((lab[:, 1:] + 64.0) / 128.0 * _VAR_BINS).astype(np.int64), 0, _VAR_BINS - 1)
    codes = (lq * _VAR_BINS + ab[:, 0]) * _VAR_BINS + ab[:, 1]
    p = np.bincount(codes, minlength=_VAR_BINS**3) / max(codes.size, 1)
    nz = p[p > 0]
    return np.array(
        [float(np.count_nonzero(p >= _VAR_MIN_FRACTION)), float(-(nz * np.log2(nz)).sum())]
    )


def _colour_features(
    lab: NDArray[np.float32], hsv: NDArray[np.float32], lesion: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Colour features of one image, in the order of the colour part of :data:`COLOUR_NAMES`.

    Lesion colours are taken 1 pixel inside its border and skin colours 2 pixels outside it, so
    neither mixes in the blurred transition between them.
    """
    chans = np.concatenate([lab, hsv[..., 1:]], axis=-1)  # L a b S V
    inner = cv2.erode(lesion.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    inner = inner if inner.sum() >= 16 else lesion
    skin = _skin_mask(lesion)
    parts = [_region_stats(chans[inner]), _region_stats(chans[skin])]
    parts += [_hue_stats(hsv[..., 0][r], hsv[..., 1][r]) for r in (inner, skin)]
    diff = lab[inner].mean(axis=0, dtype=np.float64) - lab[skin].mean(axis=0, dtype=np.float64)
    parts += [diff, np.array([np.linalg.norm(diff)]), _variegation(lab[inner])]
    return np.concatenate(parts)


# --------------------------------------------------------------------------- texture


def lbp_histograms(gray: NDArray[np.uint8], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Normalised rotation-invariant uniform LBP (8 neighbours, radius 1) histograms per image.

    ``gray`` and ``masks`` are N×H×W; only pixels inside each mask are counted. Bin k < 9 holds
    uniform patterns with k neighbours >= the centre; bin 9 holds non-uniform patterns.
    """
    n, h, w = gray.shape
    padded = np.pad(gray.astype(np.int16), ((0, 0), (1, 1), (1, 1)), mode="edge")
    centre = padded[:, 1:-1, 1:-1]
    ring = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))  # circular order
    bits = np.stack([padded[:, dy : dy + h, dx : dx + w] >= centre for dy, dx in ring])
    ones = bits.sum(axis=0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    codes = np.where(transitions <= 2, ones, LBP_BINS - 1)
    index = np.arange(n)[:, None, None] * LBP_BINS + codes
    hist = np.bincount(index[masks], minlength=n * LBP_BINS).reshape(n, LBP_BINS)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)


def glcm_features(gray: NDArray[np.uint8], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """GLCM contrast, homogeneity, energy, correlation and entropy inside each mask (N×5).

    16 grey levels, distance 1, symmetric, summed over 0°, 45°, 90° and 135°; only pixel pairs
    with both ends inside the mask count. A constant region has correlation 1.
    """
    n, h, w = gray.shape
    levels = GLCM_LEVELS
    q = (gray.astype(np.int64) * levels) // 256
    base = np.arange(n)[:, None, None] * levels * levels
    counts = np.zeros(n * levels * levels, np.float64)
    for dy, dx in ((0, 1), (1, 1), (1, 0), (1, -1)):
        ys, xs = slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))
        ys2, xs2 = slice(dy, h), slice(max(0, dx), w - max(0, -dx))
        valid = masks[:, ys, xs] & masks[:, ys2, xs2]
        idx = base + q[:, ys, xs] * levels + q[:, ys2, xs2]
        counts += np.bincount(idx[valid], minlength=counts.size)
    glcm = counts.reshape(n, levels, levels)
    glcm = glcm + glcm.transpose(0, 2, 1)
    glcm /= np.maximum(glcm.sum(axis=(1, 2), keepdims=True), 1.0)
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    contrast = (glcm * (i - j) ** 2).sum(axis=(1, 2))
    homogeneity = (glcm / (1.0 + (i - j) ** 2)).sum(axis=(1, 2))
    energy = np.sqrt((glcm**2).sum(axis=(1, 2)))
    mu = (glcm * i).sum(axis=(1, 2))  # symmetric: the same for rows and columns
    var = (glcm * (i - mu[:, None, None]) ** 2).sum(axis=(1, 2))
    cov = (glcm * (i - mu[:, None, None]) * (j - mu[:, None, None])).sum(axis=(1, 2))
    correlation = np.where(var > _EPS, cov / np.maximum(var, _EPS), 1.0)
    logs = np.log2(glcm, out=np.zeros_like(glcm), where=glcm > 0)
    entropy = -(glcm * logs).sum(axis=(1, 2))
    return np.stack([contrast, homogeneity, energy, correlation, entropy], axis=1)


# --------------------------------------------------------------------------- extraction


def _block_features(images: NDArray[np.uint8], bar: tqdm) -> NDArray[np.float64]:
    """Features of a block of N×H×W×3 uint8 RGB images (N × len(FEATURE_NAMES))."""
    n, h, w, _ = images.shape
    flat = (images.astype(np.float32) / 255.0).reshape(n * h, w, 3)  # colour conversion is
    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(n, h, w, 3)  # per pixel: one call
    hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV).reshape(n, h, w, 3)  # for the whole block
    gray = cv2.cvtColor(images.reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w)
    masks = np.empty((n, h, w), bool)
    per_image = np.empty((n, len(SHAPE_NAMES) + len(COLOUR_NAMES)), np.float64)
    for k in range(n):
        masks[k] = _segment_lightness(lab[k, ..., 0] * np.float32(2.55))
        shape = shape_features(masks[k])
        per_image[k, : len(SHAPE_NAMES)] = [shape[name] for name in SHAPE_NAMES]
        per_image[k, len(SHAPE_NAMES) :] = _colour_features(lab[k], hsv[k], masks[k])
        bar.update(1)
    return np.concatenate([per_image, lbp_histograms(gray, masks), glcm_features(gray, masks)], 1)


def extract_features(images: Any, *, desc: str = "features") -> NDArray[np.float64]:
    """Hand-crafted features (columns :data:`FEATURE_NAMES`) of N×H×W×3 uint8 RGB images.

    ``images`` is anything sliceable along its first axis (a numpy array or an h5py dataset);
    it is read in blocks so a large cache never has to fit in memory at once.
    """
    n = len(images)
    out = np.empty((n, len(FEATURE_NAMES)), np.float64)
    with tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        for start in range(0, n, BLOCK):
            block = np.asarray(images[start : start + BLOCK])
            out[start : start + len(block)] = _block_features(block, bar)
    return out


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SplitFeatures:
    """One split of the cache turned into features."""

    path: Path
    ids: NDArray[np.str_]
    labels: NDArray[np.int64]
    features: NDArray[np.float64]


def _dataset(handle: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """The dataset ``name`` of an open HDF5 file, or a :class:`UserError` naming the file."""
    obj = handle.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: missing dataset '{name}'")
    return obj


def _read_labels_ids(handle: h5py.File, path: Path, n: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Validated labels (0/1, both classes) and unique string ids of an open cache file."""
    labels = np.asarray(_dataset(handle, "labels", path)[()]).reshape(-1)
    ids_ds = _dataset(handle, "ids", path)
    if h5py.check_string_dtype(ids_ds.dtype) is None:
        raise UserError(f"{path}: dataset 'ids' must hold strings, got {ids_ds.dtype}")
    ids = np.asarray(ids_ds.asstr()[()], dtype=str).reshape(-1)
    if labels.size != n or ids.size != n:
        sizes = f"{n}, {labels.size}, {ids.size}"
        raise UserError(f"{path}: 'images', 'labels' and 'ids' differ in length ({sizes})")
    if labels.dtype.kind not in "iub" or not np.isin(labels, (0, 1)).all():
        raise UserError(f"{path}: dataset 'labels' must hold only 0 and 1")
    if len(np.unique(labels)) < 2:
        raise UserError(f"{path}: 'labels' hold a single class; baselines need both classes")
    if len(np.unique(ids)) != n:
        raise UserError(f"{path}: dataset 'ids' has duplicate image ids")
    return labels.astype(np.int64), ids


def load_split_features(path: str | Path, *, desc: str | None = None) -> SplitFeatures:
    """Read one cache HDF5 file and extract features; any unreadable or malformed file raises a
    one-line :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: cache file not found")
    try:
        with h5py.File(path, "r") as handle:
            images = _dataset(handle, "images", path)
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise UserError(
                    f"{path}: dataset 'images' must be uint8 N×H×W×3, "
                    f"got {images.dtype} {images.shape}"
                )
            if min(images.shape[1:3]) < 8 or images.shape[0] == 0:
                raise UserError(f"{path}: dataset 'images' is empty or smaller than 8×8 pixels")
            labels, ids = _read_labels_ids(handle, path, images.shape[0])
            features = extract_features(images, desc=desc or path.stem)
    except OSError as exc:  # not HDF5, truncated, or a corrupt chunk
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read HDF5 cache ({reason})") from None
    return SplitFeatures(path=path, ids=ids, labels=labels, features=features)


# --------------------------------------------------------------------------- models


def _logreg(seed: int) -> ClassifierMixin:
    """Standardised L2 logistic regression."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed),
    )


def _random_forest(seed: int) -> ClassifierMixin:
    """Random forest, single-threaded: a parallel ``predict_proba`` sums the trees in thread
    order, which changes the last bits of the scores from run to run."""
    return RandomForestClassifier(
        n_estimators=300, min_samples_leaf=2, class_weight="balanced", n_jobs=1, random_state=seed
    )


def _hist_gbm(seed: int) -> ClassifierMixin:
    """Histogram gradient boosting without early stopping (fit on train only)."""
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=200,
        max_leaf_nodes=15,
        max_bins=63,  # plenty for ~1e3 samples; a third of the default's cost
        l2_regularization=1.0,
        early_stopping=False,
        class_weight="balanced",
        random_state=seed,
    )


def _svm(seed: int) -> ClassifierMixin:
    """RBF SVM on standardised features, Platt-calibrated by 5-fold cross-validation on train."""
    svm = make_pipeline(
        StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale", class_weight="balanced")
    )
    del seed  # SVC and stratified (unshuffled) folds are deterministic
    return CalibratedClassifierCV(svm, method="sigmoid", cv=5, ensemble=False)


MODELS: Mapping[str, Callable[[int], ClassifierMixin]] = {
    "logreg": _logreg,
    "random_forest": _random_forest,
    "hist_gbm": _hist_gbm,
    "svm": _svm,
}


def make_model(name: str, seed: int = SEED) -> ClassifierMixin:
    """A fresh, unfitted baseline model from :data:`MODELS`."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown baseline model {name!r}; choose from {sorted(MODELS)}") from None
    return factory(seed)


# --------------------------------------------------------------------------- fit and score


@dataclass(frozen=True)
class BaselineResults:
    """Per-model holdout metrics and holdout predictions."""

    metrics: dict[str, dict[str, float]]
    predictions: dict[str, pd.DataFrame]
    n_features: int

    def table(self) -> pd.DataFrame:
        """One row per model, one column per metric."""
        return pd.DataFrame.from_dict(self.metrics, orient="index").rename_axis("model")


def fit_and_score(
    train: SplitFeatures,
    val: SplitFeatures,
    holdout: SplitFeatures,
    *,
    sens_target: float = 0.95,
    seed: int = SEED,
    models: Mapping[str, Callable[[int], ClassifierMixin]] = MODELS,
) -> BaselineResults:
    """Fit every model on train, choose thresholds on val, report on holdout.

    Besides :func:`~melanoma_kd.metrics.holdout_report`'s keys, each model gets ``val_roc_auc``
    and ``val_pauc`` (for choosing among baselines without looking at holdout).
    """
    metrics: dict[str, dict[str, float]] = {}
    predictions: dict[str, pd.DataFrame] = {}
    for name, factory in models.items():
        # one OpenMP thread: these fits are small, and busy-waiting OpenMP threads slow to a
        # crawl when the cores are shared with other stages or experiment workers
        with threadpool_limits(limits=1, user_api="openmp"):
            model = factory(seed).fit(train.features, train.labels)
            s_val = model.predict_proba(val.features)[:, 1]
            s_hold = model.predict_proba(holdout.features)[:, 1]
        report = holdout_report(val.labels, s_val, holdout.labels, s_hold, sens_target)
        report["val_roc_auc"] = roc_auc(val.labels, s_val)
        report["val_pauc"] = pauc_above_tpr(val.labels, s_val)
        metrics[name] = report
        predictions[name] = pd.DataFrame(
            {"image_id": holdout.ids, "label": holdout.labels, "score": s_hold}
        )
    return BaselineResults(metrics, predictions, train.features.shape[1])


def run_baselines(
    cache_dir: str | Path, *, sens_target: float = 0.95, seed: int = SEED
) -> BaselineResults:
    """Features for ``<cache_dir>/{train,val,holdout}.h5``, then :func:`fit_and_score`."""
    splits = [load_split_features(Path(cache_dir) / f"{s}.h5", desc=s) for s in SPLITS]
    return fit_and_score(*splits, sens_target=sens_target, seed=seed)


def save_results(
    results: BaselineResults,
    *,
    metrics_path: str | Path,
    predictions_dir: str | Path,
    table_path: str | Path,
) -> None:
    """Write metrics JSON (nested one level by model), ``baseline_<name>.csv`` predictions and
    the summary table, each atomically."""
    write_json(metrics_path, {"n_features": results.n_features, **results.metrics})
    for name, frame in results.predictions.items():
        with atomic_path(Path(predictions_dir) / f"baseline_{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(table_path) as tmp:
        results.table().to_csv(tmp, float_format="%.4f")
