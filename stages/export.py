"""export: one checkpoint → ONNX (dynamic batch), verified against PyTorch on validation images.

The checkpoint is ``--checkpoint`` (thresholds from ``--val-predictions``), the KD point that
the select_student stage recorded in ``--selected``, or the teacher best on validation that the
select_teacher stage recorded in ``--best-teacher`` (the evaluation's "best teacher"); the last
two read ``<name>.pt`` in ``--checkpoint-dir`` and ``<name>/val_predictions.csv`` in
``--runs-dir``. The validation-chosen threshold and the training preprocessing go into the ONNX
metadata, so ``melanoma-kd predict`` needs only the file.
``--deploy-out`` adds a latency-only copy at ``benchmark.deploy_size``, or at the trained size for
a model with a fixed input size that rejects it; ``deploy_image_size`` in ``--metrics`` and
``image_size`` in that file's metadata record the size used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.catalog import read_selected
from melanoma_kd.config import load_params
from melanoma_kd.data.hair import output_params
from melanoma_kd.deploy.export import export_checkpoint, validation_calibration
from melanoma_kd.deploy.onnx_model import read_metadata
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.selection import read_best_teacher


def _source(args: argparse.Namespace, archs: list[str]) -> tuple[Path, Path]:
    """The checkpoint to export and its validation predictions."""
    if args.checkpoint is not None:
        if args.val_predictions is None or args.checkpoint_dir or args.runs_dir:
            raise UserError("export: --checkpoint goes with --val-predictions (no --*-dir)")
        return Path(args.checkpoint), Path(args.val_predictions)
    mode = "--selected" if args.selected is not None else "--best-teacher"
    if not (args.checkpoint_dir and args.runs_dir) or args.val_predictions is not None:
        raise UserError(f"export: {mode} goes with --checkpoint-dir and --runs-dir")
    if args.selected is not None:
        name = read_selected(args.selected).key
    else:
        name = read_best_teacher(args.best_teacher, archs)
    return (
        Path(args.checkpoint_dir) / f"{name}.pt",
        Path(args.runs_dir) / name / "val_predictions.csv",
    )


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--name", required=True, help="model name stored in the metadata")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint to export")
    source.add_argument("--selected", help="select_student's record: export the KD point it names")
    source.add_argument(
        "--best-teacher",
        help="select_teacher's record (models/best_teacher.json): export the teacher it names",
    )
    ap.add_argument("--val-predictions", help="with --checkpoint: its validation predictions")
    ap.add_argument(
        "--checkpoint-dir", help="with --selected/--best-teacher: where <name>.pt lives"
    )
    ap.add_argument(
        "--runs-dir",
        help="with --selected/--best-teacher: <name>/val_predictions.csv",
    )
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
    checkpoint, val_predictions = _source(args, params.teachers.archs)
    platt, thresholds = validation_calibration(
        val_predictions, params.evaluate.sens_target, params.evaluate.ece_bins
    )
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
        calibration=platt,
    )
    flat = {
        "checkpoint": checkpoint.as_posix(),
        "opset": params.export.opset,
        "atol": params.export.atol,
        "threshold": thresholds["threshold"],
        "threshold_max_f1": thresholds["threshold_max_f1"],
        **{f"calibration_{k}": v for k, v in thresholds["calibration"].items()},
    }
    for kind, r in report.items():
        flat |= {f"{kind}_{k}": v for k, v in r.items()}
    write_json(args.metrics, flat)
    if "deploy" in report and report["deploy"]["image_size"] != params.benchmark.deploy_size:
        note = read_metadata(args.deploy_out).get("input_size_note", "fixed input size")
        print(f"export: {args.name}: {note} -> {args.deploy_out}")
    print(
        f"export: {args.name} ({checkpoint}) -> {args.out} (max |Δp| "
        f"{report['native']['max_abs_prob_diff']:.2e}, threshold {thresholds['threshold']:.4f})"
    )


if __name__ == "__main__":
    main()
