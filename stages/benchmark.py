"""benchmark: CPU latency (batch 1; 1 thread and all cores) of every model × runtime, sizes and
parameter counts → metrics JSON, a markdown deployment table and a latency-vs-val-pAUC plot.

Timings are not reproducible, so those three files are untracked; the stage's DVC output is
``--timed``, the list of what was timed (see :func:`melanoma_kd.deploy.tables.timed_models`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.deploy.benchmark import benchmark
from melanoma_kd.deploy.tables import deployment_table, plot_latency_pareto, timed_models
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.io import atomic_path, read_json, write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--onnx-dir", required=True)
    ap.add_argument("--quantize-metrics", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--timed", required=True, help="what was timed (machine-independent)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    b = params.benchmark
    if not Path(args.quantize_metrics).is_file():
        raise UserError(f"{args.quantize_metrics}: quantize metrics not found (run quantize)")
    quant = read_json(args.quantize_metrics)
    result = benchmark(
        args.onnx_dir,
        params.teachers.archs,
        warmup=b.warmup,
        runs=b.runs,
        deploy_size=b.deploy_size,
        quantize_metrics=quant,
        progress=lambda what: print(f"benchmark: {what}", flush=True),
    )
    write_json(args.out, result)
    table = deployment_table(result, quant)
    with atomic_path(args.report) as tmp:
        tmp.write_text(table)
    plot_latency_pareto(result, args.plot)
    write_json(args.timed, timed_models(result))
    print(table)


if __name__ == "__main__":
    main()
