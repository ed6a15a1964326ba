"""make verify: staleness is judged from the lock's code/params inputs; CPU pinning is opt-out."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from melanoma_kd.cpu_kernels import PINNED
from melanoma_kd.verify import prune_lock, stale_stages, stray_files
from tests.conftest import REPO_ROOT


def _lock(**changes: object) -> str:
    stages = {
        "split": {
            "cmd": "python stages/split.py",
            "deps": [
                {"path": "data/manifest.csv", "hash": "md5", "md5": "aaa"},
                {"path": "stages/split.py", "hash": "md5", "md5": "s1"},
            ],
            "params": {"params.yaml": {"split.seed": 0}},
            "outs": [{"path": "data/splits.csv", "hash": "md5", "md5": "bbb"}],
        },
        "train": {
            "cmd": "python stages/train.py",
            "deps": [
                {"path": "data/splits.csv", "hash": "md5", "md5": "bbb"},
                {"path": "src/melanoma_kd/train.py", "hash": "md5", "md5": "t1"},
            ],
            "params": {"params.yaml": {"train.lr": 0.001}},
            "outs": [{"path": "models/m.pt", "hash": "md5", "md5": "ccc"}],
        },
    }
    for dotted, value in changes.items():
        stage, field, index, key = dotted.split("__")
        stages[stage][field][int(index)][key] = value
    return yaml.safe_dump({"schema": "2.0", "stages": stages})


def test_identical_locks_are_not_stale() -> None:
    assert stale_stages(_lock(), _lock()) == []


def test_drift_in_produced_files_is_not_staleness() -> None:
    # another CPU: the split file and the model differ, code and params do not
    drifted = _lock(split__outs__0__md5="xxx", train__deps__0__md5="xxx", train__outs__0__md5="y")
    assert stale_stages(_lock(), drifted) == []


def test_drift_in_a_folder_holding_outputs_is_not_staleness() -> None:
    # evaluate depends on metrics/teachers, the folder each teacher stage writes its run into
    def lock(folder_md5: str, code_md5: str = "e1") -> str:
        stages = yaml.safe_load(_lock())["stages"]
        stages["train"]["outs"].append({"path": "metrics/teachers/a", "md5": "r.dir"})
        stages["evaluate"] = {
            "cmd": "python stages/evaluate.py",
            "deps": [
                {"path": "metrics/teachers", "hash": "md5", "md5": folder_md5},
                {"path": "src/melanoma_kd/evaluate.py", "hash": "md5", "md5": code_md5},
            ],
        }
        return yaml.safe_dump({"schema": "2.0", "stages": stages})

    assert stale_stages(lock("f1.dir"), lock("f2.dir")) == []
    assert stale_stages(lock("f1.dir"), lock("f2.dir", code_md5="e2")) == ["evaluate"]


def test_changed_code_marks_the_stage_stale() -> None:
    assert stale_stages(_lock(), _lock(train__deps__1__md5="t2")) == ["train"]


def test_a_changed_code_file_is_staleness_though_a_stage_writes_it() -> None:
    # code_deps writes code/<script>.txt from the git-tracked code: a stage whose code file
    # changed ran other code, on any CPU, unlike a stage whose data input drifted
    def lock(code_md5: str, folder_md5: str = "src1.dir", splits_md5: str = "bbb") -> str:
        stages = yaml.safe_load(_lock(train__deps__0__md5=splits_md5))["stages"]
        stages["code_deps"] = {
            "cmd": "python stages/code_deps.py",
            "deps": [{"path": "src/melanoma_kd", "hash": "md5", "md5": folder_md5}],
            "outs": [{"path": "code", "hash": "md5", "md5": "c.dir"}],
        }
        stages["train"]["deps"][1] = {"path": "code/train.txt", "hash": "md5", "md5": code_md5}
        return yaml.safe_dump({"schema": "2.0", "stages": stages})

    assert stale_stages(lock("t1"), lock("t1", splits_md5="drift")) == []
    assert stale_stages(lock("t1"), lock("t2")) == ["train"]
    assert stale_stages(lock("t1"), lock("t2", folder_md5="src2.dir")) == ["code_deps", "train"]


def test_changed_params_and_new_stages_are_stale() -> None:
    lock = yaml.safe_load(_lock())
    lock["stages"]["split"]["params"]["params.yaml"]["split.seed"] = 1
    lock["stages"]["export"] = {"cmd": "python stages/export.py", "deps": [], "outs": []}
    assert stale_stages(_lock(), yaml.safe_dump(lock)) == ["export", "split"]


def _pinned_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    env.update(extra)
    code = "import json, os, melanoma_kd; print(json.dumps({k: os.environ.get(k) for k in %r}))"
    out = subprocess.run(
        [sys.executable, "-c", code % list(PINNED)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return yaml.safe_load(out)


def test_import_pins_cpu_kernels_unless_opted_out() -> None:
    assert _pinned_env({}) == PINNED
    assert _pinned_env({"MELANOMA_KD_NATIVE_CPU": "1"}) == dict.fromkeys(PINNED)
    assert _pinned_env({"MKL_CBWR": "COMPATIBLE"})["MKL_CBWR"] == "COMPATIBLE"


def test_leftover_files_in_a_folder_dependency_are_reported(tmp_path) -> None:
    # a teacher dropped from teachers.archs leaves its run behind; the folder hash then differs
    # from a fresh clone's, so make repro must refuse to record it
    lock = {
        "schema": "2.0",
        "stages": {
            "train@a": {"cmd": "t", "outs": [{"path": "runs/a/summary.json"}, {"path": "m/a.pt"}]},
            "evaluate": {"cmd": "e", "deps": [{"path": "runs"}, {"path": "m"}, {"path": "src"}]},
        },
    }
    for rel in ("runs/a/summary.json", "runs/old/summary.json", "m/a.pt", "m/.gitignore"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/code.py").write_text("x")  # a folder holding no output is not checked
    assert stray_files(yaml.safe_dump(lock), tmp_path) == ["runs/old/summary.json"]
    (tmp_path / "runs/old/summary.json").unlink()
    assert stray_files(yaml.safe_dump(lock), tmp_path) == []
    # a file git tracks is in every clone: not stray (untracked, the same file is)
    (tmp_path / "m/README.md").write_text("what m/ holds")
    assert stray_files(yaml.safe_dump(lock), tmp_path) == ["m/README.md"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "m/README.md"], check=True)
    assert stray_files(yaml.safe_dump(lock), tmp_path) == []


def test_removed_stages_are_pruned_from_the_lock_and_do_not_hide_leftovers(tmp_path) -> None:
    # DVC keeps the lock entry of a stage dropped from dvc.yaml; that entry must not make its
    # leftover output look produced, and make repro removes it
    lock = {
        "schema": "2.0",
        "stages": {
            "train@a": {"cmd": "t a", "outs": [{"path": "m/a.pt", "md5": "1"}]},
            "train@old": {"cmd": "t old", "outs": [{"path": "m/old.pt", "md5": "2"}]},
            "evaluate": {"cmd": "e", "deps": [{"path": "m", "md5": "3.dir"}]},
        },
    }
    text = yaml.safe_dump(lock, sort_keys=False)
    for rel in ("m/a.pt", "m/old.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    current = {"train@a", "evaluate"}
    assert stray_files(text, tmp_path) == []  # the stale entry hides the leftover...
    assert stray_files(text, tmp_path, current) == ["m/old.pt"]  # ...unless limited to dvc.yaml
    pruned, gone = prune_lock(text, current)
    assert gone == ["train@old"]
    assert yaml.safe_load(pruned)["stages"] == {
        k: v for k, v in lock["stages"].items() if k != "train@old"
    }
    assert prune_lock(pruned, current) == (pruned, [])
    # the kept entries keep their exact text
    lines = text.splitlines(keepends=True)
    start, end = lines.index("  train@old:\n"), lines.index("  evaluate:\n")
    assert pruned == "".join(lines[:start] + lines[end:])
