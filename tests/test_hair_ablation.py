"""The hair-removal ablation: its params, run identities, the layout its stages write and the
pooled comparison (fast unit tests; the tiny pipeline runs the stages in test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from melanoma_kd.config import load_params, parse_params
from melanoma_kd.errors import UserError
from melanoma_kd.hair_ablation import ArmRun, arm_preprocess, arm_runs, checked_arm, main_arm
from melanoma_kd.hair_effect import arm_pairs, compare_arms
from melanoma_kd.runs import student_run, teacher_run
from tests.stage_deps import load_stages

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
TINY = ROOT / "tests" / "profiles" / "tiny.yaml"


def _raw(path: Path = PARAMS) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(UserError) as e:
        parse_params(raw, "params.yaml")
    return str(e.value)


def test_the_main_preprocessing_cannot_be_an_arm() -> None:
    raw = _raw()
    raw["hair_ablation"]["arms"] = ["none", raw["preprocess"]["detector"]]
    assert "main pipeline's preprocessing" in _error(raw)
    raw["preprocess"]["hair_removal"] = False
    raw["hair_ablation"]["arms"] = ["none"]
    assert "must not contain 'none'" in _error(raw)
    raw["hair_ablation"]["arms"] = ["reference", "shape"]  # hair removal off: both are others
    assert main_arm(parse_params(raw, "params.yaml")) == "none"


def test_seeds_must_have_main_arm_runs_to_pair_with() -> None:
    raw = _raw()
    raw["hair_ablation"]["seeds"] = [0, 9]
    assert "[9]" in _error(raw) and "replicates.seeds" in _error(raw)
    raw["hair_ablation"]["seeds"] = [0, 3]  # a student replicate seed, but no teacher at 3
    assert "replicates.teacher_seeds" in _error(raw)
    raw["replicates"]["teacher_seeds"] = [0]
    raw["hair_ablation"]["seeds"] = [0]
    assert "teacher_seeds must not contain train.seed" in _error(raw)


def test_generated_positives_and_the_ablation_do_not_mix() -> None:
    raw = _raw()
    raw["train"]["synthetic_positives"] = True
    assert "synthetic_positives: false" in _error(raw)
    raw["hair_ablation"]["arms"] = []  # off: no constraint
    parse_params(raw, "params.yaml")


def test_arm_preprocess_changes_only_the_hair_removal() -> None:
    params = load_params(PARAMS)
    none, ref = arm_preprocess(params, "none"), arm_preprocess(params, "reference")
    assert (none.hair_removal, ref.hair_removal, ref.detector) == (False, True, "reference")
    keep = params.preprocess.model_dump(exclude={"hair_removal", "detector"})
    assert ref.model_dump(exclude={"hair_removal", "detector"}) == keep


def test_an_unknown_arm_is_refused_by_the_config() -> None:
    """Every arm reaches arm_preprocess through hair_ablation.arms (checked_arm), which the
    config validates: an unknown arm fails there, in one line naming the field."""
    raw = _raw()
    raw["hair_ablation"]["arms"] = ["none", "bald"]
    error = _error(raw)
    assert "hair_ablation.arms" in error and "bald" in error and "\n" not in error
    with pytest.raises(UserError, match=r"'bald' is not in hair_ablation\.arms"):
        checked_arm(load_params(PARAMS), "bald")


def test_runs_differ_from_main_runs_by_arm_or_seed_only() -> None:
    params = load_params(PARAMS)
    base = params.train.seed
    assert teacher_run(params, "resnet18", seed=base).params_hash == (
        teacher_run(params, "resnet18").params_hash
    )
    hashes = {
        teacher_run(params, "resnet18").params_hash,
        teacher_run(params, "resnet18", seed=1).params_hash,
        teacher_run(params, "resnet18", hair="none").params_hash,
        teacher_run(params, "resnet18", seed=1, hair="none").params_hash,
        teacher_run(params, "resnet18", seed=1, hair="reference").params_hash,
        student_run(params).params_hash,
        student_run(params, seed=1).params_hash,
        student_run(params, hair="none").params_hash,
        student_run(params, seed=1, hair="none").params_hash,
    }
    assert len(hashes) == 9
    run = teacher_run(params, "resnet18", seed=1, hair="none")
    assert (run.seed, run.record["replicate_seed"], run.record["hair_arm"]) == (1, 1, "none")
    assert run.record["role"] == "teacher"


def test_arm_pairs_put_no_hair_removal_second() -> None:
    assert arm_pairs("shape", ["none", "reference"]) == [
        ("shape", "none"),
        ("shape", "reference"),
        ("reference", "none"),
    ]
    assert arm_pairs("none", ["reference", "shape"]) == [
        ("reference", "none"),
        ("shape", "none"),
        ("reference", "shape"),
    ]


@pytest.mark.parametrize("profile", [PARAMS, TINY], ids=lambda p: p.name)
def test_every_run_read_is_a_stage_output(profile: Path) -> None:
    """The checkpoints and caches the comparison reads are what dvc.yaml's stages write."""
    params = load_params(profile)
    stages = load_stages(ROOT / "dvc.yaml", profile)
    outs = {o for s in stages.values() for o in s.outs}
    runs = arm_runs(params, params.teachers.archs[0])
    assert len(runs) == 2 * len(params.hair_ablation.seeds) * (1 + len(params.hair_ablation.arms))
    for run in runs:
        assert str(run.checkpoint) in outs, run
        assert str(run.cache_dir) in outs, run
    for arm in params.hair_ablation.arms:
        for seed in params.hair_ablation.seeds:
            assert f"hair_student@{arm}-{seed}" in stages
            assert f"hair_teacher@{arm}-{seed}" in stages


def _holdout(n_patients: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per = 2
    y = np.repeat((rng.random(n_patients) < 0.4).astype(int), per)
    y[:2], y[2:4] = 0, 1
    return pd.DataFrame(
        {
            "image_id": [f"I{i:03d}" for i in range(y.size)],
            "label": y,
            "patient_id": np.repeat([f"P{i:03d}" for i in range(n_patients)], per),
        }
    )


def test_compare_arms_pools_per_seed_paired_differences() -> None:
    raw = _raw()
    raw["hair_ablation"] = {"arms": ["none"], "seeds": [0, 1]}
    params = parse_params(raw, "params.yaml")
    frame = _holdout(40, 0)
    y = frame["label"].to_numpy()
    rng = np.random.default_rng(1)
    strength = {"shape": 1.5, "none": 0.5}
    scores = {}
    for arm in ("shape", "none"):
        for role in ("student", "teacher"):
            for seed in (0, 1):
                noise = rng.normal(size=y.size)
                scores[f"{role}_{arm}_seed{seed}"] = 1 / (1 + np.exp(-(strength[arm] * y + noise)))
    runs = arm_runs(params, "resnet18")

    def score(run: ArmRun) -> pd.DataFrame:
        return frame.assign(score=scores[run.name])

    out = compare_arms(params, runs, score, n_boot=200, seed=0)
    assert (out["main_arm"], out["arms"], out["n_seeds"]) == ("shape", "shape,none", 2)
    for role in ("student", "teacher"):
        c = out[role]["comparisons"]["shape_vs_none"]
        expected = np.mean(
            [
                roc_auc_score(y, scores[f"{role}_shape_seed{s}"])
                - roc_auc_score(y, scores[f"{role}_none_seed{s}"])
                for s in (0, 1)
            ]
        )
        assert c["roc_auc_delta"] == pytest.approx(expected, abs=1e-6)
        assert c["roc_auc_ci_lo"] <= c["roc_auc_delta"] <= c["roc_auc_ci_hi"]
        assert 0 < c["roc_auc_p"] <= 1
        assert c["roc_auc_mde"] > 0
        sd = np.std([roc_auc_score(y, scores[f"{role}_none_seed{s}"]) for s in (0, 1)], ddof=1)
        assert out[role]["arms"]["none"]["roc_auc_sd"] == pytest.approx(sd, abs=1e-6)

    def shuffled(run: ArmRun) -> pd.DataFrame:
        df = score(run)
        return df.iloc[::-1].reset_index(drop=True) if run.arm == "none" else df

    with pytest.raises(UserError, match="holdout images/labels differ"):
        compare_arms(params, runs, shuffled, n_boot=50, seed=0)


def test_report_section_shows_every_comparison_with_its_ci_and_verdict() -> None:
    from types import SimpleNamespace

    from melanoma_kd.report_sections import hair_section

    raw = _raw()
    raw["hair_ablation"] = {"arms": ["none"], "seeds": [0, 1]}
    params = parse_params(raw, "params.yaml")
    frame = _holdout(60, 2)
    y = frame["label"].to_numpy()
    rng = np.random.default_rng(5)
    strong = {"shape": 3.0, "none": 0.0}  # hair removal clearly better here

    def score(run: ArmRun) -> pd.DataFrame:
        return frame.assign(
            score=1 / (1 + np.exp(-(strong[run.arm] * y + rng.normal(size=y.size))))
        )

    out = compare_arms(params, arm_runs(params, "resnet18"), score, n_boot=200, seed=0)
    out["teacher_arch"] = "resnet18"
    lines = hair_section(SimpleNamespace(hair_effect=out))
    text = "\n".join(lines)
    assert lines[0] == "## Hair removal: effect on the classifier"
    rows = [ln for ln in lines if ln.startswith("| scratch student: shape detector − no hair")]
    assert len(rows) == 2  # ROC-AUC and pAUC
    c = out["student"]["comparisons"]["shape_vs_none"]
    roc = next(r for r in rows if "| ROC-AUC |" in r)
    assert f"{c['roc_auc_delta']:+.4f}" in roc
    assert f"{c['roc_auc_ci_lo']:+.4f}..{c['roc_auc_ci_hi']:+.4f}" in roc
    assert roc.rstrip(" |").endswith("shape detector better")
    assert "`resnet18`" in text and "(main pipeline)" in text
    off = hair_section(SimpleNamespace(hair_effect={"arms": "", "n_seeds": 0}))
    assert "Not run" in off[2]
    assert hair_section(SimpleNamespace(hair_effect=None)) == []
