"""Does the data half of the pipeline scale? Time per 1,000 images and peak RSS per stage.

Runs the stage scripts ``ingest → split → remove_hair → cache`` exactly as ``dvc.yaml`` calls
them, each in its own process, on synthetic data sets of each ``--sizes`` (made first by the
``generate`` stage script, not counted), and prints per stage: seconds per 1,000 images and the
peak resident set size (``ru_maxrss`` of that stage's process tree from ``wait4``: the largest
single process, so with ``preprocess.workers > 1`` the largest of the main process and its
hair-removal workers). A stage that holds the data set in memory shows an RSS that grows with
the image count; one that streams shows a flat RSS (target: largest / smallest size ≤ 1.2).

The source tree is copied into the temp folder first, so edits made while the benchmark runs do
not mix into it. Params are the package defaults with only the sizes below changed.

    nice -n 10 python benchmarks/scale_pipeline.py [--sizes 2000 20000] [--image-size 64]
        [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "split", "remove_hair", "cache")
DEFAULTS = "import json; from melanoma_kd.config import Params; print(Params().model_dump_json())"


@dataclass(frozen=True)
class Measured:
    """One stage process: wall seconds and peak RSS (MiB)."""

    seconds: float
    rss_mib: float


def snapshot(dst: Path) -> Path:
    """Copy ``src/`` and ``stages/`` to ``dst``; return the folder to run the stage scripts in."""
    for name in ("src", "stages"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def child_env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code / "src"), "PYTHONHASHSEED": "0"}


def run_stage(code: Path, cwd: Path, script: str, *args: str) -> Measured:
    """Run ``stages/<script>.py ARGS`` in ``cwd``; its wall time and peak RSS (wait4)."""
    cmd = [sys.executable, str(code / "stages" / f"{script}.py"), *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=child_env(code), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read()  # drain the pipe so the child never blocks on it
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = output.decode(errors="replace")[-3000:]
        raise SystemExit(f"{script} exited {proc.returncode}:\n{tail}")
    return Measured(seconds, usage.ru_maxrss / 1024)  # Linux: KiB


def params_for(code: Path, n_images: int, image_size: int, workers: int) -> dict:
    """Package defaults with the data set size, image size and hair-removal workers set."""
    out = subprocess.run(
        [sys.executable, "-c", DEFAULTS],
        env=child_env(code),
        capture_output=True,
        text=True,
        check=True,
    )
    params = json.loads(out.stdout)
    params["generate"]["n_images"] = n_images
    params["generate"]["image_size"] = image_size
    params["preprocess"]["workers"] = workers
    return params


def one_size(code: Path, work: Path, n: int, image_size: int, workers: int) -> dict:
    """Generate ``n`` images under ``work`` and run the four stages; measurements per stage."""
    work.mkdir(parents=True)
    params = params_for(code, n, image_size, workers)
    params["data"]["root"] = str(work / "raw")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = ("--params", "params.yaml")
    results = {
        "generate": run_stage(code, work, "generate", *p, "--out", "raw", "--plot", "samples.png")
    }
    results["ingest"] = run_stage(
        code, work, "ingest", *p, "--out", "manifest.csv", "--skipped", "skipped.csv",
        "--metrics", "ingest.json",
    )  # fmt: skip
    results["split"] = run_stage(
        code, work, "split", *p, "--manifest", "manifest.csv", "--out", "splits.csv",
        "--metrics", "split_metadata.json",
    )  # fmt: skip
    results["remove_hair"] = run_stage(
        code, work, "remove_hair", *p, "--manifest", "manifest.csv", "--truth", "raw/truth.hdf5",
        "--out", "dehaired.h5", "--metrics", "hair_removal.json", "--plot", "hair_removal.png",
    )  # fmt: skip
    results["cache"] = run_stage(
        code, work, "cache", *p, "--splits", "splits.csv", "--images", "dehaired.h5",
        "--synth-csv", "unused.csv", "--synth-images", "unused.h5", "--out-dir", "cache",
    )  # fmt: skip
    images = json.loads((work / "ingest.json").read_text())["images"]
    if images != n:
        raise SystemExit(f"ingest saw {images} images, expected {n}")
    disk = {
        "raw": sum(f.stat().st_size for f in (work / "raw").iterdir()),
        "dehaired": (work / "dehaired.h5").stat().st_size,
        "cache": sum(f.stat().st_size for f in (work / "cache").iterdir()),
    }
    return {"results": results, "disk": disk}


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--image-size", type=int, default=64, help="generated image side (px)")
    ap.add_argument("--workers", type=int, default=2, help="preprocess.workers (hair removal)")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = ap.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="scale_pipeline_"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        code = snapshot(base / "code")
        print(
            f"scale_pipeline: sizes {args.sizes}, generated images {args.image_size} px, "
            f"cache.size {params_for(code, 20, args.image_size, 1)['cache']['size']} px, "
            f"hair-removal workers {args.workers}, CPUs {os.cpu_count()}",
            flush=True,
        )
        runs = {}
        for n in args.sizes:
            t0 = time.perf_counter()
            runs[n] = one_size(code, base / f"n{n}", n, args.image_size, args.workers)
            gen = runs[n]["results"]["generate"]
            print(
                f"  {n} images done in {time.perf_counter() - t0:.0f} s (generate {gen.seconds:.0f}"
                f" s); disk: " + ", ".join(f"{k} {mib(v)}" for k, v in runs[n]["disk"].items()),
                flush=True,
            )
        report(runs)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


def report(runs: dict[int, dict]) -> None:
    sizes = sorted(runs)
    lo, hi = sizes[0], sizes[-1]
    head = "".join(f" | {n:>6} img: s/1k img, peak RSS" for n in sizes)
    print(f"\n{'stage':12s}{head} | RSS {hi}/{lo}")
    for stage in (*STAGES, "generate"):
        cells = []
        for n in sizes:
            m: Measured = runs[n]["results"][stage]
            cells.append(f" | {m.seconds / n * 1000:17.2f} {m.rss_mib:8.0f} MiB")
        ratio = runs[hi]["results"][stage].rss_mib / runs[lo]["results"][stage].rss_mib
        note = "" if stage != "generate" else "  (data set maker, not a measured stage)"
        print(f"{stage:12s}{''.join(cells)} | {ratio:8.2f}{note}")
    worst = max(
        STAGES,
        key=lambda s: runs[hi]["results"][s].rss_mib / runs[lo]["results"][s].rss_mib,
    )
    ratio = runs[hi]["results"][worst].rss_mib / runs[lo]["results"][worst].rss_mib
    verdict = "flat (<= 1.20)" if ratio <= 1.2 else "NOT flat (> 1.20)"
    print(f"largest RSS ratio: {worst} {ratio:.2f} -> {verdict}")


if __name__ == "__main__":
    main()
