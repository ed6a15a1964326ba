"""The ``melanoma-kd`` command.

    melanoma-kd predict IMAGE_OR_FOLDER... [--model PATH] [--format text|json|csv] [--out FILE]
                        [--threads N] [--params params.yaml]

prints, per image, P(melanoma) and the decision at the threshold chosen on validation (one line
each, one JSON list, or a CSV table; ``--out`` writes it to a file instead). A folder means every
image file below it. A file that cannot be used (missing, not an image, truncated, over
``predict.max_pixels``) gets one ``error:`` line on stderr (and its own row in JSON/CSV); the
other files are still answered, and the exit status is 2 if any file failed.

    melanoma-kd compare [A] [B] [--json] [--n-boot N] [--seed S] [--alpha 0.05]

compares the holdout results of two revisions (git revisions, branches or ``dvc exp`` names;
default ``HEAD`` against the workspace) model by model, with patient-bootstrap CIs, paired
permutation p-values (Holm-adjusted) and a verdict (:mod:`melanoma_kd.compare`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from melanoma_kd.errors import EXIT_USER_ERROR, cli_entry

DEFAULT_MODEL = "models/onnx/student_kd.onnx"  # the KD student select_student chose


def _max_pixels(params_path: str, explicit: bool) -> int:
    """``predict.max_pixels`` from params.yaml; the default when the file is absent."""
    from melanoma_kd.config import PredictParams, load_params

    if Path(params_path).is_file() or explicit:
        return load_params(params_path).predict.max_pixels
    return PredictParams().max_pixels


def _predict(args: argparse.Namespace) -> int:
    from melanoma_kd.io import atomic_path
    from melanoma_kd.predict import as_csv, predict_files

    max_pixels = _max_pixels(args.params, args.params_given)
    results = predict_files(args.images, args.model, max_pixels, threads=args.threads)
    for r in results:
        if r.error:
            print(f"error: {r.error}", file=sys.stderr)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        text = json.dumps([r.as_dict() for r in results], indent=2) + "\n"
    elif fmt == "csv":
        text = as_csv(results)
    else:
        text = "".join(r.line() + "\n" for r in results if not r.error)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_USER_ERROR if any(r.error for r in results) else 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _compare(args: argparse.Namespace) -> int:
    from melanoma_kd.compare import compare_sides, format_table, read_side, rows_as_dicts

    a, b = read_side(args.a), read_side(args.b)
    rows = compare_sides(a, b, n_boot=args.n_boot, seed=args.seed, alpha=args.alpha)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "rows": rows_as_dicts(rows)}, indent=2))
    else:
        print(format_table(rows, args.a, args.b))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands); building it imports nothing heavy."""
    ap = argparse.ArgumentParser(prog="melanoma-kd", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict",
        help="P(melanoma) and decision for image files",
        description="P(melanoma) and the validation-threshold decision for each image.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"ONNX model (default {DEFAULT_MODEL})")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--out", default=None, help="write the results to this file, not stdout")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads")
    p.add_argument(
        "--params",
        default=None,
        help="params.yaml for predict.max_pixels (default: ./params.yaml if present)",
    )
    p.set_defaults(func=_predict)
    c = sub.add_parser(
        "compare",
        help="paired holdout comparison of two revisions / experiments",
        description="Delta ROC-AUC and pAUC (A - B) per model, with patient-bootstrap CI, "
        "Holm-adjusted paired permutation p and a verdict.",
    )
    c.add_argument("a", nargs="?", default="HEAD", help="revision or dvc exp name (default HEAD)")
    c.add_argument("b", nargs="?", default="workspace", help="revision (default: workspace)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap / permutation draws")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--alpha", type=float, default=0.05, help="significance level")
    c.set_defaults(func=_compare)
    return ap


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``melanoma-kd``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        args.params_given = args.params is not None
        if args.params is None:
            args.params = "params.yaml"
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
