"""Leakage-free split: patients (hence lesions and images) never straddle train/val/holdout.

Patients are stratified by whether they own any melanoma image, shuffled with the seed, and
assigned greedily to the split furthest below its image quota, so both the image fractions and
the melanoma rate of each split track the requested fractions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma_kd.config import SplitParams
from melanoma_kd.errors import UserError

SPLITS = ("train", "val", "holdout")


def assign_splits(manifest: pd.DataFrame, params: SplitParams) -> pd.Series:
    """Return the split name of every manifest row (index aligned with ``manifest``)."""
    fractions = np.array([params.train, params.val, params.holdout])
    rng = np.random.default_rng(params.seed)
    per_patient = manifest.groupby("patient_id", sort=True).agg(
        n=("label", "size"), pos=("label", "sum")
    )
    patient_split: dict[str, str] = {}
    for has_pos in (True, False):
        stratum = per_patient[(per_patient["pos"] > 0) == has_pos]
        order = rng.permutation(len(stratum))
        target = fractions * stratum["n"].sum()
        filled = np.zeros(3)
        # Largest patients first (in seeded random order among equals) keeps quotas tight.
        sizes = stratum["n"].to_numpy()[order]
        ids = stratum.index.to_numpy()[order]
        by_size = np.argsort(-sizes, kind="stable")
        for k in by_size:
            s = int(np.argmax(target - filled))
            filled[s] += sizes[k]
            patient_split[ids[k]] = SPLITS[s]
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
