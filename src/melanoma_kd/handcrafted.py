"""Hand-crafted lesion features of dermoscopy images, for the classical baselines.

Each image becomes a fixed-length vector (columns :data:`FEATURE_NAMES`):

- **shape** of the lesion segmentation (:func:`melanoma_kd.data.lesion.segment_lesion`): area
  fraction, diameters, eccentricity, asymmetry about the two principal axes, border
  irregularity (perimeter² / 4π·area), solidity, convexity-defect depth;
- **colour** statistics in Lab and HSV inside the lesion and of the surrounding skin (mean, std,
  10/50/90th percentiles; circular hue statistics) and lesion-vs-skin contrast;
- **colour variegation**: number of distinct Lab colour bins that cover the lesion, and their
  entropy;
- **texture** inside the lesion: rotation-invariant uniform LBP histogram and GLCM contrast,
  homogeneity, energy, correlation and entropy (both in numpy, vectorised over images).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from melanoma_kd.data.lesion import segment_lightness

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
        masks[k] = segment_lightness(lab[k, ..., 0] * np.float32(2.55))
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
