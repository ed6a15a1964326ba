"""No configuration is trained twice: checked on the expanded ``dvc.yaml`` of every profile.

Every training stage is mapped to the runs it trains, each identified by the params hash its
checkpoint records (:func:`melanoma_kd.runs.student_run` / :func:`~melanoma_kd.runs.teacher_run`:
recipe, arch, KD point, seed, transfer set, hair-removal arm). Stages that depend on a choice
made on validation — the KD point (seed replicates, transfer-set ablation) and the best teacher
(teacher replicates, the hair ablation's teachers) — are checked for every point and every
teacher the choice could land on. A run that a stage copies instead of training
(``replicates.trains_without_transfer``) is not a training.
"""

from __future__ import annotations

import shlex
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import yaml

from melanoma_kd.catalog import kd_points, parse_point
from melanoma_kd.config import Params, load_params
from melanoma_kd.replicates import trains_without_transfer
from melanoma_kd.runs import student_run, teacher_run
from tests.stage_deps import REPO, Stage, load_stages, script_of

PROFILES = [
    REPO / "params.yaml",
    *sorted((REPO / "configs").glob("*.yaml")),
    REPO / "tests/profiles/tiny.yaml",
]


def _arg(cmd: str, flag: str) -> str:
    argv = shlex.split(cmd)
    return argv[argv.index(flag) + 1]


def trained_runs(
    stages: dict[str, Stage], params: Params, selected: str, best: str | None = None
) -> list[tuple[str, str]]:
    """``(stage, run hash)`` of every training the stages do when ``selected`` is the KD point
    and ``best`` the teacher (default: the first arch) chosen on validation."""
    point = parse_point(selected)
    best = params.teachers.archs[0] if best is None else best
    no_transfer = trains_without_transfer(params)
    runs: list[tuple[str, str]] = []
    for name, st in stages.items():
        script = script_of(st.cmd)
        if script == "stages/train_student.py":
            runs.append((name, student_run(params).params_hash))
        elif script == "stages/train_teacher.py":
            runs.append((name, teacher_run(params, _arg(st.cmd, "--arch")).params_hash))
        elif script == "stages/teacher_replicate.py":
            seed = int(_arg(st.cmd, "--seed"))
            runs.append((name, teacher_run(params, best, seed=seed).params_hash))
        elif script == "stages/hair_train.py":
            seed, arm = int(_arg(st.cmd, "--seed")), _arg(st.cmd, "--arm")
            if _arg(st.cmd, "--role") == "student":
                runs.append((name, student_run(params, seed=seed, hair=arm).params_hash))
            else:
                runs.append((name, teacher_run(params, best, seed=seed, hair=arm).params_hash))
        elif script == "stages/distill.py":
            runs.append(
                (name, student_run(params, parse_point(_arg(st.cmd, "--point"))).params_hash)
            )
        elif script == "stages/transfer_ablation.py" and no_transfer:
            runs.append((name, student_run(params, point, use_transfer=False).params_hash))
        elif script == "stages/replicate.py":
            seed = int(_arg(st.cmd, "--seed"))
            runs.append((name, student_run(params, seed=seed).params_hash))
            runs.append((name, student_run(params, point, seed=seed).params_hash))
            if no_transfer:
                hashed = student_run(params, point, seed=seed, use_transfer=False).params_hash
                runs.append((name, hashed))
    return runs


@cache
def _expanded(profile: Path) -> tuple[dict[str, Stage], Params, list[str]]:
    raw = yaml.safe_load(profile.read_text())
    return load_stages(REPO / "dvc.yaml", profile), load_params(profile), kd_points(raw["distill"])


def _duplicates(runs: list[tuple[str, str]]) -> dict[str, list[str]]:
    counts = Counter(h for _, h in runs)
    return {h: [n for n, x in runs if x == h] for h, c in counts.items() if c > 1}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_no_configuration_is_trained_twice(profile: Path) -> None:
    stages, params, grid = _expanded(profile)
    distill_stages = [n for n, s in stages.items() if script_of(s.cmd) == "stages/distill.py"]
    assert len(distill_stages) == len(grid)  # one stage per grid point, none missing
    for selected in grid:
        for best in params.teachers.archs:
            runs = trained_runs(stages, params, selected, best)
            assert not _duplicates(runs), f"{profile.name}, selected {selected}, teacher {best}"


def test_the_default_grid_is_response_t_by_alpha_and_feature_by_alpha() -> None:
    stages, params, grid = _expanded(REPO / "params.yaml")
    r, f = params.distill.response, params.distill.feature
    assert len(grid) == len(r.temperature) * len(r.alpha) + len(f.alpha)
    feature = [parse_point(k) for k in grid if k.endswith("-feature")]
    assert feature and all(p.temperature is None for p in feature)
    assert {
        n.split("@")[0] for n, s in stages.items() if script_of(s.cmd) == "stages/distill.py"
    } == {
        "distill_response",
        "distill_feature",
    }


def test_a_planted_duplicate_training_is_caught() -> None:
    """The check fails when two stages train the same configuration: a copy of a grid point's
    stage, and feature KD trained at two temperatures as the old T x alpha x method matrix did."""
    stages, params, grid = _expanded(REPO / "params.yaml")
    name = next(n for n, s in stages.items() if "--point" in s.cmd)
    planted = {**stages, "distill_extra": stages[name]}
    assert _duplicates(trained_runs(planted, params, grid[0]))
    feature = next(n for n in stages if n.startswith("distill_feature@"))
    twice = {**stages, f"{feature}-again": stages[feature]}
    dup = _duplicates(trained_runs(twice, params, grid[0]))
    assert list(dup.values()) == [[feature, f"{feature}-again"]]


def test_no_transfer_set_means_the_ablation_is_copied_not_trained() -> None:
    _, params, _ = _expanded(REPO / "params.yaml")
    assert trains_without_transfer(params)
    off = params.model_copy(
        update={"distill": params.distill.model_copy(update={"transfer_images": 0})}
    )
    assert not trains_without_transfer(off)
    # with no transfer set the "without" run would repeat the KD run exactly
    point = parse_point("4-0.5-response")
    assert (
        student_run(off, point, use_transfer=False).params_hash
        == student_run(off, point).params_hash
    )


def test_a_teacher_replicate_at_the_main_seed_is_caught() -> None:
    """The teacher trainings are in the check: a teacher replicate stage at ``train.seed``
    repeats ``train_teacher@<best>``; the hair ablation's arms never do."""
    stages, params, grid = _expanded(REPO / "params.yaml")
    best = params.teachers.archs[0]
    rep = next(n for n in stages if n.startswith("teacher_replicate@"))
    seed = _arg(stages[rep].cmd, "--seed")
    main = stages[rep].cmd.replace(f"--seed {seed}", f"--seed {params.train.seed}")
    planted = {**stages, "teacher_replicate@main": Stage("teacher_replicate@main", main, [], [])}
    dup = _duplicates(trained_runs(planted, params, grid[0], best))
    assert list(dup.values()) == [[f"train_teacher@{best}", "teacher_replicate@main"]]
    hair = [n for n, s in stages.items() if script_of(s.cmd) == "stages/hair_train.py"]
    assert len(hair) == 2 * len(params.hair_ablation.arms) * len(params.hair_ablation.seeds)
