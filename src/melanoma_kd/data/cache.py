"""HDF5 training cache: one file per split, fixed-size uint8 images, byte-identical on rerun.

Layout: ``images`` uint8 N×S×S×3 (one image per chunk), ``labels`` int8, ``ids``, ``patients``
and ``lesions`` (utf-8); attrs ``size``, ``split`` and ``inputs_hash`` (hash of the split table
and the preprocessed images it was built from). No timestamps, manifest order.

The cache is stored once at ``cache.size`` (≥ every model's input size). Teacher and student
views are made at this size and resized to each model's input size on the fly, so both see the
same augmented view and nothing upstream is computed twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path

UNLABELLED = -1  # label of a transfer-set image (stored as such in its cache file)

STR = h5py.string_dtype("utf-8")
REQUIRED = ("images", "labels", "ids", "patients")


def resize_shorter_center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (area interpolation), then centre-crop a square."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(rgb, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else rgb
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(out[top : top + size, left : left + size])


def write_split_cache(
    path: str | Path,
    rows: pd.DataFrame,
    images: Iterable[np.ndarray],
    size: int,
    split: str,
    inputs_hash: str,
) -> None:
    """Write one split's cache atomically. ``images`` are already ``size``×``size``×3 uint8.

    ``images`` may be a lazy iterable: each image is written as it arrives, so memory stays at
    one image whatever the split's size (ISIC-2024 has 400k images).
    """
    n = len(rows)
    written = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="v110", track_order=False) as h5:
        ds = h5.create_dataset(
            "images",
            shape=(n, size, size, 3),
            dtype=np.uint8,
            chunks=(1, size, size, 3) if n else None,  # an empty transfer set has no chunk
            track_times=False,
        )
        for i, img in enumerate(images):
            if i >= n:
                raise ValueError(f"{path}: more images than the {n} rows")
            if img.shape != (size, size, 3) or img.dtype != np.uint8:
                raise UserError(
                    f"image {rows['image_id'].iloc[i]}: expected {size}x{size}x3 uint8, "
                    f"got {img.shape} {img.dtype}"
                )
            ds[i] = img
            written += 1
        if written != n:
            raise ValueError(f"{path}: {written} images for {n} rows")
        h5.create_dataset("labels", data=rows["label"].to_numpy(np.int8), track_times=False)
        for name, col in (
            ("ids", "image_id"),
            ("patients", "patient_id"),
            ("lesions", "lesion_id"),
        ):
            h5.create_dataset(
                name, data=rows[col].astype(str).to_numpy(), dtype=STR, track_times=False
            )
        h5.attrs["size"] = size
        h5.attrs["split"] = split
        h5.attrs["inputs_hash"] = inputs_hash


def build_caches(
    splits: pd.DataFrame,
    dehaired: str | Path,
    out_dir: str | Path,
    size: int,
    inputs_hash: str,
    extra_train: tuple[pd.DataFrame, str | Path] | None = None,
) -> dict[str, int]:
    """Resize every preprocessed image once and write ``<out_dir>/<split>.h5`` for each split.

    ``extra_train`` = (rows, PNG store) appends generated training images (e.g. the kept
    synthetic positives) to the train split only. The directory appears only once all three
    files are complete.
    """
    from melanoma_kd.data.preprocessed import open_preprocessed

    counts = {}
    with open_preprocessed(dehaired) as store, atomic_path(out_dir, directory=True) as tmp_dir:
        for split in ("train", "val", "holdout"):
            rows = splits[splits["split"] == split].reset_index(drop=True)
            sources = [(store, rows["image_id"])]
            with contextlib.ExitStack() as stack:
                if split == "train" and extra_train is not None and len(extra_train[0]):
                    extra_rows, extra_path = extra_train
                    sources.append(
                        (stack.enter_context(open_preprocessed(extra_path)), extra_rows["image_id"])
                    )
                    extra_rows = extra_rows[rows.columns.intersection(extra_rows.columns)]
                    rows = pd.concat([rows, extra_rows]).reset_index(drop=True)
                images = (
                    resize_shorter_center_crop(source.get(i), size)
                    for source, ids in sources
                    for i in ids
                )
                bar = tqdm(images, total=len(rows), desc=f"cache {split}", disable=None, unit="img")
                write_split_cache(tmp_dir / f"{split}.h5", rows, bar, size, split, inputs_hash)
            counts[split] = len(rows)
    return counts


def check_cache(path: str | Path) -> None:
    """Raise a one-line :class:`UserError` if ``path`` is not a complete cache file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: cache file not found")
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in REQUIRED if k not in h5]
            if missing:
                raise UserError(f"{path}: not a melanoma-kd cache (missing {', '.join(missing)})")
            n = h5["images"].shape[0]
            if (
                h5["images"].ndim != 4
                or h5["images"].shape[3] != 3
                or any(h5[k].shape[0] != n for k in REQUIRED)
            ):
                raise UserError(f"{path}: inconsistent cache shapes")
    except OSError as exc:
        raise UserError(f"{path}: unreadable or truncated HDF5 file ({exc})") from None
