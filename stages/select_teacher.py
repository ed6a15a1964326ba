"""select_teacher: the teacher best on validation (highest pAUC; ties: ROC-AUC, then name),
recorded in one small file: the only place the best teacher is chosen. Every stage that needs
"the best teacher" (teacher_outputs with ``distill.teacher: best``, export_teacher,
teacher_replicate, hair_teacher, hair_evaluate, evaluate) reads this record, not the teachers'
run summaries, so they all agree and rerun when the choice changes, not whenever a teacher's
summary does. The record holds the arch only, for that reason."""

from __future__ import annotations

import argparse

from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.selection import select_teacher


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--teacher-metrics", required=True, help="metrics/teachers/<arch>/summary.json")
    ap.add_argument("--out", required=True, help="the record (JSON: arch)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    arch = select_teacher(args.teacher_metrics, params.teachers.archs)
    write_json(args.out, {"arch": arch})
    print(f"select_teacher: {arch} (of {len(params.teachers.archs)} teachers)")


if __name__ == "__main__":
    main()
