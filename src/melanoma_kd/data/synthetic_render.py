"""Drawing synthetic dermoscopy: a lesion's visual traits → the lesion layer → one view.

The picture model of :mod:`melanoma_kd.data.synthetic` (which draws the cohort and writes the
data set). A lesion draws a latent *atypia* from a class-dependent Beta distribution (the two
classes overlap); every visual trait — asymmetry, border irregularity, extra colours such as
black blotches and a blue-grey veil, diameter, atypical pigment network, irregular dots, abrupt
edge — is the atypia plus its own noise (:func:`draw_traits`). The lesion is drawn once in its
own frame (:func:`render_lesion`); each view (:func:`render_view`) places it on skin with its own
rotation, scale, position and lighting, adds curved hairs of one type when asked (dark, thin,
grey or blond: :data:`HAIR_STYLES`, :func:`hair_layer`), a ruler's ink marks
(:func:`ruler_layer`) and air bubbles (:func:`bubble_layers`), and the dermoscope's vignette, and
returns the truth with it (:class:`View`): the image without hairs and ruler ink (bubbles are not
removed), the mask of pixels to remove, a per-pixel artefact label and the lesion mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

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
# one lesion, drawn once in its own frame ("canonical"), then placed in each view


def draw_traits(rng: np.random.Generator, malignant: bool) -> Traits:
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


@dataclass(frozen=True)
class HairStyle:
    """How one hair type is drawn: hairs per image, width (px) and colour range.

    ``tint`` is the colour at full darkness ``lo`` .. ``hi`` (one uniform draw scales ``tint``),
    so the dark type draws exactly what the generator always drew.
    """

    count: tuple[int, int]
    width: tuple[float, float]
    level: tuple[float, float]
    tint: tuple[float, float, float]


# Hair types, in the order of their codes in the truth (code 0 = no hair). Blond and grey hairs
# are lighter than dark skin and lesions, so a dark-structure detector cannot see them there.
HAIR_STYLES: dict[str, HairStyle] = {
    "dark": HairStyle((2, 14), (0.45, 1.5), (0.03, 0.2), (1.0, 0.82, 0.7)),
    "thin": HairStyle((3, 16), (0.25, 0.55), (0.03, 0.2), (1.0, 0.82, 0.7)),
    "grey": HairStyle((2, 12), (0.4, 1.2), (0.38, 0.62), (1.0, 0.99, 0.97)),
    "blond": HairStyle((2, 12), (0.4, 1.2), (0.72, 0.9), (1.0, 0.8, 0.5)),
}
HAIR_TYPES = tuple(HAIR_STYLES)
# Per-pixel artefact codes of the truth's ``artefact`` map: hair types 1..4, then these.
RULER, BUBBLE = len(HAIR_TYPES) + 1, len(HAIR_TYPES) + 2
ARTEFACT_NAMES = ("none", *HAIR_TYPES, "ruler", "bubble")


def hair_layer(
    rng: np.random.Generator, size: int, style: HairStyle = HAIR_STYLES["dark"]
) -> Float:
    """Coverage (0..1) of a few thin, curved hairs of varying width and darkness."""
    big = size * SUPERSAMPLE
    cover = np.zeros((big, big), np.uint8)
    for _ in range(int(rng.integers(*style.count))):
        canvas = np.zeros((big, big), np.uint8)
        p0 = rng.uniform(-0.1, 1.1, 2) * big
        direction = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.3, 1.2) * big
        step = np.array([math.cos(direction), math.sin(direction)]) * length
        normal = np.array([-step[1], step[0]])
        p1 = p0 + step / 3 + normal * rng.normal(0, 0.18)
        p2 = p0 + 2 * step / 3 + normal * rng.normal(0, 0.18)
        pts = np.rint(_bezier(p0, p1, p2, p0 + step, 32)).astype(int)
        width = rng.uniform(*style.width) * SUPERSAMPLE
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


def ruler_layer(rng: np.random.Generator, size: int) -> Float:
    """Coverage (0..1) of a ruler's ink: a straight line off-centre with a tick every ~1 mm
    (every 5th one longer), as printed on a dermoscope's contact plate."""
    big = size * SUPERSAMPLE
    canvas = np.zeros((big, big), np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    normal = np.array([math.cos(angle), math.sin(angle)])
    along = np.array([-normal[1], normal[0]])
    centre = big / 2 + normal * big * rng.uniform(0.22, 0.4)
    half = big * rng.uniform(0.3, 0.5)
    width = max(1, round(rng.uniform(0.5, 0.9) * SUPERSAMPLE))
    shade = round(255 * rng.uniform(0.8, 1.0))

    def line(a: NDArray, b: NDArray) -> None:
        pa, pb = np.rint(a).astype(int), np.rint(b).astype(int)
        cv2.line(canvas, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), shade, width, 16)

    line(centre - half * along, centre + half * along)
    pitch = big * rng.uniform(0.045, 0.065)
    tick = big * 0.03
    for k in range(int(2 * half / pitch) + 1):
        at = centre - half * along + k * pitch * along
        line(at, at - normal * tick * (2.0 if k % 5 == 0 else 1.0))
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def bubble_layers(rng: np.random.Generator, size: int) -> tuple[Float, Float, Float, Float]:
    """Air bubbles in the immersion fluid: (disc, dark rim, specular highlight) coverages, each
    0..1, and the per-pixel brightening inside the discs."""
    big = size * SUPERSAMPLE
    disc, rim, spec = (np.zeros((big, big), np.uint8) for _ in range(3))
    for _ in range(int(rng.integers(1, 6))):
        r = rng.uniform(0.025, 0.09) * big
        c = rng.uniform(0.15, 0.85, 2) * big
        centre = (round(c[0]), round(c[1]))
        cv2.circle(disc, centre, round(r), 255, -1, cv2.LINE_AA)
        cv2.circle(rim, centre, round(r), 255, max(1, round(0.7 * SUPERSAMPLE)), cv2.LINE_AA)
        off = np.array([-0.4, -0.4]) * r
        cv2.circle(spec, (round(c[0] + off[0]), round(c[1] + off[1])), round(0.2 * r), 255, -1)
    small = [
        cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        for x in (disc, rim, spec)
    ]
    lift = np.float32(rng.uniform(0.03, 0.1)) * small[0]
    return small[0], small[1], small[2], lift


def _to_uint8(img: Float) -> NDArray[np.uint8]:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _with_bubbles(
    img: Float, bubble: tuple[Float, Float, Float, Float, np.float32] | None
) -> Float:
    """Bubbles over an image: a lighter disc, a dark rim and a specular highlight."""
    if bubble is None:
        return img
    _, rim, spec, lift, rim_dark = bubble
    img = img + lift[..., None] * (1 - img)
    img = img * (1 - rim_dark * rim[..., None])
    return img + 0.85 * spec[..., None] * (1 - img)


@dataclass(frozen=True)
class View:
    """One rendered image and its truth (all uint8, H×W[×3]).

    ``clean`` is what a perfect hair remover returns: the image without hairs and ruler ink
    (bubbles stay: they are not removed). ``hair_mask`` marks the pixels to remove (hairs and
    ruler ink covering >= ``HAIR_ALPHA_MIN`` of the pixel inside the field of view);
    ``artefact`` labels pixels by :data:`ARTEFACT_NAMES` code (hair over ruler over bubble);
    ``lesion`` marks the lesion (opacity >= 0.5 inside the field of view).
    """

    image: NDArray[np.uint8]
    clean: NDArray[np.uint8]
    hair_mask: NDArray[np.uint8]
    artefact: NDArray[np.uint8]
    lesion: NDArray[np.uint8]


def render_view(
    rng: np.random.Generator,
    lesion: tuple[Float, Float],
    skin_tone: tuple[float, float, float],
    size: int,
    hair_type: int,
    *,
    ruler: bool = False,
    bubbles: bool = False,
    artefact_rng: np.random.Generator | None = None,
) -> View:
    """One image of a lesion with hairs of type code ``hair_type`` (0 = none, else 1 +
    index in :data:`HAIR_TYPES`), and optionally a ruler and bubbles (drawn from
    ``artefact_rng``, so images without them are the same whatever those settings are)."""
    colour, alpha = _place(*lesion, rng, size)
    scene = _skin(rng, skin_tone, size)
    scene = scene * (1 - alpha[..., None]) + colour * alpha[..., None]
    scene = scene * _lighting(rng, size)
    grain = rng.normal(0, 0.01, scene.shape).astype(np.float32)
    field = _vignette(rng, size)
    floor = np.float32(rng.uniform(0.01, 0.05))
    inside = field >= 0.5
    lesion_mask = ((alpha >= 0.5) & inside).astype(np.uint8)
    artefact = np.zeros((size, size), np.uint8)
    remove = np.zeros((size, size), bool)
    if (ruler or bubbles) and artefact_rng is None:
        raise ValueError("rulers and bubbles need artefact_rng")

    def finish(img: Float) -> NDArray[np.uint8]:
        return _to_uint8((img + grain) * field[..., None] + floor * (1 - field[..., None]))

    bubble = None
    if bubbles:
        bubble = (*bubble_layers(artefact_rng, size), np.float32(artefact_rng.uniform(0.12, 0.25)))
        artefact[(bubble[0] >= 0.5) & inside] = BUBBLE

    dirty = scene
    if ruler:
        ink = ruler_layer(artefact_rng, size)
        colour_ink = artefact_rng.uniform(0.03, 0.2) * np.array([0.9, 0.9, 1.0], np.float32)
        dirty = dirty * (1 - ink[..., None]) + colour_ink * ink[..., None]
        hit = (ink >= HAIR_ALPHA_MIN) & inside
        artefact[hit] = RULER
        remove |= hit
    if hair_type:
        style = HAIR_STYLES[HAIR_TYPES[hair_type - 1]]
        cover = hair_layer(rng, size, style)
        tint = rng.uniform(*style.level) * np.array(style.tint, np.float32)
        dirty = dirty * (1 - cover[..., None]) + tint * cover[..., None]
        hit = (cover >= HAIR_ALPHA_MIN) & inside
        artefact[hit] = hair_type
        remove |= hit
    clean = finish(_with_bubbles(scene, bubble))
    image = finish(_with_bubbles(dirty, bubble)) if (ruler or hair_type) else clean
    return View(image, clean, remove.astype(np.uint8), artefact, lesion_mask)
