"""Data loading: the HDF5 cache vs decoding the same images from JPEG files, and loader memory.

Throughput (side by side, rounds alternate, median of ``--rounds``): ``--images`` synthetic
dermoscopy-like images (blurred noise with a dark blob) are written once as JPEG files at a source
resolution and once into an HDF5 cache at the training size (``cache.size``, 64 px by default).

* **jpeg** — what a loader without a cache does every epoch: read the file, ``cv2.imdecode``,
  BGR→RGB, shorter-side resize + centre crop to the training size (the cache stage's own
  :func:`resize_shorter_center_crop`), uint8 CHW tensor.
* **hdf5** — :class:`melanoma_kd.data.dataset.CacheDataset`, one chunk read per image.

Both run through the same ``DataLoader`` (batch 32, ``num_workers=0``, no augmentation, which
both would pay equally). Two source resolutions: 128 px (our synthetic default) and 600×450
(HAM10000's camera images). Target: hdf5 ≥ 3× jpeg.

Memory: peak RSS of a fresh process that iterates the loader over a cache of 4·N and of 16·N
images; it must not grow with N (the dataset reads one chunk at a time, never the whole file).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from melanoma_kd.data.cache import resize_shorter_center_crop, write_split_cache
from melanoma_kd.data.dataset import CacheDataset

TARGET = 3.0
SOURCES = {"128x128": (128, 128), "600x450 (HAM10000)": (450, 600)}


def synthetic_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.integers(90, 200, (max(h // 8, 4), max(w // 8, 4), 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    centre = (w // 2 + int(rng.integers(-w // 8, w // 8)), h // 2)
    cv2.ellipse(img, centre, (w // 5, h // 6), 0, 0, 360, (60, 40, 30), -1)
    return cv2.GaussianBlur(img, (5, 5), 0)


class JpegDataset(Dataset):
    """Decode + resize per item, as a loader without a cache would."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, object]:
        buf = np.frombuffer(self.files[index].read_bytes(), np.uint8)
        rgb = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        img = resize_shorter_center_crop(rgb, self.size)
        return {"image": torch.from_numpy(img).permute(2, 0, 1).contiguous(), "index": index}


def one_pass(ds: Dataset) -> float:
    start = time.perf_counter()
    for _ in DataLoader(ds, batch_size=32, num_workers=0):
        pass
    return time.perf_counter() - start


def build(root: Path, n: int, hw: tuple[int, int], size: int) -> tuple[list[Path], Path]:
    rng = np.random.default_rng(0)
    files, crops = [], []
    for i in range(n):
        rgb = synthetic_image(rng, *hw)
        path = root / f"img{i:05d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        path.write_bytes(buf.tobytes())
        files.append(path)
        crops.append(resize_shorter_center_crop(rgb, size))
    return files, write_cache(root / "train.h5", crops, size)


def write_cache(path: Path, images: list[np.ndarray], size: int) -> Path:
    n = len(images)
    rows = pd.DataFrame(
        {
            "image_id": [f"img{i:05d}" for i in range(n)],
            "label": np.arange(n) % 2,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, images, size, "train", "benchmark")
    return path


def peak_rss_mb(cache: Path) -> float:
    """Peak RSS of a fresh interpreter that iterates the loader once over ``cache``."""
    code = (
        "import resource, sys\n"
        "from torch.utils.data import DataLoader\n"
        "from melanoma_kd.data.dataset import CacheDataset\n"
        "for _ in DataLoader(CacheDataset(sys.argv[1]), batch_size=32): pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip().splitlines()[-1])
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=64, help="training (cache) size, px")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"loader: {args.images} images → {args.size} px, batch 32, num_workers 0, 1 thread")
    with tempfile.TemporaryDirectory() as tmp:
        for name, hw in SOURCES.items():
            root = Path(tmp) / name.split()[0]
            root.mkdir()
            files, cache = build(root, args.images, hw, args.size)
            sets = {"jpeg": JpegDataset(files, args.size), "hdf5": CacheDataset(cache)}
            times: dict[str, list[float]] = {k: [] for k in sets}
            for r in range(args.rounds):
                order = list(sets) if r % 2 == 0 else list(reversed(sets))
                for key in order:
                    times[key].append(one_pass(sets[key]))
            rate = {k: args.images / statistics.median(v) for k, v in times.items()}
            ratio = rate["hdf5"] / rate["jpeg"]
            verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
            print(
                f"  source {name:20s} jpeg {rate['jpeg']:8.0f} img/s   hdf5 {rate['hdf5']:8.0f}"
                f" img/s   hdf5/jpeg {ratio:5.1f}x (target >= {TARGET}: {verdict})"
            )
        rng = np.random.default_rng(1)
        sizes = (4 * args.images, 16 * args.images)
        rss = {}
        for n in sizes:
            crops = [synthetic_image(rng, args.size, args.size) for _ in range(n)]
            rss[n] = peak_rss_mb(write_cache(Path(tmp) / f"rss{n}.h5", crops, args.size))
        small, big = (rss[n] for n in sizes)
        print(
            f"  peak RSS iterating the loader: {sizes[0]} images {small:.0f} MB, {sizes[1]} "
            f"images {big:.0f} MB (ratio {big / small:.2f}; the larger cache holds "
            f"{(sizes[1] - sizes[0]) * args.size**2 * 3 / 2**20:.0f} MB more pixels)"
        )


if __name__ == "__main__":
    main()
