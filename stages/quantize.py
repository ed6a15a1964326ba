"""quantize: an exported model (the selected KD student, or the teacher best on validation) →
ONNX Runtime static QDQ INT8 (deployed), calibrated on seeded train images and compared with fp32
on validation; ``--dynamic-out`` adds dynamic INT8 (comparison only)."""

from __future__ import annotations

import argparse

from melanoma_kd.config import load_params
from melanoma_kd.deploy.quantize import quantize_model
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--model", required=True, help="fp32 ONNX model (export stage)")
    ap.add_argument("--train-cache", required=True, help="calibration images are drawn from it")
    ap.add_argument("--val-cache", required=True)
    ap.add_argument("--out", required=True, help="static QDQ INT8 model")
    ap.add_argument("--dynamic-out", help="also a dynamic INT8 model (comparison only)")
    ap.add_argument(
        "--deploy-model", required=True, help="fp32 deploy-size copy to quantize for latency"
    )
    ap.add_argument("--deploy-out", required=True, help="its static QDQ INT8 model")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    q = params.quantize
    report = quantize_model(
        args.model,
        args.out,
        args.train_cache,
        args.val_cache,
        calibration_size=q.calibration_size,
        method=q.method,
        per_channel=q.per_channel,
        reduce_range=q.reduce_range,
        seed=params.train.seed,
        sens_target=params.evaluate.sens_target,
        out_dynamic=args.dynamic_out,
        deploy_fp32=args.deploy_model,
        deploy_out=args.deploy_out,
    )
    write_json(args.metrics, report)
    print(
        f"quantize: {report['arch']}: {report['fp32_size_mb']:.2f} MB -> "
        f"{report['int8_size_mb']:.2f} MB ({report['int8_size_ratio']:.2f}x); val ROC-AUC "
        f"{report['fp32_val_roc_auc']:.4f} -> {report['int8_val_roc_auc']:.4f}; Spearman "
        f"{report['int8_spearman_vs_fp32']:.4f}"
    )


if __name__ == "__main__":
    main()
