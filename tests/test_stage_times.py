"""Per-stage CPU/wall log: written only when asked, never into DVC outputs; summed per part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from melanoma_kd.stage_times import ENV, PARTS, by_part

ROOT = Path(__file__).resolve().parents[1]


def _run_stage(tmp_path: Path, env_log: Path | None) -> subprocess.CompletedProcess:
    script = tmp_path / "plot.py"  # named like a stage script: charged to "evaluation"
    script.write_text(
        "from melanoma_kd.errors import cli_entry\n"
        "@cli_entry\n"
        "def main():\n"
        "    sum(i * i for i in range(200_000))\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if env_log is not None:
        env[ENV] = str(env_log)
    return subprocess.run([sys.executable, str(script), "--x", "1"], env=env, cwd=tmp_path)


def test_a_stage_appends_one_line_only_when_asked(tmp_path: Path) -> None:
    assert _run_stage(tmp_path, None).returncode == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "plot.py"]
    log = tmp_path / "times.jsonl"
    assert _run_stage(tmp_path, log).returncode == 0
    assert _run_stage(tmp_path, log).returncode == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["stage"] for x in lines] == ["plot", "plot"] and lines[0]["args"] == "--x 1"
    assert all(x["cpu_s"] > 0 and x["wall_s"] > 0 for x in lines)


def test_parts_sum_runs_and_seconds() -> None:
    lines = [
        {"stage": "distill", "cpu_s": 10.0, "wall_s": 6.0},
        {"stage": "train_student", "cpu_s": 4.0, "wall_s": 3.0},
        {"stage": "replicate", "cpu_s": 7.5, "wall_s": 5.0},
        {"stage": "generate", "cpu_s": 1.0, "wall_s": 1.0},
    ]
    parts = by_part(lines)
    assert parts["KD grid"] == {"runs": 2, "cpu_s": 14.0, "wall_s": 9.0}
    assert parts["seeds"] == {"runs": 1, "cpu_s": 7.5, "wall_s": 5.0}
    assert parts["data"]["runs"] == 1  # a stage not listed is charged to data


def test_every_stage_script_is_charged_to_a_known_part() -> None:
    scripts = {p.stem for p in (ROOT / "stages").glob("*.py")}
    assert set(PARTS) <= scripts  # no stale names
