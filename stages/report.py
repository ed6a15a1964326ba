"""report: reports/summary.md from the evaluate stage's outputs (+ baselines and benchmark), and
metrics/headline.json, the pipeline's declared metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import model_specs, read_raw_params
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.report import headline, load_inputs, read_required, render, write_report


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse paths, read the metrics files, render and write the markdown summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics-dir", default="metrics/evaluate")
    ap.add_argument("--error-analysis", default="metrics/error_analysis.json")
    ap.add_argument("--kd-gain", default="metrics/kd_gain.json")
    ap.add_argument("--student-vs-teacher", default="metrics/student_vs_teacher.json")
    ap.add_argument("--seeds", default="metrics/seed_replicates.json")
    ap.add_argument("--transfer-ablation", default="metrics/transfer_ablation.json")
    ap.add_argument("--ablation", default="plots/kd_ablation.csv")
    ap.add_argument("--baselines", default="metrics/baselines.json", help="optional")
    ap.add_argument("--benchmark", default="metrics/benchmark.json", help="optional")
    ap.add_argument("--plots-dir", default="plots")
    ap.add_argument("--out", default="reports/summary.md")
    ap.add_argument("--export-metrics", required=True, help="export metrics of the KD student")
    ap.add_argument("--quantize-metrics", required=True, help="quantize stage metrics")
    ap.add_argument("--headline", required=True, help="the pipeline's headline metrics JSON")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    specs = model_specs(read_raw_params(args.params))
    inputs = load_inputs(
        specs,
        params.evaluate,
        metrics_dir=args.metrics_dir,
        error_analysis=args.error_analysis,
        kd_gain=args.kd_gain,
        ablation=args.ablation,
        baselines=args.baselines,
        benchmark=args.benchmark,
        plots_dir=args.plots_dir,
        student_vs_teacher=args.student_vs_teacher,
        seeds=args.seeds,
        transfer=args.transfer_ablation,
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
        for p, d in ((args.baselines, inputs.baselines), (args.benchmark, inputs.benchmark))
        if d is None and p  # an empty path means "not wanted" (the benchmark is not committed)
    ]
    print(
        f"report: wrote {args.out} ({len(specs)} models"
        + (f"; missing optional inputs: {', '.join(missing)}" if missing else "")
        + ")"
    )


if __name__ == "__main__":
    main()
