"""transfer_set: unlabelled images for KD's distillation term (never val/holdout images)."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from melanoma_kd.config import load_params
from melanoma_kd.data.transfer import build_transfer_set
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--splits", required=True, help="data/splits.csv (ids that must not appear)")
    ap.add_argument("--out", required=True, help="transfer-set cache (HDF5)")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    labelled = pd.read_csv(args.splits, dtype={"image_id": str})
    summary = build_transfer_set(params, labelled, args.out)
    write_json(args.metrics, summary)
    print(f"transfer_set: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
