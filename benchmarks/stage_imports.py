"""Start-up cost of every stage script: the seconds its imports take in a fresh interpreter,
which heavy libraries they pull in, and the CPU seconds of a whole start-up and exit with the
cyclic collector paused during the imports (``melanoma_kd.startup``) beside those with it on.

Each ``stages/<name>.py`` is imported (its ``main`` is not run) in a new ``python`` process
whose ``sys.argv[0]`` is the script, as when DVC runs it, ``--rounds`` times, alternating stages
so that load changes hit all alike; the median is printed beside the heavy modules it loaded.
A stage that neither trains nor runs a network should load no torch, torchvision or timm
(DESIGN.md, "Performance budgets").

Then ``python stages/<name>.py --help`` (imports, argument parsing, exit: what every stage run
pays before its work) runs as the pipeline runs it and again with ``MELANOMA_KD_IMPORT_GC=1``,
side by side in each round; the median user + system CPU seconds of each and their ratio are
printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from melanoma_kd.startup import ENV

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "dvclive",
    "sklearn",
    "scipy",
    "matplotlib",
    "onnxruntime",
    "onnx",
    "cv2",
    "h5py",
    "pandas",
)
PROBE = """
import importlib.util, json, sys, time
sys.argv = sys.argv[1:]  # as when the script runs: a stage imports with the collector paused
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def measure(script: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(script)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def startup_cpu(script: Path, import_gc: bool) -> float:
    """User + system CPU seconds of ``python <script> --help``, as DVC runs a stage."""
    env = dict(os.environ)
    env.pop(ENV, None)
    if import_gc:
        env[ENV] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    scripts = sorted((ROOT / "stages").glob("*.py"))
    runs: dict[str, list[float]] = {s.stem: [] for s in scripts}
    heavy: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for script in scripts:
            m = measure(script)
            runs[script.stem].append(float(m["seconds"]))  # type: ignore[arg-type]
            heavy[script.stem] = list(m["heavy"])  # type: ignore[arg-type]
    print(f"{'stage':<20} {'import s':>8}  heavy modules loaded")
    for name, ts in runs.items():
        print(f"{name:<20} {statistics.median(ts):8.2f}  {' '.join(heavy[name])}")
    torch_free = [n for n in runs if "torch" not in heavy[n]]
    print(f"stages importing no torch: {len(torch_free)}/{len(runs)} ({', '.join(torch_free)})")

    cpu: dict[str, dict[bool, list[float]]] = {s.stem: {False: [], True: []} for s in scripts}
    for r in range(args.rounds):
        for script in scripts:
            for import_gc in (r % 2 == 1, r % 2 == 0):  # which goes first alternates
                cpu[script.stem][import_gc].append(startup_cpu(script, import_gc))
    print(f"\n{'stage':<20} {'paused':>7} {'gc on':>7} {'ratio':>6}  (CPU s of start-up + exit)")
    totals = {False: 0.0, True: 0.0}
    for name, by in cpu.items():
        med = {k: statistics.median(v) for k, v in by.items()}
        totals = {k: totals[k] + med[k] for k in totals}
        print(f"{name:<20} {med[False]:7.2f} {med[True]:7.2f} {med[False] / med[True]:6.2f}")
    print(
        f"{'all stages':<20} {totals[False]:7.2f} {totals[True]:7.2f} "
        f"{totals[False] / totals[True]:6.2f}"
    )


if __name__ == "__main__":
    main()
