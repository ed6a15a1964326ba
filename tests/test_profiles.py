"""Every shipped params profile validates, names architectures timm knows, and spells out every
key the DAG declares.

DVC reads the raw params file, not the validated model: a key that only a pydantic default
supplies stops ``dvc repro`` at the first stage that declares it ("Parameters ... are missing
from 'params.yaml'"). So the declared-keys check below reads each profile with ``yaml`` alone.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from melanoma_kd.config import Params, load_params
from melanoma_kd.models.build import check_arch

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"
PARAMS_FILE = "params.yaml"
PROFILES = [
    ROOT / PARAMS_FILE,
    *sorted((ROOT / "tests/profiles").glob("*.yaml")),
    *sorted(ROOT.glob("configs/*.yaml")),
]
INTERPOLATION = re.compile(r"\$\{\s*([^}]*?)\s*\}")
# Names dvc.yaml binds itself (foreach/matrix items), not params.
LOCAL_NAMES = ("item", "key")


def _strings(node: object) -> Iterator[str]:
    """Every string in a parsed YAML tree, mapping keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _stage_params(stage: dict[str, Any]) -> Iterator[str]:
    """The ``params.yaml`` keys one stage lists (a foreach/matrix stage lists them under ``do``)."""
    body = stage.get("do", stage)
    for entry in body.get("params", []) or []:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):  # {file: [keys]}: only the default params file counts
            for path, keys in entry.items():
                if Path(str(path)).name == PARAMS_FILE and keys:
                    yield from keys


def declared_keys(dvc_yaml: Path = DVC_YAML) -> set[str]:
    """Dotted keys dvc.yaml needs from params.yaml: stage ``params`` plus ``${...}`` uses.

    A bare section name (``train``) means the whole section must exist.
    """
    doc = yaml.safe_load(dvc_yaml.read_text())
    own_vars = {
        name for entry in doc.get("vars", []) or [] if isinstance(entry, dict) for name in entry
    }
    keys: set[str] = set()
    for stage in (doc.get("stages") or {}).values():
        keys.update(_stage_params(stage))
    for text in _strings(doc):
        for name in INTERPOLATION.findall(text):
            head = name.split(".")[0]
            if head not in LOCAL_NAMES and head not in own_vars:
                keys.add(name)
    return keys


def missing_keys(raw: object, keys: set[str]) -> list[str]:
    """The keys of ``keys`` that the raw params mapping does not spell out, sorted."""
    missing = []
    for dotted in sorted(keys):
        node = raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    return missing


def model_keys(model: type[BaseModel] = Params, prefix: str = "") -> set[str]:
    """Every dotted key of the validated params model, down to the leaves of nested sections
    (``distill.response.temperature``)."""
    keys: set[str] = set()
    for key, field in model.model_fields.items():
        ann, dotted = field.annotation, f"{prefix}{key}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= model_keys(ann, f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_validates_and_archs_exist(path: Path) -> None:
    params = load_params(path)
    for arch in [*params.teachers.archs, params.student.arch]:
        check_arch(arch)


def test_declared_keys_are_read_from_dvc_yaml() -> None:
    keys = declared_keys()
    # stage params (sections and dotted keys) and ${} interpolations in cmd, deps, outs, foreach
    expected = {
        "train",
        "preprocess",
        "synth.seed",
        "synth.high_factor",
        "models.weights_dir",
        "teachers.archs",
        "distill.response",  # select_student: the whole response grid
        "distill.response.temperature",  # the distill_response matrix
        "distill.response.alpha",
        "distill.feature.alpha",  # the distill_feature foreach
        "distill.feature.stages",
        "benchmark.deploy_size",
        "data.root",
        "replicates.seeds",
    }
    assert expected <= keys, sorted(expected - keys)
    assert not any(k.split(".")[0] in LOCAL_NAMES for k in keys), sorted(keys)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_profile_spells_out_every_declared_key(path: Path) -> None:
    """What `cp <profile> params.yaml && dvc repro` needs: no key left to pydantic defaults."""
    missing = missing_keys(yaml.safe_load(path.read_text()), declared_keys())
    assert not missing, f"{path.relative_to(ROOT)} lacks keys dvc.yaml declares: {missing}"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_profile_spells_out_every_model_key(path: Path) -> None:
    """No value comes from a pydantic default: a stage that depends on a whole section would
    not rerun when such a default changes, and readers of the file would not see it."""
    missing = missing_keys(yaml.safe_load(path.read_text()), model_keys())
    assert not missing, f"{path.relative_to(ROOT)} leaves keys to config.py defaults: {missing}"


@pytest.mark.parametrize(
    ("section", "leaf"),
    [
        ("synth", "seed"),  # a dotted stage param
        ("preprocess", None),  # a whole-section stage param
        ("benchmark", "deploy_size"),  # used only as ${benchmark.deploy_size}
        ("data", "root"),  # used only as ${data.root} in deps
    ],
)
def test_missing_key_check_names_a_planted_gap(section: str, leaf: str | None) -> None:
    raw = yaml.safe_load((ROOT / PARAMS_FILE).read_text())
    keys = declared_keys()
    assert missing_keys(raw, keys) == []
    broken = copy.deepcopy(raw)
    if leaf is None:
        del broken[section]
    else:
        del broken[section][leaf]
    missing = missing_keys(broken, keys)
    assert (section if leaf is None else f"{section}.{leaf}") in missing
    if leaf is None:  # every key inside the removed section is named too
        assert all(k == section or k.startswith(f"{section}.") for k in missing)


def test_published_recipes_are_encoded() -> None:
    isic = load_params(ROOT / "configs/isic2024.yaml")
    assert (isic.teachers.image_size, isic.student.image_size, isic.cache.size) == (256, 224, 256)
    assert isic.distill.response.temperature == [4.0]
    assert isic.distill.response.alpha == [pytest.approx(0.4)]
    assert isic.distill.feature.alpha == [pytest.approx(0.4)]  # response and feature KD
    assert isic.train.schedule == "plateau"
    assert isic.train.loss == "weighted_ce" and not isic.train.balanced_sampler
    ham = load_params(ROOT / "configs/ham10000.yaml")
    assert ham.train.loss == "focal" and not ham.train.balanced_sampler
    assert ham.distill.response.temperature == [1.0, 2.0]
    assert ham.distill.response.alpha == [0.5, 0.9]
    assert ham.distill.feature.alpha == []  # response KD only
    assert ham.train.schedule == "plateau"
    assert len(ham.teachers.archs) == 13
