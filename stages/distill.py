"""distill_response / distill_feature: one point of the KD grid, on cached teacher outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import parse_point
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.runs import RunPaths, student_run, train


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--point", required=True, help="<T>-<alpha>-response or <alpha>-feature")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--teacher-outputs", required=True)
    ap.add_argument("--transfer", required=True, help="transfer-set cache (transfer_set stage)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    point = parse_point(args.point)
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    train(
        params,
        student_run(params, point),
        cache_dir=Path(args.cache_dir),
        paths=RunPaths(Path(args.checkpoint), Path(args.metrics_dir)),
        teacher_outputs=Path(args.teacher_outputs),
        transfer=Path(args.transfer),
    )


if __name__ == "__main__":
    main()
