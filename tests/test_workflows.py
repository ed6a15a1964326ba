"""What users rely on, through the real CLI on the tiny profile: forced reruns reproduce the same
bytes, experiments and queues run, branches compare, the run-cache restores work in a fresh clone,
and an interrupted stage leaves nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import env, ran_stages, run

pytestmark = pytest.mark.pipeline

DATA_STAGES = ["generate", "ingest", "split", "remove_hair", "cache"]


@pytest.fixture(scope="module")
def remote(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local DVC remote holding the tiny repo's outputs and run-cache."""
    path = tmp_path_factory.mktemp("remote")
    run(tiny_repo, "dvc", "remote", "add", "-f", "-d", "local", str(path))
    run(tiny_repo, "git", "commit", "-qam", "local remote")
    run(tiny_repo, "dvc", "push", "--run-cache")
    return path


def clone(tiny_repo: Path, dest: Path) -> Path:
    run(dest.parent, "git", "clone", "-q", str(tiny_repo), dest.name)
    run(dest, "git", "config", "user.name", "melanoma-kd tests")
    run(dest, "git", "config", "user.email", "tests@melanoma-kd.invalid")
    return dest


def set_param(repo: Path, section: str, key: str, value: object) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_forced_rerun_reproduces_identical_bytes(tiny_repo: Path) -> None:
    lock_before = (tiny_repo / "dvc.lock").read_text()
    metrics_before = (tiny_repo / "metrics/student/scratch/summary.json").read_text()
    out = run(tiny_repo, "dvc", "repro", "-f", "-s", *DATA_STAGES, "train_student").stdout
    assert set(DATA_STAGES) | {"train_student"} <= ran_stages(out)
    # dvc.lock records the md5 of every output: unchanged lock == byte-identical outputs.
    assert (tiny_repo / "dvc.lock").read_text() == lock_before
    assert (tiny_repo / "metrics/student/scratch/summary.json").read_text() == metrics_before


def _stages_with_git_tracked_outs(repo: Path) -> set[str]:
    """Stages with a ``cache: false`` output (metrics, plots, the report kept in git)."""
    code = (
        "import json; from dvc.repo import Repo; "
        "print(json.dumps(sorted(s.addressing for s in Repo('.').index.stages "
        "if any(not o.use_cache for o in s.outs))))"
    )
    return set(json.loads(run(repo, "python", "-c", code).stdout))


def test_run_cache_restores_outputs_in_fresh_clone(
    tiny_repo: Path, remote: Path, tmp_path: Path
) -> None:
    repo = clone(tiny_repo, tmp_path / "fresh")
    run(repo, "dvc", "pull", "--run-cache")
    assert ran_stages(run(repo, "dvc", "repro").stdout) == set()
    assert (repo / "models/student/scratch.pt").is_file()
    # Without dvc.lock only the run-cache knows the results. DVC (>= 3, PR #8738) keeps no
    # run-cache entry for a stage with a `cache: false` output, and our metrics/plots are such
    # outputs so that they live in git. Exactly those stages recompute (byte-identically, so
    # their dependants still match); every stage whose outputs are all DVC-cached is restored.
    git_tracked = _stages_with_git_tracked_outs(repo)
    assert {"train_student", "report"} <= git_tracked
    (repo / "dvc.lock").unlink()
    out = run(repo, "dvc", "repro").stdout
    assert ran_stages(out) == git_tracked, out
    restored = {
        line.split("'")[1] for line in out.splitlines() if "is cached - skipping run" in line
    }
    assert restored and not restored & git_tracked, out
    committed = yaml.safe_load(run(repo, "git", "show", "HEAD:dvc.lock").stdout)
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == committed


def test_experiments_run_show_and_queue(tiny_repo: Path, remote: Path, tmp_path: Path) -> None:
    repo = clone(tiny_repo, tmp_path / "exp")
    run(repo, "dvc", "pull")
    run(repo, "dvc", "exp", "run", "-S", "distill.alpha=[0.7]", "-n", "alpha07")
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "alpha07" in text and "2-0.7-response" in text

    for alpha in ("0.3", "0.6"):
        run(repo, "dvc", "exp", "run", "--queue", "-S", f"distill.alpha=[{alpha}]")
    run(repo, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(repo, "dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(5)
    run(repo, "dvc", "queue", "stop", "--kill", check=False)
    assert "Failed" not in status, status
    assert status.count("Success") == 2, status


def test_metrics_diff_between_branches(tiny_repo: Path, tmp_path: Path, remote: Path) -> None:
    repo = clone(tiny_repo, tmp_path / "branches")
    run(repo, "dvc", "pull")
    run(repo, "git", "checkout", "-q", "-b", "other")
    set_param(repo, "student", "lr", 0.004)
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "student lr 0.004")
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "main", "other", "--json").stdout)
    changed = {path for path, rows in diff.items() for row in rows.values() if row.get("diff")}
    assert any("student/scratch" in path for path in changed), diff


def test_interrupted_stage_leaves_no_partial_output(tiny_repo: Path, tmp_path: Path) -> None:
    ckpt = tiny_repo / "models/student/scratch.pt"
    before = ckpt.read_bytes()
    proc = subprocess.Popen(
        ["dvc", "repro", "-f", "-s", "train_student"],
        cwd=tiny_repo,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # Wait until the training script is running, then interrupt the whole process group.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ps = subprocess.run(["pgrep", "-f", "stages/train_student.py"], capture_output=True)
        if ps.returncode == 0:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    leftovers = [p for p in (tiny_repo / "models").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    # DVC removes a stage's outputs before running it; the script writes the checkpoint only
    # at the very end, atomically: so it is absent or the previous complete file, never partial.
    assert not ckpt.exists() or ckpt.read_bytes() == before
    run(tiny_repo, "dvc", "repro")  # reruns or restores from the run-cache
    assert ckpt.read_bytes() == before
    assert run(tiny_repo, "dvc", "status", "--json").stdout.strip() in ("{}", "")
