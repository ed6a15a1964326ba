"""select_student: the KD grid point to deploy, chosen on validation (highest pAUC; ties:
ROC-AUC, then point name) among the current grid's run summaries; holdout is never read.

The record (``--out``) names the point, its validation scores and checkpoint; the export,
replicate and transfer_ablation stages read it.
"""

from __future__ import annotations

import argparse

from melanoma_kd.catalog import kd_points, read_raw_params
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.selection import selection_record


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--select-from", required=True, help="KD runs: <point>/summary.json")
    ap.add_argument("--checkpoint-dir", required=True, help="where <point>.pt lives (recorded)")
    ap.add_argument("--out", required=True, help="selection record (JSON)")
    args = ap.parse_args(argv)

    load_params(args.params)  # the whole file is validated, as by every stage
    grid = kd_points(read_raw_params(args.params).get("distill", {}))
    record = selection_record(args.select_from, grid, args.checkpoint_dir)
    write_json(args.out, record)
    print(
        f"select_student: KD point {record['point']} (val pAUC {record['val_pauc']:.4f}, "
        f"ROC-AUC {record['val_roc_auc']:.4f}, {record['candidates']} candidates)"
    )


if __name__ == "__main__":
    main()
