"""The KD transfer set: extra unlabelled images on which the student only matches the teacher.

Where the images come from (``distill.transfer_images`` of them):

* synthetic data: a new draw of the generator with its own seed (``distill.transfer_seed``), so
  new patients and lesions, none of them in the labelled set; its labels are thrown away;
* real data: the first images, in name order, of an unlabelled folder (``distill.transfer_dir``).

Either way an image whose id is in the split table (train, val or holdout) is refused: the
transfer set must never show the student, even without labels, an image it is evaluated on.
The images go through the same hair removal and resize as the labelled splits and are stored in
the cache format (:mod:`melanoma_kd.data.cache`) with label :data:`UNLABELLED`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from pydantic import ValidationError

from melanoma_kd.config import GenerateParams, Params
from melanoma_kd.data.cache import UNLABELLED, resize_shorter_center_crop, write_split_cache
from melanoma_kd.data.hair import iter_remove_hair, output_params
from melanoma_kd.data.synthetic import IMAGES_FILE, METADATA_FILE, generate_dataset, read_image
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import decode_image
from melanoma_kd.io import sha256_json

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
ID_PREFIX = "transfer_"


def folder_images(folder: str | Path, n: int) -> tuple[list[str], list[Path]]:
    """Ids (file stems) and paths of the first ``n`` images of ``folder``, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"distill.transfer_dir: {folder} is not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if len(files) < n:
        raise UserError(
            f"distill.transfer_dir: {folder} holds {len(files)} images, "
            f"distill.transfer_images asks for {n}"
        )
    files = files[:n]
    ids = [p.stem for p in files]
    seen: set[str] = set()
    for image_id, path in zip(ids, files, strict=True):
        if image_id in seen:
            raise UserError(f"{path}: duplicate image id {image_id!r} in the transfer folder")
        seen.add(image_id)
    return ids, files


def _folder_pixels(files: list[Path]) -> Iterator[np.ndarray]:
    for path in files:
        yield decode_image(path.read_bytes(), str(path))


def _generator_params(params: Params) -> GenerateParams:
    d = params.distill
    raw = {**params.generate.model_dump(), "n_images": d.transfer_images, "seed": d.transfer_seed}
    try:
        return GenerateParams.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise UserError(f"distill.transfer_images: {problem} (synthetic transfer draw)") from None


def check_no_overlap(ids: list[str], labelled: pd.DataFrame) -> None:
    """Refuse a transfer image whose id is a labelled image (any split)."""
    split_of = dict(zip(labelled["image_id"].astype(str), labelled["split"], strict=True))
    for image_id in ids:
        if image_id in split_of:
            raise UserError(
                f"distill.transfer_dir: image {image_id!r} is in the {split_of[image_id]} split; "
                "the transfer set must hold unlabelled images only"
            )


def build_transfer_set(params: Params, labelled: pd.DataFrame, out: str | Path) -> dict:
    """Write the transfer-set cache to ``out`` (atomically); return a summary for the metrics.

    With ``distill.transfer_images: 0`` the file holds no images (nothing reads it).
    """
    d, size = params.distill, params.cache.size
    n = d.transfer_images
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="transfer."))
        if n == 0:
            source, ids, patients, pixels = "none", [], [], iter(())
        elif d.transfer_dir is not None:
            source = str(d.transfer_dir)
            ids, files = folder_images(d.transfer_dir, n)
            patients = ids  # an unlabelled folder says nothing about patients
            pixels = _folder_pixels(files)
        else:
            source = f"synthetic draw, seed {d.transfer_seed}"
            draw = Path(work) / "draw"
            generate_dataset(_generator_params(params), draw)
            meta = pd.read_csv(draw / METADATA_FILE, dtype=str)
            ids = [f"{ID_PREFIX}{k:06d}" for k in range(len(meta))]
            patients = [ID_PREFIX + p for p in meta["patient_id"]]
            h5 = stack.enter_context(h5py.File(draw / IMAGES_FILE, "r"))
            pixels = (read_image(h5, isic_id) for isic_id in meta["isic_id"])
        check_no_overlap(ids, labelled)
        rows = pd.DataFrame(
            {"image_id": ids, "patient_id": patients, "lesion_id": ids, "label": UNLABELLED}
        )
        dehaired = (
            resize_shorter_center_crop(out_img, size)
            for _, out_img, _ in iter_remove_hair(
                pixels, params.preprocess, total=n, desc="transfer: remove_hair"
            )
        )
        inputs = {"source": source, "n": n, "size": size, **output_params(params.preprocess)}
        write_split_cache(out, rows, dehaired, size, "transfer", sha256_json(inputs))
    return {
        "transfer_images": n,
        "source": source,
        "patients": len(set(patients)),
        "labelled_ids_checked": len(labelled),  # none of them is a transfer id
        "image_size": size,
    }
