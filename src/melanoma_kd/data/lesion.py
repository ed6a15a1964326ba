"""Lesion segmentation of dermoscopy RGB images: one Otsu threshold, two masks for two uses.

Both masks rest on the same observation — a lesion is darker than the skin around it — and on
the same threshold, :func:`otsu_threshold` of the blurred CIELAB lightness, taken inside the
dermoscope's field of view so that its dark vignette does not split the histogram:

* :func:`segment_lesion` — the **whole lesion** whose shape, colour and texture the baselines
  describe (``melanoma_kd.handcrafted``): float Lab L, field of view = all but near-black
  regions touching the border (:func:`field_of_view`), the most central dark component, grown
  by hysteresis into the lesion's lighter parts, holes filled; a small centred disc when
  nothing is found, so every feature is defined. Boolean mask.
* :func:`lesion_mask` — the **lesion to transplant** onto other skin for generated positives
  (``melanoma_kd.data.synth_positives``): 8-bit Lab L, histogram over a central ellipse, the
  largest dark component not touching the border, holes filled, dilated to take some skin
  along; ``None`` when no plausible lesion is found. 0/255 mask.

They differ where their uses do (a feature needs the lighter rim of the lesion; a Poisson clone
needs a margin of skin), and each is pinned by the outputs it feeds.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]
Mask = NDArray[np.uint8]

VIGNETTE_L = 30.0  # Lab L (0..255) below which a border-connected region is vignette
FOV = 0.4  # lesion_mask's Otsu histogram: central ellipse with these semi-axes (of w, h)
MIN_MASK_FRACTION = 0.01  # a "lesion" smaller than this fraction of the image is no lesion


def otsu_threshold(values: NDArray) -> int:
    """Otsu's threshold of 0..255 values (clipped, then taken as 8-bit): the ``t`` maximising
    the between-class variance of ``values <= t`` vs ``values > t`` (OpenCV's search)."""
    row = np.clip(values, 0, 255).astype(np.uint8).reshape(1, -1)
    t, _ = cv2.threshold(row, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return int(t)


# --------------------------------------------------------------------------- segment_lesion


def _fallback_disc(shape: tuple[int, int]) -> NDArray[np.bool_]:
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
    dark = (lightness < VIGNETTE_L).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = lightness.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]
    on_border = (x == 0) | (y == 0) | (right == w) | (bottom == h)
    on_border[0] = False  # label 0 is the non-dark background
    fov = ~on_border[labels]
    return fov if fov.sum() >= 16 else np.ones_like(fov)


def segment_lightness(lightness: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Lesion mask from Lab L (float, 0..255): see :func:`segment_lesion`."""
    h, w = lightness.shape
    blurred = cv2.GaussianBlur(lightness, (0, 0), sigmaX=max(1.0, min(h, w) / 64))
    fov = field_of_view(blurred)
    t_core = float(otsu_threshold(blurred[fov]))
    small = np.ones((3, 3), np.uint8)
    core = _central_component(
        cv2.morphologyEx(((blurred <= t_core) & fov).astype(np.uint8), cv2.MORPH_OPEN, small)
    )
    if core is None:
        return _fallback_disc((h, w))
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


def segment_lesion(image: Image) -> NDArray[np.bool_]:
    """Lesion mask of one RGB image (the baselines' features).

    On the blurred Lab L channel, inside the field of view (vignette removed): Otsu gives the
    dark core, the most central dark component is kept and grown by hysteresis to every
    connected pixel darker than halfway between the Otsu threshold and the skin, then holes
    are filled. If nothing is found, a small centred disc is used so every feature is defined.
    """
    rgb01 = image.astype(np.float32) / 255.0
    return segment_lightness(cv2.cvtColor(rgb01, cv2.COLOR_RGB2Lab)[..., 0] * np.float32(2.55))


# --------------------------------------------------------------------------- lesion_mask


def _odd(x: float) -> int:
    k = max(3, round(x))
    return k if k % 2 else k + 1


def lesion_mask(rgb: Image, dilate: float = 0.0, min_dilate_px: int = 0) -> Mask | None:
    """0/255 mask of the lesion to transplant, or ``None`` if no plausible lesion is found.

    Otsu threshold on the blurred 8-bit CIELAB L channel, its histogram taken over the central
    field of view; the largest connected dark component (components touching the image border
    — vignette corners — only if nothing else is found), holes filled, dilated by
    ``max(min_dilate_px, dilate · shorter side)`` pixels.
    """
    h, w = rgb.shape[:2]
    lightness = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0]
    blurred = cv2.GaussianBlur(lightness, (_odd(0.03 * min(h, w)),) * 2, 0)
    # Otsu's threshold from the central field of view only: dark vignette corners of the
    # dermoscope would otherwise split the histogram and leave just the lesion's darkest core.
    centre = np.zeros((h, w), np.uint8)
    axes = (max(1, round(FOV * w)), max(1, round(FOV * h)))
    cv2.ellipse(centre, (w // 2, h // 2), axes, 0, 0, 360, 1, -1)
    threshold = otsu_threshold(blurred[centre > 0])
    dark = np.where(blurred <= threshold, 255, 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n <= 1:
        return None
    x, y, bw, bh, area = (stats[1:, k] for k in range(5))
    inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    score = np.where(inner, area, 0) if inner.any() else area
    best = int(np.argmax(score))
    if area[best] < MIN_MASK_FRACTION * h * w:
        return None
    mask = np.where(labels == best + 1, 255, 0).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(mask, contours, -1, 255, thickness=cv2.FILLED)  # fill holes
    r = max(min_dilate_px, round(dilate * min(h, w)))
    if r > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    return mask


def fallback_mask(shape: tuple[int, ...], grow: int = 0) -> Mask:
    """A centred ellipse (half the sides, plus ``grow`` px) for a donor Otsu finds no lesion in."""
    h, w = shape[:2]
    mask = np.zeros((h, w), np.uint8)
    axes = (max(1, w // 4 + grow), max(1, h // 4 + grow))
    cv2.ellipse(mask, (w // 2, h // 2), axes, 0, 0, 360, 255, -1)
    return mask
