"""What users rely on, through the real CLI on the tiny profile: forced reruns reproduce the same
bytes, an interrupted stage leaves nothing half-written, experiments and queues run, branches
compare, and the run-cache restores work in a fresh clone.

All of it reuses the session's one reproduction of the tiny profile (``tiny_repo``, with its
outputs and run-cache pushed to ``tiny_remote``) and reruns only what each check needs."""

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
from tests.tiny_pipeline import CHECKPOINT, FRESH_TARGET, FreshClone

pytestmark = pytest.mark.pipeline

SCRATCH_SUMMARY = "metrics/student/scratch/summary.json"


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


def _interrupt_training(repo: Path) -> None:
    """Start ``dvc repro -f -s train_student`` and SIGTERM its process group mid-training."""
    proc = subprocess.Popen(
        ["dvc", "repro", "-f", "-s", "train_student"],
        cwd=repo,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # Wait until this repro's training script runs (its process group only: other pipelines
    # on the machine run the same script), then interrupt the whole process group.
    script = ["pgrep", "-g", str(proc.pid), "-f", "stages/train_student.py"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if subprocess.run(script, capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def test_interrupted_stage_leaves_no_partial_output_and_its_rerun_is_identical(
    tiny_repo: Path,
) -> None:
    """An interrupted train_student leaves nothing half-written, and its forced rerun (with the
    image cache it trains on) brings back the same bytes. (The fresh-clone test reruns the
    stages before the cache without dvc.lock and checks their bytes the same way.)"""
    ckpt = tiny_repo / CHECKPOINT
    before = ckpt.read_bytes()
    lock_before = (tiny_repo / "dvc.lock").read_text()
    metrics_before = (tiny_repo / SCRATCH_SUMMARY).read_text()

    _interrupt_training(tiny_repo)
    leftovers = [p for p in (tiny_repo / "models").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    # DVC removes a stage's outputs before running it; the script writes the checkpoint only
    # at the very end, atomically: so it is absent or the previous complete file, never partial.
    assert not ckpt.exists() or ckpt.read_bytes() == before

    out = run(tiny_repo, "dvc", "repro", "-f", "-s", "cache", "train_student").stdout
    assert ran_stages(out) == {"cache", "train_student"}
    # dvc.lock records the md5 of every output: unchanged lock == byte-identical outputs.
    assert (tiny_repo / "dvc.lock").read_text() == lock_before
    assert (tiny_repo / SCRATCH_SUMMARY).read_text() == metrics_before
    assert ckpt.read_bytes() == before
    assert run(tiny_repo, "dvc", "status", "--json").stdout.strip() in ("{}", "")


def test_experiments_run_show_and_queue(tiny_repo: Path, tiny_remote: Path, tmp_path: Path) -> None:
    repo = clone(tiny_repo, tmp_path / "exp")
    run(repo, "dvc", "pull")
    # Each experiment trains its new grid points (the `distill_response` / `distill_feature`
    # stages) only: what runs after them (export, quantize, evaluate, report) is the code the
    # session's reproduction ran on the committed grid, and `dvc exp` is the same whether it
    # stops there or not.
    set_alpha = ("-S", "distill.response.alpha=[0.7]", "-n", "alpha07")
    run(repo, "dvc", "exp", "run", *set_alpha, "distill_response")
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "alpha07" in text and "2-0.7-response" in text

    for edit, stages in (
        ("distill.response.alpha=[0.3]", "distill_response"),
        ("distill.feature.alpha=[0.6]", "distill_feature"),
    ):
        run(repo, "dvc", "exp", "run", "--queue", "-S", edit, stages)
    run(repo, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        time.sleep(10)  # each `dvc queue status` costs ~2 CPU s, taken from the workers
        status = run(repo, "dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
    run(repo, "dvc", "queue", "stop", "--kill", check=False)
    assert "Failed" not in status, status
    assert status.count("Success") == 2, status


def test_metrics_diff_between_branches(tiny_repo: Path, tiny_remote: Path, tmp_path: Path) -> None:
    repo = clone(tiny_repo, tmp_path / "branches")
    run(repo, "dvc", "pull")
    run(repo, "git", "checkout", "-q", "-b", "other")
    set_param(repo, "student", "lr", 0.004)
    run(repo, "dvc", "repro", "train_student")  # what the compared metrics file depends on
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "student lr 0.004")
    args = ("main", "other", "--targets", SCRATCH_SUMMARY, "--json")
    diff = json.loads(run(repo, "dvc", "metrics", "diff", *args).stdout)
    changed = {path for path, rows in diff.items() for row in rows.values() if row.get("diff")}
    assert any("student/scratch" in path for path in changed), diff


def test_run_cache_restores_outputs_in_fresh_clone(fresh_clone: FreshClone) -> None:
    """Run in the background since the session's repo was built (``tests/tiny_pipeline.py``):
    clone, ``dvc pull --run-cache``, ``dvc repro``; then without dvc.lock, ``dvc repro`` of
    the first trained model and its chain."""
    assert ran_stages(fresh_clone.repro_with_lock) == set()
    assert fresh_clone.checkpoint_restored
    # Without dvc.lock only the run-cache knows the results. DVC (>= 3, PR #8738) keeps no
    # run-cache entry for a stage with a `cache: false` output, and our metrics/plots are such
    # outputs so that they live in git. Exactly those stages recompute (byte-identically, so
    # their dependants still match); every stage whose outputs are all DVC-cached is restored.
    chain, git_tracked = fresh_clone.chain, fresh_clone.git_tracked
    assert {"generate", "cache", FRESH_TARGET} <= chain
    assert FRESH_TARGET in git_tracked  # it trains on restored data
    out = fresh_clone.repro_without_lock
    assert ran_stages(out) == git_tracked, out
    restored = {
        line.split("'")[1] for line in out.splitlines() if "is cached - skipping run" in line
    }
    assert restored == chain - git_tracked != set(), out
    committed = yaml.safe_load(fresh_clone.committed_lock)["stages"]
    rebuilt = yaml.safe_load((fresh_clone.repo / "dvc.lock").read_text())["stages"]
    assert rebuilt == {name: committed[name] for name in chain}
