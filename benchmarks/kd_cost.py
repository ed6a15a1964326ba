"""Cost of the KD grid: one KD point vs one scratch-student run vs one teacher-outputs pass.

On a temporary cache (default 512 train + 128 val images, 64 px, written from seeded synthetic
arrays) this times, with the same epochs and the same recipe:

* **scratch** — ``runs.train`` of ``runs.student_run`` (the ``train_student`` stage's work:
  augmentation, training, per-epoch validation, dvclive, best checkpoint);
* **response** / **feature** — the same call for a KD point (``student_run(params, point)``, the
  ``distill@T-α-method`` stage's run) on cached teacher outputs;
* **teacher pass** — ``compute_teacher_outputs`` for a resnet18 teacher at 64 px over the same
  epochs × train views (the ``teacher_outputs`` stage). The teacher checkpoint is a randomly
  initialised resnet18: its training cost is not part of the KD grid's cost;
* **response+transfer** / **feature+transfer** and **teacher pass+transfer** — the same with a
  transfer set (``distill.transfer_images``; default ``--transfer`` = half the train images, the
  default profile's 500 per 1000) appended: the student trains on more images per epoch by design.

Runs alternate (scratch, response, feature, then the reverse order, ...) and each figure is the
median over ``--rounds``. Process start-up and imports, which every DVC stage pays equally, are
not included. The budget from DESIGN.md is: a grid of n points ≤ 1.3·n scratch runs + one
teacher pass. The prediction for the default grid (n = 8: T ∈ {1, 4} × α ∈ {0.5, 0.9} ×
{response, feature}) uses the median response time for its 4 response points and the median
feature time for its 4 feature points, without and with the transfer set.

    .venv/bin/python benchmarks/kd_cost.py [--threads 2] [--images 512] [--transfer 256]
        [--epochs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch

from melanoma_kd.config import DistillParams, Params, StudentParams, TrainParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import UNLABELLED
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.models.build import save_checkpoint
from melanoma_kd.points import KDPoint, kd_point
from melanoma_kd.runs import RunPaths, student_run, train
from melanoma_kd.teacher_outputs import compute_teacher_outputs

SIZE, TEMPERATURE, ALPHA, GRID_N = 64, 2.0, 0.5, 8


def write_cache(path: Path, n: int, seed: int, split: str, unlabelled: bool = False) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(np.int64)
    if unlabelled:
        labels[:] = UNLABELLED
    base = rng.integers(0, 200, (n, SIZE, SIZE, 3)).astype(np.int16)
    images = (base + 40 * labels[:, None, None, None]).clip(0, 255).astype(np.uint8)
    rows = pd.DataFrame(
        {
            "image_id": [f"{split}{i:05d}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, images, SIZE, split, "benchmark")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--transfer", type=int, default=None, help="default: images // 2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_kd_cost_") as tmp:
        root = Path(tmp)
        os.chdir(root)  # dvclive and every output stay inside the temporary directory
        cache = root / "cache"
        cache.mkdir()
        write_cache(cache / "train.h5", args.images, 0, "train")
        write_cache(cache / "val.h5", max(args.images // 4, 16), 1, "val")
        n_transfer = args.images // 2 if args.transfer is None else args.transfer
        write_cache(root / "transfer.h5", n_transfer, 2, "transfer", unlabelled=True)
        params = Params(
            train=TrainParams(num_threads=args.threads, batch_size=32, patience=100),
            student=StudentParams(image_size=SIZE, epochs=args.epochs),
            distill=DistillParams(transfer_images=n_transfer),
        )
        torch.set_num_threads(args.threads)
        s, stages = params.student, params.distill.feature.stages

        torch.manual_seed(0)
        teacher_ckpt = root / "teacher.pt"
        save_checkpoint(
            teacher_ckpt,
            timm.create_model("resnet18", num_classes=2),
            {"arch": "resnet18", "image_size": SIZE},
        )
        outputs = root / "teacher_outputs.h5"
        outputs_tr = root / "teacher_outputs_transfer.h5"

        def teacher_pass(transfer: bool = False) -> None:
            compute_teacher_outputs(
                teacher_ckpt,
                cache / "train.h5",
                build_augment(params.augment),
                params.train.seed,
                s.epochs,
                stages,
                outputs_tr if transfer else outputs,
                transfer_cache=root / "transfer.h5" if transfer else None,
            )

        def student(
            name: str, point: KDPoint | None, teacher: Path | None, transfer: bool = False
        ) -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                train(
                    params,
                    student_run(params, point, use_transfer=transfer),
                    cache_dir=cache,
                    paths=RunPaths(root / f"{name}.pt", root / "metrics" / name),
                    teacher_outputs=teacher,
                    transfer=root / "transfer.h5",
                )

        teacher_pass()  # untimed warm-up; also produces the outputs the KD runs read
        teacher_pass(transfer=True)
        response = kd_point(TEMPERATURE, ALPHA, "response")
        feature = kd_point(None, ALPHA, "feature")
        runs = {
            "scratch": lambda: student("scratch", None, None),
            "response": lambda: student("response", response, outputs),
            "feature": lambda: student("feature", feature, outputs),
            "teacher pass": teacher_pass,
            "response+transfer": lambda: student("response_t", response, outputs_tr, True),
            "feature+transfer": lambda: student("feature_t", feature, outputs_tr, True),
            "teacher pass+transfer": lambda: teacher_pass(transfer=True),
        }
        runs["scratch"]()  # untimed warm-up of the student path
        times: dict[str, list[float]] = {k: [] for k in runs}
        order = list(runs)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)

        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.1f}; {args.images} train images, {SIZE} px, "
            f"{args.epochs} epochs, student {s.arch}, teacher resnet18, {args.rounds} rounds, "
            f"transfer set {n_transfer} images"
        )
        for name, t in med.items():
            runs_s = ", ".join(f"{v:.1f}" for v in times[name])
            print(f"  {name:21s} {t:7.1f} s  (runs: {runs_s})")
        scratch, teacher = med["scratch"], med["teacher pass"]
        print(
            f"  ratio response/scratch {med['response'] / scratch:.3f}, "
            f"feature/scratch {med['feature'] / scratch:.3f}, "
            f"teacher pass/scratch {teacher / scratch:.3f}"
        )
        for suffix in ("", "+transfer"):
            teacher = med["teacher pass" + suffix]
            kd = (med["response" + suffix] + med["feature" + suffix]) / 2
            grid = GRID_N * kd + teacher
            budget = 1.3 * GRID_N * scratch + teacher
            verdict = "within budget" if grid <= budget else "OVER BUDGET"
            print(
                f"  n={GRID_N} grid{suffix or ' (no transfer set)'}: predicted {grid:.1f} s vs "
                f"budget 1.3*n*scratch + teacher pass = {budget:.1f} s -> "
                f"{grid / budget:.3f} of budget ({verdict}); mean KD point / scratch = "
                f"{kd / scratch:.3f} (budget 1.3; training images per epoch "
                f"{(args.images + (n_transfer if suffix else 0)) / args.images:.2f}x scratch's)"
            )


if __name__ == "__main__":
    main()
