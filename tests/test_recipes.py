"""The published recipes run as the README says: ``cp configs/<recipe>.yaml params.yaml && dvc
repro``, end to end, on a real-format data set at toy size.

The reproductions themselves run in the background from the start of the session
(``tests/recipe_runs.py``: the toy data sets, :data:`~tests.recipe_runs.TOY_OVERRIDES` and the
job); the tests here check what they built, and that the toy params change counts only.
"""

from __future__ import annotations

import itertools
import json
import re
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from melanoma_kd.models.build import build_model
from tests.dvc_repo import ROOT, changed_stages, ran_stages, run
from tests.recipe_runs import (
    CONFIGS,
    HAM_TEACHER_SUBSET,
    TOY_OVERRIDES,
    RecipeRun,
    check_no_synthetic_work,
    toy_params,
)

# What a recipe builds and how it is scored: never overridden (checked against the published files).
ARCHITECTURE = (
    "data.source",
    "split.train",
    "split.val",
    "split.holdout",
    "preprocess.hair_removal",
    "cache.size",
    "train.loss",
    "train.optimizer",
    "train.schedule",
    "teachers.image_size",
    "student.arch",
    "student.image_size",
    "distill.teacher",
    "distill.response.temperature",
    "distill.response.alpha",
    "distill.feature.alpha",
    "distill.feature.stages",
    "quantize.method",
    "benchmark.deploy_size",
)


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, object]:
    """Flatten nested dicts to ``{"section.key": value}``."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def kd_points(params: dict[str, Any]) -> dict[str, str]:
    """KD grid point key (``<T>-<alpha>-response`` / ``<alpha>-feature``, the model and run
    names) -> its DVC stage (``distill_response@<T>-<alpha>`` / ``distill_feature@<alpha>``),
    with the numbers spelled as DVC spells the YAML values."""
    r, f = params["distill"]["response"], params["distill"]["feature"]
    points = {
        f"{t}-{a}-response": f"distill_response@{t}-{a}"
        for t, a in itertools.product(r["temperature"], r["alpha"])
    }
    return points | {f"{a}-feature": f"distill_feature@{a}" for a in f["alpha"]}


def check_full_run(repo: Path, out: str, params: dict[str, Any]) -> None:
    """Every stage ran, the key outputs exist, nothing is stale and a second repro is a no-op."""
    stages = set(run(repo, "dvc", "stage", "list", "--name-only").stdout.split())
    archs = params["teachers"]["archs"]
    points = kd_points(params)
    assert {f"train_teacher@{a}" for a in archs} | set(points.values()) <= stages
    distill = {n for n in stages if n.startswith(("distill_response@", "distill_feature@"))}
    assert distill == set(points.values())  # one stage per grid point, no other
    assert stages - ran_stages(out) == set(), "stages that never ran"
    assert changed_stages(repo) == set()

    deploy = params["benchmark"]["deploy_size"]
    expected = [
        *(f"models/teachers/{a}.pt" for a in archs),
        "models/onnx/teacher_best.onnx",  # the teacher best on validation, exported
        "models/onnx/teacher_best_int8.onnx",
        "models/student/scratch.pt",
        *(f"models/distill/{p}.pt" for p in points),
        *(
            f"models/replicates/{s}/{kind}.pt"
            for s in params["replicates"]["seeds"]
            for kind in ("scratch", "kd", "no_transfer")
        ),
        "models/ablation/no_transfer.pt",
        "models/onnx/student_scratch.onnx",
        "models/onnx/student_kd.onnx",
        "models/onnx/student_kd_int8.onnx",
        f"models/onnx/student_kd_{deploy}.onnx",
        f"models/onnx/student_kd_{deploy}_int8.onnx",
        "reports/summary.md",
        "metrics/headline.json",
    ]
    missing = [p for p in expected if not (repo / p).is_file()]
    assert missing == []
    selected = json.loads((repo / "models/selected_student.json").read_text())
    assert any(p in json.dumps(selected) for p in points), selected

    again = run(repo, "dvc", "repro").stdout
    assert ran_stages(again) == set()


def test_overrides_change_counts_only(tmp_path: Path) -> None:
    """Only the documented count keys, data.root and the HAM teacher subset differ from the
    published configs; every override key exists in both recipes."""
    for recipe in ("isic2024", "ham10000"):
        published = leaves(yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text()))
        archs = HAM_TEACHER_SUBSET if recipe == "ham10000" else None
        toy = leaves(toy_params(recipe, tmp_path, archs))
        assert toy.keys() == published.keys()
        changed = {k for k in toy if toy[k] != published[k]}
        allowed = set(TOY_OVERRIDES) | {"data.root"} | ({"teachers.archs"} if archs else set())
        assert changed <= allowed, changed - allowed
        assert {k: toy[k] for k in ARCHITECTURE} == {k: published[k] for k in ARCHITECTURE}


def test_readme_lists_the_toy_overrides() -> None:
    """The README's "only these counts shrunk" list is TOY_OVERRIDES, key for key and value for
    value (it is how a user reruns the toy recipe by hand)."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    match = re.search(r"only these counts shrunk \(its `TOY_OVERRIDES`\): `([^`]*)`", readme)
    assert match is not None, "README no longer lists the toy overrides"
    listed = dict(pair.split("=", 1) for pair in match.group(1).split())
    expected = {
        key: (json.dumps(value) if isinstance(value, list) else str(value)).replace(" ", "")
        for key, value in TOY_OVERRIDES.items()
    }
    assert listed == expected


@pytest.mark.pipeline
@pytest.mark.parametrize("recipe", ["isic2024", "ham10000"])
def test_every_recipe_arch_builds(recipe: str) -> None:
    """Every teacher and the student of a recipe (including the HAM10000 teachers the pipeline
    test leaves out) is a timm arch that builds without network access and maps an image of the
    recipe's size to two logits."""
    params = yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text())
    models = [(a, params["teachers"]["image_size"]) for a in params["teachers"]["archs"]]
    models.append((params["student"]["arch"], params["student"]["image_size"]))
    torch.manual_seed(0)
    for arch, size in models:
        model, pretrained = build_model(arch, weights_dir=None)
        with torch.inference_mode():
            logits = model.eval()(torch.rand(1, 3, size, size))
        assert (pretrained, tuple(logits.shape)) == (False, (1, 2)), arch
        assert torch.isfinite(logits).all(), arch


@pytest.mark.pipeline
@pytest.mark.recipe("isic2024")
def test_isic2024_recipe_runs_end_to_end(recipe_runs: dict[str, Future[RecipeRun]]) -> None:
    """configs/isic2024.yaml (SwinV2 teacher, ViT-small student, response + feature KD) on an
    ISIC-2024-format data set; generate and the hair truth are not touched."""
    built = recipe_runs["isic2024"].result()
    check_full_run(built.repo, built.out, built.params)
    check_no_synthetic_work(built.repo, built.n_images)
    assert list(kd_points(built.params)) == ["4-0.4-response", "0.4-feature"]  # one per method


@pytest.mark.pipeline
@pytest.mark.recipe("ham10000")
def test_ham10000_recipe_runs_end_to_end(recipe_runs: dict[str, Future[RecipeRun]]) -> None:
    """configs/ham10000.yaml (focal-loss ResNet/EfficientNet teachers, MobileNetV3-small
    student, T x alpha KD grid) on a HAM10000-format data set, with one teacher per family;
    generate and the hair truth are not touched."""
    built = recipe_runs["ham10000"].result()
    assert built.params["teachers"]["archs"] == HAM_TEACHER_SUBSET
    check_full_run(built.repo, built.out, built.params)
    check_no_synthetic_work(built.repo, built.n_images)
    points = kd_points(built.params)
    assert len(points) == 4  # response KD only: T in {1, 2} x alpha in {0.5, 0.9}
    assert all(p.endswith("-response") for p in points)
