"""Data sources → one manifest (image_id, lesion_id, patient_id, label, source, location).

A registry maps ``data.source`` to a reader; adding a data set is one new reader function.
The synthetic data set is written in the ISIC-2024 layout, so the default pipeline exercises the
real ISIC-2024 reader. With ``data.max_negatives`` set, benign images are first subsampled by
whole patients (:func:`melanoma_kd.data.subsample.subsample_negatives`), so the images left out are
never read. Every kept image is decoded once at ingest; bad input fails with one line naming the
file/row/field (or is counted and reported when ``data.on_bad_image: skip``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from melanoma_kd.config import DataParams
from melanoma_kd.data.subsample import subsample_negatives
from melanoma_kd.data.tables import read_table
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import decode_image

MANIFEST_COLUMNS = ["image_id", "lesion_id", "patient_id", "label", "source", "location"]
ISIC_IMAGES = "train-image.hdf5"
ISIC_METADATA = "train-metadata.csv"
HAM_METADATA = "HAM10000_metadata.csv"


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    return read_table(path, "metadata file", required, empty_is_missing=True)


def _check_ids(df: pd.DataFrame, col: str, path: Path) -> None:
    empty = df[col].isna()
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0]) + 2  # header is line 1
        raise UserError(f"{path}: line {row}: empty {col}")
    dup = df[col].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0]) + 2
        raise UserError(f"{path}: line {row}: duplicate {col} {df[col].iloc[row - 2]!r}")


def _binary_labels(values: pd.Series, path: Path, field_name: str) -> np.ndarray:
    for i, v in enumerate(values):
        if v not in ("0", "1", "0.0", "1.0"):
            shown = "empty/NaN" if pd.isna(v) else repr(v)
            raise UserError(f"{path}: line {i + 2}: {field_name} must be 0 or 1 (got {shown})")
    return values.astype(float).astype(int).to_numpy()


def read_isic2024(params: DataParams, source: str) -> pd.DataFrame:
    """ISIC-2024 layout: ``train-image.hdf5`` (JPEG bytes keyed by isic_id) + metadata CSV."""
    root = Path(params.root)
    meta_path = root / ISIC_METADATA
    df = _read_csv(meta_path, ["isic_id", "patient_id", "target"])
    _check_ids(df, "isic_id", meta_path)
    labels = _binary_labels(df["target"], meta_path, "target")
    lesion = df["lesion_id"] if "lesion_id" in df.columns else pd.Series([np.nan] * len(df))
    lesion = lesion.where(lesion.notna(), df["isic_id"])  # no lesion id: its own lesion
    patient = df["patient_id"]
    if patient.isna().any():
        row = int(np.flatnonzero(patient.isna().to_numpy())[0]) + 2
        raise UserError(f"{meta_path}: line {row}: empty patient_id")
    images = root / ISIC_IMAGES
    if not images.is_file():
        raise UserError(f"{images}: image file not found")
    return pd.DataFrame(
        {
            "image_id": df["isic_id"],
            "lesion_id": lesion.astype(str),
            "patient_id": patient.astype(str),
            "label": labels,
            "source": source,
            "location": str(images),
        }
    )


def read_ham10000(params: DataParams, source: str) -> pd.DataFrame:
    """HAM10000 layout: ``HAM10000_metadata.csv`` + ``<image_id>.jpg`` under the image folders.

    Melanoma ⇔ ``dx == 'mel'``; HAM10000 has no patient id, so the lesion is the group.
    """
    root = Path(params.root)
    meta_path = root / HAM_METADATA
    df = _read_csv(meta_path, ["lesion_id", "image_id", "dx"])
    _check_ids(df, "image_id", meta_path)
    known = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    for i, dx in enumerate(df["dx"]):
        if dx not in known:
            shown = "empty/NaN" if pd.isna(dx) else repr(dx)
            raise UserError(f"{meta_path}: line {i + 2}: unknown dx {shown}")
    if df["lesion_id"].isna().any():
        row = int(np.flatnonzero(df["lesion_id"].isna().to_numpy())[0]) + 2
        raise UserError(f"{meta_path}: line {row}: empty lesion_id")
    dirs = [root / d for d in params.image_dirs]
    locations = []
    for image_id in df["image_id"]:
        found = next(
            (d / f"{image_id}.jpg" for d in dirs if (d / f"{image_id}.jpg").is_file()), None
        )
        locations.append(str(found) if found else "")
    return pd.DataFrame(
        {
            "image_id": df["image_id"],
            "lesion_id": df["lesion_id"],
            "patient_id": df["lesion_id"],
            "label": (df["dx"] == "mel").astype(int).to_numpy(),
            "source": source,
            "location": locations,
        }
    )


SOURCES: dict[str, Callable[[DataParams, str], pd.DataFrame]] = {
    "synthetic": read_isic2024,
    "isic2024": read_isic2024,
    "ham10000": read_ham10000,
}


@dataclass
class ImageStore:
    """Reads manifest images by id: HDF5 containers are opened lazily, once each."""

    locations: dict[str, str]
    _files: dict[str, h5py.File] = field(default_factory=dict)

    def raw(self, image_id: str) -> bytes:
        """Encoded bytes of one image."""
        loc = self.locations.get(image_id)
        if loc is None:
            raise UserError(f"image {image_id!r} is not in the manifest")
        if not loc:
            raise UserError(f"image {image_id}: file not found")
        if loc.endswith((".hdf5", ".h5")):
            h5 = self._files.get(loc)
            if h5 is None:
                try:
                    h5 = self._files[loc] = h5py.File(loc, "r")
                except OSError as exc:
                    raise UserError(f"{loc}: not a readable HDF5 file ({exc})") from None
            if image_id not in h5:
                raise UserError(f"{loc}: image {image_id} missing")
            value = h5[image_id][()]
            return value.tobytes() if isinstance(value, np.ndarray | np.void) else bytes(value)
        path = Path(loc)
        if not path.is_file():
            raise UserError(f"{path}: image file not found (image {image_id})")
        return path.read_bytes()

    def get(self, image_id: str) -> np.ndarray:
        """Decoded RGB uint8 image; :class:`UserError` naming the id and file if corrupt."""
        where = f"{self.locations.get(image_id, '?')} [{image_id}]"
        return decode_image(self.raw(image_id), where)

    def close(self) -> None:
        """Close any open HDF5 containers."""
        for h5 in self._files.values():
            h5.close()
        self._files.clear()


@contextlib.contextmanager
def open_images(manifest: pd.DataFrame) -> Iterator[ImageStore]:
    """Context manager giving an :class:`ImageStore` over a manifest's images."""
    store = ImageStore(dict(zip(manifest["image_id"], manifest["location"], strict=True)))
    try:
        yield store
    finally:
        store.close()


def build_manifest(params: DataParams) -> tuple[pd.DataFrame, dict]:
    """Read ``params.source``, subsample its benign images if ``params.max_negatives`` is set,
    decode every kept image, and return (manifest, report).

    The report carries the subsampling record (``subsample_*`` keys) only when it is on. With
    ``on_bad_image: skip`` unreadable images are dropped, counted and listed in the report;
    with ``fail`` the first one raises. A manifest without both classes is an error.
    """
    try:
        reader = SOURCES[params.source]
    except KeyError:
        raise UserError(f"data.source: unknown source {params.source!r}") from None
    df = reader(params, params.source)
    subsampled: dict[str, int] = {}
    if params.max_negatives is not None:
        df, subsampled = subsample_negatives(df, params.max_negatives, params.subsample_seed)
    skipped: list[str] = []
    with open_images(df) as store:
        for image_id in tqdm(df["image_id"], desc="ingest: decode", disable=None, unit="img"):
            try:
                store.get(image_id)
            except UserError:
                if params.on_bad_image == "fail":
                    raise
                skipped.append(image_id)
    df = df[~df["image_id"].isin(skipped)].reset_index(drop=True)
    counts = df["label"].value_counts()
    for label, name in ((1, "melanoma (positive)"), (0, "benign (negative)")):
        if counts.get(label, 0) == 0:
            raise UserError(f"{params.root}: no {name} images after ingest")
    report = {
        "images": len(df),
        "positives": int(counts.get(1, 0)),
        "negatives": int(counts.get(0, 0)),
        "patients": int(df["patient_id"].nunique()),
        "lesions": int(df["lesion_id"].nunique()),
        "skipped": len(skipped),
        "skipped_ids": skipped,
        **subsampled,
    }
    return df[MANIFEST_COLUMNS], report
