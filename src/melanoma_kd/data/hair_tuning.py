"""Choosing the ``shape`` hair detector's parameters on TRAIN images only.

The synthetic data set knows where its hairs are (``truth.hdf5``), so the detector can be tuned
against truth, but only on the images of the train split: validation and holdout images never
inform a hair-removal setting that then preprocesses them.

:func:`tune_shape` tries every combination of a small grid (:data:`GRID`) over the train
images and picks, among those that mark at most ``max_lesion`` of the lesion pixels of train
images WITHOUT hair (lesion-sparing is a constraint, not a trade-off), the one with the highest
mask recall at precision >= ``min_precision`` (both pooled over the pixels of train images with
hair; the issue's target is a precision floor at high recall; the floor sits above the
target's 0.75 and the lesion limit below its 0.5 %, to leave room for images the tuning never
saw); higher IoU, then the earlier grid
point, break ties. When no point meets the lesion limit, the one marking the fewest lesion
pixels wins; when none of those meets the precision floor, the most precise one. The black-hat
and line responses depend only on the kernel sizes, so they are computed once per kernel pair;
the colour branch's (:func:`~melanoma_kd.data.hair.light_colour_residual`) and the chroma
cues' (:func:`~melanoma_kd.data.hair.chroma_lines`) once per median size, at gain 1 (the line
filter is linear, so a gain scales both).

    python -m melanoma_kd.data.hair_tuning --params params.yaml --splits data/splits.csv \\
        --truth data/raw/synthetic --out tuning.json

prints the chosen ``preprocess.shape`` values (to copy into params.yaml) and writes every grid
point's figures to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from melanoma_kd.config import ShapeDetectorParams, load_params
from melanoma_kd.data.hair import (
    GREY,
    YELLOW,
    Image,
    Mask,
    chroma_lines,
    light_colour_residual,
    line_response,
    shape_mask,
)
from melanoma_kd.data.sources import open_images
from melanoma_kd.data.synthetic import ArtefactTruth, open_truth
from melanoma_kd.data.tables import read_table
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.io import write_json

# Grid over the shape detector's main knobs; line_threshold_low follows as half of
# line_threshold. Kernel keys first (their responses are shared by the rest). Not tuned:
# line_ratio (the synthetic lesions' pigment network is faint, so train images cannot choose
# it; 0.35 is set by design, for dark networks: tests/test_hair.py), mesh_cell (hairs' holes
# are tiny or large, cells in between: any 10..40 px scored the same) and the length limits.
# blackhat_kernel 7, min_elongation 4 and max_cells 6 were chosen by the earlier, wider grid
# (7/9, 3/4, 3/6) and are kept; so is colour_median 7 (9 marked more lesion on train images);
# threshold 10 (8 gained nothing), relative_threshold 0.25 (0.2 lost recall: neighbouring
# hairs merge into shapes the filters drop), colour_gain 5.5 (7 lost precision), the gains 6
# (the chroma thresholds are tuned instead), yellow_threshold 12 and the chroma relative
# thresholds 0.4, colour_relative_threshold 0.25 (0.35 lost recall) and grey_threshold 12
# (15 and 18 lost recall) came out of narrower runs. colour_veto_blackhat 50 is set by design
# (a dark pigment network must veto the chroma branches: tests/test_hair.py; the synthetic
# networks are faint, so train images cannot choose it). colour_veto 0 and grey_gain 0: off.
GRID: dict[str, list] = {
    "blackhat_kernel": [7],
    "line_length": [13],
    "colour_median": [7],
    "line_threshold": [10.0, 12.0],
    "colour_threshold": [15.0, 18.0],
    "colour_relative_threshold": [0.25],
    "colour_veto": [0, 4, 5],
    "yellow_gain": [6.0],
    "yellow_threshold": [12.0],
    "yellow_relative_threshold": [0.4],
    "grey_gain": [0.0, 6.0],
    "grey_threshold": [12.0],
    "grey_relative_threshold": [0.4],
}
KERNEL_KEYS = ("blackhat_kernel", "line_length", "colour_median")
# The targets are precision >= 0.75 at recall >= 0.9 and <= 0.5 % of lesion pixels
# changed on images without hair; both limits keep a margin for images the tuning never saw.
MAX_LESION = 0.004  # at most 0.4 % of lesion pixels marked on train images without hair
MIN_PRECISION = 0.78  # pooled mask precision on train images with hair


@dataclass(frozen=True)
class Sample:
    """One train image with its truth."""

    image: Image
    true_mask: Mask
    has_hair: bool
    detail: ArtefactTruth


def _score(masks: Iterable[Mask], samples: Sequence[Sample]) -> dict[str, float]:
    tp = fp = fn = lesion_hit = lesion_px = 0
    for mask, s in zip(masks, samples, strict=True):
        pred = mask.astype(bool)
        if s.has_hair:
            true = s.true_mask.astype(bool)
            tp += int(np.count_nonzero(pred & true))
            fp += int(np.count_nonzero(pred & ~true))
            fn += int(np.count_nonzero(~pred & true))
        else:
            lesion = s.detail.lesion.astype(bool)
            lesion_hit += int(np.count_nonzero(pred & lesion))
            lesion_px += int(np.count_nonzero(lesion))
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "lesion_marked": lesion_hit / lesion_px if lesion_px else 0.0,
    }


def tune_shape(
    samples: Sequence[Sample],
    base: ShapeDetectorParams,
    grid: dict[str, list] | None = None,
    max_lesion: float = MAX_LESION,
    min_precision: float = MIN_PRECISION,
) -> tuple[ShapeDetectorParams, list[dict]]:
    """(best params, one row per grid point with its figures); see the module docstring."""
    grid = GRID if grid is None else grid
    if not samples:
        raise UserError("hair tuning: no train images with hair truth")
    kernel_keys = [k for k in KERNEL_KEYS if k in grid]
    other_keys = [k for k in grid if k not in kernel_keys]
    rows: list[dict] = []
    best: tuple[tuple, ShapeDetectorParams] | None = None
    for kernel_values in itertools.product(*(grid[k] for k in kernel_keys)):
        kp = base.model_copy(update=dict(zip(kernel_keys, kernel_values, strict=True)))
        responses = [_responses(s.image, kp) for s in samples]
        for values in itertools.product(*(grid[k] for k in other_keys)):
            update = dict(zip(other_keys, values, strict=True))
            if "line_threshold" in update:
                update["line_threshold_low"] = update["line_threshold"] / 2
            p = kp.model_copy(update=update)
            p = ShapeDetectorParams(**p.model_dump())  # validate the combination
            masks = (_mask(response, p) for response in responses)
            figures = _score(masks, samples)
            rows.append({**{k: getattr(p, k) for k in grid}, **figures})
            lesion_ok = figures["lesion_marked"] <= max_lesion
            precise = figures["precision"] >= min_precision
            if not lesion_ok:
                key: tuple = (False, False, -figures["lesion_marked"], 0.0)
            elif not precise:
                key = (True, False, figures["precision"], 0.0)
            else:
                key = (True, True, figures["recall"], figures["iou"])
            if best is None or key > best[0]:
                best = (key, p)
    assert best is not None
    return best[1], rows


Responses = tuple[np.ndarray, ...]


def _responses(image: Image, p: ShapeDetectorParams) -> Responses:
    """(black-hat, its line response, colour residual, its line response, then ridge and line
    response of the yellow and the grey cue), colour and chroma at gain 1: what
    :func:`melanoma_kd.data.hair.hair_mask` computes before :func:`shape_mask`."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    k = p.blackhat_kernel
    shape = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    padded = cv2.copyMakeBorder(gray, k, k, k, k, cv2.BORDER_REPLICATE)
    bh = cv2.morphologyEx(padded, cv2.MORPH_BLACKHAT, shape)[k:-k, k:-k].astype(np.float32)
    colour = light_colour_residual(image, p.colour_median)
    chroma_args = (image, p.colour_median, p.line_length, p.line_angles)
    return (
        bh,
        line_response(bh, p.line_length, p.line_angles),
        colour,
        line_response(colour, p.line_length, p.line_angles),
        *(x for pair in chroma_lines(*chroma_args, (YELLOW, GREY)) for x in pair),
    )


def _mask(responses: Responses, p: ShapeDetectorParams) -> Mask:
    bh, line, colour, colour_line, yellow, yellow_line, grey, grey_line = responses
    colour_pair = None
    if p.colour_gain > 0:
        gain = np.float32(p.colour_gain)
        colour_pair = (gain * colour, gain * colour_line)
    chroma = [
        (np.float32(gain) * ridge, np.float32(gain) * cue, threshold, relative, any_dark)
        for gain, ridge, cue, threshold, relative, any_dark in (
            (
                p.yellow_gain,
                yellow,
                yellow_line,
                p.yellow_threshold,
                p.yellow_relative_threshold,
                False,
            ),
            (p.grey_gain, grey, grey_line, p.grey_threshold, p.grey_relative_threshold, True),
        )
        if gain > 0
    ]
    return shape_mask(bh, line, p, colour_pair, chroma)


def load_train_samples(
    splits: pd.DataFrame, truth_path: Path, limit: int | None = None
) -> list[Sample]:
    """The train-split rows of ``splits`` (``image_id``, ``location``, ``split``) with their
    truth; ids the truth does not know are skipped."""
    train = splits.loc[splits["split"] == "train", ["image_id", "location"]].astype(str)
    if limit is not None:
        train = train.iloc[:limit]
    samples = []
    with open_images(train) as store, open_truth(truth_path) as truth:
        if truth is None:
            raise UserError(f"{truth_path}: hair-truth file not found")
        for image_id in train["image_id"]:
            known, detail = truth.get(image_id), truth.detail(image_id)
            if known is None or detail is None:
                continue
            samples.append(Sample(store.get(image_id), known[1], known[2], detail))
    return samples


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--splits", required=True, help="data/splits.csv (only 'train' rows are used)")
    ap.add_argument("--truth", required=True, help="truth.hdf5 of the synthetic data set (or dir)")
    ap.add_argument("--out", required=True, help="JSON: every grid point's figures")
    ap.add_argument("--limit", type=int, default=None, help="first N train images only")
    ap.add_argument("--min-precision", type=float, default=MIN_PRECISION)
    ap.add_argument("--max-lesion", type=float, default=MAX_LESION)
    args = ap.parse_args(argv)

    base = load_params(args.params).preprocess.shape
    splits = read_table(Path(args.splits), "splits", ("image_id", "location", "split"))
    samples = load_train_samples(splits, Path(args.truth), args.limit)
    best, rows = tune_shape(
        samples, base, max_lesion=args.max_lesion, min_precision=args.min_precision
    )
    write_json(args.out, {"train_images": len(samples), "chosen": best.model_dump(), "grid": rows})
    chosen = next(r for r in rows if all(r[k] == getattr(best, k) for k in GRID))
    print(f"hair tuning on {len(samples)} train images: {json.dumps(chosen)}")
    print("preprocess.shape:")
    for key, value in best.model_dump().items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
