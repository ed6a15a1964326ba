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
Curved hairs are drawn on ``hair_fraction`` of the images, one type per image (dark, or with
shares ``hair_thin`` / ``hair_grey`` / ``hair_blond`` thin, grey or blond); independently a
ruler's ink marks on ``ruler_fraction`` and air bubbles on ``bubble_fraction`` of them. Hairs and
ruler ink are artefacts to remove: they are in the truth's removal mask and absent from its clean
image. Bubbles are not hair (a hair remover should leave them): they stay in the clean image and
are labelled only in the artefact map, so detections on them count as false positives.

Output directory (the ``generate`` stage's out):
    train-image.hdf5    one scalar dataset per ``isic_id`` holding its JPEG bytes
    train-metadata.csv  isic_id, patient_id, lesion_id, target, age_approx, sex,
                        anatom_site_general (sorted by isic_id)
    truth.hdf5          ids (utf-8), clean (N×H×W×3 uint8, lossless: no hair, no ruler ink),
                        hair_mask (N×H×W uint8, 1 = hair or ruler ink: pixels to remove),
                        has_hair (N uint8, 1 = the image has hairs or ruler ink), hair_type
                        (N uint8, 0 = none, else 1 + index in HAIR_TYPES), artefact (N×H×W uint8,
                        ARTEFACT_NAMES codes), lesion_mask (N×H×W uint8), in metadata order
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
from melanoma_kd.data.synthetic_render import (
    ARTEFACT_NAMES,
    HAIR_TYPES,
    draw_traits,
    render_lesion,
    render_view,
)
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
    hairy = rng.random(n) < params.hair_fraction
    hair_type = _hair_types(params, rng, hairy)
    ruler = rng.random(n) < params.ruler_fraction
    bubbles = rng.random(n) < params.bubble_fraction
    has_hair = hairy | ruler
    rows: list[dict] = []
    jpegs: list[bytes] = [b""] * n
    size = params.image_size
    with atomic_path(out_dir, directory=True) as tmp:
        with _open_h5(tmp / TRUTH_FILE) as truth:
            clean_ds, mask_ds, artefact_ds, lesion_ds = _create_truth(truth, n, size)
            bar = tqdm(total=n, desc="generate", unit="img", disable=None)
            k = 0
            for lesion in lesions:
                lesion_rng = np.random.default_rng([params.seed, lesion.index])
                patient = patients[lesion.patient]
                layer = render_lesion(lesion_rng, draw_traits(lesion_rng, lesion.malignant), size)
                for _ in range(lesion.n_images):
                    row = int(slot[k])
                    view = render_view(
                        lesion_rng,
                        layer,
                        patient.skin,
                        size,
                        int(hair_type[row]),
                        ruler=bool(ruler[row]),
                        bubbles=bool(bubbles[row]),
                        artefact_rng=np.random.default_rng([params.seed, row, 1]),
                    )
                    jpegs[row] = encode_jpeg(view.image, params.jpeg_quality)
                    clean_ds[row] = view.clean
                    mask_ds[row] = view.hair_mask
                    artefact_ds[row] = view.artefact
                    lesion_ds[row] = view.lesion
                    rows.append(_metadata_row(isic_ids[row], patient, lesion))
                    k += 1
                    bar.update()
            bar.close()
            _write_h5(truth, "ids", np.array(isic_ids, dtype=object), h5py.string_dtype())
            _write_h5(truth, "has_hair", has_hair.astype(np.uint8))
            _write_h5(truth, "hair_type", hair_type)
        meta = pd.DataFrame(rows, columns=METADATA_COLUMNS).sort_values("isic_id")
        meta.to_csv(tmp / METADATA_FILE, index=False, lineterminator="\n")
        with _open_h5(tmp / IMAGES_FILE) as images:
            for isic_id, raw in zip(isic_ids, jpegs, strict=True):
                _write_h5(images, isic_id, np.bytes_(raw))
    return _summary(params, meta, patients, lesions, hairy) | {
        "hair_types": {name: int((hair_type == i + 1).sum()) for i, name in enumerate(HAIR_TYPES)},
        "rulers": int(ruler.sum()),
        "bubbles": int(bubbles.sum()),
    }


def _hair_types(
    p: GenerateParams, rng: np.random.Generator, hairy: NDArray[np.bool_]
) -> NDArray[np.uint8]:
    """Hair type code per image: 0 without hair, else 1 + index in ``HAIR_TYPES`` drawn with the
    params' shares (dark takes the rest)."""
    shares = {"thin": p.hair_thin, "grey": p.hair_grey, "blond": p.hair_blond}
    shares["dark"] = max(0.0, 1.0 - sum(shares.values()))
    probs = np.array([shares[name] for name in HAIR_TYPES])
    edges = np.cumsum(probs / probs.sum())
    u = rng.random(len(hairy))
    codes = 1 + np.minimum(np.searchsorted(edges, u, side="right"), len(HAIR_TYPES) - 1)
    return np.where(hairy, codes, 0).astype(np.uint8)


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


def _create_truth(h5: h5py.File, n: int, size: int) -> tuple[h5py.Dataset, ...]:
    opts = {"dtype": np.uint8, "compression": "gzip", "compression_opts": 4, "track_times": False}
    clean = h5.create_dataset("clean", shape=(n, size, size, 3), chunks=(1, size, size, 3), **opts)
    planes = [
        h5.create_dataset(name, shape=(n, size, size), chunks=(1, size, size), **opts)
        for name in ("hair_mask", "artefact", "lesion_mask")
    ]
    planes[1].attrs["codes"] = ",".join(ARTEFACT_NAMES)
    return clean, *planes


# ---------------------------------------------------------------------------------------------
# reading back: hair truth, images, the sample figure


@dataclass(frozen=True)
class ArtefactTruth:
    """Per-pixel artefact codes (``ARTEFACT_NAMES``), lesion mask (1 = lesion) and the image's
    hair type code (0 = none, else 1 + index in ``HAIR_TYPES``)."""

    artefact: NDArray[np.uint8]
    lesion: NDArray[np.uint8]
    hair_type: int


class Truth:
    """Random access by image id to ``truth.hdf5``: (clean RGB, hair mask, has_hair)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._h5 = h5py.File(path, "r")
            ids = self._h5["ids"].asstr()[()]
            self._clean, self._mask = self._h5["clean"], self._h5["hair_mask"]
            self._has_hair = self._h5["has_hair"][()]
            extra = ("artefact", "lesion_mask", "hair_type")
            self._extra = (
                tuple(self._h5[k] for k in extra) if all(k in self._h5 for k in extra) else None
            )
        except (OSError, KeyError) as exc:
            raise UserError(f"{path}: not a readable hair-truth file ({exc})") from None
        self.index = {image_id: i for i, image_id in enumerate(ids)}

    def get(self, image_id: str) -> tuple[NDArray[np.uint8], NDArray[np.uint8], bool] | None:
        """Truth for one image, or ``None`` when the file does not know the id."""
        i = self.index.get(image_id)
        if i is None:
            return None
        return self._clean[i], self._mask[i], bool(self._has_hair[i])

    def detail(self, image_id: str) -> ArtefactTruth | None:
        """Artefact labels, lesion mask and hair type of one image; ``None`` when the id is not
        known or the file predates them."""
        i = self.index.get(image_id)
        if i is None or self._extra is None:
            return None
        artefact, lesion, hair_type = self._extra
        return ArtefactTruth(artefact[i], lesion[i], int(hair_type[i]))

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


def _artefact_kinds(truth: h5py.File) -> dict[str, list[str]]:
    """Per id, the artefacts it shows (``"blond hair"``, ``"ruler"``, ``"bubble"``); files
    without the artefact truth fall back to ``has_hair`` (``"hair"``)."""
    ids = truth["ids"].asstr()[()]
    if "hair_type" not in truth:
        has_hair = truth["has_hair"][()]
        return {i: ["hair"] if h else [] for i, h in zip(ids, has_hair, strict=True)}
    kinds = {}
    for k, (image_id, code) in enumerate(zip(ids, truth["hair_type"][()], strict=True)):
        present = set(np.unique(truth["artefact"][k]).tolist())
        kinds[image_id] = [f"{ARTEFACT_NAMES[code]} hair"] if code else []
        kinds[image_id] += [n for n in ("ruler", "bubble") if ARTEFACT_NAMES.index(n) in present]
    return kinds


def plot_samples(data_dir: Path, path: Path, per_class: int = 16, seed: int = 0) -> None:
    """Save a grid of random benign (top) and melanoma (next) images from ``data_dir``, then a
    row with the first image (metadata order) of each hair type, a ruler and bubbles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = pd.read_csv(data_dir / METADATA_FILE)
    rng = np.random.default_rng(seed)
    with h5py.File(data_dir / TRUTH_FILE, "r") as truth:
        kinds = _artefact_kinds(truth)
    cols = 8
    picks = []
    for label in (0, 1):
        ids = meta.loc[meta["target"] == label, "isic_id"].to_numpy()
        picks += [(i, label) for i in rng.choice(ids, min(per_class, len(ids)), replace=False)]
    sample_rows = math.ceil(len(picks) / cols)
    target = dict(zip(meta["isic_id"], meta["target"], strict=True))
    wanted = [f"{h} hair" for h in HAIR_TYPES] + ["ruler", "bubble"]
    showcase = [
        next(i for i in meta["isic_id"] if kind in kinds[i])
        for kind in wanted
        if any(kind in k for k in kinds.values())
    ]
    rows = sample_rows + math.ceil(len(showcase) / cols)
    picks += [(i, int(target[i])) for i in showcase]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.75), squeeze=False)
    cells = list(axes[:sample_rows].flat) + list(axes[sample_rows:].flat)
    with h5py.File(data_dir / IMAGES_FILE, "r") as images:
        for n, (ax, (isic_id, label)) in enumerate(zip(cells, picks, strict=False)):
            ax.imshow(read_image(images, isic_id))
            name = "melanoma" if label else "benign"
            extra = "".join(f"\n+{k}" for k in kinds[isic_id])
            colour = "navy" if n >= len(picks) - len(showcase) else "black"
            ax.set_title(f"{name}{extra}", fontsize=6, color="firebrick" if label else colour)
    for ax in axes.flat:
        ax.axis("off")
    title = "Synthetic dermoscopy: benign (top rows) vs melanoma (next rows)"
    if showcase:
        title += "; last row: one image per hair type, ruler and bubbles"
    fig.suptitle(title)
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
