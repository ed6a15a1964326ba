"""Training-loop throughput: our ``fit`` vs a bare PyTorch loop, measured side by side.

What is compared (same model, batch size 32, 64 px, AdamW with the same lr/weight decay, same
number of images per epoch, the same uint8 images held in memory):

* **bare** — the leanest loop a person would write: the images already converted to normalised
  float32 tensors in RAM; per step ``x[idx]`` → forward → cross-entropy → ``zero_grad`` →
  ``backward`` → ``step``.
* **ours** — :func:`melanoma_kd.train.fit` with a :class:`~melanoma_kd.distill.Supervised`
  objective, over a :class:`~melanoma_kd.data.dataset.CacheDataset` on a temporary HDF5 cache
  written from the *same* uint8 images, ``augment=None`` (augmentation is a data cost both loops
  would pay equally, so it is left out), ``num_workers=0``. Everything ``fit`` does per step
  counts against it: HDF5 chunk reads, collation, uint8→float conversion and normalisation,
  tqdm, the loss read-back. Only the per-epoch validation pass is excluded (it is timed through
  a wrapper around ``melanoma_kd.train.validate`` and subtracted; the validation split is tiny).

Because a loaded machine makes the ratio noisy, the script also times *only* our loop's data path
(the DataLoader ``fit`` builds, plus ``model_input``, no model) and states it as a fraction of a
bare step: ``bare / (bare + data)`` is the ratio the loop would reach if nothing else differed.

Each model gets one untimed warm-up run of each loop, then ``--rounds`` rounds that alternate
which loop goes first; the figures are medians over rounds, and the ratio is ours/bare
(target ≥ 0.9). A fresh, identically seeded model is built for every run.

Finally a short **teacher run** (``runs.train`` of ``runs.teacher_run("resnet18")``, augmentation
on, dvclive, checkpointing — what the ``train_teacher`` stage does) is executed in a child process
and its peak resident set size is read with ``resource.getrusage(RUSAGE_SELF).ru_maxrss``. Linux
carries ``ru_maxrss`` across ``fork``+``execve``, so a child started straight from this (large)
process would report *our* peak; the child is therefore started through an intermediate
``/bin/sh`` that forks it, and ``VmHWM`` from ``/proc/self/status`` (per address space) is printed
as a cross-check.

    .venv/bin/python benchmarks/train_loop.py [--threads 2] [--images 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
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
import torch.nn.functional as F
from torch import nn

import melanoma_kd.train as train_mod
from melanoma_kd.config import Params, TeachersParams, TrainParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import model_input
from melanoma_kd.distill import Supervised
from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD
from melanoma_kd.train import Schedule, fit

SIZE, BATCH, LR, WEIGHT_DECAY = 64, 32, 1e-3, 1e-4
ARCHS = ("mobilenetv3_small_100", "resnet18")


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 HWC images (blurred noise, class-dependent brightness) and 0/1 labels."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int64)
    images = (
        rng.integers(0, 200, (n, SIZE, SIZE, 3)).astype(np.int16) + 40 * labels[:, None, None, None]
    )
    return images.clip(0, 255).astype(np.uint8), labels


def write_cache(path: Path, images: np.ndarray, labels: np.ndarray, split: str) -> Path:
    n = len(labels)
    rows = pd.DataFrame(
        {
            "image_id": [f"{split}{i:05d}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, images, SIZE, split, "benchmark")
    return path


def new_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=2)


def bare_epoch(arch: str, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one epoch of the bare loop (model built outside the timed region)."""
    model = new_model(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    perm = torch.randperm(len(y), generator=gen)
    for i in range(0, len(y), BATCH):
        idx = perm[i : i + BATCH]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


class _TimedValidate:
    """Wraps ``train.validate`` to measure (and later subtract) the validation time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.inner = train_mod.validate

    def __call__(self, *args: object, **kwargs: object):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def ours_epoch(arch: str, train: CacheDataset, val: CacheDataset, threads: int) -> float:
    """Seconds of ``fit``'s training portion for one epoch (validation subtracted)."""
    objective = Supervised(new_model(arch), nn.CrossEntropyLoss())
    cfg = TrainParams(
        batch_size=BATCH,
        optimizer="adamw",
        weight_decay=WEIGHT_DECAY,
        loss="ce",
        num_threads=threads,
        num_workers=0,
    )
    timed = _TimedValidate()
    train_mod.validate = timed
    try:
        start = time.perf_counter()
        fit(
            objective,
            train,
            val,
            cfg,
            Schedule(1, LR, SIZE, IMAGENET_MEAN, IMAGENET_STD),
            lambda *_: None,
            desc=f"bench {arch}",
        )
        total = time.perf_counter() - start
    finally:
        train_mod.validate = timed.inner
    return total - timed.seconds


def data_path_seconds(train: CacheDataset, threads: int, repeats: int = 3) -> float:
    """Median seconds per batch of our data path alone: ``fit``'s loader + ``model_input``."""
    cfg = TrainParams(batch_size=BATCH, num_threads=threads, num_workers=0)
    per_batch = []
    for epoch in range(repeats):
        start, batches = time.perf_counter(), 0
        for batch in train_mod._loader(train, cfg, epoch):
            model_input(batch["image"], SIZE, IMAGENET_MEAN, IMAGENET_STD)
            batches += 1
        per_batch.append((time.perf_counter() - start) / batches)
    return statistics.median(per_batch)


def teacher_rss_child(workdir: Path, threads: int) -> None:
    """Run a short resnet18 teacher run and print ``baseline_kib peak_kib seconds``."""
    from melanoma_kd.runs import RunPaths, teacher_run, train

    os.chdir(workdir)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = Params(
        train=TrainParams(num_threads=threads, batch_size=BATCH),
        teachers=TeachersParams(archs=["resnet18"], image_size=SIZE, epochs=1, lr=LR),
    )
    start = time.perf_counter()
    train(
        params,
        teacher_run(params, "resnet18"),
        cache_dir=workdir / "cache",
        paths=RunPaths(workdir / "teacher.pt", workdir / "m"),
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = Path("/proc/self/status")
    hwm = (
        next(
            (
                int(ln.split()[1])
                for ln in status.read_text().splitlines()
                if ln.startswith("VmHWM:")
            ),
            -1,
        )
        if status.exists()
        else -1
    )
    print(f"RSS {baseline} {peak} {hwm} {seconds:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        teacher_rss_child(args.rss_child, args.threads)
        return

    with tempfile.TemporaryDirectory(prefix="bench_train_loop_") as tmp:
        tmp_path = Path(tmp)
        images, labels = make_data(args.images)
        val_images, val_labels = make_data(8, seed=1)
        cache = tmp_path / "cache"
        cache.mkdir()
        train_ds = CacheDataset(write_cache(cache / "train.h5", images, labels, "train"))
        val_ds = CacheDataset(write_cache(cache / "val.h5", val_images, val_labels, "val"))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
        x = x.contiguous()
        y = torch.from_numpy(labels)
        n = len(labels)

        print(
            f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; {n} images/epoch, batch {BATCH}, {SIZE} px"
        )
        data_ms = 1000 * data_path_seconds(train_ds, args.threads)
        print(
            f"our data path alone (HDF5 reads, collate, uint8->float, normalise): "
            f"{data_ms:.1f} ms/batch"
        )
        for arch in args.archs:
            ours_epoch(arch, train_ds, val_ds, args.threads)  # warm-up (allocator, kernels)
            bare_epoch(arch, x, y)
            ours, bare = [], []
            for r in range(args.rounds):
                order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
                for which in order:
                    if which == "ours":
                        ours.append(n / ours_epoch(arch, train_ds, val_ds, args.threads))
                    else:
                        bare.append(n / bare_epoch(arch, x, y))
            o, b = statistics.median(ours), statistics.median(bare)
            per_round = ", ".join(f"{a / c:.2f}" for a, c in zip(ours, bare, strict=True))
            verdict = "ok" if o / b >= 0.9 else "BELOW TARGET"
            print(
                f"{arch:24s} ours {o:7.1f} img/s  bare {b:7.1f} img/s  ratio {o / b:.3f} "
                f"(target >= 0.9: {verdict}; per round {per_round})"
            )

        # sh forks python (the command is not its last), so the child's ru_maxrss starts fresh.
        cmd = [
            "/bin/sh",
            "-c",
            '"$0" "$@"; exit $?',
            sys.executable,
            __file__,
            "--threads",
            str(args.threads),
            "--rss-child",
            str(tmp_path),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("RSS "))
        baseline, peak, hwm, seconds = line.split()[1:]
        print(
            f"teacher run (resnet18, {n} images, 1 epoch, {SIZE} px, augment on, {seconds} s): "
            f"peak RSS {int(peak) / 1024:.0f} MiB by getrusage (VmHWM {int(hwm) / 1024:.0f} MiB; "
            f"{int(baseline) / 1024:.0f} MiB after imports)"
        )


if __name__ == "__main__":
    main()
