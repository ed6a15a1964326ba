"""synth_positives: new melanoma TRAIN images from train positives only (lesion transplant)."""

from __future__ import annotations

import argparse

from melanoma_kd.data.preprocessed import open_preprocessed
from melanoma_kd.data.synth_positives import (
    load_synth_params,
    read_splits,
    synthesize,
    write_table,
)
from melanoma_kd.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--splits", required=True, help="split table (data/splits.csv)")
    ap.add_argument("--images", required=True, help="preprocessed images (remove_hair output)")
    ap.add_argument("--out-h5", required=True, help="generated images (PNG store)")
    ap.add_argument("--out-csv", required=True, help="generated-sample table")
    args = ap.parse_args(argv)

    _, synth = load_synth_params(args.params)
    splits = read_splits(args.splits)
    with open_preprocessed(args.images) as store:
        table, summary = synthesize(splits, store, synth, args.out_h5)
    write_table(args.out_csv, table)
    print(
        f"synth_positives: {summary['candidates']} candidates from "
        f"{summary['donors_used']}/{summary['train_positives']} train positives on "
        f"{summary['backgrounds_used']} benign backgrounds "
        f"({summary['mask_fallbacks']} lesion-mask fallbacks)"
    )


if __name__ == "__main__":
    main()
