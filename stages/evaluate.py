"""evaluate: every model on holdout (thresholds chosen on validation) and the comparisons
between them, written to one folder that the plot and report stages read."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from melanoma_kd.catalog import EvaluationFiles, model_specs, read_raw_params, selected_point
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.evaluate import (
    best_teacher,
    evaluate_all,
    save_evaluation,
    score_model,
    summary_lines,
)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse paths, score every model, compute metrics and comparisons, write them."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--cache-dir", required=True, help="holds val.h5 and holdout.h5")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--selected", required=True, help="select_student's record")
    ap.add_argument(
        "--best-teacher", required=True, help="select_teacher's record (models/best_teacher.json)"
    )
    ap.add_argument("--predictions-dir", required=True, help="holdout predictions (out)")
    ap.add_argument("--out-dir", required=True, help="the evaluation's folder (out)")
    args = ap.parse_args(argv)

    params = load_params(args.params)  # validates the whole file; names come from the raw YAML
    specs = model_specs(read_raw_params(args.params), args.models_dir)
    selected = selected_point(args.selected, specs)
    predictions = {
        spec.name: score_model(spec, args.cache_dir)
        for spec in tqdm(specs, desc="evaluate: scoring", unit="model", disable=None)
    }
    teacher = best_teacher(args.best_teacher, specs)  # select_teacher's choice on validation
    ev = evaluate_all(specs, predictions, selected, params.evaluate, teacher=teacher)
    ev.transfer["transfer_images"] = params.distill.transfer_images
    save_evaluation(ev, EvaluationFiles(Path(args.out_dir), Path(args.predictions_dir)))
    for line in summary_lines(ev):
        print(f"evaluate: {line}")


if __name__ == "__main__":
    main()
