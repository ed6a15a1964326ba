"""teacher_replicate: the teacher best on validation retrained with another init/shuffle seed
(a DVC foreach over ``replicates.teacher_seeds``); only the seed differs from its main run."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.runs import RunPaths, teacher_run, train
from melanoma_kd.selection import read_best_teacher


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--seed", type=int, required=True, help="an item of replicates.teacher_seeds")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument(
        "--best-teacher", required=True, help="select_teacher's record (models/best_teacher.json)"
    )
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    if args.seed not in params.replicates.teacher_seeds:
        raise SystemExit(f"error: --seed {args.seed} is not in replicates.teacher_seeds")
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    arch = read_best_teacher(args.best_teacher, params.teachers.archs)
    train(
        params,
        teacher_run(params, arch, seed=args.seed),
        cache_dir=Path(args.cache_dir),
        paths=RunPaths(Path(args.checkpoint), Path(args.metrics_dir)),
    )


if __name__ == "__main__":
    main()
