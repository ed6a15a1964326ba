"""export: one checkpoint → ONNX (dynamic batch), verified against PyTorch on validation images.

With ``--select-from`` the checkpoint is the best KD point on validation pAUC (written to
``--selected``); otherwise ``--checkpoint`` names it. The validation-chosen threshold and the
training preprocessing go into the ONNX metadata, so ``melanoma-kd predict`` needs only the file.
``--deploy-out`` adds a latency-only copy at ``benchmark.deploy_size``, or at the trained size for
a model with a fixed input size that rejects it; ``deploy_image_size`` in ``--metrics`` and
``image_size`` in that file's metadata record the size used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.data.hair import output_params
from melanoma_kd.deploy import (
    export_checkpoint,
    rank_students,
    read_metadata,
    validation_thresholds,
)
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.selection import RULE as SELECTION_RULE


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--name", required=True, help="model name stored in the metadata")
    ap.add_argument("--checkpoint", help="checkpoint to export")
    ap.add_argument("--val-predictions", help="its validation predictions (for the threshold)")
    ap.add_argument("--select-from", help="KD metrics root: export the best point on validation")
    ap.add_argument("--checkpoint-dir", help="with --select-from: where <point>.pt lives")
    ap.add_argument("--selected", help="with --select-from: JSON recording the chosen point")
    ap.add_argument("--val-cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--deploy-out",
        help="also export at benchmark.deploy_size (latency only); a model with a fixed input "
        "size that rejects it is exported at its trained size (the file name is kept)",
    )
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    selection = None
    if args.select_from:
        if not (args.checkpoint_dir and args.selected):
            raise UserError("export: --select-from needs --checkpoint-dir and --selected")
        from melanoma_kd.catalog import kd_points, point_key, read_raw_params  # grid names

        grid = [point_key(pt) for pt in kd_points(read_raw_params(args.params).get("distill", {}))]
        ranking = rank_students(args.select_from, grid)
        best = ranking[0]
        checkpoint = Path(args.checkpoint_dir) / f"{best['point']}.pt"
        val_predictions = Path(args.select_from) / best["point"] / "val_predictions.csv"
        selection = {
            **best,
            "checkpoint": str(checkpoint),
            "candidates": len(ranking),
            "selected_on": SELECTION_RULE,
        }
    elif args.checkpoint and args.val_predictions:
        checkpoint, val_predictions = Path(args.checkpoint), Path(args.val_predictions)
    else:
        raise UserError("export: give --checkpoint and --val-predictions, or --select-from")

    thresholds = validation_thresholds(val_predictions, params.evaluate.sens_target)
    metadata = {
        **thresholds,
        "cache_size": params.cache.size,
        "preprocess": output_params(params.preprocess),
    }
    report = export_checkpoint(
        checkpoint,
        args.out,
        args.val_cache,
        name=args.name,
        opset=params.export.opset,
        atol=params.export.atol,
        metadata=metadata,
        deploy_out=args.deploy_out,
        deploy_size=params.benchmark.deploy_size,
    )
    flat = {
        "opset": params.export.opset,
        "atol": params.export.atol,
        "threshold": thresholds["threshold"],
        "threshold_max_f1": thresholds["threshold_max_f1"],
    }
    for kind, r in report.items():
        flat |= {f"{kind}_{k}": v for k, v in r.items()}
    write_json(args.metrics, flat)
    if selection is not None:
        write_json(args.selected, selection)
        print(
            f"export: selected KD point {selection['point']} (val pAUC "
            f"{selection['val_pauc']:.4f}, ROC-AUC {selection['val_roc_auc']:.4f}, "
            f"{selection['candidates']} candidates)"
        )
    if "deploy" in report and report["deploy"]["image_size"] != params.benchmark.deploy_size:
        note = read_metadata(args.deploy_out).get("input_size_note", "fixed input size")
        print(f"export: {args.name}: {note} -> {args.deploy_out}")
    print(
        f"export: {args.name} -> {args.out} (max |Δp| {report['native']['max_abs_prob_diff']:.2e}"
        f", threshold {thresholds['threshold']:.4f})"
    )


if __name__ == "__main__":
    main()
