"""Run the chosen teacher once over exactly the augmented views the student will see.

For every epoch ``e`` and train index ``i`` the view is ``augmented_view(seed, e, i)`` (pure), so
storing the teacher's logits and pooled stage features per (e, i) lets every KD grid point train
without ever executing the teacher. The teacher sees the view at its own input size. The transfer
set's views follow the train split's (indices ``n_train..``), computed in the same pass.

The file stores float16 (:data:`STORED_DTYPE`): half the disk of float32 (at the ISIC-2024
recipe's scale with SwinV2 feature taps, tens of GB), with a relative rounding error of at most
2⁻¹¹; the reader (:class:`melanoma_kd.train.TeacherOutputs`) returns float32. ``dtype``
float32 keeps full precision (``benchmarks/teacher_outputs_precision.py`` compares the two).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from melanoma_kd.data.dataset import CacheDataset, training_set
from melanoma_kd.data.transforms import model_input
from melanoma_kd.distill import pooled_taps
from melanoma_kd.errors import UserError
from melanoma_kd.inference import default_device
from melanoma_kd.io import atomic_path
from melanoma_kd.models.build import load_checkpoint
from melanoma_kd.selection import read_best_teacher

STORED_DTYPE = np.float16


def to_stored(values: torch.Tensor, what: str, dtype: type = STORED_DTYPE) -> np.ndarray:
    """``values`` as ``dtype`` (default :data:`STORED_DTYPE`); a finite value beyond its range
    is a :class:`UserError` (it would be stored as infinity)."""
    out = values.float().numpy()
    top = float(np.finfo(dtype).max)
    if np.abs(out[np.isfinite(out)]).max(initial=0.0) > top:
        raise UserError(
            f"teacher {what} exceed the {np.dtype(dtype).name} range (|x| > {top:g}); "
            "the teacher checkpoint is unusable for KD"
        )
    return out.astype(dtype)


def choose_teacher(choice: str, archs: list[str], best_teacher: str | Path) -> str:
    """``choice`` (``distill.teacher``) if it names a trained teacher, or for ``best`` the
    teacher the select_teacher stage recorded in ``best_teacher``
    (:func:`melanoma_kd.selection.read_best_teacher`; the record is read only then)."""
    if choice != "best":
        if choice not in archs:
            raise UserError(f"distill.teacher: {choice!r} is not in teachers.archs {archs}")
        return choice
    return read_best_teacher(best_teacher, archs)


@torch.inference_mode()
def compute_teacher_outputs(
    checkpoint: str | Path,
    train_cache: str | Path,
    augment: object,
    seed: int,
    epochs: int,
    n_stages: int,
    out_path: str | Path,
    batch_size: int = 128,
    transfer_cache: str | Path | None = None,
    dtype: type = STORED_DTYPE,
) -> dict[str, int | str]:
    """Write ``logits`` (E×N×2) and ``features_k`` (E×N×C_k), as ``dtype`` (the pipeline's
    float16 unless given), to ``out_path``.

    N covers the train split and then, when ``transfer_cache`` is given, the transfer set."""
    model, meta = load_checkpoint(checkpoint)
    device = default_device()
    model.to(device)
    size, mean, std = int(meta["image_size"]), tuple(meta["mean"]), tuple(meta["std"])
    ds = training_set(train_cache, augment, seed, transfer_cache)
    n = len(ds)
    n_train = len(CacheDataset(train_cache))
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w", libver="v110") as h5:
        logits_ds = None
        feats_ds: list[h5py.Dataset] = []
        for epoch in tqdm(range(epochs), desc=f"teacher outputs ({meta['arch']})", disable=None):
            ds.set_epoch(epoch)
            for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0):
                idx = batch["index"].numpy()
                views = ds.views(batch["image"].to(device), batch["index"])
                x = model_input(views, size, mean, std)
                logits, feats = pooled_taps(model, x, n_stages)
                logits, feats = logits.cpu(), [f.cpu() for f in feats]
                if logits_ds is None:
                    logits_ds = h5.create_dataset(
                        "logits", (epochs, n, 2), dtype, track_times=False
                    )
                    feats_ds = [
                        h5.create_dataset(
                            f"features_{k}",
                            (epochs, n, f.shape[1]),
                            dtype,
                            track_times=False,
                        )
                        for k, f in enumerate(feats)
                    ]
                logits_ds[epoch, idx[0] : idx[-1] + 1] = to_stored(logits, "logits", dtype)
                for d, f in zip(feats_ds, feats, strict=True):
                    d[epoch, idx[0] : idx[-1] + 1] = to_stored(f, "features", dtype)
        h5.attrs["teacher_arch"] = meta["arch"]
        h5.attrs["teacher_image_size"] = size
        h5.attrs["n_features"] = len(feats_ds)
        h5.attrs["feature_dims"] = [d.shape[2] for d in feats_ds]
        h5.attrs["epochs"] = epochs
        h5.attrs["seed"] = seed
        h5.attrs["n_train"] = n_train
        h5.attrs["n_transfer"] = n - n_train
    return {
        "teacher": meta["arch"],
        "epochs": epochs,
        "images": n,
        "train_images": n_train,
        "transfer_images": n - n_train,
    }


def teacher_feature_dims(path: str | Path) -> list[int]:
    """Widths of the cached teacher feature taps."""
    with h5py.File(path, "r") as h5:
        return [int(d) for d in h5.attrs["feature_dims"]]
