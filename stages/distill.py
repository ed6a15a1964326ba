"""distill: one (temperature, alpha, method) point of the KD grid, on cached teacher outputs."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.distill import METHODS
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.runs import RunPaths, params_hash, run_training, transfer_meta
from melanoma_kd.teacher_outputs import teacher_feature_dims


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--temperature", type=float, required=True)
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--teacher-outputs", required=True)
    ap.add_argument("--transfer", required=True, help="transfer-set cache (transfer_set stage)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics-dir", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    if args.method not in METHODS:
        raise UserError(
            f"distill.method: unknown method {args.method!r} (known: {sorted(METHODS)})"
        )
    if not 0.0 <= args.alpha <= 1.0 or args.temperature <= 0:
        raise UserError(
            "distill: need 0 <= alpha <= 1 and temperature > 0 "
            f"(got {args.alpha}, {args.temperature})"
        )
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)  # train.nproc > 1: the torchrun workers did the run
    s = params.student
    make = functools.partial(
        METHODS[args.method],
        temperature=args.temperature,
        alpha=args.alpha,
        n_stages=params.distill.feature_stages,
        teacher_dims=teacher_feature_dims(args.teacher_outputs),
        image_size=s.image_size,
    )
    point = {"temperature": args.temperature, "alpha": args.alpha, "method": args.method}
    point |= transfer_meta(params)
    run_training(
        params,
        arch=s.arch,
        schedule_epochs=s.epochs,
        lr=s.lr,
        image_size=s.image_size,
        cache_dir=Path(args.cache_dir),
        paths=RunPaths(Path(args.checkpoint), Path(args.metrics_dir)),
        make_objective=lambda student, loss: make(student, loss),
        extra_meta={
            "role": "distilled",
            **point,
            "params_hash": params_hash(
                params, "train", "augment", "models", "student", extra=point
            ),
        },
        teacher_outputs=Path(args.teacher_outputs),
        transfer=Path(args.transfer) if params.distill.transfer_images else None,
        desc=f"distill T={args.temperature:g} a={args.alpha:g} {args.method}",
    )


if __name__ == "__main__":
    main()
