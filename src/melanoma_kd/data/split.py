"""Leakage-free split: patients (hence lesions and images) never straddle train/val/holdout.

Patients are assigned greedily, in a seeded order, to the split furthest below its quota of
melanoma (then benign) images, so both the split sizes and each split's melanoma rate track the
requested fractions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma_kd.config import SplitParams
from melanoma_kd.errors import UserError

SPLITS = ("train", "val", "holdout")


def assign_splits(manifest: pd.DataFrame, params: SplitParams) -> pd.Series:
    """Return the split name of every manifest row (index aligned with ``manifest``).

    Positive and negative images have separate quotas per split. Patients owning melanoma are
    placed first (largest melanoma count first, seeded order among equals) into the split with
    the largest relative shortfall of melanoma images; the rest are then placed by their benign
    images, counting the benign images the first pass already placed.
    """
    fractions = np.array([params.train, params.val, params.holdout])
    rng = np.random.default_rng(params.seed)
    per_patient = manifest.groupby("patient_id", sort=True).agg(
        n=("label", "size"), pos=("label", "sum")
    )
    per_patient["neg"] = per_patient["n"] - per_patient["pos"]
    targets = {c: fractions * per_patient[c].sum() for c in ("pos", "neg")}
    filled = {c: np.zeros(3) for c in ("pos", "neg")}
    patient_split: dict[str, str] = {}
    for key, stratum in (
        ("pos", per_patient[per_patient["pos"] > 0]),
        ("neg", per_patient[per_patient["pos"] == 0]),
    ):
        shuffled = stratum.iloc[rng.permutation(len(stratum))]
        ordered = shuffled.iloc[np.argsort(-shuffled[key].to_numpy(), kind="stable")]
        target = np.maximum(targets[key], 1e-9)
        for patient, row in ordered.iterrows():
            s = int(np.argmax((targets[key] - filled[key]) / target))
            filled["pos"][s] += row["pos"]
            filled["neg"][s] += row["neg"]
            patient_split[patient] = SPLITS[s]
    return manifest["patient_id"].map(patient_split).rename("split")


def split_summary(manifest: pd.DataFrame, split: pd.Series, params: SplitParams) -> dict:
    """Counts per split and class, groups per split, and the verified zero group overlap."""
    summary: dict[str, float | int] = {
        "seed": params.seed,
        "fraction_train": params.train,
        "fraction_val": params.val,
        "fraction_holdout": params.holdout,
    }
    for name in SPLITS:
        part = manifest[split == name]
        summary[f"{name}_images"] = len(part)
        summary[f"{name}_positives"] = int(part["label"].sum())
        summary[f"{name}_negatives"] = int((part["label"] == 0).sum())
        summary[f"{name}_positive_rate"] = round(float(part["label"].mean()), 6)
        summary[f"{name}_patients"] = int(part["patient_id"].nunique())
        summary[f"{name}_lesions"] = int(part["lesion_id"].nunique())
    for group in ("patient_id", "lesion_id"):
        sets = [set(manifest.loc[split == name, group]) for name in SPLITS]
        overlap = len(sets[0] & sets[1]) + len(sets[0] & sets[2]) + len(sets[1] & sets[2])
        summary[f"{group.removesuffix('_id')}_overlap"] = overlap
    return summary


def split_manifest(manifest: pd.DataFrame, params: SplitParams) -> tuple[pd.DataFrame, dict]:
    """Assign splits, verify no group leaks, and fail if a split lacks either class."""
    split = assign_splits(manifest, params)
    summary = split_summary(manifest, split, params)
    if summary["patient_overlap"] or summary["lesion_overlap"]:
        raise UserError(
            "split: a patient or lesion appears in two splits "
            "(a lesion_id is shared by several patients in the manifest)"
        )
    for name in SPLITS:
        if summary[f"{name}_positives"] == 0 or summary[f"{name}_negatives"] == 0:
            missing = "melanoma" if summary[f"{name}_positives"] == 0 else "benign"
            raise UserError(
                f"split: the {name} split would get no {missing} images "
                f"({summary[f'{name}_images']} images); add data or change split fractions"
            )
    out = manifest.assign(split=split.to_numpy())
    return out, summary
