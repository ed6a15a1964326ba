"""The published recipes run as the README says: ``cp configs/<recipe>.yaml params.yaml && dvc
repro``, end to end, on a real-format data set at toy size.

Each test copies a recipe config, points ``data.root`` at a data set written in that recipe's
on-disk format (``tests/recipe_data.py``), shrinks only the counts listed in
:data:`TOY_OVERRIDES` (epochs, seeds, bootstrap, benchmark and calibration sizes, threads and
workers; never an architecture, image size, method or KD grid value) and runs ``dvc repro``
through every stage of ``dvc.yaml``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from melanoma_kd.models.build import build_model
from tests.dvc_repo import ROOT, changed_stages, make_repo, ran_stages, run
from tests.recipe_data import write_ham10000, write_isic2024

CONFIGS = ROOT / "configs"

# Counts only: what makes a recipe cheap without changing what it builds. Every key must exist in
# both recipes (a renamed key fails test_overrides_change_counts_only, not silently nothing).
TOY_OVERRIDES: dict[str, Any] = {
    "teachers.epochs": 1,  # one epoch still trains, selects a checkpoint and writes curves
    "student.epochs": 1,  # scratch student, KD grid, replicates and ablation alike
    "replicates.seeds": [1],  # config needs >= 1 extra seed; one keeps the replicate foreach
    "evaluate.n_boot": 100,  # config minimum
    "benchmark.warmup": 1,
    "benchmark.runs": 10,  # config minimum
    "benchmark.threads": [1],  # one thread count timed, not two (each is a full timing pass)
    "quantize.calibration_size": 8,
    "train.num_threads": 2,  # the CI host's cores
    "train.num_workers": 0,  # loader processes: a throughput knob, not part of the model
    "synth.num_threads": 2,
    "preprocess.workers": 1,  # hair removal in-process: a pool costs more than ~50 images take
}

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

# HAM10000 has 13 teachers (ResNet18-152, EfficientNet-B0-B7). At 224 px one training step of all
# 13 costs ~24x that of resnet18 + efficientnet_b0 on a 2-core host, and each teacher is also
# evaluated (the best on validation is exported, quantized and benchmarked too): the full list
# would add ~40 min to a test whose two teachers take ~4 of its ~10 min. The test runs the
# cheapest teacher of each family (the foreach, per-arch outputs and best-teacher selection are
# the same code for any number of archs); test_every_recipe_arch_builds checks that the other
# eleven build.
HAM_TEACHER_SUBSET = ["resnet18", "efficientnet_b0"]


def set_dotted(params: dict[str, Any], dotted: str, value: object) -> None:
    """Set ``section.key`` in a params dict; a key the recipe lacks is an error."""
    section, key = dotted.split(".")
    if key not in params.get(section, {}):
        raise KeyError(f"{dotted} is not in the recipe")
    params[section][key] = value


def toy_params(recipe: str, data_root: Path, archs: list[str] | None = None) -> dict[str, Any]:
    """The recipe config with :data:`TOY_OVERRIDES`, ``data.root`` and (optionally) a subset of
    its teacher archs applied."""
    params = yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text())
    for dotted, value in TOY_OVERRIDES.items():
        set_dotted(params, dotted, value)
    set_dotted(params, "data.root", str(data_root))
    if archs is not None:
        assert set(archs) <= set(params["teachers"]["archs"]), "subset of the recipe's archs"
        set_dotted(params, "teachers.archs", archs)
    return params


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


def reproduce(tmp_path: Path, params: dict[str, Any]) -> tuple[Path, str]:
    """A temp repo with ``params`` as params.yaml, after one ``dvc repro``; and its stdout."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    repo = make_repo(tmp_path / "repo", params=params_file)
    return repo, run(repo, "dvc", "repro").stdout


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


def plant_truth_trap(data_root: Path) -> None:
    """An unreadable HDF5 file at the hair-truth path remove_hair's cmd names
    (``${data.root}/truth.hdf5``): opening it, which only a synthetic source may do, fails."""
    (data_root / "truth.hdf5").write_bytes(b"not an HDF5 file")


def check_no_synthetic_work(repo: Path, n_images: int) -> None:
    """generate wrote only its marker, and remove_hair scored nothing against a hair truth."""
    generated = sorted(p.name for p in (repo / "data/raw/synthetic").iterdir())
    assert generated == ["NOT_GENERATED.json"]
    hair = json.loads((repo / "metrics/hair_removal.json").read_text())
    assert hair["truth_available"] == 0
    assert hair["images"] == n_images


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
def test_isic2024_recipe_runs_end_to_end(tmp_path: Path) -> None:
    """configs/isic2024.yaml (SwinV2 teacher, ViT-small student, response + feature KD) on an
    ISIC-2024-format data set; generate and the hair truth are not touched."""
    data = write_isic2024(tmp_path / "isic-2024-challenge")
    plant_truth_trap(data.root)
    params = toy_params("isic2024", data.root)
    repo, out = reproduce(tmp_path, params)
    check_full_run(repo, out, params)
    check_no_synthetic_work(repo, len(data.metadata))
    assert list(kd_points(params)) == ["4-0.4-response", "0.4-feature"]  # one point per method


@pytest.mark.pipeline
def test_ham10000_recipe_runs_end_to_end(tmp_path: Path) -> None:
    """configs/ham10000.yaml (focal-loss ResNet/EfficientNet teachers, MobileNetV3-small
    student, T x alpha KD grid) on a HAM10000-format data set, with one teacher per family;
    generate and the hair truth are not touched."""
    data = write_ham10000(tmp_path / "HAM10000")
    plant_truth_trap(data.root)
    params = toy_params("ham10000", data.root, HAM_TEACHER_SUBSET)
    repo, out = reproduce(tmp_path, params)
    check_full_run(repo, out, params)
    check_no_synthetic_work(repo, len(data.metadata))
    points = kd_points(params)
    assert len(points) == 4  # response KD only: T in {1, 2} x alpha in {0.5, 0.9}
    assert all(p.endswith("-response") for p in points)
