"""Real-format data sets big enough for the whole DAG of a published recipe, at toy size.

The tiny fixtures in ``conftest.py`` hold a handful of images: enough for the readers, too few
for the split. A recipe run needs every split (train, val and holdout) to hold both classes, and
enough melanoma in val and holdout that the validation-chosen operating points, the bootstrap
and the KD selection see more than one positive. The split (``data/split.py``) places patients
that own melanoma first, one at a time, into the split furthest below its melanoma quota, so with
the recipes' 70/15/15 fractions:

* ISIC-2024 (grouped by ``patient_id``): 6 melanoma patients with 2 melanoma images each
  plus one benign image, and 12 benign-only patients with one image each: 30 images over 18
  patients, 12 melanoma (train / val / holdout: 20 / 5 / 5 images, 8 / 2 / 2 melanoma, with
  the recipe's ``split.seed: 0``).
* HAM10000 (grouped by ``lesion_id``, no patient id): 6 melanoma lesions with 2 images each and
  12 lesions of the other six dx classes with one image each: 24 images over 18 lesions, 12
  melanoma (16 / 4 / 4 images, 8 / 2 / 2 melanoma, with the recipe's ``split.seed: 42``).

Three melanoma groups are the least that gives every split a positive; six give val and holdout
two melanoma images each and train the rest. Holdout must hold three groups (one with melanoma):
the evaluation bootstraps over them and fails when more than half of the resamples hold a single
class (with two groups half of them do), hence many one-image benign groups. Every count is kept
small because the test trains the recipes' real architectures at their real input sizes:
training, teacher outputs and scoring cost about in proportion to the images (train fits in one
batch of 32).

Images are small JPEGs of a lesion on skin (the cache resizes them to ``cache.size``); melanoma
lesions tend to be larger, darker and irregular, benign ones small, round and light brown, with
overlap between the classes, so the models' scores are neither constant nor trivially perfect.
Sizes vary per image and keep each format's aspect ratio (ISIC-2024 crops are square, HAM10000
is 4:3).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tests.conftest import TinyDataset, _write_ham, _write_isic

MELANOMA_GROUPS = 6  # patients (ISIC-2024) or lesions (HAM10000) with 2 melanoma images each
BENIGN_GROUPS = 12  # with one benign image each
HAM_DIRS = ["HAM10000_images_part_1", "HAM10000_images_part_2"]
BENIGN_DX = ["nv", "bkl", "bcc", "akiec", "df", "vasc"]  # HAM10000's other six classes
SKIN = np.array([205.0, 160.0, 140.0])  # RGB
BENIGN_COLOUR = np.array([150.0, 100.0, 70.0])
MELANOMA_COLOUR = np.array([70.0, 40.0, 35.0])


def lesion_jpeg(rng: np.random.Generator, melanoma: bool, width: int, height: int) -> bytes:
    """A JPEG of one lesion on skin. A latent atypia in [0, 1] (Beta(4, 2) for melanoma, Beta(2,
    4) otherwise, so the classes overlap) sets the lesion's size, darkness and irregularity (the
    number of overlapping blobs)."""
    atypia = rng.beta(4.0, 2.0) if melanoma else rng.beta(2.0, 4.0)
    img = np.empty((height, width, 3), np.float32)
    img[:] = SKIN + rng.normal(0.0, 8.0, 3)
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    mask = np.zeros((height, width), np.uint8)
    side = min(width, height)
    centre = np.array([width, height]) / 2 + rng.normal(0.0, side / 16, 2)
    radius = side * (0.12 + 0.18 * atypia) * rng.uniform(0.85, 1.15)
    for _ in range(1 + round(3 * atypia)):
        c = centre + rng.normal(0.0, radius * atypia / 3, 2)
        axes = radius * rng.uniform(0.6, 1.0, 2)
        cv2.ellipse(
            mask,
            (int(c[0]), int(c[1])),
            (max(2, int(axes[0])), max(2, int(axes[1]))),
            float(rng.uniform(0, 180)),
            0.0,
            360.0,
            1,
            -1,
        )
    colour = BENIGN_COLOUR + (MELANOMA_COLOUR - BENIGN_COLOUR) * atypia + rng.normal(0.0, 12.0, 3)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), side / 40)[..., None]
    img = img * (1.0 - soft) + colour * soft
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _isic_rows() -> list[tuple[str, str, str, int]]:
    """(isic_id, patient_id, lesion_id, target) for the melanoma and benign-only patients."""
    rows: list[tuple[str, str, str, int]] = []
    lesion = 0

    def add(patient: int, target: int, lesion_id: str) -> None:
        rows.append((f"ISIC_{len(rows) + 1:07d}", f"IP_{patient:07d}", lesion_id, target))

    for patient in range(1, MELANOMA_GROUPS + BENIGN_GROUPS + 1):
        if patient <= MELANOMA_GROUPS:  # one melanoma lesion imaged twice, one benign lesion
            lesion += 1
            add(patient, 1, f"IL_{lesion:07d}")
            add(patient, 1, f"IL_{lesion:07d}")
            add(patient, 0, "")  # as in the real metadata: most benign images have no lesion id
        else:
            add(patient, 0, "")
    return rows


def write_isic2024(root: Path, seed: int = 0) -> TinyDataset:
    """Write the ISIC-2024 layout under ``root``: ``train-image.hdf5`` + ``train-metadata.csv``."""
    rng = np.random.default_rng(seed)
    rows = _isic_rows()
    meta = pd.DataFrame(rows, columns=["isic_id", "patient_id", "lesion_id", "target"])
    # A few of the real file's other columns, which the reader must ignore.
    meta["age_approx"] = rng.choice([35.0, 50.0, 65.0], len(meta))
    meta["sex"] = rng.choice(["male", "female"], len(meta))
    meta["anatom_site_general"] = rng.choice(["posterior torso", "lower extremity"], len(meta))
    meta["tbp_tile_type"] = "3D: XP"
    images = {}
    for iid, target in zip(meta["isic_id"], meta["target"], strict=True):
        side = int(rng.integers(96, 136))  # real crops are square, ~100-200 px
        images[iid] = lesion_jpeg(rng, bool(target), side, side)
    return TinyDataset(root, meta, images, _write_isic).write()


def _ham_rows() -> list[tuple[str, str, str]]:
    """(lesion_id, image_id, dx) for the melanoma lesions and lesions of the other classes."""
    rows: list[tuple[str, str, str]] = []
    for lesion in range(1, MELANOMA_GROUPS + BENIGN_GROUPS + 1):
        if lesion <= MELANOMA_GROUPS:
            dx, n = "mel", 2
        else:
            dx, n = BENIGN_DX[lesion % len(BENIGN_DX)], 1
        for _ in range(n):
            rows.append((f"HAM_{lesion:07d}", f"ISIC_{24306 + len(rows):07d}", dx))
    return rows


def write_ham10000(root: Path, seed: int = 0) -> TinyDataset:
    """Write the HAM10000 layout under ``root``: metadata CSV + JPEGs in the two part folders."""
    rng = np.random.default_rng(seed)
    rows = _ham_rows()
    order = rng.permutation(len(rows))  # the real CSV is not grouped by lesion
    meta = pd.DataFrame([rows[i] for i in order], columns=["lesion_id", "image_id", "dx"])
    meta["dx_type"] = np.where(meta["dx"] == "mel", "histo", "follow_up")
    meta["age"] = rng.choice([35.0, 50.0, 65.0], len(meta))
    meta["sex"] = rng.choice(["male", "female"], len(meta))
    meta["localization"] = rng.choice(["back", "lower extremity", "trunk"], len(meta))
    images = {}
    for iid, dx in zip(meta["image_id"], meta["dx"], strict=True):
        width = int(rng.integers(24, 33)) * 4  # 4:3 like the real 600 x 450 images
        images[iid] = lesion_jpeg(rng, dx == "mel", width, width * 3 // 4)
    return TinyDataset(root, meta, images, _write_ham, image_dirs=HAM_DIRS).write()
