"""torchvision v2 transforms: the augmented view and the model-input step.

A training view of sample ``i`` in epoch ``e`` is a pure function of ``(seed, e, i)``: the RNG is
seeded from that triple inside a forked RNG scope, so the view never depends on worker count,
sample order or what ran before. Views are made at cache resolution; :func:`model_input` then
resizes to a model's input size and normalises — so a teacher at 256 px and a student at 224 px
see the same view.
"""

from __future__ import annotations

import hashlib

import torch
from torchvision.transforms import v2

from melanoma_kd.config import AugmentParams


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch, index)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def build_augment(p: AugmentParams) -> v2.Transform:
    """Train-time augmentation on a uint8 CHW tensor (flip, rotation, scale, colour jitter)."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p.hflip),
            v2.RandomAffine(degrees=p.rotation, scale=(p.scale_min, p.scale_max)),
            v2.ColorJitter(
                brightness=p.brightness, contrast=p.contrast, saturation=p.saturation, hue=p.hue
            ),
        ]
    )


def augmented_view(
    image: torch.Tensor, augment: v2.Transform, seed: int, epoch: int, index: int
) -> torch.Tensor:
    """Apply ``augment`` to a uint8 CHW image with the RNG fixed by ``(seed, epoch, index)``."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(view_seed(seed, epoch, index))  # CPU RNG only
        return augment(image)


def model_input(
    images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 (N)CHW → float, resized to ``size`` if needed, normalised."""
    x = images.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = v2.functional.resize(x, [size, size], antialias=True)
    return v2.functional.normalize(x, list(mean), list(std))
