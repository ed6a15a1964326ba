"""hair_train: the scratch student or the best teacher retrained at one seed on one
hair-removal ablation arm's images (``hair_student`` / ``hair_teacher``, DVC matrices over
``hair_ablation.arms`` x ``hair_ablation.seeds``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.hair_ablation import ROLES, checked_arm
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.runs import RunPaths, student_run, teacher_run, train
from melanoma_kd.selection import read_best_teacher


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--role", required=True, choices=ROLES)
    ap.add_argument("--arm", required=True, help="an item of hair_ablation.arms")
    ap.add_argument("--seed", type=int, required=True, help="an item of hair_ablation.seeds")
    ap.add_argument("--cache-dir", required=True, help="the arm's cache (hair_cache@<arm>)")
    ap.add_argument(
        "--best-teacher",
        help="select_teacher's record (models/best_teacher.json); --role teacher only",
    )
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    arm = checked_arm(params, args.arm)
    if args.seed not in params.hair_ablation.seeds:
        raise SystemExit(f"error: --seed {args.seed} is not in hair_ablation.seeds")
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    if args.role == "student":
        run = student_run(params, seed=args.seed, hair=arm)
    elif args.best_teacher is None:
        raise SystemExit("error: --role teacher needs --best-teacher")
    else:
        arch = read_best_teacher(args.best_teacher, params.teachers.archs)
        run = teacher_run(params, arch, seed=args.seed, hair=arm)
    train(
        params,
        run,
        cache_dir=Path(args.cache_dir),
        paths=RunPaths(Path(args.checkpoint), Path(args.metrics_dir)),
    )


if __name__ == "__main__":
    main()
