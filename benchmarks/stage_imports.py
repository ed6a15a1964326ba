"""Start-up cost of every stage script: the seconds its imports take in a fresh interpreter, and
which heavy libraries they pull in.

Each ``stages/<name>.py`` is imported (its ``main`` is not run) in a new ``python`` process,
``--rounds`` times, alternating stages so that load changes hit all alike; the median is
printed beside the heavy modules it loaded. A stage that neither trains nor runs a network
should load no torch, torchvision or timm (DESIGN.md, "Performance budgets").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

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


if __name__ == "__main__":
    main()
