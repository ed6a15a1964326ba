"""report: reports/summary.md from the evaluate stage's folder (+ baselines and benchmark), and
metrics/headline.json, the pipeline's declared metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import EvaluationFiles, model_specs, read_raw_params
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.report import headline, load_inputs, render, write_report
from melanoma_kd.results import read_required


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse paths, read the metrics files, render and write the markdown summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--eval-dir", required=True, help="the evaluate stage's folder")
    ap.add_argument("--baselines", default="", help="optional ('' = none)")
    ap.add_argument("--benchmark", default="", help="optional ('' = none)")
    ap.add_argument(
        "--hair-effect", default="", help="hair_evaluate's comparison, optional ('' = none)"
    )
    ap.add_argument("--plots-dir", required=True, help="the plot stage's figures (linked)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--export-metrics", required=True, help="export metrics of the KD student")
    ap.add_argument("--quantize-metrics", required=True, help="quantize stage metrics")
    ap.add_argument("--headline", required=True, help="the pipeline's headline metrics JSON")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    specs = model_specs(read_raw_params(args.params))
    inputs = load_inputs(
        specs,
        params.evaluate,
        EvaluationFiles(root=Path(args.eval_dir)),
        baselines=args.baselines,
        benchmark=args.benchmark,
        plots_dir=args.plots_dir,
        hair_effect=args.hair_effect,
    )
    write_report(args.out, render(inputs, args.out))
    write_json(
        args.headline,
        headline(
            inputs,
            read_required(Path(args.export_metrics), "export metrics", "export_student"),
            read_required(Path(args.quantize_metrics), "quantize metrics", "quantize"),
        ),
    )
    missing = [
        p
        for p, d in (
            (args.baselines, inputs.baselines),
            (args.benchmark, inputs.benchmark),
            (args.hair_effect, inputs.hair_effect),
        )
        if d is None and p  # an empty path means "not wanted" (the benchmark is not committed)
    ]
    print(
        f"report: wrote {args.out} ({len(specs)} models"
        + (f"; missing optional inputs: {', '.join(missing)}" if missing else "")
        + ")"
    )


if __name__ == "__main__":
    main()
