"""Patient-grouped negative subsampling: cut a large data set to a benign-image budget.

ISIC 2024 has ~401k images of which 393 are melanoma; the published recipe trained on 40,000
benign images. With ``data.max_negatives`` set, ingest keeps every melanoma image and whole
patients (the split groups by patient, and a patient's images stay together), before any image
is decoded, so no stage ever reads the images left out. The record of what was kept
(``subsample_*`` keys) goes into ``metrics/ingest.json`` and, from there, ``split_metadata.json``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma_kd.errors import UserError

SUBSAMPLE_PREFIX = "subsample_"


def _class_counts(manifest: pd.DataFrame, when: str) -> dict[str, int]:
    positives = int(manifest["label"].sum())
    return {
        f"{SUBSAMPLE_PREFIX}images_{when}": len(manifest),
        f"{SUBSAMPLE_PREFIX}positives_{when}": positives,
        f"{SUBSAMPLE_PREFIX}negatives_{when}": len(manifest) - positives,
        f"{SUBSAMPLE_PREFIX}patients_{when}": int(manifest["patient_id"].nunique()),
    }


def subsample_negatives(
    manifest: pd.DataFrame, max_negatives: int, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep every melanoma image and whole patients, with at most ``max_negatives`` benign images.

    Patients owning a melanoma image are all kept, with all their images. Benign-only patients
    are then visited in a seeded order (a permutation of their sorted ids, so the result does not
    depend on row order) and each is kept whole if its images still fit the remaining budget. The
    kept rows keep their manifest order. Returns them with a flat record: the budget, the seed,
    and image / melanoma / benign / patient counts before and after.

    A data set with at most ``max_negatives`` benign images is kept whole. A budget below the
    benign images of the melanoma patients, or one no benign-only patient fits while those
    patients own none, is a one-line :class:`UserError`.
    """
    per_patient = manifest.groupby("patient_id", sort=True)["label"].agg(n="size", pos="sum")
    per_patient["neg"] = per_patient["n"] - per_patient["pos"]
    record: dict[str, int] = {
        f"{SUBSAMPLE_PREFIX}max_negatives": int(max_negatives),
        f"{SUBSAMPLE_PREFIX}seed": int(seed),
        **_class_counts(manifest, "before"),
    }
    if per_patient["neg"].sum() <= max_negatives:
        return manifest, record | _class_counts(manifest, "after")
    with_melanoma = per_patient[per_patient["pos"] > 0]
    forced = int(with_melanoma["neg"].sum())
    if forced > max_negatives:
        raise UserError(
            f"data.max_negatives: {max_negatives} is below the {forced} benign images of the "
            f"{len(with_melanoma)} patients with melanoma, who are kept whole; set it >= {forced} "
            "or null"
        )
    benign_only = per_patient.loc[per_patient["pos"] == 0, "neg"]
    order = np.random.default_rng(seed).permutation(len(benign_only))
    budget = max_negatives - forced
    kept = set(with_melanoma.index)
    for patient, n in benign_only.iloc[order].items():
        if budget == 0:
            break
        if n <= budget:
            kept.add(patient)
            budget -= int(n)
    if budget == max_negatives:  # no benign image at all
        smallest = int(benign_only.min())
        raise UserError(
            f"data.max_negatives: {max_negatives} keeps no benign image (the melanoma patients "
            f"own none and the smallest benign-only patient has {smallest}); raise it or set null"
        )
    out = manifest[manifest["patient_id"].isin(kept)].reset_index(drop=True)
    return out, record | _class_counts(out, "after")


def subsample_record(report: dict) -> dict:
    """The subsampling keys of an ingest report (none when subsampling was off)."""
    return {k: v for k, v in report.items() if k.startswith(SUBSAMPLE_PREFIX)}
