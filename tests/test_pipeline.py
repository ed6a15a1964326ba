"""The real ``dvc`` CLI on the tiny profile: the DAG runs, reruns nothing needlessly, and a
param change reruns exactly the stages that read it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

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
        # `melanoma-kd predict`. Nothing else reads them.
        assert "remove_hair" in changed
        assert {s for s in changed if not s.startswith("export_")} == {
            "remove_hair",
            "transfer_set",
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
