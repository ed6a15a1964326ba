"""Synthetic dermoscopy data set, written in the ISIC-2024 layout.

Each lesion draws a latent *atypia* score from a class-dependent Beta distribution; the two
classes' distributions overlap. Every visual trait (asymmetry, border irregularity, extra colours
such as black blotches and a blue-grey veil, diameter, atypical pigment network, irregular dots,
abrupt edge) is the atypia plus its own noise, so melanoma *tends* to look atypical and benign
lesions *tend* to look symmetric and uniform, but neither always does. A little class-balanced
label noise is added on top. The task is therefore learnable but not separable.

Patients own 1..``max_lesions_per_patient`` lesions and a lesion has 1..``max_images_per_lesion``
views (rotation, scale, position and lighting change; the lesion does not), labelled per lesion.
Dark curved hairs are drawn on ``hair_fraction`` of the images; the hair-free image and the hair
mask are kept as ground truth for the hair-removal stage.

Output directory (the ``generate`` stage's out):
    train-image.hdf5    one scalar dataset per ``isic_id`` holding its JPEG bytes
    train-metadata.csv  isic_id, patient_id, lesion_id, target, age_approx, sex,
                        anatom_site_general (sorted by isic_id)
    truth.hdf5          ids (utf-8), clean (N×H×W×3 uint8, lossless), hair_mask (N×H×W uint8,
                        1 = hair), has_hair (N uint8), in metadata order
The same params give byte-identical files (fixed order, no HDF5 timestamps).

With another ``data.source`` the stage generates nothing: :func:`write_not_generated` leaves
only ``NOT_GENERATED.json`` in the folder, and nothing reads synthetic truth.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from tqdm import tqdm

from melanoma_kd.config import GenerateParams
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import decode_image, encode_jpeg
from melanoma_kd.io import atomic_path, write_json

SOURCE = "synthetic"  # the data.source value of this data set
IMAGES_FILE = "train-image.hdf5"
METADATA_FILE = "train-metadata.csv"
TRUTH_FILE = "truth.hdf5"
NOT_GENERATED_FILE = "NOT_GENERATED.json"
METADATA_COLUMNS = [
    "isic_id",
    "patient_id",
    "lesion_id",
    "target",
    "age_approx",
    "sex",
    "anatom_site_general",
]
SITES = ["head/neck", "upper extremity", "lower extremity", "anterior torso", "posterior torso"]
HDF5_LIBVER = ("earliest", "v110")  # fixed on-disk format version: same bytes on every run

# Latent atypia per class: Beta(a, b). The distributions overlap on purpose.
ATYPIA_BENIGN = (1.8, 5.5)
ATYPIA_MALIGNANT = (6.0, 2.0)
TRAIT_NOISE = 0.17  # sd of each trait around the lesion's atypia

HAIR_ALPHA_MIN = 0.25  # a pixel is "hair" in the truth mask when the hair covers this much of it
SUPERSAMPLE = 4  # hairs are drawn at this many times the image resolution, then area-averaged

Float = NDArray[np.float32]

# Dermoscopic colours (RGB in 0..1).
LIGHT_BROWN = np.array([0.66, 0.46, 0.32], np.float32)
DARK_BROWN = np.array([0.34, 0.20, 0.12], np.float32)
EXTRA_COLOURS: dict[str, tuple[NDArray[np.float32], float, float]] = {
    # name: (colour, pigment density where it covers, draw weight)
    "black": (np.array([0.10, 0.07, 0.07], np.float32), 0.97, 0.30),
    "dark_brown": (np.array([0.24, 0.13, 0.08], np.float32), 0.93, 0.20),
    "blue_grey": (np.array([0.36, 0.42, 0.55], np.float32), 0.85, 0.30),
    "regression": (np.array([0.84, 0.74, 0.74], np.float32), 0.60, 0.10),
    "red": (np.array([0.72, 0.36, 0.36], np.float32), 0.70, 0.10),
}


@dataclass(frozen=True)
class Patient:
    """A patient: identifiers, demographics and skin tone (RGB 0..1)."""

    patient_id: str
    age: int
    sex: str
    skin: tuple[float, float, float]


@dataclass(frozen=True)
class Lesion:
    """A lesion: its patient, true class, recorded label and number of views."""

    index: int
    lesion_id: str
    patient: int
    malignant: bool
    target: int
    n_images: int
    site: str


@dataclass(frozen=True)
class Traits:
    """Visual traits of one lesion, each in 0..1 except ``radius`` (fraction of image side)."""

    radius: float
    asymmetry: float
    border: float
    colours: float
    network: float
    dots: float
    edge: float


# ---------------------------------------------------------------------------------------------
# small numeric helpers


def _smoothstep(edge0: float, edge1: float, x: NDArray) -> Float:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Float:
    """Smooth random field of unit standard deviation with about ``cells`` blobs per side."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


# ---------------------------------------------------------------------------------------------
# cohort: patients, lesions, labels


def _make_patients_and_lesions(
    p: GenerateParams, rng: np.random.Generator
) -> tuple[list[Patient], list[Lesion]]:
    """Draw the cohort structure so that the lesions' views add up to exactly ``n_images``."""
    counts: list[tuple[int, int]] = []  # (patient index, views) per lesion
    n_patients = 0
    total = 0
    while total < p.n_images:
        for _ in range(int(rng.integers(1, p.max_lesions_per_patient + 1))):
            if total >= p.n_images:
                break
            views = min(int(rng.integers(1, p.max_images_per_lesion + 1)), p.n_images - total)
            counts.append((n_patients, views))
            total += views
        n_patients += 1
    malignant, target = _lesion_labels(p, rng, len(counts))
    patient_ids = _random_ids(rng, "IP_", n_patients)
    lesion_ids = _random_ids(rng, "IL_", len(counts))
    has_melanoma = np.zeros(n_patients, bool)
    for (pat, _), m in zip(counts, malignant, strict=True):
        has_melanoma[pat] |= m
    patients = [
        _make_patient(rng, patient_ids[i], bool(has_melanoma[i])) for i in range(n_patients)
    ]
    lesions = [
        Lesion(
            i,
            lesion_ids[i],
            pat,
            bool(malignant[i]),
            int(target[i]),
            views,
            SITES[int(rng.integers(len(SITES)))],
        )
        for i, (pat, views) in enumerate(counts)
    ]
    return patients, lesions


def _lesion_labels(
    p: GenerateParams, rng: np.random.Generator, n_lesions: int
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """True class and recorded label per lesion.

    Exactly ``round(positive_rate * n)`` lesions (at least one) are melanoma. Label noise is
    class-balanced: ``round(label_noise * positives)`` melanomas are recorded as benign and as
    many benign lesions as melanoma, so the positive rate is unchanged.
    """
    n_pos = min(n_lesions - 1, max(1, round(p.positive_rate * n_lesions)))
    malignant = np.zeros(n_lesions, bool)
    malignant[rng.permutation(n_lesions)[:n_pos]] = True
    target = malignant.astype(np.int64)
    n_flip = round(p.label_noise * n_pos)
    if n_flip:
        target[rng.choice(np.flatnonzero(malignant), n_flip, replace=False)] = 0
        target[rng.choice(np.flatnonzero(~malignant), n_flip, replace=False)] = 1
    return malignant, target


def _random_ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    numbers = np.sort(rng.choice(9_000_000, size=n, replace=False)) + 1_000_000
    return [f"{prefix}{k:07d}" for k in rng.permutation(numbers)]


def _make_patient(rng: np.random.Generator, patient_id: str, has_melanoma: bool) -> Patient:
    age = int(np.clip(rng.normal(58 if has_melanoma else 50, 14), 20, 85) // 5 * 5)
    sex = "male" if rng.random() < 0.52 else "female"
    t = rng.beta(2.0, 3.0)  # 0 = fair, 1 = darker
    skin = (1 - t) * np.array([0.95, 0.78, 0.70]) + t * np.array([0.76, 0.54, 0.42])
    skin = skin * (1 + rng.normal(0, 0.02, 3))
    return Patient(patient_id, age, sex, tuple(float(c) for c in skin))


# ---------------------------------------------------------------------------------------------
# one lesion, drawn once in its own frame ("canonical"), then placed in each view


def _traits(rng: np.random.Generator, malignant: bool) -> Traits:
    a, b = ATYPIA_MALIGNANT if malignant else ATYPIA_BENIGN
    atypia = rng.beta(a, b)

    def trait() -> float:
        return _clip01(atypia + rng.normal(0, TRAIT_NOISE))

    return Traits(
        radius=float(np.clip(0.15 + 0.13 * trait() + rng.normal(0, 0.025), 0.09, 0.34)),
        asymmetry=trait(),
        border=trait(),
        colours=trait(),
        network=trait(),
        dots=trait(),
        edge=trait(),
    )


def _lesion_geometry(
    rng: np.random.Generator, t: Traits, x: Float, y: Float
) -> tuple[Float, Float]:
    """Normalised radius ``d`` (1 on the border) and angle for canonical coordinates."""
    theta = np.arctan2(y, x)
    r = np.hypot(x, y)
    phases = rng.uniform(0, 2 * np.pi, 16)
    angles = np.linspace(-np.pi, np.pi, 1025)  # the border radius as a function of angle
    shape = 1 + rng.uniform(0, 0.18) * np.cos(2 * angles + phases[2])  # oval: still symmetric
    shape += t.asymmetry**1.5 * (
        0.22 * np.cos(angles + phases[1]) + 0.14 * np.cos(3 * angles + phases[3])
    )
    for k in range(4, 16):
        amp = (0.005 + 0.11 * t.border**1.5) * rng.standard_normal() / k**0.6
        shape += amp * np.cos(k * angles + phases[k])
    border = (t.radius * np.maximum(shape, 0.35)).astype(np.float32)
    index = np.rint((theta + np.pi) * (1024 / (2 * np.pi))).astype(np.intp)
    return r / border[index], theta


def _eccentric_blob(
    rng: np.random.Generator, t: Traits, x: Float, y: Float, inside: NDArray[np.bool_]
) -> Float:
    """A patch covering part of the lesion; more atypical lesions place it off-centre."""
    field = _noise(rng, x.shape, 5)
    off = t.radius * (0.15 + 0.6 * t.asymmetry) * rng.uniform(0.3, 1.0)
    ang = rng.uniform(0, 2 * np.pi)
    cx, cy = off * math.cos(ang), off * math.sin(ang)
    sigma = t.radius * rng.uniform(0.35, 0.7)
    field = field + 2.5 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    coverage = rng.uniform(0.12, 0.4)
    thr = np.quantile(field[inside], 1 - coverage) if inside.any() else np.inf
    return _smoothstep(thr - 0.6, thr + 0.6, field) * (1 + 0.15 * _noise(rng, x.shape, 12))


def _network(
    rng: np.random.Generator, t: Traits, x: Float, y: Float, d: Float, image_size: int
) -> Float:
    """Pigment network lines in 0..1: the borders of Voronoi cells around jittered grid seeds.

    Typical: regular honeycomb, thin even lines fading towards the border. Atypical: irregular
    cells, thick lines of varying darkness, broken in places, running to the edge.
    """
    size = x.shape[0]
    period = t.radius * image_size * rng.uniform(0.17, 0.26)
    grid = np.arange(period / 2, size, period)
    gx, gy = np.meshgrid(grid, grid)
    jitter = period * (0.12 + 0.45 * t.network)
    seeds = np.stack([gx.ravel(), gy.ravel()], 1) + rng.normal(0, jitter, (gx.size, 2))
    canvas = np.full((size, size), 255, np.uint8)
    for sx, sy in np.clip(np.rint(seeds), 0, size - 1).astype(int):
        canvas[sy, sx] = 0
    _, labels = cv2.distanceTransformWithLabels(
        canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    edges = np.zeros((size, size), np.float32)
    edges[:, 1:] += labels[:, 1:] != labels[:, :-1]
    edges[1:, :] += labels[1:, :] != labels[:-1, :]
    edges = np.minimum(edges, 1.0)
    thick = 1 + round(2 * t.network * rng.uniform(0.5, 1.0) * image_size / 128)
    if thick > 1:
        edges = cv2.dilate(edges, np.ones((thick, thick), np.uint8))
    lines = cv2.GaussianBlur(edges, (0, 0), 0.6 * image_size / 128)
    lines *= 1 + 0.6 * t.network * _noise(rng, x.shape, 8)
    broken = _smoothstep(-0.4, 0.4, _noise(rng, x.shape, 6) + 1.6 - 2.4 * t.network)
    fade = 1 - (1 - t.network) * _smoothstep(0.45, 1.0, d)
    return np.clip(lines * broken * fade, 0, 1).astype(np.float32)


def _dots(rng: np.random.Generator, t: Traits, size: int, scale: float) -> Float:
    """Dots and globules: few and central when typical, many and peripheral when atypical."""
    canvas = np.zeros((size, size), np.uint8)
    n = int(rng.poisson(0.5 + 14 * t.dots**2))
    for _ in range(n):
        rad = t.radius * np.sqrt(rng.uniform(0.05 + 0.6 * t.dots, 1.0)) * rng.uniform(0.7, 1.1)
        ang = rng.uniform(0, 2 * np.pi)
        cx = size / 2 + rad * math.cos(ang) * scale
        cy = size / 2 + rad * math.sin(ang) * scale
        r = max(1, round(scale * rng.uniform(0.006, 0.016) * SUPERSAMPLE))
        center = (round(cx * SUPERSAMPLE), round(cy * SUPERSAMPLE))
        cv2.circle(canvas, center, r, 255, -1, cv2.LINE_AA, shift=2)
    return canvas.astype(np.float32) / 255.0


def render_lesion(rng: np.random.Generator, traits: Traits, image_size: int) -> tuple[Float, Float]:
    """Draw a lesion centred on a square canvas 1.5× the image side.

    Returns its colour (H×W×3, RGB 0..1) and opacity (H×W, 0..1) over the skin.
    """
    size = round(1.5 * image_size)
    coords = (np.arange(size, dtype=np.float32) - size / 2 + 0.5) / image_size
    x, y = np.meshgrid(coords, coords)
    d, _ = _lesion_geometry(rng, traits, x, y)
    inside = d < 1.0

    width = 0.42 - 0.34 * traits.edge  # soft, fading border when typical; abrupt when atypical
    mask = _smoothstep(1 + width / 2, 1 - width / 2, d)
    density = rng.uniform(0.7, 0.9) * (1 - rng.uniform(0.1, 0.4) * d**2)
    mottle = 0.6 * _noise(rng, x.shape, 5) + 0.4 * _noise(rng, x.shape, 14)
    density = density * (1 + (0.05 + 0.2 * traits.colours) * mottle)
    tone = _clip01(rng.normal(0.4 + 0.2 * traits.colours, 0.2))
    colour = np.broadcast_to((1 - tone) * LIGHT_BROWN + tone * DARK_BROWN, (size, size, 3)).copy()

    names = list(EXTRA_COLOURS)
    weights = np.array([EXTRA_COLOURS[k][2] for k in names])
    n_extra = min(len(names), int(rng.binomial(4, traits.colours**1.7)))
    for name in rng.choice(names, size=n_extra, replace=False, p=weights / weights.sum()):
        tint, dens, _ = EXTRA_COLOURS[name]
        w = _eccentric_blob(rng, traits, x, y, inside) * rng.uniform(0.6, 0.95)
        colour = colour * (1 - w[..., None]) + tint * w[..., None]
        density = density * (1 - w) + dens * w

    if rng.random() < 0.8:
        strength = rng.uniform(0.25, 0.6)
        lines = _network(rng, traits, x, y, d, image_size) * strength
        colour = colour * (1 - 0.55 * lines[..., None])
        density = density + 0.35 * lines * (1 - density)

    dots = _dots(rng, traits, size, image_size)
    dot_tint = EXTRA_COLOURS["black" if rng.random() < 0.6 else "dark_brown"][0]
    colour = colour * (1 - dots[..., None]) + dot_tint * dots[..., None]
    alpha = np.maximum(np.clip(density, 0, 1) * mask, dots)
    return colour.astype(np.float32), alpha.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# one view: skin, lesion placement, lighting, hairs, dermoscope vignette


def _skin(rng: np.random.Generator, tone: tuple[float, float, float], size: int) -> Float:
    shape = (size, size)
    base = np.asarray(tone, np.float32) * (1 + rng.normal(0, 0.015, 3)).astype(np.float32)
    shade = 1 + 0.05 * _noise(rng, shape, 3) + 0.025 * _noise(rng, shape, 14)
    img = base * shade[..., None]
    redness = _smoothstep(0.6, 2.0, _noise(rng, shape, 4)) * rng.uniform(0.0, 0.08)
    img += redness[..., None] * np.array([0.4, -0.5, -0.4], np.float32)
    return img.astype(np.float32)


def _place(colour: Float, alpha: Float, rng: np.random.Generator, size: int) -> tuple[Float, Float]:
    """Rotate, scale and shift the canonical lesion into a ``size``×``size`` view."""
    canvas = colour.shape[0]
    angle = rng.uniform(0, 360)
    scale = rng.uniform(0.88, 1.12)
    m = cv2.getRotationMatrix2D((canvas / 2 - 0.5, canvas / 2 - 0.5), angle, scale)
    shift = rng.uniform(-0.06, 0.06, 2) * size
    m[:, 2] += (size - canvas) / 2 + shift
    warp = {"dsize": (size, size), "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT}
    return cv2.warpAffine(colour, m, **warp), cv2.warpAffine(alpha, m, **warp)


def _lighting(rng: np.random.Generator, size: int) -> Float:
    """Per-pixel RGB gain: exposure, white balance, a gradient and radial fall-off."""
    coords = (np.arange(size, dtype=np.float32) - size / 2 + 0.5) / size
    x, y = np.meshgrid(coords, coords)
    ang = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.86, 1.06) * (
        1 + rng.uniform(0, 0.16) * (x * np.cos(ang) + y * np.sin(ang))
    )
    gain = gain * (1 - rng.uniform(0.2, 0.6) * (x * x + y * y))
    balance = np.array([1 + rng.normal(0, 0.03), 1.0, 1 + rng.normal(0, 0.04)], np.float32)
    return (gain[..., None] * balance).astype(np.float32)


def _vignette(rng: np.random.Generator, size: int) -> Float:
    """Dermoscope field of view: 1 inside a (possibly off-centre) circle, 0 outside."""
    coords = np.arange(size, dtype=np.float32) - size / 2 + 0.5
    x, y = np.meshgrid(coords, coords)
    cx, cy = rng.normal(0, 0.02 * size, 2)
    radius = size * (rng.uniform(0.47, 0.68) if rng.random() < 0.75 else 0.9)
    soft = size * rng.uniform(0.02, 0.05)
    return _smoothstep(radius + soft, radius - soft, np.hypot(x - cx, y - cy))


def _bezier(p0: NDArray, p1: NDArray, p2: NDArray, p3: NDArray, n: int) -> NDArray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def hair_layer(rng: np.random.Generator, size: int) -> Float:
    """Coverage (0..1) of 2–13 dark, thin, curved hairs of varying width and darkness."""
    big = size * SUPERSAMPLE
    cover = np.zeros((big, big), np.uint8)
    for _ in range(int(rng.integers(2, 14))):
        canvas = np.zeros((big, big), np.uint8)
        p0 = rng.uniform(-0.1, 1.1, 2) * big
        direction = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.3, 1.2) * big
        step = np.array([math.cos(direction), math.sin(direction)]) * length
        normal = np.array([-step[1], step[0]])
        p1 = p0 + step / 3 + normal * rng.normal(0, 0.18)
        p2 = p0 + 2 * step / 3 + normal * rng.normal(0, 0.18)
        pts = np.rint(_bezier(p0, p1, p2, p0 + step, 32)).astype(int)
        width = rng.uniform(0.45, 1.5) * SUPERSAMPLE
        profile = 0.55 + 0.45 * np.sin(np.linspace(0.15, np.pi - 0.15, len(pts)))
        profile *= 1 + 0.15 * np.sin(np.linspace(0, rng.uniform(2, 9), len(pts)))
        shade = round(255 * rng.uniform(0.75, 1.0))
        for a, b, w in zip(pts[:-1], pts[1:], profile[1:], strict=True):
            thick = max(1, round(width * w))
            cv2.line(
                canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), shade, thick, cv2.LINE_AA
            )
        cv2.max(cover, canvas, dst=cover)
    small = cv2.resize(cover, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _to_uint8(img: Float) -> NDArray[np.uint8]:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_view(
    rng: np.random.Generator,
    lesion: tuple[Float, Float],
    skin_tone: tuple[float, float, float],
    size: int,
    hairy: bool,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """One image of a lesion: (hairy or clean RGB, clean RGB, hair mask), all uint8."""
    colour, alpha = _place(*lesion, rng, size)
    scene = _skin(rng, skin_tone, size)
    scene = scene * (1 - alpha[..., None]) + colour * alpha[..., None]
    scene = scene * _lighting(rng, size)
    grain = rng.normal(0, 0.01, scene.shape).astype(np.float32)
    field = _vignette(rng, size)
    floor = np.float32(rng.uniform(0.01, 0.05))

    def finish(img: Float) -> NDArray[np.uint8]:
        return _to_uint8((img + grain) * field[..., None] + floor * (1 - field[..., None]))

    clean = finish(scene)
    if not hairy:
        return clean, clean, np.zeros((size, size), np.uint8)
    cover = hair_layer(rng, size)
    tint = rng.uniform(0.03, 0.2) * np.array([1.0, 0.82, 0.7], np.float32)
    with_hair = scene * (1 - cover[..., None]) + tint * cover[..., None]
    mask = ((cover >= HAIR_ALPHA_MIN) & (field >= 0.5)).astype(np.uint8)
    return finish(with_hair), clean, mask


# ---------------------------------------------------------------------------------------------
# the data set


def generate_dataset(params: GenerateParams, out_dir: Path) -> dict:
    """Generate the synthetic data set into ``out_dir`` (replaced atomically); return a summary."""
    rng = np.random.default_rng(params.seed)
    patients, lesions = _make_patients_and_lesions(params, rng)
    n = params.n_images
    isic_ids = [f"ISIC_{k:07d}" for k in np.sort(rng.choice(9_000_000, n, replace=False))]
    slot = rng.permutation(n)  # image k of the generation order is row slot[k] of the metadata
    has_hair = rng.random(n) < params.hair_fraction
    rows: list[dict] = []
    jpegs: list[bytes] = [b""] * n
    size = params.image_size
    with atomic_path(out_dir, directory=True) as tmp:
        with _open_h5(tmp / TRUTH_FILE) as truth:
            clean_ds, mask_ds = _create_truth(truth, n, size)
            bar = tqdm(total=n, desc="generate", unit="img", disable=None)
            k = 0
            for lesion in lesions:
                lesion_rng = np.random.default_rng([params.seed, lesion.index])
                patient = patients[lesion.patient]
                layer = render_lesion(lesion_rng, _traits(lesion_rng, lesion.malignant), size)
                for _ in range(lesion.n_images):
                    row = int(slot[k])
                    image, clean, mask = render_view(
                        lesion_rng, layer, patient.skin, size, bool(has_hair[row])
                    )
                    jpegs[row] = encode_jpeg(image, params.jpeg_quality)
                    clean_ds[row] = clean
                    mask_ds[row] = mask
                    rows.append(_metadata_row(isic_ids[row], patient, lesion))
                    k += 1
                    bar.update()
            bar.close()
            _write_h5(truth, "ids", np.array(isic_ids, dtype=object), h5py.string_dtype())
            _write_h5(truth, "has_hair", has_hair.astype(np.uint8))
        meta = pd.DataFrame(rows, columns=METADATA_COLUMNS).sort_values("isic_id")
        meta.to_csv(tmp / METADATA_FILE, index=False, lineterminator="\n")
        with _open_h5(tmp / IMAGES_FILE) as images:
            for isic_id, raw in zip(isic_ids, jpegs, strict=True):
                _write_h5(images, isic_id, np.bytes_(raw))
    return _summary(params, meta, patients, lesions, has_hair)


def write_not_generated(out_dir: Path, source: str) -> dict:
    """Replace ``out_dir`` (atomically) with a folder holding only ``NOT_GENERATED.json``, for a
    pipeline whose ``data.source`` is not synthetic; return that file's content."""
    info = {"generated": False, "data_source": source, "images": 0}
    with atomic_path(out_dir, directory=True) as tmp:
        write_json(tmp / NOT_GENERATED_FILE, info)
    return info


def _metadata_row(isic_id: str, patient: Patient, lesion: Lesion) -> dict:
    return {
        "isic_id": isic_id,
        "patient_id": patient.patient_id,
        "lesion_id": lesion.lesion_id,
        "target": lesion.target,
        "age_approx": patient.age,
        "sex": patient.sex,
        "anatom_site_general": lesion.site,
    }


def _summary(
    p: GenerateParams,
    meta: pd.DataFrame,
    patients: list[Patient],
    lesions: list[Lesion],
    has_hair: NDArray[np.bool_],
) -> dict:
    positives = int(meta["target"].sum())
    return {
        "images": len(meta),
        "positives": positives,
        "positive_rate": round(positives / len(meta), 4),
        "patients": len(patients),
        "lesions": len(lesions),
        "positive_lesions": sum(le.target for le in lesions),
        "noisy_labels": sum(le.target != int(le.malignant) for le in lesions),
        "hairy": int(has_hair.sum()),
        "image_size": p.image_size,
    }


def _open_h5(path: Path) -> h5py.File:
    return h5py.File(path, "w", libver=HDF5_LIBVER, track_order=False)


def _write_h5(h5: h5py.File, name: str, data: object, dtype: object = None) -> None:
    h5.create_dataset(name, data=data, dtype=dtype, track_times=False)


def _create_truth(h5: h5py.File, n: int, size: int) -> tuple[h5py.Dataset, h5py.Dataset]:
    opts = {"dtype": np.uint8, "compression": "gzip", "compression_opts": 4, "track_times": False}
    clean = h5.create_dataset("clean", shape=(n, size, size, 3), chunks=(1, size, size, 3), **opts)
    mask = h5.create_dataset("hair_mask", shape=(n, size, size), chunks=(1, size, size), **opts)
    return clean, mask


# ---------------------------------------------------------------------------------------------
# reading back: hair truth, images, the sample figure


class Truth:
    """Random access by image id to ``truth.hdf5``: (clean RGB, hair mask, has_hair)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._h5 = h5py.File(path, "r")
            ids = self._h5["ids"].asstr()[()]
            self._clean, self._mask = self._h5["clean"], self._h5["hair_mask"]
            self._has_hair = self._h5["has_hair"][()]
        except (OSError, KeyError) as exc:
            raise UserError(f"{path}: not a readable hair-truth file ({exc})") from None
        self.index = {image_id: i for i, image_id in enumerate(ids)}

    def get(self, image_id: str) -> tuple[NDArray[np.uint8], NDArray[np.uint8], bool] | None:
        """Truth for one image, or ``None`` when the file does not know the id."""
        i = self.index.get(image_id)
        if i is None:
            return None
        return self._clean[i], self._mask[i], bool(self._has_hair[i])

    def close(self) -> None:
        """Close the file."""
        self._h5.close()


@contextlib.contextmanager
def open_truth(path: str | Path | None) -> Iterator[Truth | None]:
    """Open ``truth.hdf5`` (or ``<dir>/truth.hdf5``); yields ``None`` when there is none."""
    if path is None:
        yield None
        return
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_FILE
    if not path.is_file():
        yield None
        return
    truth = Truth(path)
    try:
        yield truth
    finally:
        truth.close()


def read_image(images: h5py.File, isic_id: str) -> NDArray[np.uint8]:
    """Decode one image of an ISIC-2024 style ``train-image.hdf5`` (bytes or opaque scalar)."""
    return decode_image(images[isic_id][()], f"{images.filename} [{isic_id}]")


def plot_samples(data_dir: Path, path: Path, per_class: int = 16, seed: int = 0) -> None:
    """Save a grid of random benign (top) and melanoma (bottom) images from ``data_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = pd.read_csv(data_dir / METADATA_FILE)
    rng = np.random.default_rng(seed)
    with h5py.File(data_dir / TRUTH_FILE, "r") as truth:
        hair = dict(zip(truth["ids"].asstr()[()], truth["has_hair"][()], strict=True))
    cols = 8
    picks = []
    for label in (0, 1):
        ids = meta.loc[meta["target"] == label, "isic_id"].to_numpy()
        picks += [(i, label) for i in rng.choice(ids, min(per_class, len(ids)), replace=False)]
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.75))
    with h5py.File(data_dir / IMAGES_FILE, "r") as images:
        for ax, (isic_id, label) in zip(axes.flat, picks, strict=False):
            ax.imshow(read_image(images, isic_id))
            name = "melanoma" if label else "benign"
            ax.set_title(
                f"{name}{' +hair' if hair[isic_id] else ''}",
                fontsize=8,
                color="firebrick" if label else "black",
            )
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Synthetic dermoscopy: benign (top rows) vs melanoma (bottom rows)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def plot_not_generated(path: Path, source: str) -> None:
    """Save a small figure saying that no synthetic data was generated for ``source``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 1))
    ax.text(0.5, 0.5, f"no synthetic data: data.source is {source}", ha="center", va="center")
    ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
