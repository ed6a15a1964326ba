"""Per-stage CPU/wall log: written only when asked, never into DVC outputs; summed per part,
by a module no stage imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma_kd.stage_clock import ENV
from melanoma_kd.stage_times import DEFAULT_PART, PARTS, by_part, main
from tests.stage_deps import import_closure

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


# The stages that only prepare data (and code_deps, which fingerprints the code they all run):
# the scripts charged to "data" by not being listed.
DATA_SCRIPTS = {
    "code_deps",
    "generate",
    "ingest",
    "split",
    "remove_hair",
    "synth_positives",
    "perceptual_filter",
    "cache",
}


def test_every_stage_script_is_charged_to_a_known_part() -> None:
    scripts = {p.stem for p in (ROOT / "stages").glob("*.py")}
    assert set(PARTS) <= scripts  # no stale names
    # a new stage is filed under its part, not silently under data
    assert scripts - set(PARTS) == DATA_SCRIPTS
    assert DEFAULT_PART == "data" and "data" not in PARTS.values()


def test_newer_stages_are_charged_to_their_parts() -> None:
    lines = [
        {"stage": stage, "cpu_s": 1.0, "wall_s": 1.0}
        for stage in (
            "select_teacher",
            "teacher_replicate",
            "hair_cache",
            "hair_train",  # hair_student@… and hair_teacher@… both run it
            "hair_train",
            "hair_evaluate",
        )
    ]
    parts = by_part(lines)
    assert {name: p["runs"] for name, p in parts.items()} == {
        "teachers": 1,
        "seeds": 1,
        "hair ablation": 4,
    }


def test_the_table_aligns_long_part_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "times.jsonl"
    log.write_text(
        json.dumps({"stage": "hair_train", "cpu_s": 3.0, "wall_s": 2.0})
        + "\n"
        + json.dumps({"stage": "generate", "cpu_s": 1.0, "wall_s": 1.0})
        + "\n"
    )
    monkeypatch.setattr("sys.argv", ["stage_times", str(log)])
    main()
    rows = capsys.readouterr().out.splitlines()
    assert [r.split("  ")[0].strip() for r in rows] == ["part", "hair ablation", "data", "total"]
    assert len({len(r) for r in rows[:-1]}) == 1  # every column lines up
    assert len(rows[-1]) == len(rows[0]) - len(" CPU share")  # total: no share column
    assert rows[1].split()[-1] == "75%"


def test_no_stage_imports_the_parts_table() -> None:
    """Regrouping the parts reruns no stage: only the recorder is in the stages' code deps."""
    package = ROOT / "src" / "melanoma_kd"
    for script in sorted((ROOT / "stages").glob("*.py")):
        closure = import_closure(script)
        assert package / "stage_times.py" not in closure, script.name
        assert package / "stage_clock.py" in closure, script.name
