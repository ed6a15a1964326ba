"""Batch scoring: P(melanoma) for every image of a cache split, from a model or a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import model_input
from melanoma_kd.models.build import load_checkpoint


def default_device() -> torch.device:
    """CUDA when present, else CPU (tests never need a GPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    dataset: CacheDataset,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits (N×2, float32, CPU) for the un-augmented images of ``dataset`` in order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    out = []
    for batch in loader:
        x = model_input(batch["image"], image_size, mean, std).to(device, non_blocking=True)
        out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """P(melanoma) from 2-class logits."""
    return torch.softmax(logits.double(), dim=1)[:, 1].numpy()


def score_checkpoint(
    checkpoint: str | Path, cache: str | Path, batch_size: int = 256
) -> pd.DataFrame:
    """``image_id, label, score, patient_id`` for one cache split scored by a checkpoint."""
    return score_checkpoint_splits(checkpoint, [cache], batch_size)[0]


def score_checkpoint_splits(
    checkpoint: str | Path, caches: Sequence[str | Path], batch_size: int = 256
) -> list[pd.DataFrame]:
    """:func:`score_checkpoint` of each of ``caches``, with the model loaded once."""
    model, meta = load_checkpoint(checkpoint)
    frames = []
    for cache in caches:
        ds = CacheDataset(cache)
        logits = predict_logits(
            model, ds, int(meta["image_size"]), tuple(meta["mean"]), tuple(meta["std"]), batch_size
        )
        frames.append(
            pd.DataFrame(
                {
                    "image_id": ds.ids,
                    "label": ds.labels,
                    "score": probabilities(logits),
                    "patient_id": ds.patients,
                }
            )
        )
    return frames
