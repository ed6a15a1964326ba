"""benchmark: CPU latency (batch 1; at each of benchmark.threads) of every model × runtime, sizes
and parameter counts → metrics JSON, the deployment report (best teacher and KD student × fp32 and
INT8: holdout ROC-AUC/pAUC from the evaluation, size, latency, Pareto marks, INT8 vs fp32) and the
latency-vs-ROC-AUC Pareto plot.

Timings are not reproducible, so those three files are untracked; the stage's DVC output is
``--timed``, the list of what was timed (see :func:`melanoma_kd.deploy.tables.timed_models`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import STUDENT_STEM, TEACHER_STEM
from melanoma_kd.config import load_params
from melanoma_kd.deploy.benchmark import benchmark
from melanoma_kd.deploy.pareto import deployed_models, holdout_metrics
from melanoma_kd.deploy.tables import timed_models, write_deployment
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.results import read_required


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--onnx-dir", required=True)
    ap.add_argument("--quantize-metrics", required=True, help="the KD student's quantize report")
    ap.add_argument(
        "--teacher-quantize-metrics", required=True, help="the best teacher's quantize report"
    )
    ap.add_argument("--eval-dir", required=True, help="the evaluation's folder (holdout metrics)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--timed", required=True, help="what was timed (machine-independent)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    b = params.benchmark
    quant = {
        STUDENT_STEM: read_required(Path(args.quantize_metrics), "quantize metrics", "quantize"),
        TEACHER_STEM: read_required(
            Path(args.teacher_quantize_metrics), "teacher quantize metrics", "quantize_teacher"
        ),
    }
    holdout = holdout_metrics(args.eval_dir)
    result = benchmark(
        args.onnx_dir,
        warmup=b.warmup,
        runs=b.runs,
        deploy_size=b.deploy_size,
        threads=b.threads,
        quantize_metrics=quant,
        progress=lambda what: print(f"benchmark: {what}", flush=True),
    )
    write_json(args.out, result)
    text = write_deployment(result, args.report, args.plot, quant, deployed_models(result, holdout))
    write_json(args.timed, timed_models(result))
    print(text)


if __name__ == "__main__":
    main()
