"""``melanoma-kd compare``: Holm adjustment, verdicts, and the real CLI on git branches whose
holdout predictions are DVC outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma_kd.compare import holm_adjust, verdict
from tests.dvc_repo import env, run


def test_holm_matches_hand_computed_values() -> None:
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> monotone max 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([0.02]) == pytest.approx([0.02])


def test_verdict_needs_both_a_small_adjusted_p_and_a_ci_off_zero() -> None:
    assert verdict(0.01, 0.05, 0.01) == "A better"
    assert verdict(-0.05, -0.01, 0.01) == "B better"
    assert verdict(-0.01, 0.05, 0.01) == "within noise"  # CI covers 0
    assert verdict(0.01, 0.05, 0.2) == "within noise"  # not significant after Holm


N_PATIENTS, PER_PATIENT = 120, 3


def _holdout() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = N_PATIENTS * PER_PATIENT
    return pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(n)],
            "patient_id": [f"IP_{i // PER_PATIENT:07d}" for i in range(n)],
            "label": (rng.random(n) < 0.3).astype(int),
            "difficulty": rng.normal(size=n),  # shared by every model: paired data
        }
    )


def _scores(holdout: pd.DataFrame, signal: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = holdout["label"].to_numpy()
    logit = signal * (2 * y - 1) + 0.8 * holdout["difficulty"].to_numpy()
    logit = logit + rng.normal(scale=0.6, size=y.size)
    return holdout[["image_id", "label"]].assign(score=np.round(1 / (1 + np.exp(-logit)), 6))


def _write_results(repo: Path, holdout: pd.DataFrame, signal: float, seed: int) -> None:
    pred = repo / "metrics" / "predictions"
    pred.mkdir(parents=True, exist_ok=True)
    _scores(holdout, signal, seed).to_csv(pred / "student_scratch.csv", index=False)
    _scores(holdout, 2.0, 100).to_csv(pred / "teacher_resnet18.csv", index=False)  # unchanged


@pytest.fixture(scope="module")
def branches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main, ``seed`` (same recipe, another seed) and ``weak`` (a far weaker student), each
    with its predictions tracked by DVC; ``empty`` has no results at all."""
    repo = tmp_path_factory.mktemp("compare") / "repo"
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "config", "user.name", "melanoma-kd tests")
    run(repo, "git", "config", "user.email", "tests@melanoma-kd.invalid")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.check_update", "false")
    run(repo, "git", "commit", "-qm", "init")
    run(repo, "git", "branch", "empty")
    holdout = _holdout()
    (repo / "data").mkdir()
    splits = holdout[["image_id", "patient_id", "label"]].assign(split="holdout")
    splits.to_csv(repo / "data" / "splits.csv", index=False)
    for branch, signal, seed in (("main", 1.5, 1), ("seed", 1.5, 2), ("weak", 0.3, 3)):
        if branch != "main":
            run(repo, "git", "checkout", "-q", "-b", branch, "main")
        _write_results(repo, holdout, signal, seed)
        run(repo, "dvc", "add", "-q", "data/splits.csv", "metrics/predictions")
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", f"results {branch}")
    run(repo, "git", "checkout", "-q", "main")
    run(repo, "dvc", "checkout", "-q")
    return repo


def _compare(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("melanoma-kd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "melanoma_kd.cli"]
    return subprocess.run(
        [*cmd, "compare", *args, "--n-boot", "300"],
        cwd=repo,
        env=env(),
        capture_output=True,
        text=True,
    )


def _verdicts(stdout: str) -> dict[tuple[str, str], str]:
    rows = json.loads(stdout)["rows"]
    return {(r["model"], r["metric"]): r["verdict"] for r in rows}


@pytest.mark.pipeline
def test_another_seed_is_within_noise_and_a_weak_student_loses(branches: Path) -> None:
    same = _compare(branches, "main", "seed", "--json")
    assert same.returncode == 0, same.stderr
    verdicts = _verdicts(same.stdout)
    assert set(verdicts) == {
        (m, k) for m in ("student_scratch", "teacher_resnet18") for k in ("roc_auc", "pauc")
    }
    assert set(verdicts.values()) == {"within noise"}

    weak = _compare(branches, "main", "weak", "--json")
    assert weak.returncode == 0, weak.stderr
    verdicts = _verdicts(weak.stdout)
    assert verdicts[("student_scratch", "roc_auc")] == "A better"
    assert verdicts[("teacher_resnet18", "roc_auc")] == "within noise"  # identical scores
    rows = json.loads(weak.stdout)["rows"]
    student = next(r for r in rows if r["model"] == "student_scratch" and r["metric"] == "roc_auc")
    assert student["delta"] == pytest.approx(student["a"] - student["b"])
    assert student["ci_lo"] > 0 and student["p_holm"] >= student["p"]
    assert student["n_images"] == N_PATIENTS * PER_PATIENT
    assert student["n_patients"] == N_PATIENTS

    # Swapping the sides flips the verdict; the default B is the workspace (main checked out).
    flipped = _compare(branches, "weak")
    assert flipped.returncode == 0, flipped.stderr
    line = next(x for x in flipped.stdout.splitlines() if x.startswith("student_scratch  "))
    assert line.split()[1] == "roc_auc" and line.endswith("B better")


@pytest.mark.pipeline
def test_a_side_without_predictions_is_one_clear_error(branches: Path) -> None:
    out = _compare(branches, "empty", "main")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "empty" in lines[0] and "metrics/predictions" in lines[0]
    assert "dvc pull" in lines[0] and "dvc repro" in lines[0]

    unknown = _compare(branches, "no-such-branch", "main")
    assert unknown.returncode == 2
    assert "unknown revision 'no-such-branch'" in unknown.stderr
