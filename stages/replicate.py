"""replicate: for one extra seed, retrain the scratch student and the KD point chosen on
validation, with and without its transfer set.

Only the init/shuffle seed differs from the main runs (see ``melanoma_kd.replicates``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import read_selected
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.replicates import KINDS, copy_run, train_replicate, trains_without_transfer
from melanoma_kd.runs import RunPaths


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument(
        "--selected", required=True, help="select_student's record (models/selected_student.json)"
    )
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--teacher-outputs", required=True)
    ap.add_argument("--transfer", required=True, help="transfer-set cache (transfer_set stage)")
    ap.add_argument("--out-dir", required=True, help="writes scratch.pt, kd.pt, no_transfer.pt")
    ap.add_argument("--metrics-dir", required=True, help="writes scratch/, kd/, no_transfer/")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    point = read_selected(args.selected)
    out, runs = Path(args.out_dir), Path(args.metrics_dir)
    paths = {kind: RunPaths(out / f"{kind}.pt", runs / kind) for kind in KINDS}
    for kind in KINDS:
        if kind == "no_transfer" and not trains_without_transfer(params):
            copy_run(paths["kd"], paths[kind])  # no transfer set at all: the kd run is it
            continue
        train_replicate(
            params,
            kind,
            args.seed,
            cache_dir=Path(args.cache_dir),
            paths=paths[kind],
            point=point,
            teacher_outputs=Path(args.teacher_outputs),
            transfer=Path(args.transfer),
        )


if __name__ == "__main__":
    main()
