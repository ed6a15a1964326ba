"""plot: plot data (CSV for `dvc plots`) and PNG figures from the evaluate stage's folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import EvaluationFiles, model_specs, read_raw_params
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.figures import render_pngs
from melanoma_kd.plots import cache_images, write_plot_data
from melanoma_kd.results import load_evaluation


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse paths, read the evaluation, write plot data and figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--eval-dir", required=True, help="the evaluate stage's folder")
    ap.add_argument("--predictions-dir", required=True, help="holdout predictions")
    ap.add_argument("--runs-dir", required=True, help="metrics/<group>/<name> of each run")
    ap.add_argument("--holdout-cache", required=True, help="holdout.h5 (hard-case images)")
    ap.add_argument("--plots-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    specs = model_specs(read_raw_params(args.params), metrics_root=args.runs_dir)
    files = EvaluationFiles(Path(args.eval_dir), Path(args.predictions_dir))
    ev = load_evaluation(files, specs, params.evaluate, key_predictions=True)
    write_plot_data(ev, args.plots_dir)
    paths = render_pngs(ev, args.plots_dir, cache_images(args.holdout_cache))
    print(f"plot: wrote plot data and {len(paths)} figures under {args.plots_dir}")


if __name__ == "__main__":
    main()
