"""Build classifiers by name through timm and save/load self-describing checkpoints.

A checkpoint carries the arch, input size and normalisation, so any later stage rebuilds the model
from the file alone. Pretrained weights only ever come from a local file; nothing is downloaded.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path

log = logging.getLogger(__name__)

NUM_CLASSES = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pth")


def check_arch(arch: str) -> None:
    """Raise :class:`UserError` if timm does not know ``arch``."""
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError(f"unknown timm architecture {arch!r}{hint}")


def local_weights(arch: str, weights_dir: str | Path | None) -> Path | None:
    """Path of ``<weights_dir>/<arch>.safetensors|.pth`` if present, else ``None``."""
    if weights_dir is None:
        return None
    for suffix in WEIGHT_SUFFIXES:
        path = Path(weights_dir) / f"{arch}{suffix}"
        if path.is_file():
            return path
    return None


def build_model(arch: str, weights_dir: str | Path | None = None) -> tuple[nn.Module, bool]:
    """Create ``arch`` with a 2-class head; load local pretrained weights when present.

    Returns ``(model, pretrained)``. Without a local file the model is randomly initialised and
    the caller records ``pretrained: false``.
    """
    check_arch(arch)
    weights = local_weights(arch, weights_dir)
    if weights is None:
        log.info("%s: no local weights in %s, random initialisation", arch, weights_dir)
        return timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES), False
    try:
        model = timm.create_model(
            arch,
            pretrained=True,
            num_classes=NUM_CLASSES,
            pretrained_cfg_overlay={"file": str(weights)},
        )
    except Exception as exc:  # timm raises many kinds on a bad file
        raise UserError(f"{weights}: cannot load pretrained weights for {arch} ({exc})") from None
    log.info("%s: pretrained weights from %s", arch, weights)
    return model, True


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Atomically save ``state_dict`` plus metadata (arch, image_size, mean, std, ...)."""
    required = {"arch", "image_size"}
    if not required <= meta.keys():
        raise ValueError(f"checkpoint metadata needs {sorted(required)}")
    payload = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **meta}
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Serialise in memory: saving to the (randomly named) temporary path would embed that name
    # in the zip archive and make identical checkpoints differ byte-wise.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint file alone (``weights_only=True``); eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable checkpoint ({exc})") from None
    state = payload.pop("state_dict")
    check_arch(payload["arch"])
    model = timm.create_model(payload["arch"], pretrained=False, num_classes=NUM_CLASSES)
    model.load_state_dict(state)
    model.eval()
    return model, payload
