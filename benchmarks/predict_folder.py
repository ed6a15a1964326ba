"""Batch prediction throughput: ``melanoma-kd predict FOLDER`` on a folder of ``--images`` JPEGs.

Writes ``--images`` dermoscopy-like JPEGs (blurred noise with a dark blob, 600×450 like
HAM10000's camera images, a few with a drawn hair) into a temporary folder tree, then scores the
folder with :func:`melanoma_kd.predict.predict_files` — the function behind the CLI: file
checks, decode, hair removal, resize/crop, ONNX Runtime — at 1 and 2 threads, side by side, and
prints images/s and ms per image for each (median of ``--rounds``). Also reports the share of
time spent outside the network (one image scored with the network call alone).
Run after ``make repro`` (needs ``models/onnx/student_kd.onnx``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from melanoma_kd.predict import Predictor, predict_files


def write_folder(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(90, 220, (450, 600, 3), dtype=np.uint8), (9, 9), 3)
        cv2.circle(img, (300, 225), int(rng.integers(60, 160)), (40, 50, 90), -1)
        if i % 4 == 0:
            cv2.line(img, (0, int(rng.integers(0, 450))), (599, int(rng.integers(0, 450))), 10, 2)
        sub = root / f"visit{i % 10}"
        sub.mkdir(exist_ok=True)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        (sub / f"lesion{i:05d}.jpg").write_bytes(buf.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/onnx/student_kd.onnx")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.images)
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for threads in (1, 2):  # alternate, so load changes hit both alike
                start = time.perf_counter()
                results = predict_files([root], args.model, 40_000_000, threads, progress=False)
                times[threads].append(time.perf_counter() - start)
                assert len(results) == args.images and not any(r.error for r in results)
        for threads, ts in times.items():
            t = statistics.median(ts)
            print(
                f"predict folder of {args.images} images (600x450 JPEG), {threads} thread(s): "
                f"{args.images / t:.1f} images/s, {1000 * t / args.images:.2f} ms/image"
            )
        predictor = Predictor(args.model, 40_000_000, threads=1)
        one = next(root.rglob("*.jpg"))
        x = predictor.prepare(predictor.load(one))
        start = time.perf_counter()
        for _ in range(50):
            predictor.clf.probabilities(x)
        net_ms = 1000 * (time.perf_counter() - start) / 50
        total_ms = 1000 * statistics.median(times[1]) / args.images
        print(
            f"network alone (ONNX Runtime, 1 thread): {net_ms:.2f} ms/image, i.e. "
            f"{100 * net_ms / total_ms:.0f} % of the 1-thread time per image"
        )


if __name__ == "__main__":
    main()
