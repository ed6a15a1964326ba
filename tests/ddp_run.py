"""A training run for ``tests/test_ddp.py``, started as a script like a training stage.

With ``train.nproc > 1`` it relaunches itself under torchrun exactly as the stage scripts do.
Every rank is handed its own output folder ``<out>/rank<RANK>/``, so the test can see which ranks
wrote anything. The student is timm's ``test_convnext`` (LayerNorm: no BatchNorm, no dropout)
trained with response KD on cached teacher outputs, so an N-process run with batch B computes
what a one-process run with batch N·B computes.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.distill import ResponseKD
from melanoma_kd.errors import cli_entry
from melanoma_kd.launch import torchrun_if_needed
from melanoma_kd.runs import RunPaths, run_training

ARCH = "test_convnext"


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--teacher-outputs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    if (code := torchrun_if_needed(params.train)) is not None:
        raise SystemExit(code)
    out = Path(args.out) / f"rank{os.environ.get('RANK', '0')}"
    s = params.student
    run_training(
        params,
        arch=ARCH,
        schedule_epochs=s.epochs,
        lr=s.lr,
        image_size=s.image_size,
        cache_dir=Path(args.cache_dir),
        paths=RunPaths(out / "model.pt", out / "metrics"),
        make_objective=functools.partial(ResponseKD, temperature=2.0, alpha=0.5),
        extra_meta={"params_hash": "ddp-test"},
        teacher_outputs=Path(args.teacher_outputs),
        desc="ddp test",
    )


if __name__ == "__main__":
    main()
