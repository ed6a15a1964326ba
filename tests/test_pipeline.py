"""The real ``dvc`` CLI on the tiny profile: the DAG runs, reruns nothing needlessly, and a
param change reruns exactly the stages that read it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from melanoma_kd.config import load_params
from melanoma_kd.models.build import load_checkpoint
from tests.dvc_repo import changed_stages, ran_stages, run

pytestmark = pytest.mark.pipeline

DATA_STAGES = {"generate", "ingest", "split"}


@pytest.fixture
def repo(tiny_repo: Path) -> Path:
    return tiny_repo


@contextmanager
def edited_params(repo: Path, **changes: object) -> Iterator[None]:
    """Temporarily set keys in params.yaml, spelled ``section__key`` or, nested,
    ``section__sub__key``."""
    path = repo / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = params
        for part in parents:
            node = node[part]
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


def all_stages(repo: Path) -> set[str]:
    out = run(repo, "dvc", "stage", "list", "--name-only").stdout
    return set(out.split())


def test_full_dag_ran_and_second_repro_is_noop(repo: Path) -> None:
    assert (repo / "data" / "cache" / "train.h5").is_file()
    assert (repo / "models" / "student" / "scratch.pt").is_file()
    out = run(repo, "dvc", "repro").stdout
    assert ran_stages(out) == set()
    assert changed_stages(repo) == set()


def test_preprocess_change_reruns_hair_removal_and_downstream_only(repo: Path) -> None:
    with edited_params(repo, preprocess__threshold=20):
        changed = changed_stages(repo)
        # remove_hair and transfer_set (its unlabelled images get the same hair removal) read
        # preprocess.*; export embeds the hair-removal settings in the ONNX metadata for
        # `melanoma-kd predict`; each hair-ablation arm's cache preprocesses the images its own
        # way from the same settings. Nothing else reads them.
        arms = yaml.safe_load((repo / "params.yaml").read_text())["hair_ablation"]["arms"]
        assert arms
        assert "remove_hair" in changed
        assert {s for s in changed if not s.startswith("export_")} == {
            "remove_hair",
            "transfer_set",
            *(f"hair_cache@{arm}" for arm in arms),
        }
        would_run = ran_stages(run(repo, "dvc", "repro", "--dry").stdout)
    assert "remove_hair" in would_run
    assert not would_run & DATA_STAGES
    assert changed_stages(repo) == set()


def test_new_temperature_adds_only_new_grid_points(repo: Path) -> None:
    """A new temperature adds response-KD points only: feature KD has no temperature, so its
    points (and every existing one) stay as they are."""
    before = all_stages(repo)
    assert {s for s in before if s.startswith("distill_feature@")}  # the tiny grid has both
    with edited_params(repo, distill__response__temperature=[2, 4]):
        new = all_stages(repo) - before
        assert new == {"distill_response@4-0.5"}
        changed = changed_stages(repo)
    assert new <= changed
    prefixes = ("train_", "teacher_outputs", "distill_response@2", "distill_feature@")
    untouched = {s for s in before if s.startswith(prefixes)}
    assert not changed & (untouched | DATA_STAGES)


def test_new_teacher_arch_trains_only_that_teacher(repo: Path) -> None:
    with edited_params(repo, teachers__archs=["resnet18", "mobilenetv3_small_050"]):
        changed = changed_stages(repo)
    assert "train_teacher@mobilenetv3_small_050" in changed
    assert "train_teacher@resnet18" not in changed
    assert not changed & (DATA_STAGES | {"train_student", "remove_hair", "cache"})


def test_hair_ablation_pools_paired_differences_over_seeds(repo: Path) -> None:
    """metrics/hair_effect.json: every arm's student and teacher scored on its own arm's holdout
    images; the pooled Δ is the mean over seeds of the per-seed ROC-AUC differences, recomputed
    here with scikit-learn from the checkpoints."""
    from sklearn.metrics import roc_auc_score

    from melanoma_kd.evaluate import checked_holdout
    from melanoma_kd.hair_ablation import arm_runs
    from melanoma_kd.inference import score_checkpoint
    from melanoma_kd.selection import read_best_teacher

    params = load_params(repo / "params.yaml")
    effect = json.loads((repo / "metrics/hair_effect.json").read_text())
    arms = params.hair_ablation.arms
    seeds = params.hair_ablation.seeds
    assert effect["arms"] == ",".join(["shape", *arms]) and effect["n_seeds"] == len(seeds) > 1
    teacher = read_best_teacher(repo / "models/best_teacher.json", params.teachers.archs)
    assert effect["teacher_arch"] == teacher
    runs = arm_runs(
        params,
        teacher,
        models=repo / "models",
        main_cache=repo / "data/cache",
        arm_caches=repo / "data/hair_ablation",
    )
    holdout = {
        r.name: checked_holdout(score_checkpoint(r.checkpoint, r.cache_dir / "holdout.h5"), r.name)
        for r in runs
    }
    ids = holdout[runs[0].name]["image_id"]
    assert all(df["image_id"].equals(ids) for df in holdout.values())
    y = holdout[runs[0].name]["label"].to_numpy()
    for role in ("student", "teacher"):
        for arm in arms:
            c = effect[role]["comparisons"][f"shape_vs_{arm}"]
            per_seed = [
                roc_auc_score(y, holdout[f"{role}_shape_seed{s}"]["score"])
                - roc_auc_score(y, holdout[f"{role}_{arm}_seed{s}"]["score"])
                for s in seeds
            ]
            assert c["roc_auc_delta"] == pytest.approx(np.mean(per_seed), abs=2e-6)
            assert c["roc_auc_ci_lo"] <= c["roc_auc_delta"] <= c["roc_auc_ci_hi"]
    # a teacher replicate and an arm's run differ from the main run by seed / images only
    _, meta = load_checkpoint(repo / "models/teacher_replicates/1.pt")
    assert (meta["arch"], meta["replicate_seed"], meta["role"]) == (teacher, 1, "teacher")
    report = (repo / "reports/summary.md").read_text()
    assert "## Hair removal: effect on the classifier" in report
