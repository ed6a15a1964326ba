"""Training throughput of 1 process vs ``train.nproc=2`` (torchrun + DDP), measured side by side.

Both configurations run :func:`melanoma_kd.train.fit` — the loop every training stage uses —
with the same ``TrainParams`` except ``nproc``: batch 32 per process (so the 2-process run's
global batch is 64), ``num_threads`` 2 in total (2 threads for one process, 1 per rank for two),
``num_workers`` 0, augmentation on, over a temporary HDF5 cache of ``--images`` 64 px images.
The 2-process run is started through :func:`melanoma_kd.launch.torchrun_if_needed`, as the
stages start it.

Throughput = training images / training seconds over epochs 2..``--epochs`` (epoch 1 is warm-up;
validation, on a small split, is timed through a wrapper around ``train.validate`` and
subtracted; the DDP collectives before validation count as training). Each round runs the two
configurations one after the other, alternating which goes first; figures are medians over
``--rounds``, and the ratio is 2-process / 1-process img/s. Process start-up (imports, torchrun
rendezvous) is not in the figure: a stage pays it once per run.

    .venv/bin/python benchmarks/ddp_throughput.py [--arch mobilenetv3_small_100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from torch import nn

import melanoma_kd.train as train_mod
from melanoma_kd.config import AugmentParams, TrainParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.distill import Supervised
from melanoma_kd.distributed import rank_and_world
from melanoma_kd.launch import join_process_group, threads_per_process, torchrun_if_needed
from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD
from melanoma_kd.train import Schedule, fit, set_determinism

SIZE, BATCH, LR, THREADS = 64, 32, 1e-3, 2


def write_cache(path: Path, n: int, seed: int) -> None:
    """``n`` random 64 px images, alternating labels, brighter for class 1."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).tolist()
    images = [rng.integers(40 * y, 40 * y + 216, (SIZE, SIZE, 3)).astype(np.uint8) for y in labels]
    rows = pd.DataFrame(
        {
            "image_id": [f"i{i:05d}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, images, SIZE, path.stem, "benchmark")


class TimedValidate:
    """Wraps ``train.validate`` and records when each call starts and ends."""

    def __init__(self) -> None:
        self.inner = train_mod.validate
        self.spans: list[tuple[float, float]] = []

    def __call__(self, *args: object, **kwargs: object):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.spans.append((start, time.perf_counter()))


def worker(cache: Path, arch: str, epochs: int) -> None:
    """One training run (a torchrun worker when nproc > 1); rank 0 prints its img/s as JSON."""
    cfg = TrainParams(
        batch_size=BATCH, loss="ce", num_threads=THREADS, nproc=int(os.environ["BENCH_NPROC"])
    )
    if (code := torchrun_if_needed(cfg)) is not None:
        raise SystemExit(code)
    set_determinism(0, threads_per_process(cfg.num_threads))
    train = CacheDataset(cache / "train.h5", augment=build_augment(AugmentParams()), seed=0)
    val = CacheDataset(cache / "val.h5")
    objective = Supervised(timm.create_model(arch, num_classes=2), nn.CrossEntropyLoss())
    timed = TimedValidate()
    train_mod.validate = timed
    join_process_group(cfg.nproc)
    fit(
        objective,
        train,
        val,
        cfg,
        Schedule(epochs, LR, SIZE, IMAGENET_MEAN, IMAGENET_STD),
        lambda *_: None,
        desc=f"bench {arch}",
    )
    rank = rank_and_world()[0]
    # Training seconds of epochs 2..E: from the end of epoch 1's validation to the end of the
    # last one, minus the validations in between.
    spans = timed.spans
    seconds = spans[-1][1] - spans[0][1] - sum(end - start for start, end in spans[1:])
    if rank == 0:
        images = len(train) * (epochs - 1)
        print(json.dumps({"img_per_s": images / seconds, "threads": torch.get_num_threads()}))


def measure(script: Path, cache: Path, arch: str, epochs: int, nproc: int) -> dict[str, float]:
    """Run one configuration in fresh processes; rank 0's figures."""
    env = {**os.environ, "BENCH_NPROC": str(nproc)}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)
    cmd = [sys.executable, str(script), "--worker", str(cache), "--arch", arch]
    proc = subprocess.run(
        [*cmd, "--epochs", str(epochs)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{nproc}-process run failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenetv3_small_100")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.arch, args.epochs)
        return

    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        write_cache(cache / "train.h5", args.images, seed=0)
        write_cache(cache / "val.h5", 64, seed=1)
        runs: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for nproc in (1, 2) if r % 2 == 0 else (2, 1):
                got = measure(script, cache, args.arch, args.epochs, nproc)
                runs[nproc].append(got["img_per_s"])
                print(
                    f"round {r + 1}: {nproc} process(es) x {got['threads']} thread(s): "
                    f"{got['img_per_s']:.1f} img/s",
                    flush=True,
                )
    one, two = (statistics.median(runs[n]) for n in (1, 2))
    print(
        f"{args.arch}, {SIZE} px, batch {BATCH}/process, {THREADS} threads in total, "
        f"{args.images} images, {os.cpu_count()} CPUs"
    )
    print(f"1 process : {one:.1f} img/s (median of {args.rounds})")
    print(f"2 processes (torchrun, gloo): {two:.1f} img/s (median of {args.rounds})")
    print(f"ratio 2/1: {two / one:.2f}")


if __name__ == "__main__":
    main()
