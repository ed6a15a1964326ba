"""Training throughput on a GPU with the real loader: teacher and student img/s and peak memory.

For each input size (default 224 and 256 px) and each model (the ISIC-2024 recipe's teacher and
student by default), a temporary HDF5 cache of random images in the pipeline's format is read by
the pipeline's :class:`~melanoma_kd.data.dataset.CacheDataset` through the training loop's own
loader (``train._loader``: pinned memory, persistent workers), its batches become views on the
device (:mod:`melanoma_kd.data.views`, the recipe's augmentation, hue jitter included) and then
model input, and the model takes AdamW steps under the recipe's ``train.amp`` (bf16 autocast) and
``train.channels_last`` as ``train.device_path`` applies them — what ``train.fit`` does on CUDA;
``--amp`` / ``--channels-last`` override the recipe's values. After ``--warmup`` untimed steps,
``--steps`` timed steps give:

* train img/s (whole step: loader wait, views, forward, backward, optimizer),
* loader + views img/s alone (the same batches, no model) — the loader keeps up when this is
  well above the training rate,
* peak GPU memory (``torch.cuda.max_memory_allocated``).

    python benchmarks/gpu.py                     # CUDA; about 2-4 min on one modern GPU
    python benchmarks/gpu.py --device cpu --steps 2 --warmup 1 --batch 4 --sizes 64 \
        --images 16 --teacher resnet10t --student mobilenetv3_small_100   # smoke run
    python benchmarks/gpu.py --amp off --channels-last false   # the fp32, contiguous baseline
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from melanoma_kd import train as train_mod
from melanoma_kd.config import TrainParams, load_params
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import build_augment, model_input
from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "isic2024.yaml"


def _cache(path: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i // 4}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
            "label": (np.arange(n) % 10 == 0).astype(int),
        }
    )
    images = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n))
    write_split_cache(path, rows, images, size, "train", "benchmark")


def _batches(loader: DataLoader, n: int):
    while True:
        for b in loader:
            yield b
            n -= 1
            if n == 0:
                return


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    arch: str, size: int, ds: CacheDataset, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """Train img/s, loader+views img/s and peak memory of ``arch`` at ``size`` px."""
    cuda = device.type == "cuda"
    path = train_mod.device_path(args.cfg, device)
    model, _ = build_model(arch)
    model.to(device).train()
    if path.channels_last:
        model.to(memory_format=torch.channels_last)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = train_mod._loader(ds, args.cfg, 0, path)

    def inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        views = ds.views(batch["image"].to(device, non_blocking=True), batch["index"])
        x = model_input(views, size, IMAGENET_MEAN, IMAGENET_STD)
        if path.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, batch["label"].to(device, non_blocking=True)

    def step(batch: dict) -> None:
        x, y = inputs(batch)
        with train_mod.autocast(path, device):
            loss = loss_fn(model(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    for batch in _batches(loader, args.warmup):
        step(batch)
    _sync(device)
    start, n_train = time.perf_counter(), 0
    for batch in _batches(loader, args.steps):
        step(batch)
        n_train += len(batch["label"])  # an epoch's last batch may be short
    _sync(device)
    train_s = time.perf_counter() - start
    start, n_data = time.perf_counter(), 0
    for batch in _batches(loader, args.steps):
        inputs(batch)
        n_data += len(batch["label"])
    _sync(device)
    data_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return {"train": n_train / train_s, "data": n_data / data_s, "peak_gib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    recipe = load_params(RECIPE)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--teacher", default=recipe.teachers.archs[0])
    ap.add_argument("--student", default=recipe.student.arch)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 256])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--amp", choices=["bf16", "off"], default=recipe.train.amp)
    ap.add_argument(
        "--channels-last",
        choices=["true", "false"],
        default=str(recipe.train.channels_last).lower(),
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device here (run it where one is lent)")
    if device.type == "cpu":
        args.workers = 0
    args.cfg = recipe.train.model_copy(
        update={
            "batch_size": args.batch,
            "num_workers": args.workers,
            "amp": args.amp,
            "channels_last": args.channels_last == "true",
            "balanced_sampler": False,
        }
    )
    TrainParams.model_validate(args.cfg.model_dump())  # the overrides are valid train params
    augment = build_augment(recipe.augment)
    path = train_mod.device_path(args.cfg, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name}; batch {args.batch}, {args.steps} timed steps, {args.workers} workers, "
        f"train.amp {args.amp}, train.channels_last {args.channels_last} "
        f"(applied: autocast {path.amp_dtype or 'off'}, channels_last {path.channels_last})"
    )
    print(f"{'model':<32} {'px':>4} {'train img/s':>12} {'loader+views img/s':>19} {'peak GiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            cache = Path(tmp) / f"train_{size}.h5"
            _cache(cache, args.images, size)
            ds = CacheDataset(cache, augment, seed=0)
            for arch in (args.teacher, args.student):
                try:
                    r = measure(arch, size, ds, args, device)
                except AssertionError as exc:  # timm: a fixed input size (SwinV2 at 256 px)
                    print(f"{arch:<32} {size:>4} {'n/a':>12} ({exc})")
                    continue
                print(
                    f"{arch:<32} {size:>4} {r['train']:>12.1f} {r['data']:>19.1f} "
                    f"{r['peak_gib']:>9.2f}"
                )


if __name__ == "__main__":
    main()
