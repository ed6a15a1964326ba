"""What a published recipe costs at the real data set's size, from per-image costs measured here.

For ``configs/isic2024.yaml`` and ``configs/ham10000.yaml`` this measures, on this machine's CPU
(``--threads``), the per-image cost of each step the pipeline repeats per image:

- hair removal (the recipe's ``preprocess`` settings) on an image of the source's resolution;
- a training step (forward + backward + Adam) of every teacher and of the student at its
  ``image_size``, and an inference forward (teacher outputs, validation, evaluation);

and multiplies them by the image count the recipe processes (the real data set's, or with
``data.max_negatives`` set, that many benign images plus every melanoma image), split fractions
and epochs to print the expected time of each stage, plus the disk each cache holds (the formats
are uncompressed: a cache image is ``cache.size² × 3`` bytes, a cached teacher output
``(2 + Σ feature dims) × 2`` bytes (float16) per image and student epoch). These are CPU
figures: on a GPU the training and inference rows shrink by the GPU's speed-up, the hair-removal
row (OpenCV on the CPU) does not.

    python benchmarks/recipe_costs.py [--recipes isic2024 ham10000] [--threads 2] [--batch 8]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from melanoma_kd.config import PreprocessParams
from melanoma_kd.data.hair import remove_hair
from melanoma_kd.distill import pooled_taps
from melanoma_kd.models.build import build_model

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RealSet:
    """Published size of a data set and the resolution of its images."""

    images: int
    positives: int
    height: int
    width: int
    note: str


# Facts of the public releases: ISIC-2024 (SLICE-3D) train set, HAM10000 (ISIC archive).
REAL = {
    "isic2024": RealSet(401_059, 393, 139, 139, "3D-TBP crops, ~130-150 px square"),
    "ham10000": RealSet(10_015, 1_113, 450, 600, "dermoscopy photographs, 600x450"),
}


def dermoscopy_like(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Skin-coloured noise with a dark lesion and a few dark hair strokes (uint8 RGB)."""
    import cv2

    img = rng.integers(150, 210, (h, w, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (7, 7), 2)
    cv2.ellipse(img, (w // 2, h // 2), (w // 5, h // 6), 20, 0, 360, (90, 60, 50), -1)
    for _ in range(6):
        p, q = rng.integers(0, [w, h]), rng.integers(0, [w, h])
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), (30, 25, 20), 2)
    return img


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def hair_ms(params: dict, real: RealSet, repeats: int) -> float:
    p = PreprocessParams(**params["preprocess"])
    rng = np.random.default_rng(0)
    imgs = [dermoscopy_like(real.height, real.width, rng) for _ in range(8)]
    return 1e3 * seconds_per_call(lambda: [remove_hair(i, p) for i in imgs], repeats) / len(imgs)


def model_costs(arch: str, size: int, batch: int, repeats: int) -> tuple[float, float, int]:
    """(training ms/image, inference ms/image, floats of cached teacher output per image)."""
    torch.manual_seed(0)
    model, _ = build_model(arch, weights_dir=None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    train = seconds_per_call(step, repeats)
    model.eval()
    with torch.inference_mode():
        infer = seconds_per_call(lambda: model(x), repeats)
        logits, feats = pooled_taps(model, x[:1], 2)
    floats = int(logits.shape[1]) + sum(int(f.shape[1]) for f in feats)
    return 1e3 * train / batch, 1e3 * infer / batch, floats


def kd_grid_size(distill: dict) -> int:
    """Number of KD grid points, for the flat (``temperature × alpha × method``) and the
    per-method (``response: {temperature, alpha}``, ``feature: {alpha}``) layouts."""
    if "response" in distill:
        response = len(distill["response"]["temperature"]) * len(distill["response"]["alpha"])
        return response + len(distill["feature"]["alpha"])
    return len(distill["temperature"]) * len(distill["alpha"]) * len(distill["method"])


def recipe_images(params: dict, real: RealSet) -> int:
    """Images the recipe processes: all, or after ``data.max_negatives`` subsampling."""
    budget = params["data"].get("max_negatives")
    negatives = real.images - real.positives
    return real.images if budget is None else real.positives + min(budget, negatives)


def hours(ms: float) -> str:
    s = ms / 1e3
    return f"{s / 3600:8.1f} h" if s >= 3600 else f"{s / 60:8.1f} min"


def report(recipe: str, batch: int, repeats: int) -> None:
    params = yaml.safe_load((ROOT / "configs" / f"{recipe}.yaml").read_text())
    real = REAL[recipe]
    n = recipe_images(params, real)
    n_train, n_eval = round(n * params["split"]["train"]), n - round(n * params["split"]["train"])
    t_epochs, s_epochs = params["teachers"]["epochs"], params["student"]["epochs"]
    subsampled = f", subsampled from {real.images} (data.max_negatives)" if n < real.images else ""
    print(f"\n== {recipe}: {n} images{subsampled} ({real.note})")
    print(f"train {n_train}, val+holdout {n_eval}")

    h = hair_ms(params, real, repeats)
    cache_mb = params["cache"]["size"] ** 2 * 3 / 2**20
    print(f"remove_hair   {h:8.2f} ms/image -> {hours(h * n)} for all images (per core)")
    print(f"cache         {cache_mb:8.3f} MB/image -> {cache_mb * n / 1024:7.1f} GB (data/cache)")

    teachers = [(a, params["teachers"]["image_size"]) for a in params["teachers"]["archs"]]
    student = (params["student"]["arch"], params["student"]["image_size"])
    grid = kd_grid_size(params["distill"])
    runs_per_seed = 2  # a replicate seed retrains the scratch student and the selected KD point
    student_runs = 1 + grid + runs_per_seed * len(params["replicates"]["seeds"]) + 1  # + ablation
    print(f"{'model':32s} {'train ms/img':>12s} {'infer ms/img':>12s} {'stage time (CPU)':>18s}")
    outputs_floats = 0
    for arch, size in teachers:
        tr, inf, floats = model_costs(arch, size, batch, repeats)
        outputs_floats = max(outputs_floats, floats)
        total = t_epochs * (n_train * tr + (n - n_train) / 2 * inf)  # val scored every epoch
        print(f"{arch + ' (teacher)':32s} {tr:12.1f} {inf:12.1f} {hours(total):>18s} / teacher")
        out_ms = s_epochs * n_train * inf
        print(f"{'  its teacher_outputs, if chosen':32s} {'':12s} {inf:12.1f} {hours(out_ms):>18s}")
    tr, inf, _ = model_costs(*student, batch, repeats)
    run_ms = s_epochs * (n_train * tr + (n - n_train) / 2 * inf)
    print(
        f"{student[0] + ' (student)':32s} {tr:12.1f} {inf:12.1f} {hours(run_ms):>18s} / run"
        f"  x {student_runs} runs = {hours(run_ms * student_runs).strip()}"
    )
    outputs_gb = s_epochs * n_train * outputs_floats * 2 / 2**30  # float16
    print(f"teacher outputs on disk: {outputs_gb:.1f} GB float16 (largest teacher)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["isic2024", "ham10000"], choices=sorted(REAL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU threads: {args.threads}; batch {args.batch}; median of {args.repeats} timed calls")
    for recipe in args.recipes:
        report(recipe, args.batch, args.repeats)


if __name__ == "__main__":
    main()
