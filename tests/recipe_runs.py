"""The published recipes at toy size, reproduced once per test session in the background.

``tests/test_recipes.py`` checks that ``cp configs/<recipe>.yaml params.yaml && dvc repro`` runs
end to end on a data set written in that recipe's on-disk format (``tests/recipe_data.py``). Each
reproduction takes minutes of mostly single-threaded CPU, so ``conftest.py`` submits it to the
session's :class:`~tests.background.Background` as the session starts (only for the recipes a
selected test names with ``@pytest.mark.recipe(...)``) and the test checks the finished repo.

Only the counts in :data:`TOY_OVERRIDES` are shrunk (epochs, seeds, bootstrap, benchmark and
calibration sizes, threads and workers; never an architecture, image size, method or KD grid
value).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.background import Runner
from tests.conftest import TinyDataset
from tests.dvc_repo import ROOT, make_repo
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
    "quantize.calibration_size": 2,  # images through the calibration graph (all its tensors)
    # One core each: the recipe jobs run beside each other and the rest of the suite on a 2-core
    # host, where two threads per process would only contend.
    "train.num_threads": 1,
    "train.num_workers": 0,  # loader processes: a throughput knob, not part of the model
    "synth.num_threads": 1,
    "preprocess.workers": 1,  # hair removal in-process: a pool costs more than ~50 images take
}

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


@dataclass(frozen=True)
class RecipeRun:
    """A temp repo after one ``dvc repro`` of a recipe at toy size."""

    repo: Path
    out: str  # stdout of that ``dvc repro``
    params: dict[str, Any]  # its params.yaml
    n_images: int  # images in the data set it read


@dataclass(frozen=True)
class Recipe:
    """How a recipe's toy data set is written and which of its teachers run."""

    folder: str  # the data set's folder name, as the challenge ships it
    write: Callable[[Path], TinyDataset]
    archs: list[str] | None = None  # a subset of the recipe's teachers (None: all)


RECIPES: dict[str, Recipe] = {
    "isic2024": Recipe("isic-2024-challenge", write_isic2024),
    "ham10000": Recipe("HAM10000", write_ham10000, HAM_TEACHER_SUBSET),
}


def reproduce_recipe(recipe: str, root: Path, runner: Runner) -> RecipeRun:
    """Write the recipe's toy data set under ``root`` (with the hair-truth trap), its toy params,
    a repo, and run ``dvc repro`` there once (a :class:`~tests.background.Background` job)."""
    spec = RECIPES[recipe]
    data = spec.write(root / spec.folder)
    plant_truth_trap(data.root)
    params = toy_params(recipe, data.root, spec.archs)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    repo = make_repo(root / "repo", params=params_file)
    out = runner.run(repo, "dvc", "repro")
    return RecipeRun(repo, out, params, len(data.metadata))
