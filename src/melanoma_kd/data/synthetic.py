"""Synthetic dermoscopy data set, written in the ISIC-2024 layout.

Each lesion draws a latent *atypia* score from a class-dependent Beta distribution; the two
classes' distributions overlap. Every visual trait (asymmetry, border irregularity, extra colours
such as black blotches and a blue-grey veil, diameter, atypical pigment network, irregular dots,
abrupt edge) is the atypia plus its own noise, so melanoma *tends* to look atypical and benign
lesions *tend* to look symmetric and uniform, but neither always does (the picture model is
:mod:`melanoma_kd.data.synthetic_render`). A little class-balanced label noise is added on top.
The task is therefore learnable but not separable. This module draws the cohort, writes the
files and reads them back.

Patients own 1..``max_lesions_per_patient`` lesions and a lesion has 1..``max_images_per_lesion``
views (rotation, scale, position and lighting change; the lesion does not), labelled per lesion.
Dark curved hairs are drawn on ``hair_fraction`` of the images; the hair-free image and the hair
mask are kept as ground truth for the hair-removal stage.

Output directory (the ``generate`` stage's out):
    train-image.hdf5    one scalar dataset per ``isic_id`` holding its JPEG bytes
    train-metadata.csv  isic_id, patient_id, lesion_id, target, age_approx, sex,
                        anatom_site_general (sorted by isic_id)
    truth.hdf5          ids (utf-8), clean (N×H×W×3 uint8, lossless), hair_mask (N×H×W uint8,
                        1 = hair), has_hair (N uint8), in metadata order
The same params give byte-identical files (fixed order, no HDF5 timestamps).

With another ``data.source`` the stage generates nothing: :func:`write_not_generated` leaves
only ``NOT_GENERATED.json`` in the folder, and nothing reads synthetic truth.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from tqdm import tqdm

from melanoma_kd.config import GenerateParams
from melanoma_kd.data.synthetic_render import draw_traits, render_lesion, render_view
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import decode_image, encode_jpeg
from melanoma_kd.io import atomic_path, write_json

SOURCE = "synthetic"  # the data.source value of this data set
IMAGES_FILE = "train-image.hdf5"
METADATA_FILE = "train-metadata.csv"
TRUTH_FILE = "truth.hdf5"
NOT_GENERATED_FILE = "NOT_GENERATED.json"
METADATA_COLUMNS = [
    "isic_id",
    "patient_id",
    "lesion_id",
    "target",
    "age_approx",
    "sex",
    "anatom_site_general",
]
SITES = ["head/neck", "upper extremity", "lower extremity", "anterior torso", "posterior torso"]
HDF5_LIBVER = ("earliest", "v110")  # fixed on-disk format version: same bytes on every run


@dataclass(frozen=True)
class Patient:
    """A patient: identifiers, demographics and skin tone (RGB 0..1)."""

    patient_id: str
    age: int
    sex: str
    skin: tuple[float, float, float]


@dataclass(frozen=True)
class Lesion:
    """A lesion: its patient, true class, recorded label and number of views."""

    index: int
    lesion_id: str
    patient: int
    malignant: bool
    target: int
    n_images: int
    site: str


# ---------------------------------------------------------------------------------------------
# cohort: patients, lesions, labels


def _make_patients_and_lesions(
    p: GenerateParams, rng: np.random.Generator
) -> tuple[list[Patient], list[Lesion]]:
    """Draw the cohort structure so that the lesions' views add up to exactly ``n_images``."""
    counts: list[tuple[int, int]] = []  # (patient index, views) per lesion
    n_patients = 0
    total = 0
    while total < p.n_images:
        for _ in range(int(rng.integers(1, p.max_lesions_per_patient + 1))):
            if total >= p.n_images:
                break
            views = min(int(rng.integers(1, p.max_images_per_lesion + 1)), p.n_images - total)
            counts.append((n_patients, views))
            total += views
        n_patients += 1
    malignant, target = _lesion_labels(p, rng, len(counts))
    patient_ids = _random_ids(rng, "IP_", n_patients)
    lesion_ids = _random_ids(rng, "IL_", len(counts))
    has_melanoma = np.zeros(n_patients, bool)
    for (pat, _), m in zip(counts, malignant, strict=True):
        has_melanoma[pat] |= m
    patients = [
        _make_patient(rng, patient_ids[i], bool(has_melanoma[i])) for i in range(n_patients)
    ]
    lesions = [
        Lesion(
            i,
            lesion_ids[i],
            pat,
            bool(malignant[i]),
            int(target[i]),
            views,
            SITES[int(rng.integers(len(SITES)))],
        )
        for i, (pat, views) in enumerate(counts)
    ]
    return patients, lesions


def _lesion_labels(
    p: GenerateParams, rng: np.random.Generator, n_lesions: int
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """True class and recorded label per lesion.

    Exactly ``round(positive_rate * n)`` lesions (at least one) are melanoma. Label noise is
    class-balanced: ``round(label_noise * positives)`` melanomas are recorded as benign and as
    many benign lesions as melanoma, so the positive rate is unchanged.
    """
    n_pos = min(n_lesions - 1, max(1, round(p.positive_rate * n_lesions)))
    malignant = np.zeros(n_lesions, bool)
    malignant[rng.permutation(n_lesions)[:n_pos]] = True
    target = malignant.astype(np.int64)
    n_flip = round(p.label_noise * n_pos)
    if n_flip:
        target[rng.choice(np.flatnonzero(malignant), n_flip, replace=False)] = 0
        target[rng.choice(np.flatnonzero(~malignant), n_flip, replace=False)] = 1
    return malignant, target


def _random_ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    numbers = np.sort(rng.choice(9_000_000, size=n, replace=False)) + 1_000_000
    return [f"{prefix}{k:07d}" for k in rng.permutation(numbers)]


def _make_patient(rng: np.random.Generator, patient_id: str, has_melanoma: bool) -> Patient:
    age = int(np.clip(rng.normal(58 if has_melanoma else 50, 14), 20, 85) // 5 * 5)
    sex = "male" if rng.random() < 0.52 else "female"
    t = rng.beta(2.0, 3.0)  # 0 = fair, 1 = darker
    skin = (1 - t) * np.array([0.95, 0.78, 0.70]) + t * np.array([0.76, 0.54, 0.42])
    skin = skin * (1 + rng.normal(0, 0.02, 3))
    return Patient(patient_id, age, sex, tuple(float(c) for c in skin))


# ---------------------------------------------------------------------------------------------
# the data set


def generate_dataset(params: GenerateParams, out_dir: Path) -> dict:
    """Generate the synthetic data set into ``out_dir`` (replaced atomically); return a summary."""
    rng = np.random.default_rng(params.seed)
    patients, lesions = _make_patients_and_lesions(params, rng)
    n = params.n_images
    isic_ids = [f"ISIC_{k:07d}" for k in np.sort(rng.choice(9_000_000, n, replace=False))]
    slot = rng.permutation(n)  # image k of the generation order is row slot[k] of the metadata
    has_hair = rng.random(n) < params.hair_fraction
    rows: list[dict] = []
    jpegs: list[bytes] = [b""] * n
    size = params.image_size
    with atomic_path(out_dir, directory=True) as tmp:
        with _open_h5(tmp / TRUTH_FILE) as truth:
            clean_ds, mask_ds = _create_truth(truth, n, size)
            bar = tqdm(total=n, desc="generate", unit="img", disable=None)
            k = 0
            for lesion in lesions:
                lesion_rng = np.random.default_rng([params.seed, lesion.index])
                patient = patients[lesion.patient]
                layer = render_lesion(lesion_rng, draw_traits(lesion_rng, lesion.malignant), size)
                for _ in range(lesion.n_images):
                    row = int(slot[k])
                    image, clean, mask = render_view(
                        lesion_rng, layer, patient.skin, size, bool(has_hair[row])
                    )
                    jpegs[row] = encode_jpeg(image, params.jpeg_quality)
                    clean_ds[row] = clean
                    mask_ds[row] = mask
                    rows.append(_metadata_row(isic_ids[row], patient, lesion))
                    k += 1
                    bar.update()
            bar.close()
            _write_h5(truth, "ids", np.array(isic_ids, dtype=object), h5py.string_dtype())
            _write_h5(truth, "has_hair", has_hair.astype(np.uint8))
        meta = pd.DataFrame(rows, columns=METADATA_COLUMNS).sort_values("isic_id")
        meta.to_csv(tmp / METADATA_FILE, index=False, lineterminator="\n")
        with _open_h5(tmp / IMAGES_FILE) as images:
            for isic_id, raw in zip(isic_ids, jpegs, strict=True):
                _write_h5(images, isic_id, np.bytes_(raw))
    return _summary(params, meta, patients, lesions, has_hair)


def write_not_generated(out_dir: Path, source: str) -> dict:
    """Replace ``out_dir`` (atomically) with a folder holding only ``NOT_GENERATED.json``, for a
    pipeline whose ``data.source`` is not synthetic; return that file's content."""
    info = {"generated": False, "data_source": source, "images": 0}
    with atomic_path(out_dir, directory=True) as tmp:
        write_json(tmp / NOT_GENERATED_FILE, info)
    return info


def _metadata_row(isic_id: str, patient: Patient, lesion: Lesion) -> dict:
    return {
        "isic_id": isic_id,
        "patient_id": patient.patient_id,
        "lesion_id": lesion.lesion_id,
        "target": lesion.target,
        "age_approx": patient.age,
        "sex": patient.sex,
        "anatom_site_general": lesion.site,
    }


def _summary(
    p: GenerateParams,
    meta: pd.DataFrame,
    patients: list[Patient],
    lesions: list[Lesion],
    has_hair: NDArray[np.bool_],
) -> dict:
    positives = int(meta["target"].sum())
    return {
        "images": len(meta),
        "positives": positives,
        "positive_rate": round(positives / len(meta), 4),
        "patients": len(patients),
        "lesions": len(lesions),
        "positive_lesions": sum(le.target for le in lesions),
        "noisy_labels": sum(le.target != int(le.malignant) for le in lesions),
        "hairy": int(has_hair.sum()),
        "image_size": p.image_size,
    }


def _open_h5(path: Path) -> h5py.File:
    return h5py.File(path, "w", libver=HDF5_LIBVER, track_order=False)


def _write_h5(h5: h5py.File, name: str, data: object, dtype: object = None) -> None:
    h5.create_dataset(name, data=data, dtype=dtype, track_times=False)


def _create_truth(h5: h5py.File, n: int, size: int) -> tuple[h5py.Dataset, h5py.Dataset]:
    opts = {"dtype": np.uint8, "compression": "gzip", "compression_opts": 4, "track_times": False}
    clean = h5.create_dataset("clean", shape=(n, size, size, 3), chunks=(1, size, size, 3), **opts)
    mask = h5.create_dataset("hair_mask", shape=(n, size, size), chunks=(1, size, size), **opts)
    return clean, mask


# ---------------------------------------------------------------------------------------------
# reading back: hair truth, images, the sample figure


class Truth:
    """Random access by image id to ``truth.hdf5``: (clean RGB, hair mask, has_hair)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._h5 = h5py.File(path, "r")
            ids = self._h5["ids"].asstr()[()]
            self._clean, self._mask = self._h5["clean"], self._h5["hair_mask"]
            self._has_hair = self._h5["has_hair"][()]
        except (OSError, KeyError) as exc:
            raise UserError(f"{path}: not a readable hair-truth file ({exc})") from None
        self.index = {image_id: i for i, image_id in enumerate(ids)}

    def get(self, image_id: str) -> tuple[NDArray[np.uint8], NDArray[np.uint8], bool] | None:
        """Truth for one image, or ``None`` when the file does not know the id."""
        i = self.index.get(image_id)
        if i is None:
            return None
        return self._clean[i], self._mask[i], bool(self._has_hair[i])

    def close(self) -> None:
        """Close the file."""
        self._h5.close()


@contextlib.contextmanager
def open_truth(path: str | Path | None) -> Iterator[Truth | None]:
    """Open ``truth.hdf5`` (or ``<dir>/truth.hdf5``); yields ``None`` when there is none."""
    if path is None:
        yield None
        return
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_FILE
    if not path.is_file():
        yield None
        return
    truth = Truth(path)
    try:
        yield truth
    finally:
        truth.close()


def read_image(images: h5py.File, isic_id: str) -> NDArray[np.uint8]:
    """Decode one image of an ISIC-2024 style ``train-image.hdf5`` (bytes or opaque scalar)."""
    return decode_image(images[isic_id][()], f"{images.filename} [{isic_id}]")


def plot_samples(data_dir: Path, path: Path, per_class: int = 16, seed: int = 0) -> None:
    """Save a grid of random benign (top) and melanoma (bottom) images from ``data_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = pd.read_csv(data_dir / METADATA_FILE)
    rng = np.random.default_rng(seed)
    with h5py.File(data_dir / TRUTH_FILE, "r") as truth:
        hair = dict(zip(truth["ids"].asstr()[()], truth["has_hair"][()], strict=True))
    cols = 8
    picks = []
    for label in (0, 1):
        ids = meta.loc[meta["target"] == label, "isic_id"].to_numpy()
        picks += [(i, label) for i in rng.choice(ids, min(per_class, len(ids)), replace=False)]
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.75))
    with h5py.File(data_dir / IMAGES_FILE, "r") as images:
        for ax, (isic_id, label) in zip(axes.flat, picks, strict=False):
            ax.imshow(read_image(images, isic_id))
            name = "melanoma" if label else "benign"
            ax.set_title(
                f"{name}{' +hair' if hair[isic_id] else ''}",
                fontsize=8,
                color="firebrick" if label else "black",
            )
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Synthetic dermoscopy: benign (top rows) vs melanoma (bottom rows)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def plot_not_generated(path: Path, source: str) -> None:
    """Save a small figure saying that no synthetic data was generated for ``source``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 1))
    ax.text(0.5, 0.5, f"no synthetic data: data.source is {source}", ha="center", va="center")
    ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
