"""Augmented views per second: per sample (torchvision v2) vs batched tensor ops, side by side.

Three ways to make the same kind of training views from uint8 cache images, timed in one run:

- ``per-sample``: the pre-batching data path — ``v2.Compose([RandomHorizontalFlip, RandomAffine,
  ColorJitter])`` on one uint8 CHW image at a time with its RNG seeded from (seed, epoch, index);
- ``reference``: :func:`melanoma_kd.data.views.reference_view`, today's view definition written
  per sample with torchvision v2's functional ops on float (the parity tests' reference);
- ``batched``: :class:`melanoma_kd.data.views.BatchAugment` on a whole batch (what ``fit`` and
  ``teacher_outputs`` run), on the CPU here, or on CUDA with ``--device cuda``.

Rows: 64 and 224 px with the default ``augment`` params, 256 px with the ISIC profile's
``augment`` section (hue jitter 0.2) and without hue. The three are timed in turn within each of
``--repeats`` rounds (so a load spike from other users hits all of them alike) and each figure is
the best round over ``--views`` views; the ratios are what count. Usage::

    nice -n 10 python benchmarks/augment.py [--threads 1 2] [--views 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torchvision.transforms import v2

from melanoma_kd.config import AugmentParams
from melanoma_kd.data.views import BatchAugment, draw_view_params, reference_view, view_seed

ROOT = Path(__file__).resolve().parents[1]
SEED, EPOCH, BATCH = 0, 3, 64


def per_sample_transform(p: AugmentParams) -> v2.Transform:
    """The per-sample augmentation the data loader ran before batching (uint8 in, uint8 out)."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p.hflip),
            v2.RandomAffine(degrees=p.rotation, scale=(p.scale_min, p.scale_max)),
            v2.ColorJitter(
                brightness=p.brightness, contrast=p.contrast, saturation=p.saturation, hue=p.hue
            ),
        ]
    )


def per_sample(images: torch.Tensor, p: AugmentParams) -> Callable[[], object]:
    augment = per_sample_transform(p)

    def run() -> object:
        out = []
        for i, image in enumerate(images):
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(view_seed(SEED, EPOCH, i))
                out.append(augment(image))
        return out

    return run


def reference(images: torch.Tensor, p: AugmentParams) -> Callable[[], object]:
    def run() -> object:
        vp = draw_view_params(p, SEED, EPOCH, range(len(images)))
        return [reference_view(image, vp.row(i), p) for i, image in enumerate(images)]

    return run


def batched(images: torch.Tensor, p: AugmentParams, device: torch.device) -> Callable[[], object]:
    augment = BatchAugment(p)

    def run() -> object:
        out = None
        for start in range(0, len(images), BATCH):
            batch = images[start : start + BATCH].to(device)
            out = augment(batch, SEED, EPOCH, torch.arange(start, start + len(batch)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def views_per_s(runs: list[Callable[[], object]], n: int, repeats: int) -> list[float]:
    """Best views/s of each of ``runs``, timed in turn within each round."""
    for run in runs:
        run()  # warm-up: allocator, lazy imports, kernel caches
    best = [math.inf] * len(runs)
    for _ in range(repeats):
        for k, run in enumerate(runs):
            best[k] = min(best[k], _timed(run))
    return [n / t for t in best]


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def isic_augment() -> AugmentParams:
    raw = yaml.safe_load((ROOT / "configs" / "isic2024.yaml").read_text())
    return AugmentParams(**raw["augment"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--views", type=int, default=128, help="views per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="device of the batched path")
    args = ap.parse_args()
    device = torch.device(args.device)
    isic = isic_augment()
    rows = [
        ("64 px", 64, AugmentParams()),
        ("224 px", 224, AugmentParams()),
        (f"256 px, ISIC hue={isic.hue}", 256, isic),
        ("256 px, no hue", 256, isic.model_copy(update={"hue": 0.0})),
    ]
    gen = torch.Generator().manual_seed(0)
    print(f"views/s, best of {args.repeats} rounds of {args.views} views; batched on {device}")
    header = f"{'threads':>7}  {'size':<24}{'per-sample':>11}{'reference':>11}{'batched':>10}"
    print(header + f"{'batched/per-sample':>20}{'batched/reference':>19}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for label, size, p in rows:
            images = torch.randint(
                0, 256, (args.views, 3, size, size), dtype=torch.uint8, generator=gen
            )
            runs = [per_sample(images, p), reference(images, p), batched(images, p, device)]
            old, ref, new = views_per_s(runs, args.views, args.repeats)
            print(
                f"{threads:>7}  {label:<24}{old:>11.0f}{ref:>11.0f}{new:>10.0f}"
                f"{new / old:>19.2f}x{new / ref:>18.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
