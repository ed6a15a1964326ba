"""cache: one HDF5 per split at cache.size (shorter-side resize + centre crop), byte-stable."""

from __future__ import annotations

import argparse

import pandas as pd

from melanoma_kd.config import load_params
from melanoma_kd.data.cache import build_caches
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import sha256_file, sha256_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--splits", required=True)
    ap.add_argument("--images", required=True, help="preprocessed images (remove_hair output)")
    ap.add_argument("--synth-csv", required=True, help="kept generated positives (table)")
    ap.add_argument("--synth-images", required=True, help="kept generated positives (images)")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    ids = {"image_id": str, "lesion_id": str, "patient_id": str}
    splits = pd.read_csv(args.splits, dtype=ids)
    hashed = {"splits": args.splits, "images": args.images}
    extra = None
    if params.train.synthetic_positives:
        extra = (pd.read_csv(args.synth_csv, dtype=ids), args.synth_images)
        hashed |= {"synth_csv": args.synth_csv, "synth_images": args.synth_images}
    inputs_hash = sha256_json(
        {**{k: sha256_file(v) for k, v in hashed.items()}, "size": params.cache.size}
    )
    counts = build_caches(splits, args.images, args.out_dir, params.cache.size, inputs_hash, extra)
    print(
        "cache: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" at {params.cache.size} px"
    )


if __name__ == "__main__":
    main()
