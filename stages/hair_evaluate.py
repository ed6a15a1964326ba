"""hair_evaluate: the hair-removal ablation's comparison — every arm's scratch student and best
teacher scored on its own arm's holdout images, and each pair of arms compared per role, paired
on the same images and pooled over seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from melanoma_kd.config import load_params
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.evaluate import checked_holdout
from melanoma_kd.hair_ablation import ArmRun, arm_runs
from melanoma_kd.hair_effect import arm_summary, compare_arms
from melanoma_kd.io import write_json
from melanoma_kd.selection import read_best_teacher


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--models-dir", required=True, help="models/ (every arm's checkpoints)")
    ap.add_argument("--cache-dir", required=True, help="the main pipeline's cache")
    ap.add_argument("--arm-caches", required=True, help="data/hair_ablation (<arm>/ caches)")
    ap.add_argument(
        "--best-teacher", required=True, help="select_teacher's record (models/best_teacher.json)"
    )
    ap.add_argument("--out", required=True, help="the comparison (JSON)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    if not params.hair_ablation.arms:
        write_json(args.out, {"arms": "", "n_seeds": 0})  # the ablation is off: nothing to score
        print("hair_evaluate: hair_ablation.arms is empty; nothing compared")
        return
    from melanoma_kd.inference import score_checkpoint

    arch = read_best_teacher(args.best_teacher, params.teachers.archs)
    runs = arm_runs(
        params,
        arch,
        models=Path(args.models_dir),
        main_cache=Path(args.cache_dir),
        arm_caches=Path(args.arm_caches),
    )
    bar = tqdm(total=len(runs), desc="hair_evaluate: scoring", unit="model", disable=None)

    def score(run: ArmRun) -> pd.DataFrame:
        if not run.checkpoint.is_file():
            raise UserError(f"{run.checkpoint}: model file not found (needed for {run.name})")
        df = checked_holdout(
            score_checkpoint(run.checkpoint, run.cache_dir / "holdout.h5"), run.name
        )
        bar.update()
        return df

    with bar:
        result = compare_arms(params, runs, score, params.evaluate.n_boot, params.evaluate.seed)
    result["teacher_arch"] = arch
    write_json(args.out, result)
    for line in arm_summary(result):
        print(f"hair_evaluate: {line}")


if __name__ == "__main__":
    main()
