"""The training augmentation and the model-input step.

A training view of sample ``i`` in epoch ``e`` is a pure function of ``(seed, e, i)``:
:class:`~melanoma_kd.data.views.BatchAugment` draws each view's parameters from that triple alone
and makes a whole batch of views with tensor ops on the batch's device (``views.py``). Views are
made at cache resolution; :func:`model_input` then resizes to a model's input size and
normalises — so a teacher at 256 px and a student at 224 px see the same view.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from melanoma_kd.config import AugmentParams
from melanoma_kd.data.views import BatchAugment, view_seed

__all__ = ["BatchAugment", "augmented_view", "build_augment", "model_input", "view_seed"]


def build_augment(p: AugmentParams) -> BatchAugment:
    """Train-time augmentation (flip, rotation, scale, colour jitter), applied per batch."""
    return BatchAugment(p)


def augmented_view(
    image: torch.Tensor, augment: BatchAugment, seed: int, epoch: int, index: int
) -> torch.Tensor:
    """View ``(seed, epoch, index)`` of one uint8 CHW image, as float CHW in [0, 1] — the same
    tensor as row ``k`` of ``augment(batch, seed, epoch, indices)`` when ``indices[k] == index``."""
    return augment(image[None], seed, epoch, [index])[0]


def model_input(
    images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 (N)CHW, or float views in [0, 1] → float, resized to ``size`` if needed, normalised."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = v2.functional.resize(x, [size, size], antialias=True)
    return v2.functional.normalize(x, list(mean), list(std))
