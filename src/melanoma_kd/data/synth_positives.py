"""Generated melanoma training images, made from TRAIN positives only (never val/holdout).

One sample transplants the lesion of a train melanoma image (the *donor*) onto the skin of a
benign train image of ANOTHER patient (the *background*):

1. lesion mask of the donor (:func:`melanoma_kd.data.lesion.lesion_mask`: Otsu threshold on the
   blurred CIELAB L channel over the central field of view, the largest connected component not
   touching the border, holes filled), dilated so some surrounding skin comes along (at least
   8 px: Poisson cloning loses the lesion edge without it) and the clone has a soft boundary;
2. "benign skin": the background's own lesion (same mask recipe) is removed by Telea inpainting;
3. geometric variation of the lesion patch: horizontal flip, rotation (any angle), scale;
4. mild elastic variation: ``cv2.remap`` with a Gaussian-smoothed random displacement field;
5. colour variation: lesion contrast and chroma gains and a small hue rotation in the a*b* plane
   (gains, not offsets — Poisson cloning keeps gradients, so an offset would be blended away);
6. ``cv2.seamlessClone`` (Poisson, NORMAL_CLONE) at a jittered position near the image centre.

A sample inherits the donor's ``patient_id`` and ``lesion_id`` (so patient/lesion grouping can
never leak a generated image across splits; it stays in train) and records ``source_image_id``
(the donor) and ``background_image_id``. The donor schedule comes from ``default_rng(seed)``;
sample ``i`` draws its background from ``default_rng([seed, i, 1])`` and its variation from
``default_rng([seed, i, 2])``. Same inputs and params therefore give byte-identical outputs.

Outputs (the ``remove_hair`` layout, so :func:`melanoma_kd.data.preprocessed.open_preprocessed`
reads them): an HDF5 file with ``ids`` (utf-8) and ``images`` (variable-length uint8 PNG bytes),
plus a CSV with :data:`CANDIDATE_COLUMNS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from melanoma_kd.config import Params, SynthParams, load_params
from melanoma_kd.data.lesion import Image, Mask, fallback_mask, lesion_mask
from melanoma_kd.data.tables import read_table
from melanoma_kd.errors import UserError
from melanoma_kd.imaging import encode_png
from melanoma_kd.io import atomic_path

SYNTH_SOURCE = "synthetic_positive"
ID_PREFIX = "SYNPOS_"
CANDIDATE_COLUMNS = [
    "image_id",
    "lesion_id",
    "patient_id",
    "label",
    "source",
    "source_image_id",
    "background_image_id",
]
SPLIT_COLUMNS = ("image_id", "lesion_id", "patient_id", "label", "split")
ID_DTYPES = dict.fromkeys(
    ("image_id", "lesion_id", "patient_id", "source_image_id", "background_image_id"), str
)
HDF5_LIBVER = ("earliest", "v110")  # fixed on-disk format: same bytes on every run
STR = h5py.string_dtype("utf-8")
PNG_BYTES = h5py.vlen_dtype(np.dtype(np.uint8))

CENTRE_JITTER = 0.10  # lesion centre: image centre ± this fraction of the side
MARGIN = 3  # px of zero mask around a patch and between a clone and the image border
INPAINT_RADIUS = 5
CLONE_SKIN_PX = 8  # skin kept inside the clone mask around the lesion (see make_positive)
MAX_PATCH_FRACTION = 0.8  # a transplanted lesion spans at most this fraction of the background


def load_synth_params(path: str | Path) -> tuple[Params, SynthParams]:
    """``(params, params.synth)`` from ``params.yaml``."""
    params = load_params(path)
    return params, params.synth


# --------------------------------------------------------------------------------- image store


class ImageSource(Protocol):
    """Anything with ``get(image_id) -> RGB uint8`` (e.g. the preprocessed-image store)."""

    def get(self, image_id: str) -> Image: ...


def write_png_store(
    path: str | Path, ids: list[str], images: Iterable[bytes | Image], attrs: dict | None = None
) -> None:
    """Write ``ids`` + PNG bytes (``images``: encoded bytes or RGB arrays) atomically.

    Same layout as ``data/interim/dehaired.h5``; no timestamps, input order.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver=HDF5_LIBVER, track_order=False) as h5:
        h5.create_dataset("ids", data=np.array(ids, dtype=object), dtype=STR, track_times=False)
        ds = h5.create_dataset("images", shape=(len(ids),), dtype=PNG_BYTES, track_times=False)
        n = 0
        for i, img in enumerate(images):
            raw = img if isinstance(img, bytes) else encode_png(img)
            ds[i] = np.frombuffer(raw, dtype=np.uint8)
            n += 1
        if n != len(ids):
            raise ValueError(f"{path}: {len(ids)} ids but {n} images")
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value


def read_png_bytes(path: str | Path, ids: list[str]) -> list[bytes]:
    """The encoded PNG bytes of ``ids`` from a PNG store (no decode / re-encode)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            index = {k: i for i, k in enumerate(h5["ids"].asstr()[()])}
            missing = [k for k in ids if k not in index]
            if missing:
                raise UserError(f"{path}: image {missing[0]} missing")
            return [np.asarray(h5["images"][index[k]], dtype=np.uint8).tobytes() for k in ids]
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: not a readable PNG image store ({exc})") from None


# ------------------------------------------------------------------------------------- inputs


def read_splits(path: str | Path) -> pd.DataFrame:
    """The split table with string ids (empty ids stay ``""``) and 0/1 labels; one-line errors."""
    df = read_table(path, "split table", SPLIT_COLUMNS)
    bad = ~df["label"].isin(["0", "1"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"{path}: line {row + 2}: label must be 0 or 1 (got {df['label'][row]!r})")
    df["label"] = df["label"].astype(int)
    return df


def read_candidates(path: str | Path) -> pd.DataFrame:
    """A ``candidates.csv`` / ``kept.csv`` table with string ids; one-line errors."""
    return read_table(path, "candidate table", CANDIDATE_COLUMNS, dtype=ID_DTYPES)


# --------------------------------------------------------------------------------------- plan


def plan_samples(splits: pd.DataFrame, params: SynthParams) -> pd.DataFrame:
    """Which donor and background every sample uses (:data:`CANDIDATE_COLUMNS`, in id order).

    Donors: the train positives, each used ``ratio`` times in seeded shuffled rounds (the last
    round partial). Background: a benign train image of a different patient, drawn per sample.
    Only ``split == "train"`` rows are ever looked at.
    """
    train = splits[splits["split"] == "train"].sort_values("image_id", kind="stable")
    donors = train[train["label"] == 1].reset_index(drop=True)
    benign = train[train["label"] == 0].reset_index(drop=True)
    n = round(params.ratio * len(donors))
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in CANDIDATE_COLUMNS}).astype(
            {"label": int}
        )
    if donors.empty:
        raise UserError("synth_positives: no train positives to generate from")
    rng = np.random.default_rng(params.seed)
    rounds = math.ceil(n / len(donors))
    order = np.concatenate([rng.permutation(len(donors)) for _ in range(rounds)])[:n]
    benign_patients = benign["patient_id"].to_numpy()
    rows = []
    for i, d in enumerate(order):
        donor = donors.iloc[int(d)]
        pool = np.flatnonzero(benign_patients != donor["patient_id"])
        if pool.size == 0:
            raise UserError(
                f"synth_positives: no benign train image of a patient other than "
                f"{donor['patient_id']} to use as background"
            )
        bg = benign.iloc[int(pool[np.random.default_rng([params.seed, i, 1]).integers(pool.size)])]
        rows.append(
            {
                "image_id": f"{ID_PREFIX}{i:06d}",
                "lesion_id": donor["lesion_id"],
                "patient_id": donor["patient_id"],
                "label": 1,
                "source": SYNTH_SOURCE,
                "source_image_id": donor["image_id"],
                "background_image_id": bg["image_id"],
            }
        )
    plan = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    clash = set(plan["image_id"]) & set(splits["image_id"])
    if clash:
        raise UserError(f"synth_positives: generated id {sorted(clash)[0]} clashes with a real id")
    return plan


# ------------------------------------------------------------------------------ image recipe


def _crop_to_mask(img: Image, mask: Mask, pad: int = MARGIN) -> tuple[Image, Mask]:
    """Crop to the mask's bounding box and pad by ``pad`` (image reflected, mask zero)."""
    x, y, bw, bh = cv2.boundingRect(mask)
    img, mask = img[y : y + bh, x : x + bw], mask[y : y + bh, x : x + bw]
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return img, mask


def _geometric(img: Image, mask: Mask, rng: np.random.Generator, p: SynthParams) -> tuple:
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    angle = rng.uniform(0.0, 360.0)
    scale = rng.uniform(p.scale_min, p.scale_max)
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = math.ceil(h * sin + w * cos) + 2, math.ceil(h * cos + w * sin) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    img = cv2.warpAffine(
        np.ascontiguousarray(img), m, (nw, nh), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )  # fmt: skip
    mask = cv2.warpAffine(
        np.ascontiguousarray(mask), m, (nw, nh), flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip
    return img, mask


def _elastic(img: Image, mask: Mask, rng: np.random.Generator, p: SynthParams) -> tuple:
    h, w = mask.shape
    side = min(h, w)
    alpha, sigma = p.elastic_alpha * side, max(0.5, p.elastic_sigma * side)
    noise = rng.uniform(-1.0, 1.0, size=(2, h, w)).astype(np.float32)
    if alpha <= 0:
        return img, mask
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = []
    for k in range(2):
        field = cv2.GaussianBlur(noise[k], (0, 0), sigma)
        field *= alpha / max(float(np.abs(field).max()), 1e-6)
        maps.append(field)
    map_x, map_y = grid_x + maps[0], grid_y + maps[1]
    img = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return img, mask


def _colour(img: Image, mask: Mask, rng: np.random.Generator, p: SynthParams) -> Image:
    """Lesion contrast gain on L*, chroma gain and hue rotation on a*b* (about the mask mean)."""
    c = p.color
    gain_l, gain_c = rng.uniform(1 - c, 1 + c, size=2)
    theta = math.radians(rng.uniform(-30.0 * c, 30.0 * c))
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    inside = mask > 0
    mean_l = float(lab[..., 0][inside].mean()) if inside.any() else float(lab[..., 0].mean())
    lab[..., 0] = mean_l + (lab[..., 0] - mean_l) * gain_l
    a, b = lab[..., 1] - 128.0, lab[..., 2] - 128.0
    cos, sin = math.cos(theta) * gain_c, math.sin(theta) * gain_c
    lab[..., 1], lab[..., 2] = 128.0 + cos * a - sin * b, 128.0 + sin * a + cos * b
    lab = np.clip(np.rint(lab), 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def benign_skin(rgb: Image, dilate: float) -> Image:
    """The background with its own lesion (if any) removed by Telea inpainting."""
    mask = lesion_mask(rgb, max(dilate, 0.02))
    if mask is None:
        return rgb
    return cv2.inpaint(rgb, mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)


@dataclass(frozen=True)
class Generated:
    """One generated image and how it was made."""

    image: Image
    mask_fallback: bool


def make_positive(
    donor: Image, background: Image, rng: np.random.Generator, p: SynthParams
) -> Generated:
    """Transplant ``donor``'s lesion onto ``background``'s skin; the output has its size."""
    bh, bw = background.shape[:2]
    s0 = min(bh, bw) / min(donor.shape[:2])
    if s0 != 1.0:
        size = (max(8, round(donor.shape[1] * s0)), max(8, round(donor.shape[0] * s0)))
        donor = cv2.resize(
            donor, size, interpolation=cv2.INTER_AREA if s0 < 1 else cv2.INTER_LINEAR
        )
    # OpenCV's Poisson clone needs ~8 px of skin inside the mask around the lesion edge, or the
    # edge gradient is lost and the lesion fades; keep that much even at the smallest scale.
    min_px = math.ceil(CLONE_SKIN_PX / p.scale_min)
    mask = lesion_mask(donor, p.mask_dilate, min_px)
    fallback = mask is None
    if mask is None:
        mask = fallback_mask(donor.shape, min_px)
    patch, pmask = _crop_to_mask(donor, mask)
    patch, pmask = _geometric(patch, pmask, rng, p)
    patch, pmask = _elastic(patch, pmask, rng, p)
    if not pmask.any():  # elastic/rotation can't empty a mask in practice; stay safe
        patch, pmask = _crop_to_mask(donor, mask)
    patch, pmask = _crop_to_mask(patch, pmask)
    patch = _colour(patch, pmask, rng, p)
    ph, pw = pmask.shape
    fit = min(MAX_PATCH_FRACTION * bh / ph, MAX_PATCH_FRACTION * bw / pw, 1.0)
    if fit < 1.0:
        size = (max(MARGIN * 2 + 1, int(pw * fit)), max(MARGIN * 2 + 1, int(ph * fit)))
        patch = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
        pmask = cv2.resize(pmask, size, interpolation=cv2.INTER_NEAREST)
        pmask[:MARGIN], pmask[-MARGIN:], pmask[:, :MARGIN], pmask[:, -MARGIN:] = 0, 0, 0, 0
        if not pmask.any():
            pmask[size[1] // 2, size[0] // 2] = 255
    skin = benign_skin(background, p.mask_dilate)
    centre = _centre(pmask, (bh, bw), rng)
    out = cv2.seamlessClone(patch, skin, pmask, centre, cv2.NORMAL_CLONE)
    return Generated(np.ascontiguousarray(out), fallback)


def _centre(mask: Mask, dst: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """Jittered centre for seamlessClone, clamped so the mask's bounding box stays inside."""
    _, _, mw, mh = cv2.boundingRect(mask)
    h, w = dst
    jx, jy = rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, size=2)
    # OpenCV places the mask's bounding box at (cx - mw // 2, cy - mh // 2).
    cx = min(max(round(w / 2 + jx * w), mw // 2 + 1), w - (mw - mw // 2) - 1)
    cy = min(max(round(h / 2 + jy * h), mh // 2 + 1), h - (mh - mh // 2) - 1)
    return int(cx), int(cy)


# ---------------------------------------------------------------------------------- the stage


def synthesize(
    splits: pd.DataFrame, images: ImageSource, params: SynthParams, out_h5: str | Path
) -> tuple[pd.DataFrame, dict]:
    """Generate every planned sample into ``out_h5``; return (candidate table, summary)."""
    plan = plan_samples(splits, params)
    fallbacks = 0

    def _images() -> Iterable[bytes]:
        nonlocal fallbacks
        rows = plan.itertuples(index=False)
        for i, row in enumerate(tqdm(rows, total=len(plan), desc="synth_positives", unit="img",
                                     disable=None)):  # fmt: skip
            rng = np.random.default_rng([params.seed, i, 2])
            gen = make_positive(
                images.get(row.source_image_id), images.get(row.background_image_id), rng, params
            )
            fallbacks += gen.mask_fallback
            yield encode_png(gen.image)

    write_png_store(out_h5, plan["image_id"].tolist(), _images(), attrs={"kind": SYNTH_SOURCE})
    summary = {
        "candidates": len(plan),
        "train_positives": int(((splits["split"] == "train") & (splits["label"] == 1)).sum()),
        "donors_used": int(plan["source_image_id"].nunique()),
        "backgrounds_used": int(plan["background_image_id"].nunique()),
        "mask_fallbacks": fallbacks,
    }
    return plan, summary


def check_provenance(candidates: pd.DataFrame, splits: pd.DataFrame) -> None:
    """Raise :class:`UserError` unless every candidate derives from train images only.

    Donor (``source_image_id``) must be a train positive, background a train benign image of
    another patient, and ``patient_id`` / ``lesion_id`` must be the donor's; label must be 1.
    """
    train = splits[splits["split"] == "train"].set_index("image_id")
    for row in candidates.itertuples(index=False):
        where = f"candidate {row.image_id}"
        if row.source_image_id not in train.index or train.at[row.source_image_id, "label"] != 1:
            raise UserError(f"{where}: donor {row.source_image_id} is not a train positive")
        if row.background_image_id not in train.index:
            raise UserError(f"{where}: background {row.background_image_id} is not a train image")
        donor = train.loc[row.source_image_id]
        if (str(row.patient_id), str(row.lesion_id)) != (
            str(donor["patient_id"]),
            str(donor["lesion_id"]),
        ):
            raise UserError(f"{where}: patient/lesion id not inherited from its donor")
        if train.at[row.background_image_id, "patient_id"] == donor["patient_id"]:
            raise UserError(f"{where}: background is from the donor's own patient")
        if int(row.label) != 1:
            raise UserError(f"{where}: label must be 1")


def write_table(path: str | Path, df: pd.DataFrame) -> None:
    """Write a CSV atomically with ``\\n`` line ends (stable bytes)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
