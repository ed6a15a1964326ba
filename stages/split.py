"""split: patient-grouped, label-stratified train/val/holdout assignment of the manifest.

``split_metadata.json`` also carries ingest's negative-subsampling record (``subsample_*``: budget,
seed, counts before and after), when ingest subsampled.
"""

from __future__ import annotations

import argparse

import pandas as pd

from melanoma_kd.config import load_params
from melanoma_kd.data.split import split_manifest
from melanoma_kd.data.subsample import subsample_record
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import atomic_path, read_json, write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True, help="manifest with a split column")
    ap.add_argument("--metrics", required=True, help="split_metadata.json")
    ap.add_argument(
        "--ingest-report", required=True, help="ingest's metrics (its subsampling record is kept)"
    )
    args = ap.parse_args(argv)

    params = load_params(args.params)
    manifest = pd.read_csv(
        args.manifest, dtype={"image_id": str, "lesion_id": str, "patient_id": str}
    )
    out, summary = split_manifest(manifest, params.split)
    summary |= subsample_record(read_json(args.ingest_report))
    with atomic_path(args.out) as tmp:
        out.to_csv(tmp, index=False)
    write_json(args.metrics, summary)
    print(
        "split: "
        + ", ".join(
            f"{s} {summary[f'{s}_images']} ({summary[f'{s}_positives']} mel)"
            for s in ("train", "val", "holdout")
        )
    )


if __name__ == "__main__":
    main()
