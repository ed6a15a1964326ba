"""A stage or ``melanoma-kd`` process imports with the cyclic collector paused and runs ``main``
with it back on (``melanoma_kd.startup``); every other process is left alone."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma_kd.errors import cli_entry
from melanoma_kd.startup import ENV, is_own_program

PROBE = """
import gc, json
import melanoma_kd
paused = not gc.isenabled()
import pandas  # a stage's other imports follow ``import melanoma_kd``
from melanoma_kd.errors import cli_entry

KEPT = []

@cli_entry
def main():
    KEPT.extend([i] for i in range(100))  # what a stage keeps alive to the end
    return {"paused": paused, "on_in_main": gc.isenabled(), "frozen_in_main": gc.get_freeze_count()}

state = main()
print(json.dumps(state | {"frozen_after": gc.get_freeze_count()}))
"""


def run_probe(folder: Path, import_gc: str | None = None) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if import_gc is not None:
        env[ENV] = import_gc
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("stages/distill.py", True),
        ("/home/u/melanoma-kd/stages/export.py", True),
        ("-c", False),
        ("", False),
        ("tests/test_startup.py", False),
        ("stages/notes.txt", False),
        ("/home/u/.venv/bin/melanoma-kd", True),
        ("/usr/bin/dvc", False),
    ],
)
def test_stage_scripts_and_the_cli_are_recognised(argv0: str, expected: bool) -> None:
    assert is_own_program(argv0) is expected


def test_a_stage_imports_without_the_collector_and_runs_main_with_it(tmp_path: Path) -> None:
    state = run_probe(tmp_path / "stages")
    assert state["paused"] is True
    assert state["on_in_main"] is True
    frozen_in_main = state["frozen_in_main"]
    assert isinstance(frozen_in_main, int) and frozen_in_main > 10_000  # pandas' objects at least
    assert isinstance(state["frozen_after"], int) and state["frozen_after"] >= frozen_in_main + 100


@pytest.mark.parametrize("where", ["opted_out", "not_a_stage"])
def test_other_processes_keep_the_collector(tmp_path: Path, where: str) -> None:
    if where == "opted_out":
        state = run_probe(tmp_path / "stages", import_gc="1")
    else:
        state = run_probe(tmp_path / "scripts")
    assert state == {"paused": False, "on_in_main": True, "frozen_in_main": 0, "frozen_after": 0}


def test_a_wrapped_main_called_in_process_changes_nothing() -> None:
    """Tests call stage mains in-process: the collector of the test process is not touched."""
    before = (gc.isenabled(), gc.get_freeze_count())
    seen = cli_entry(lambda: (gc.isenabled(), gc.get_freeze_count()))()
    assert seen == before
    assert (gc.isenabled(), gc.get_freeze_count()) == before
