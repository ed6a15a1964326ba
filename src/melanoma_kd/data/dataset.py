"""PyTorch dataset over one HDF5 cache split, plus sampler and class weights from train only.

The file is opened lazily in whichever process reads it (h5py handles must not cross a fork)
and images are read one chunk at a time, so memory does not grow with the data set. Items are
the stored (un-augmented) uint8 images with their view index; a training set's
:meth:`CacheDataset.views` turns a loaded batch into that epoch's augmented views on the batch's
device, so loader workers only read and views never depend on worker count or batch makeup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, WeightedRandomSampler

from melanoma_kd.data.cache import UNLABELLED, check_cache
from melanoma_kd.data.views import BatchAugment
from melanoma_kd.errors import UserError


class CacheDataset(Dataset):
    """Items are ``{"image": uint8 CHW (as stored), "label": int, "index": int}``.

    With ``augment`` set, ``set_epoch(e)`` selects the epoch and :meth:`views` makes a batch's
    augmented views; the view of item ``i`` is a pure function of ``(seed, e, index)``.
    """

    def __init__(
        self,
        path: str | Path,
        augment: BatchAugment | None = None,
        seed: int = 0,
        index_offset: int = 0,
    ) -> None:
        self.path = Path(path)
        self.index_offset = index_offset  # item i is view/index ``index_offset + i``
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
        """Select the epoch whose augmented views :meth:`views` makes."""
        self.epoch = epoch

    def views(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """This epoch's views of a loaded batch (``batch["image"]``, ``batch["index"]``), made on
        ``images.device`` as float in [0, 1]; without ``augment`` the images unchanged."""
        if self.augment is None:
            return images
        return self.augment(images, self.seed, self.epoch, indices)

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
        key = self.index_offset + index
        return {"image": self.read(index), "label": int(self.labels[index]), "index": key}


class TrainWithTransfer(ConcatDataset):
    """The train split followed by the unlabelled transfer set, as one training set.

    Item ``i < len(train)`` is train item ``i``; the rest are transfer images with label
    :data:`UNLABELLED` (the task loss skips them, the distillation term does not). Views and
    ``index`` are keyed by the position in this concatenation, which is how the cached teacher
    outputs are laid out.
    """

    def __init__(self, train: CacheDataset, transfer: CacheDataset) -> None:
        if transfer.index_offset != len(train):
            raise ValueError("the transfer set must be indexed after the train split")
        labelled = np.flatnonzero(transfer.labels != UNLABELLED)
        if labelled.size:
            i = int(labelled[0])
            raise UserError(
                f"{transfer.path}: transfer-set image {transfer.ids[i]!r} has label "
                f"{int(transfer.labels[i])}, expected {UNLABELLED} (unlabelled); "
                f"{labelled.size} labelled rows in all"
            )
        super().__init__([train, transfer])
        self.n_train = len(train)
        self.seed = train.seed
        self.labels = np.concatenate([train.labels, np.full(len(transfer), UNLABELLED)])
        self.ids = train.ids + transfer.ids

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of both parts."""
        for part in self.datasets:
            part.set_epoch(epoch)

    def views(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """This epoch's views of a loaded batch; ``indices`` are positions in the concatenation
        (both parts share the augmentation and seed)."""
        return self.datasets[0].views(images, indices)


def training_set(
    train_cache: str | Path,
    augment: BatchAugment | None,
    seed: int,
    transfer_cache: str | Path | None = None,
) -> CacheDataset | TrainWithTransfer:
    """The train split's images, followed by the transfer set's when one is given; their
    augmented views come from ``.views`` per loaded batch."""
    train = CacheDataset(train_cache, augment=augment, seed=seed)
    if transfer_cache is None:
        return train
    transfer = CacheDataset(transfer_cache, augment=augment, seed=seed, index_offset=len(train))
    return TrainWithTransfer(train, transfer)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights ``N / (2 n_c)`` from the labelled training images."""
    labels = labels[labels != UNLABELLED]
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
