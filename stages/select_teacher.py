"""select_teacher: the teacher best on validation (highest pAUC; ties: ROC-AUC, then name),
recorded in one small file. Stages that retrain "the best teacher" (teacher_replicate,
hair_teacher) depend on this record, not on the teachers' metrics, so they rerun when the choice
changes, not whenever a teacher is retrained."""

from __future__ import annotations

import argparse

from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.hair_ablation import best_teacher_arch
from melanoma_kd.io import write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--teacher-metrics", required=True, help="metrics/teachers/<arch>/summary.json")
    ap.add_argument("--out", required=True, help="the record (JSON: arch)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    arch = best_teacher_arch(params, args.teacher_metrics)
    write_json(args.out, {"arch": arch})
    print(f"select_teacher: {arch} (of {len(params.teachers.archs)} teachers)")


if __name__ == "__main__":
    main()
