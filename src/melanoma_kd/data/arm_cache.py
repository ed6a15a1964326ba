"""A hair-removal ablation arm's image cache: the manifest's images preprocessed the arm's way
(:func:`melanoma_kd.hair_ablation.arm_preprocess`), cached per split exactly as the main
``cache`` stage caches the main pipeline's images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from melanoma_kd.config import Params
from melanoma_kd.data.cache import build_caches
from melanoma_kd.data.hair import dehair_manifest
from melanoma_kd.hair_ablation import arm_preprocess, checked_arm
from melanoma_kd.io import sha256_file, sha256_json


def build_arm_cache(
    params: Params, arm: str, manifest: pd.DataFrame, splits: pd.DataFrame, out_dir: Path
) -> dict[str, int]:
    """The arm's image cache: every manifest image preprocessed the arm's way (no hair truth is
    read), then the per-split caches at ``cache.size`` exactly as the ``cache`` stage builds
    them (labelled images only). ``out_dir`` appears only once complete."""
    p = arm_preprocess(params, checked_arm(params, arm))
    with tempfile.TemporaryDirectory(prefix="hair_cache_") as tmp:
        images = Path(tmp) / "preprocessed.h5"
        dehair_manifest(manifest, p, images, truth_path=None, n_examples=0)
        inputs_hash = sha256_json(
            {
                "images": sha256_file(images),
                "splits": sha256_json(splits.astype(str).to_dict("list")),
            }
            | {"size": params.cache.size, "hair_arm": arm}
        )
        return build_caches(splits, images, out_dir, params.cache.size, inputs_hash)
