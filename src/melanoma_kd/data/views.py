"""Batched augmented views: parameters per view, pixels per batch, on the batch's device.

A training view of sample ``i`` in epoch ``e`` is a pure function of ``(seed, e, i)``. Its
parameters (flip, rotation, scale, brightness, contrast, saturation, hue) are drawn on the CPU
from a generator seeded by :func:`view_seed` alone, so they never depend on batch composition,
sample order, worker count or what ran before. The pixels of a whole batch are then made with
tensor ops on whatever device holds the batch: one affine sampling grid built from the
per-sample matrices and one ``grid_sample`` call (bilinear, zero fill), followed by brightness →
contrast → saturation → hue with per-sample factors, using torchvision v2's formulas broadcast
over the batch. Every op is per-pixel or a per-image reduction accumulated in float64, so a view
is the same whichever batch it is made in.

:func:`reference_view` is the same definition written per sample with
``torchvision.transforms.v2.functional``; the tests hold the batched path to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from melanoma_kd.config import AugmentParams

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale uses them
_LUMA = (0.2989, 0.587, 0.114)
_DRAWS = 7  # uniforms per view: flip, angle, scale, brightness, contrast, saturation, hue


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch, index)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ViewParams(NamedTuple):
    """Per-view parameters, each a 1-D float64 CPU tensor with one entry per view."""

    flip: torch.Tensor  # bool: horizontal flip before the affine warp
    angle: torch.Tensor  # degrees, clockwise (torchvision affine's convention)
    scale: torch.Tensor
    brightness: torch.Tensor  # factors as torchvision's adjust_* take them
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # shift in turns, in [-0.5, 0.5]

    def row(self, k: int) -> ViewParams:
        """The parameters of view ``k`` alone (each field a 1-element tensor)."""
        return ViewParams(*(t[k : k + 1] for t in self))


def _jitter_factor(u: torch.Tensor, strength: float) -> torch.Tensor:
    """Uniform on ``[max(0, 1 - strength), 1 + strength]`` (torchvision ColorJitter's range)."""
    lo = max(0.0, 1.0 - strength)
    return lo + (1.0 + strength - lo) * u


def draw_view_params(
    p: AugmentParams, seed: int, epoch: int, indices: Sequence[int] | torch.Tensor
) -> ViewParams:
    """The parameters of views ``(seed, epoch, i)`` for ``i`` in ``indices``: row ``k`` depends
    on ``(seed, epoch, indices[k])`` only."""
    keys = indices.tolist() if torch.is_tensor(indices) else list(indices)
    u = torch.empty((len(keys), _DRAWS), dtype=torch.float64)
    gen = torch.Generator()
    for k, index in enumerate(keys):
        gen.manual_seed(view_seed(seed, epoch, int(index)))
        torch.rand(_DRAWS, generator=gen, dtype=torch.float64, out=u[k])
    return ViewParams(
        flip=u[:, 0] < p.hflip,
        angle=p.rotation * (2.0 * u[:, 1] - 1.0),
        scale=p.scale_min + (p.scale_max - p.scale_min) * u[:, 2],
        brightness=_jitter_factor(u[:, 3], p.brightness),
        contrast=_jitter_factor(u[:, 4], p.contrast),
        saturation=_jitter_factor(u[:, 5], p.saturation),
        hue=p.hue * (2.0 * u[:, 6] - 1.0),
    )


# --- batched ops on float NCHW in [0, 1]; factors are (N,) tensors on the batch's device ----------


def _affine_columns(vp: ViewParams, height: int, width: int) -> torch.Tensor:
    """N×2×2 float64: the columns (t00, t10) and (t01, t11) of each view's normalised matrix."""
    rad = torch.deg2rad(vp.angle)
    cos, sin = torch.cos(rad) / vp.scale, torch.sin(rad) / vp.scale
    sign = torch.where(vp.flip, -1.0, 1.0)  # flipping first negates the sampled x
    # the pixel-space inverse matrix, rescaled by the aspect ratio to normalised coordinates
    col_x = torch.stack((sign * cos, -sin * (width / height)), dim=1)
    col_y = torch.stack((sign * sin * (height / width), cos), dim=1)
    return torch.stack((col_x, col_y), dim=1)


def _grid(columns: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """x·(t00, t10) + y·(t01, t11) over the output pixel centres x, y in [-1, 1]."""
    device, dtype = columns.device, columns.dtype
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    col_x, col_y = columns.view(-1, 2, 1, 1, 2).unbind(dim=1)
    return ys.view(1, height, 1, 1) * col_y + xs.view(1, 1, width, 1) * col_x


def affine_grid(vp: ViewParams, height: int, width: int, device: torch.device) -> torch.Tensor:
    """``grid_sample`` grid (N×H×W×2 float32, align_corners=False) of flip-then-rotate/scale
    about the centre, with torchvision's inverse matrix ``[[cos, sin], [-sin, cos]] / scale``.

    This is ``F.affine_grid`` written out per element (x' = t00·x + t01·y): a batched matmul may
    pick a different kernel for a different batch size, an elementwise product cannot."""
    columns = _affine_columns(vp, height, width).to(device=device, dtype=torch.float32)
    return _grid(columns, height, width)


def _per_image(factor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return factor.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze_(1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: ``ratio·x + (1 − ratio)·other``, clamped to [0, 1]."""
    return x.mul(ratio).add_(other * (1.0 - ratio)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Batched ``adjust_brightness`` with one factor per image."""
    return x.mul(_per_image(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Batched ``adjust_contrast``: blend with each image's mean grey level (summed in float64,
    so the mean is the same whatever the batch size or thread count)."""
    mean = _grayscale(x).sum(dim=(-2, -1), dtype=torch.float64, keepdim=True)
    mean = mean.div_(x.shape[-2] * x.shape[-1]).to(x.dtype)
    return _blend(x, mean, _per_image(factor, x))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Batched ``adjust_saturation``: blend each pixel with its own grey level."""
    return _blend(x, _grayscale(x), _per_image(factor, x))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Batched ``adjust_hue``: rotate the HSV hue by ``shift`` turns, keeping S and V.

    The hue is torchvision's (``_rgb_to_hsv``), with its tie-breaking (R, then G, wins as the
    maximum). The way back is the closed form of torchvision's ``_hsv_to_rgb``: channel ``n`` is
    ``min + C·clamp(6·d_n − 1, 0, 1)``, where C = max − min = V·S and ``d_n`` is the circular
    distance (in turns) from the new hue to the hue where that channel is smallest — 1/2, 5/6 and
    1/6 for R, G and B. Comparisons write float masks and selections are ``lerp``s: on the CPU
    ``where``, ``remainder`` and bool tensors are several times slower than arithmetic.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    r_max = torch.eq(maxc, r, out=torch.empty_like(maxc))  # 1.0 / 0.0
    g_max = torch.eq(maxc, g, out=torch.empty_like(maxc))
    # C × hue in sixths: g − b where R is the max, else b − r + 2C where G is, else r − g + 4C
    num = torch.lerp(
        torch.add(r - g, chroma, alpha=4.0), torch.add(b - r, chroma, alpha=2.0), g_max
    )
    num = torch.lerp(num, g - b, r_max)
    # where C = 0 the numerator is 0 too, so any positive divisor gives hue 0 (as torchvision)
    turns = num.div_(chroma.clamp_min(1e-12)).mul_(1.0 / 6.0)
    turns = turns.add_(_per_image(shift, x)[:, 0]).unsqueeze_(1)  # N×1×H×W
    lowest = torch.tensor([1 / 2, 5 / 6, 1 / 6], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    d = turns - lowest
    d = d.sub_(torch.round(d)).abs_()  # circular distance in turns, in [0, 1/2]
    w = d.mul_(6.0).sub_(1.0).clamp_(0.0, 1.0)
    return w.mul_(chroma.unsqueeze(1)).add_(minc.unsqueeze(1))


# On the CPU a batch is made a few images at a time (at least one), so the intermediates of
# every op stay in the core's cache; each view is the same either way.
CPU_CHUNK_PIXELS = 1 << 15


def _views(
    images: torch.Tensor, columns: torch.Tensor, factors: torch.Tensor, p: AugmentParams
) -> torch.Tensor:
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    grid = _grid(columns, x.shape[-2], x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness, contrast, saturation, hue = factors.unbind(dim=1)
    if p.brightness > 0:
        x = adjust_brightness(x, brightness)
    if p.contrast > 0:
        x = adjust_contrast(x, contrast)
    if p.saturation > 0:
        x = adjust_saturation(x, saturation)
    if p.hue > 0:
        x = adjust_hue(x, hue)
    return x


def apply_views(images: torch.Tensor, vp: ViewParams, p: AugmentParams) -> torch.Tensor:
    """The views ``vp`` of a batch: uint8 (or float in [0, 1]) N×3×H×W → float32 in [0, 1] on
    the same device. Colour ops whose strength is 0 are identities and are skipped."""
    n, _, height, width = images.shape
    if len(vp.flip) != n:
        raise ValueError(f"{n} images but {len(vp.flip)} sets of view parameters")
    to_device = {"device": images.device, "dtype": torch.float32}
    columns = _affine_columns(vp, height, width).to(**to_device)
    factors = torch.stack((vp.brightness, vp.contrast, vp.saturation, vp.hue), dim=1)
    factors = factors.to(**to_device)
    step = n if images.device.type != "cpu" else max(1, CPU_CHUNK_PIXELS // (height * width))
    if step >= n:
        return _views(images, columns, factors, p)
    out = torch.empty(images.shape, dtype=torch.float32)
    for start in range(0, n, step):
        part = slice(start, start + step)
        out[part] = _views(images[part], columns[part], factors[part], p)
    return out


class BatchAugment:
    """The training augmentation: ``augment(images, seed, epoch, indices)`` is the batch of views
    ``(seed, epoch, indices[k])`` of ``images[k]``, made on ``images.device``."""

    def __init__(self, params: AugmentParams) -> None:
        self.params = params

    def __call__(
        self, images: torch.Tensor, seed: int, epoch: int, indices: Sequence[int] | torch.Tensor
    ) -> torch.Tensor:
        return apply_views(images, draw_view_params(self.params, seed, epoch, indices), self.params)

    def __repr__(self) -> str:
        return f"BatchAugment({self.params!r})"


def reference_view(image: torch.Tensor, vp: ViewParams, p: AugmentParams) -> torch.Tensor:
    """The per-sample definition of one view (``vp`` has one row), with torchvision v2's
    functional ops on a float CHW image: flip → affine (bilinear, zero fill) → brightness →
    contrast → saturation → hue."""
    x = TF.to_dtype(image, torch.float32, scale=True)
    if bool(vp.flip[0]):
        x = TF.horizontal_flip(x)
    x = TF.affine(
        x,
        angle=float(vp.angle[0]),
        translate=[0.0, 0.0],
        scale=float(vp.scale[0]),
        shear=[0.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
    )
    if p.brightness > 0:
        x = TF.adjust_brightness(x, float(vp.brightness[0]))
    if p.contrast > 0:
        x = TF.adjust_contrast(x, float(vp.contrast[0]))
    if p.saturation > 0:
        x = TF.adjust_saturation(x, float(vp.saturation[0]))
    if p.hue > 0:
        x = TF.adjust_hue(x, float(vp.hue[0]))
    return x


__all__ = [
    "BatchAugment",
    "ViewParams",
    "apply_views",
    "draw_view_params",
    "reference_view",
    "view_seed",
]
