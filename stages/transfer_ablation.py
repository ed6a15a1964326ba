"""transfer_ablation: the KD point chosen on validation, retrained without the transfer set (a
copy of its run when ``distill.transfer_images`` is 0: it had none)."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import read_selected
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.replicates import copy_run, train_without_transfer, trains_without_transfer
from melanoma_kd.runs import RunPaths


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument(
        "--selected", required=True, help="select_student's record (models/selected_student.json)"
    )
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--teacher-outputs", required=True)
    ap.add_argument("--distill-dir", required=True, help="KD checkpoints (copied when no transfer)")
    ap.add_argument("--runs-dir", required=True, help="KD run metrics (copied when no transfer)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    point = read_selected(args.selected)
    paths = RunPaths(Path(args.checkpoint), Path(args.metrics_dir))
    if not trains_without_transfer(params):  # no transfer set at all: the selected run is it
        src = RunPaths(Path(args.distill_dir) / f"{point.key}.pt", Path(args.runs_dir) / point.key)
        copy_run(src, paths)
        return
    train_without_transfer(
        params,
        point,
        cache_dir=Path(args.cache_dir),
        paths=paths,
        teacher_outputs=Path(args.teacher_outputs),
    )


if __name__ == "__main__":
    main()
