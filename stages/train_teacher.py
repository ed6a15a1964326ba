"""train_teacher: train one teacher architecture (a DVC foreach item over teachers.archs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.models.build import check_arch
from melanoma_kd.runs import RunPaths, teacher_run, train


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    check_arch(args.arch)
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    train(
        params,
        teacher_run(params, args.arch),
        cache_dir=Path(args.cache_dir),
        paths=RunPaths(Path(args.checkpoint), Path(args.metrics_dir)),
    )


if __name__ == "__main__":
    main()
