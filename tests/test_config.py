"""params.yaml validation: the default file is valid; each bad value fails in one line naming it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from melanoma_kd.config import Params, load_params, parse_params
from melanoma_kd.errors import UserError
from tests.conftest import REPO_ROOT

DEFAULT_PARAMS = REPO_ROOT / "params.yaml"


def _default_raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PARAMS.read_text())


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_params(path)
    msg = str(info.value)
    assert msg, "empty error message"
    assert "\n" not in msg and "\r" not in msg, f"error is not one line: {msg!r}"
    assert str(path) in msg, f"error does not name the file: {msg!r}"
    return msg


def test_default_params_yaml_validates() -> None:
    params = load_params(DEFAULT_PARAMS)
    assert isinstance(params, Params)
    raw = _default_raw()
    # Spot-check that values come from the file, not only from the model defaults.
    assert params.split.train == raw["split"]["train"]
    assert params.data.source == raw["data"]["source"]
    assert list(params.teachers.archs) == raw["teachers"]["archs"]
    response = raw["distill"]["response"]
    assert list(params.distill.response.temperature) == [float(t) for t in response["temperature"]]
    assert list(params.distill.feature.alpha) == [
        float(a) for a in raw["distill"]["feature"]["alpha"]
    ]


def test_every_section_of_the_model_is_in_params_yaml() -> None:
    """dvc.yaml lists dotted keys per stage, so each section must really exist in the file."""
    assert set(_default_raw()) == set(Params.model_fields)


def _leaves(raw: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf key path of a params mapping, nested sub-sections (``distill.response``)
    included (list values are leaves too)."""
    out: list[tuple[str, ...]] = []
    for key, value in raw.items():
        path = (*prefix, key)
        out += _leaves(value, path) if isinstance(value, dict) else [path]
    return out


def _model_leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The same key paths of a params model, in field order (sub-models are descended into)."""
    out: list[tuple[str, ...]] = []
    for key, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _model_leaves(ann, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def _get(params: BaseModel, path: tuple[str, ...]) -> Any:
    node: Any = params
    for key in path:
        node = getattr(node, key)
    return node


def _defaults_differing(raw: dict[str, Any]) -> list[str]:
    """Dotted keys whose model default differs from the (validated) value in ``raw``."""
    defaults, given = Params(), parse_params(raw)
    return [
        f"{'.'.join(path)}: default {_get(defaults, path)!r}, file {_get(given, path)!r}"
        for path in _leaves(raw)
        if _get(defaults, path) != _get(given, path)
    ]


def test_model_defaults_equal_params_yaml() -> None:
    """A default that drifts from the shipped params.yaml makes code that builds a section
    without the file (tests, benchmarks, the predict CLI) run a different recipe."""
    raw = _default_raw()
    assert _leaves(raw) == _model_leaves(Params)  # every field is in the file, in order
    assert ("distill", "response", "temperature") in _leaves(raw)
    assert _defaults_differing(raw) == []


def test_default_drift_check_can_fail() -> None:
    raw = _set(_default_raw(), "generate.n_images", 1234)
    raw = _set(raw, "distill.response.temperature", [1, 2])
    raw = _set(raw, "distill.feature.stages", 3)
    drift = _defaults_differing(raw)
    assert [d.split(":")[0] for d in drift] == [
        "generate.n_images",
        "distill.response.temperature",
        "distill.feature.stages",
    ]


@pytest.mark.parametrize(
    ("dotted", "value", "key_in_msg"),
    [
        ("teachers.epochs", "ten", "teachers.epochs"),
        ("teachers.epochs", 2.5, "teachers.epochs"),
        ("student.lr", -0.1, "student.lr"),
        ("data.source", "ham", "data.source"),
        ("data.on_bad_image", "ignore", "data.on_bad_image"),
        ("distill.response.alpha", [1.5], "distill.response.alpha"),
        ("distill.response.alpha", [0.5, -0.1], "distill.response.alpha"),
        ("distill.response.temperature", [0], "distill.response.temperature"),
        ("distill.response.temperature", [4, 4], "response.temperature"),  # trained twice
        ("distill.feature.alpha", [1.5], "distill.feature.alpha"),
        ("distill.feature.alpha", [0.5, 0.5], "feature.alpha"),  # trained twice
        ("distill.feature.stages", 0, "distill.feature.stages"),
        ("distill.response", [1, 4], "distill.response"),
        ("cache.size", -64, "cache.size"),
        ("split.seed", -1, "split.seed"),
        ("teachers.archs", [], "teachers.archs"),
    ],
)
def test_bad_value_names_the_dotted_key(
    tmp_path: Path, dotted: str, value: object, key_in_msg: str
) -> None:
    msg = _error(_write(tmp_path, _set(_default_raw(), dotted, value)))
    assert key_in_msg in msg


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("distill.temperature", [1, 4]),  # the old flat T x alpha x method grid
        ("distill.method", ["response", "attention"]),
        ("distill.feature_stages", 2),
        ("distill.feature.temperature", [4]),  # feature KD has no temperature
    ],
)
def test_old_or_meaningless_grid_keys_are_unknown(
    tmp_path: Path, dotted: str, value: object
) -> None:
    msg = _error(_write(tmp_path, _set(_default_raw(), dotted, value)))
    assert dotted in msg and "unknown" in msg.lower()


def test_an_empty_list_turns_a_kd_method_off(tmp_path: Path) -> None:
    raw = _set(_default_raw(), "distill.feature.alpha", [])
    params = load_params(_write(tmp_path, raw))
    assert params.distill.feature.alpha == [] and params.distill.response.temperature
    raw = _set(_default_raw(), "distill.response.temperature", [])
    assert load_params(_write(tmp_path, raw)).distill.response.temperature == []


def test_an_empty_kd_grid_is_rejected(tmp_path: Path) -> None:
    raw = _set(_default_raw(), "distill.response.alpha", [])
    raw = _set(raw, "distill.feature.alpha", [])
    msg = _error(_write(tmp_path, raw))
    assert "distill" in msg and "empty" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["trian"] = {"seed": 0}
    msg = _error(_write(tmp_path, raw))
    assert "trian" in msg
    assert "unknown" in msg.lower()


def test_unknown_nested_key_typo(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["train"]["bach_size"] = 16
    msg = _error(_write(tmp_path, raw))
    assert "train.bach_size" in msg
    assert "unknown" in msg.lower()


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.2, 0.2), (0.5, 0.15, 0.15), (0.8, 0.2, 0.0), (1.2, -0.1, -0.1)]
)
def test_split_fractions_must_sum_to_one_and_be_positive(
    tmp_path: Path, fractions: tuple[float, float, float]
) -> None:
    raw = _default_raw()
    raw["split"].update(dict(zip(("train", "val", "holdout"), fractions, strict=True)))
    msg = _error(_write(tmp_path, raw))
    assert "split" in msg


def test_split_fractions_summing_to_one_are_accepted(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["split"].update(train=0.6, val=0.2, holdout=0.2)  # 0.6+0.2+0.2 != 1.0 exactly in floats
    params = load_params(_write(tmp_path, raw))
    assert (params.split.train, params.split.val, params.split.holdout) == (0.6, 0.2, 0.2)


def test_balanced_sampler_with_weighted_loss_is_rejected(tmp_path: Path) -> None:
    raw = _set(_default_raw(), "train.balanced_sampler", True)
    raw["train"]["loss"] = "weighted_ce"
    msg = _error(_write(tmp_path, raw))
    assert "train" in msg and "balanced_sampler" in msg and "weighted_ce" in msg


def test_balanced_sampler_with_plain_ce_is_accepted(tmp_path: Path) -> None:
    raw = _set(_default_raw(), "train.balanced_sampler", True)
    raw["train"]["loss"] = "ce"
    raw["distill"]["transfer_images"] = 0  # a transfer set needs a plain shuffle
    assert load_params(_write(tmp_path, raw)).train.balanced_sampler is True


def test_cache_smaller_than_a_model_input_is_rejected(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["cache"]["size"] = 32
    raw["teachers"]["image_size"] = 64
    raw["student"]["image_size"] = 32
    msg = _error(_write(tmp_path, raw))
    assert "cache.size" in msg


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: [synthetic\n  root: x\n")
    msg = _error(path)
    assert "yaml" in msg.lower()


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- data\n- split\n")
    _error(path)


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, _set(_default_raw(), "split", 0.7)))
    assert "split" in msg


def test_missing_file(tmp_path: Path) -> None:
    msg = _error(tmp_path / "nope" / "params.yaml")
    assert "not found" in msg


def test_non_utf8_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\xff\xfe\x00data: {}\n")
    _error(path)


def test_parse_params_reports_the_given_source_name() -> None:
    with pytest.raises(UserError, match=r"^my\.yaml: teachers\.epochs"):
        parse_params({"teachers": {"epochs": "ten"}}, "my.yaml")


def test_several_errors_still_give_one_line(tmp_path: Path) -> None:
    raw = _set(_default_raw(), "teachers.epochs", "ten")
    raw["student"]["epochs"] = "five"
    raw["trian"] = {}
    msg = _error(_write(tmp_path, raw))
    assert "teachers.epochs" in msg or "student.epochs" in msg or "trian" in msg
