"""CPU and wall time per pipeline stage, grouped into the parts of the pipeline.

Each stage process appends one line to a log when ``make repro`` asks for it
(:mod:`melanoma_kd.stage_clock`); ``python -m melanoma_kd.stage_times <log>`` prints the table
by part (teachers, KD grid, seeds, hair ablation, evaluation, deployment, data). No stage imports
this module, so regrouping the parts reruns no stage.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

# stage script -> part of the pipeline it is charged to; a script not listed is charged to "data"
# (code_deps, generate, ingest, split, remove_hair, synth_positives, perceptual_filter, cache)
PARTS: dict[str, str] = {
    "train_teacher": "teachers",
    "select_teacher": "teachers",
    "teacher_outputs": "teachers",
    "train_student": "KD grid",
    "distill": "KD grid",
    "transfer_set": "KD grid",
    "replicate": "seeds",
    "teacher_replicate": "seeds",
    "transfer_ablation": "seeds",
    "hair_cache": "hair ablation",
    "hair_train": "hair ablation",  # hair_student@… and hair_teacher@…
    "hair_evaluate": "hair ablation",
    "evaluate": "evaluation",
    "plot": "evaluation",
    "report": "evaluation",
    "baselines": "evaluation",
    "select_student": "deployment",
    "export": "deployment",
    "quantize": "deployment",
    "benchmark": "deployment",
}
DEFAULT_PART = "data"


def by_part(lines: list[dict]) -> dict[str, dict[str, float]]:
    """Sum ``cpu_s``, ``wall_s`` and the number of stage runs per part."""
    parts: dict[str, dict[str, float]] = defaultdict(
        lambda: {"runs": 0, "cpu_s": 0.0, "wall_s": 0.0}
    )
    for entry in lines:
        part = parts[PARTS.get(entry["stage"], DEFAULT_PART)]
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
    w = max([12, *(len(name) for name in parts)])  # column of part names
    print(f"{'part':<{w}} {'stage runs':>10} {'CPU s':>9} {'wall s':>9} {'CPU share':>9}")
    for name, p in sorted(parts.items(), key=lambda kv: -kv[1]["cpu_s"]):
        share = p["cpu_s"] / total_cpu if total_cpu else 0.0
        print(
            f"{name:<{w}} {p['runs']:>10.0f} {p['cpu_s']:>9.1f} {p['wall_s']:>9.1f} {share:>9.0%}"
        )
    wall = sum(p["wall_s"] for p in parts.values())
    print(f"{'total':<{w}} {len(lines):>10} {total_cpu:>9.1f} {wall:>9.1f}")


if __name__ == "__main__":
    main()
