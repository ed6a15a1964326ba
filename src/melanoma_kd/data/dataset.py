"""PyTorch dataset over one HDF5 cache split, plus sampler and class weights from train only.

The file is opened lazily in whichever process reads it (h5py handles must not cross a fork)
and images are read one chunk at a time, so memory does not grow with the data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from melanoma_kd.data.cache import check_cache
from melanoma_kd.data.transforms import augmented_view
from melanoma_kd.errors import UserError


class CacheDataset(Dataset):
    """Items are ``{"image": uint8 CHW, "label": int, "index": int}``.

    With ``augment`` set, ``set_epoch(e)`` selects the epoch and the view of item ``i`` is a
    pure function of ``(seed, e, i)``.
    """

    def __init__(self, path: str | Path, augment: Any = None, seed: int = 0) -> None:
        self.path = Path(path)
        check_cache(self.path)
        with h5py.File(self.path, "r") as h5:
            self.labels = h5["labels"][()].astype(np.int64)
            self.ids = h5["ids"].asstr()[()].tolist()
            self.patients = h5["patients"].asstr()[()].tolist()
            self.size = int(h5["images"].shape[1])
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._h5: h5py.File | None = None
        self._images: h5py.Dataset | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmented views ``__getitem__`` returns."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = state["_images"] = None  # never ship an open handle to a worker
        return state

    def read(self, index: int) -> torch.Tensor:
        """The stored (un-augmented) image as uint8 CHW."""
        if self._images is None:
            self._h5 = h5py.File(self.path, "r")
            self._images = self._h5["images"]
        try:
            arr = self._images[index]
        except OSError as exc:
            raise UserError(f"{self.path}: unreadable image {index} ({exc})") from None
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.read(index)
        if self.augment is not None:
            image = augmented_view(image, self.augment, self.seed, self.epoch, index)
        return {"image": image, "label": int(self.labels[index]), "index": index}


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights ``N / (2 n_c)`` from the training labels."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise UserError("train split has an empty class; cannot compute class weights")
    return torch.tensor(len(labels) / (2.0 * counts), dtype=torch.float32)


def balanced_sampler(labels: np.ndarray, seed: int) -> WeightedRandomSampler:
    """Sampler drawing both classes equally often (seeded); epoch length = len(labels)."""
    weights = class_weights(labels).numpy()[labels]
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights.tolist(), num_samples=len(labels), replacement=True, generator=gen
    )
