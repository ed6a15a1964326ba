"""hair_cache: one hair-removal ablation arm's image cache — every image preprocessed the arm's
way (no hair removal, or the other detector), then cached per split as the cache stage does."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from melanoma_kd.config import load_params
from melanoma_kd.data.arm_cache import build_arm_cache
from melanoma_kd.data.hair import read_manifest
from melanoma_kd.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--arm", required=True, help="an item of hair_ablation.arms")
    ap.add_argument("--manifest", required=True, help="data/manifest.csv from ingest")
    ap.add_argument("--splits", required=True, help="data/splits.csv from split")
    ap.add_argument("--out-dir", required=True, help="the arm's cache (train/val/holdout.h5)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    ids = {"image_id": str, "lesion_id": str, "patient_id": str}
    splits = pd.read_csv(args.splits, dtype=ids)
    manifest = read_manifest(Path(args.manifest))
    counts = build_arm_cache(params, args.arm, manifest, splits, Path(args.out_dir))
    print(
        f"hair_cache {args.arm}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" at {params.cache.size} px"
    )


if __name__ == "__main__":
    main()
