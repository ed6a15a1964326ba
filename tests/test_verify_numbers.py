"""``make verify`` on another CPU: headline metrics within seed-noise tolerance, and every
committed conclusion (sign and significance of each paired gain) unchanged."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from melanoma_kd import verify as V
from melanoma_kd.verify import TOLERANCE_SDS, conclusion, cross_cpu_failures, headline_tolerances

SEEDS = {
    "scratch_roc_auc_sd": 0.02,
    "kd_roc_auc_sd": 0.01,
    "scratch_pauc_sd": 0.005,
    "kd_pauc_sd": 0.008,
}
HEAD = {
    "kd_model": "kd_4-0.5-response",
    "kd_roc_auc": 0.88,
    "kd_pauc": 0.12,
    "kd_gain_roc_auc_p": 0.4,
    "student_int8_mb": 1.85,
}
GAIN = {
    "roc_auc_delta": 0.05,
    "roc_auc_delta_ci_lo": 0.01,
    "roc_auc_delta_ci_hi": 0.09,
    "pauc_delta": 0.004,
    "pauc_delta_ci_lo": -0.02,
    "pauc_delta_ci_hi": 0.03,
}
PATH = "metrics/evaluate/kd_gain.json"


def _check(new_head: dict, new_gain: dict) -> tuple[list[str], list[str]]:
    return cross_cpu_failures(HEAD, new_head, SEEDS, {PATH: GAIN}, {PATH: new_gain})


def test_tolerance_is_the_larger_seed_sd_times_the_documented_factor() -> None:
    tol = headline_tolerances(SEEDS)
    assert tol["roc_auc"] == pytest.approx(0.02 * TOLERANCE_SDS)  # 0.0566
    assert tol["pauc"] == pytest.approx(0.008 * TOLERANCE_SDS)


def test_unchanged_and_within_noise_results_pass() -> None:
    assert _check(HEAD, GAIN) == ([], [])
    moved = {**HEAD, "kd_roc_auc": 0.88 - 0.05, "kd_pauc": 0.12 + 0.02, "kd_gain_roc_auc_p": 0.9}
    assert _check(moved, GAIN) == ([], [])  # 0.05 < 0.0566, 0.02 < 0.0226, p judged elsewhere


def test_a_headline_metric_moved_beyond_tolerance_fails() -> None:
    failures, _ = _check({**HEAD, "kd_roc_auc": 0.88 - 0.06}, GAIN)
    assert len(failures) == 1 and "kd_roc_auc" in failures[0]
    failures, _ = _check({**HEAD, "kd_pauc": 0.12 + 0.03}, GAIN)
    assert len(failures) == 1 and "kd_pauc" in failures[0]
    failures, _ = _check({**HEAD, "student_int8_mb": 2.0}, GAIN)
    assert len(failures) == 1 and "student_int8_mb" in failures[0]
    missing = {k: v for k, v in HEAD.items() if k != "kd_pauc"}
    assert "kd_pauc" in _check(missing, GAIN)[0][0]


def test_a_changed_conclusion_fails_and_a_new_selection_is_only_noted() -> None:
    lost = copy.deepcopy(GAIN) | {"roc_auc_delta_ci_lo": -0.01}  # significant -> within noise
    failures, _ = _check(HEAD, lost)
    assert failures == [f"{PATH}: roc_auc conclusion changed: + -> within noise"]
    gained = GAIN | {"pauc_delta_ci_lo": 0.001}  # within noise -> significant
    assert _check(HEAD, gained)[0] == [f"{PATH}: pauc conclusion changed: within noise -> +"]
    failures, notes = _check({**HEAD, "kd_model": "kd_1-0.5-response"}, GAIN)
    assert failures == [] and notes == ["kd_model: kd_4-0.5-response -> kd_1-0.5-response"]
    assert cross_cpu_failures(HEAD, HEAD, SEEDS, {PATH: GAIN}, {PATH: None})[0] == [
        f"{PATH}: committed but not produced here"
    ]


def test_conclusion_reads_the_ci() -> None:
    assert conclusion(GAIN, "roc_auc") == "+"
    assert conclusion(GAIN, "pauc") == "within noise"
    assert conclusion({"x_delta_ci_lo": -0.3, "x_delta_ci_hi": -0.1}, "x") == "-"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture
def committed_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo whose committed results came from another CPU (platform.json differs)."""

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "melanoma-kd tests")
    git("config", "user.email", "tests@melanoma-kd.invalid")
    lock = "schema: '2.0'\nstages:\n  report:\n    cmd: python stages/report.py\n"
    (tmp_path / "dvc.lock").write_text(lock)
    _write_json(tmp_path / V.HEADLINE_FILE, HEAD)
    _write_json(tmp_path / V.SEEDS_FILE, SEEDS)
    _write_json(tmp_path / PATH, GAIN)
    other_cpu = {"cpu_model": "Some Other CPU", "isa_flags": ["avx", "avx2", "fma"]}
    _write_json(tmp_path / V.PLATFORM_FILE, other_cpu)
    git("add", "-A")
    git("commit", "-qm", "results from another CPU")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(V, "pipeline_stages", lambda: {"report"})
    return tmp_path


def test_verify_on_another_cpu_fails_when_a_headline_metric_moves_too_far(
    committed_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert V.verify() == 0  # nothing differs: bitwise
    _write_json(committed_repo / V.HEADLINE_FILE, {**HEAD, "kd_roc_auc": 0.86})  # drift < tol
    assert V.verify() == 0
    assert "passed on another CPU" in capsys.readouterr().out
    _write_json(committed_repo / V.HEADLINE_FILE, {**HEAD, "kd_roc_auc": 0.80})  # beyond tol
    assert V.verify() == 1
    assert "kd_roc_auc 0.88 -> 0.8 moved more than" in capsys.readouterr().err


def test_verify_on_the_committing_cpu_stays_bitwise(
    committed_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    here = json.loads((committed_repo / V.PLATFORM_FILE).read_text())
    monkeypatch.setattr(V, "result_platform", lambda: here)
    _write_json(committed_repo / V.HEADLINE_FILE, {**HEAD, "kd_roc_auc": 0.8799})  # tiny drift
    assert V.verify() == 1
    assert "differ from what the code produces" in capsys.readouterr().err


def test_same_isa_flags_but_other_blas_kernels_is_another_cpu(
    committed_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host whose ISA flags match the committing one but whose OpenBLAS picked other kernels
    gets the numbers check, not the bitwise one."""
    there = {**json.loads((committed_repo / V.PLATFORM_FILE).read_text()), "blas": ["a SkylakeX"]}
    _write_json(committed_repo / V.PLATFORM_FILE, there)
    subprocess.run(["git", "commit", "-qam", "blas"], cwd=committed_repo, check=True)
    monkeypatch.setattr(V, "result_platform", lambda: {**there, "blas": ["a Haswell"]})
    _write_json(committed_repo / V.HEADLINE_FILE, {**HEAD, "kd_roc_auc": 0.8799})  # tiny drift
    assert V.verify() == 0
    out = capsys.readouterr().out
    assert "in blas;" in out and "passed on another CPU" in out
    monkeypatch.setattr(V, "result_platform", lambda: there)  # the committing host: bitwise
    assert V.verify() == 1


def test_result_platform_names_the_blas_kernels_and_cpu() -> None:
    here = V.result_platform()
    assert here["blas"] and all("threads=" in b for b in here["blas"])
    assert isinstance(here["cpu_id"], str)


def test_every_comparison_in_a_file_is_checked() -> None:
    """A file holding several comparisons (prefixed keys, like the transfer ablation's) has
    each one's conclusion checked, and one missing on this CPU fails."""
    ci = {"effect_roc_auc_delta_ci_lo": 0.01, "effect_roc_auc_delta_ci_hi": 0.05}
    ci |= {"gain_without_pauc_delta_ci_lo": -0.02, "gain_without_pauc_delta_ci_hi": 0.01}
    assert V.comparison_names(ci) == ["effect_roc_auc", "gain_without_pauc"]
    seeds_ok = cross_cpu_failures(HEAD, HEAD, SEEDS, {"t.json": ci}, {"t.json": ci})
    assert seeds_ok[0] == []
    flipped = {**ci, "effect_roc_auc_delta_ci_lo": -0.01}
    failures = cross_cpu_failures(HEAD, HEAD, SEEDS, {"t.json": ci}, {"t.json": flipped})[0]
    assert failures == ["t.json: effect_roc_auc conclusion changed: + -> within noise"]
    partial = {k: v for k, v in ci.items() if not k.startswith("gain_without")}
    failures = cross_cpu_failures(HEAD, HEAD, SEEDS, {"t.json": ci}, {"t.json": partial})[0]
    assert failures == ["t.json: comparison 'gain_without_pauc' committed but not produced here"]
