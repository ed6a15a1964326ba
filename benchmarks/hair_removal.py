"""Hair-removal throughput: 1 worker vs every core, measured side by side in one run.

Generates ``--images`` synthetic dermoscopy images (default 400 at 128 px, 30 % hairy, as the
default data set) and times the ``remove_hair`` stage's core, :func:`dehair_manifest`: read the
JPEG from the HDF5 container, detect hair (params.yaml's ``preprocess.detector``, or
``--detector``) + inpaint, PNG-encode, write the output HDF5 (no truth scoring).
``workers=1`` runs in-process; ``workers=<all cores>`` uses the process pool, whose
tasks carry only ids and file locations (each worker reads its own chunk). Each parallel run
starts its own pool, as the stage does; the one-time start of the forkserver that the workers
fork from (about 1 s: it pre-imports the package) is left to an untimed warm-up. Rounds
alternate (serial, parallel, parallel, serial, ...), each figure is the median over ``--rounds``,
and the output files of both settings must be byte-identical.
"Cores obtained" is CPU seconds (this process + its workers) per wall second: below the worker
count means other load on the machine took the cores, and the speed-up shrinks with it.
Budget (DESIGN.md): speed-up >= 1.7x on 2 cores.

    .venv/bin/python benchmarks/hair_removal.py [--images 400] [--size 128] [--rounds 3]
        [--detector reference|shape]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil  # installed with dvc

from melanoma_kd.config import GenerateParams, PreprocessParams, load_params
from melanoma_kd.data.hair import dehair_manifest
from melanoma_kd.data.synthetic import IMAGES_FILE, METADATA_FILE, generate_dataset
from melanoma_kd.io import sha256_file

TARGET = 1.7
REPO = Path(__file__).resolve().parents[1]


def _manifest(root: Path, n: int, size: int) -> pd.DataFrame:
    raw = root / "raw"
    generate_dataset(GenerateParams(n_images=n, image_size=size, seed=123), raw)
    meta = pd.read_csv(raw / METADATA_FILE, dtype=str)
    return pd.DataFrame({"image_id": meta["isic_id"], "location": str(raw / IMAGES_FILE)})


class _TreeCPU:
    """CPU seconds of this process and all its descendants (the pool's workers run under a
    forkserver, so ``RUSAGE_CHILDREN`` does not see them): sampled every 50 ms, last sample per
    process kept, so a worker's final < 50 ms may be missed."""

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                self._seen[proc.pid] = t.user + t.system

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> _TreeCPU:
        self._sample()
        self._start = dict(self._seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(v - self._start.get(pid, 0.0) for pid, v in self._seen.items())


def _time(manifest: pd.DataFrame, p: PreprocessParams, out: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of this process and its workers, output hash)."""
    with _TreeCPU() as cpu:
        start = time.perf_counter()
        dehair_manifest(manifest, p, out)
        wall = time.perf_counter() - start
    return wall, cpu.seconds, sha256_file(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--detector", choices=["reference", "shape"], default=None)
    args = ap.parse_args()

    base = load_params(REPO / "params.yaml").preprocess
    if args.detector is not None:
        base = base.model_copy(update={"detector": args.detector})
    cores = os.cpu_count() or 1
    settings = {
        "1 worker": base.model_copy(update={"workers": 1}),
        f"{cores} workers": base.model_copy(update={"workers": cores}),
    }
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    times: dict[str, list[float]] = {name: [] for name in settings}
    cores_used: dict[str, list[float]] = {name: [] for name in settings}
    digests: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _manifest(Path(tmp), args.images, args.size)
        out = Path(tmp) / "dehaired.h5"
        for p in settings.values():  # warm-up: imports, and the pool's forkserver (started once)
            _time(manifest.iloc[: 2 * base.chunk_size], p, out)
        for r in range(args.rounds):
            order = list(settings.items())
            for name, p in order if r % 2 == 0 else order[::-1]:
                seconds, cpu, digest = _time(manifest, p, out)
                times[name].append(seconds)
                cores_used[name].append(cpu / seconds)
                digests.add(digest)
    if len(digests) != 1:
        raise SystemExit("outputs differ between worker counts: hair removal is not deterministic")

    rate = {name: args.images / statistics.median(ts) for name, ts in times.items()}
    one, many = rate["1 worker"], rate[f"{cores} workers"]
    print(
        f"hair removal stage core ({base.detector} detector), {args.images} images at "
        f"{args.size} px, chunk "
        f"{base.chunk_size}, median of {args.rounds} rounds (outputs byte-identical):"
    )
    for name, r in rate.items():
        rounds = ", ".join(f"{t:.2f}s" for t in times[name])
        used = statistics.median(cores_used[name])
        print(f"  {name:12s} {r:7.1f} img/s  (rounds: {rounds}; cores obtained {used:.2f})")
    verdict = "ok" if many / one >= TARGET else "BELOW TARGET"
    print(f"  speed-up {many / one:.2f}x on {cores} cores (target >= {TARGET}: {verdict})")
    cpu = {
        name: statistics.median(t * c for t, c in zip(times[name], cores_used[name], strict=True))
        for name in settings
    }
    serial_cpu, pool_cpu = cpu["1 worker"], cpu[f"{cores} workers"]
    print(
        f"  CPU per image: 1 worker {1000 * serial_cpu / args.images:.2f} ms, {cores} workers "
        f"{1000 * pool_cpu / args.images:.2f} ms (pool overhead "
        f"{100 * (pool_cpu / serial_cpu - 1):+.0f} %); with {cores} idle cores that projects to "
        f"~{cores * serial_cpu / pool_cpu:.2f}x (a projection, not a measurement)"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"  load average at start {load_before}, now {load}: other processes on the machine "
        "shrink 'cores obtained'"
    )


if __name__ == "__main__":
    main()
