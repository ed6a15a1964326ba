"""CPU and wall time per pipeline stage, grouped into the parts of the pipeline.

Timings are not reproducible, so they are kept out of every DVC output: when the environment
names a log file (``MELANOMA_KD_STAGE_TIMES``, set by ``make repro``), each stage process appends
one JSON line when it ends (:func:`record`, called by :func:`melanoma_kd.errors.cli_entry`), and
``python -m melanoma_kd.stage_times <log>`` prints the table by part (teachers, KD grid, seeds,
evaluation, deployment, data). CPU time is user + system of the process and of its finished
children (the parallel hair-removal workers), imports included.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

ENV = "MELANOMA_KD_STAGE_TIMES"
_START = time.monotonic()
# stage script -> part of the pipeline it is charged to
PARTS: dict[str, str] = {
    "train_teacher": "teachers",
    "teacher_outputs": "teachers",
    "train_student": "KD grid",
    "distill": "KD grid",
    "transfer_set": "KD grid",
    "replicate": "seeds",
    "transfer_ablation": "seeds",
    "evaluate": "evaluation",
    "plot": "evaluation",
    "report": "evaluation",
    "baselines": "evaluation",
    "select_student": "deployment",
    "export": "deployment",
    "quantize": "deployment",
    "benchmark": "deployment",
}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def record() -> None:
    """Append this process's stage, CPU and wall seconds to the log the environment names."""
    log = os.environ.get(ENV)
    if not log:
        return
    entry = {
        "stage": Path(sys.argv[0]).stem,
        "args": " ".join(sys.argv[1:]),
        "cpu_s": round(_cpu_seconds(), 2),
        "wall_s": round(time.monotonic() - _START, 2),
    }
    with open(log, "a") as handle:  # one short line per process: appends do not interleave
        handle.write(json.dumps(entry) + "\n")


def by_part(lines: list[dict]) -> dict[str, dict[str, float]]:
    """Sum ``cpu_s``, ``wall_s`` and the number of stage runs per part."""
    parts: dict[str, dict[str, float]] = defaultdict(
        lambda: {"runs": 0, "cpu_s": 0.0, "wall_s": 0.0}
    )
    for entry in lines:
        part = parts[PARTS.get(entry["stage"], "data")]
        part["runs"] += 1
        part["cpu_s"] += entry["cpu_s"]
        part["wall_s"] += entry["wall_s"]
    return dict(parts)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m melanoma_kd.stage_times <log.jsonl>")
    path = Path(sys.argv[1])
    if not path.is_file():
        print(f"{path}: no stage ran (the pipeline was up to date)")
        return
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    parts = by_part(lines)
    total_cpu = sum(p["cpu_s"] for p in parts.values())
    print(f"{'part':<12} {'stage runs':>10} {'CPU s':>9} {'wall s':>9} {'CPU share':>9}")
    for name, p in sorted(parts.items(), key=lambda kv: -kv[1]["cpu_s"]):
        share = p["cpu_s"] / total_cpu if total_cpu else 0.0
        print(f"{name:<12} {p['runs']:>10.0f} {p['cpu_s']:>9.1f} {p['wall_s']:>9.1f} {share:>9.0%}")
    wall = sum(p["wall_s"] for p in parts.values())
    print(f"{'total':<12} {len(lines):>10} {total_cpu:>9.1f} {wall:>9.1f}")


if __name__ == "__main__":
    main()
