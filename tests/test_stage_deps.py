"""Every stage depends on the code it runs and on every path its command names (see
tests/stage_deps.py), and the checker catches what it is meant to catch."""

from __future__ import annotations

import dataclasses
import itertools
from functools import cache
from pathlib import Path

import pytest
import yaml

from melanoma_kd.code_deps import code_file, import_closure
from tests.stage_deps import (
    REPO,
    Stage,
    check,
    cmd_paths,
    extra_deps,
    load_stages,
    main,
    missing_deps,
    required_sources,
    script_of,
    undeclared_cmd_paths,
)

PROFILES = [
    REPO / "params.yaml",
    *sorted((REPO / "configs").glob("*.yaml")),
    REPO / "tests/profiles/tiny.yaml",
]


@cache
def _expanded(profile: Path) -> dict[str, Stage]:
    return load_stages(REPO / "dvc.yaml", profile)


@pytest.fixture
def stages() -> dict[str, Stage]:
    return _expanded(REPO / "params.yaml")


def _ids(profile: Path) -> str:
    return profile.relative_to(REPO).as_posix()


@pytest.mark.parametrize("profile", PROFILES, ids=_ids)
def test_stages_declare_their_code_and_paths(profile: Path) -> None:
    findings = check(_expanded(profile))
    assert not findings, "\n".join(f"{name}: {report}" for name, report in findings.items())


def test_foreach_and_matrix_are_expanded(stages: dict[str, Stage]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    d = params["distill"]
    for arch in params["teachers"]["archs"]:
        assert f"train_teacher@{arch}" in stages
        assert f"--arch {arch} " in stages[f"train_teacher@{arch}"].cmd
    r, f = d["response"], d["feature"]
    response = {
        f"distill_response@{t}-{a}": f"--point {t}-{a}-response "
        for t, a in itertools.product(r["temperature"], r["alpha"])
    }
    assert response.keys() == {n for n in stages if n.startswith("distill_response@")}
    feature = {f"distill_feature@{a}": f"--point {a}-feature " for a in f["alpha"]}
    assert feature.keys() == {n for n in stages if n.startswith("distill_feature@")}
    for name, flag in (response | feature).items():
        assert flag in stages[name].cmd, name
    assert all("${" not in s.cmd and not any("${" in p for p in s.deps) for s in stages.values())


def test_code_is_declared_through_one_code_file_per_stage(stages: dict[str, Stage]) -> None:
    # A folder dep would rerun a stage for every edit inside it (report.py reruns training):
    # only code_deps, which writes the code files, depends on the package as a whole.
    for name, stage in stages.items():
        listed = [d for d in stage.deps if d.split("/")[0] in ("code", "stages", "src")]
        if name == "code_deps":
            assert listed == ["stages", "src/melanoma_kd"]
        else:
            assert listed == [code_file(script_of(stage.cmd))], name


def test_planted_missing_code_dep_is_reported(stages: dict[str, Stage]) -> None:
    stage = stages["train_student"]
    planted = dataclasses.replace(stage, deps=[d for d in stage.deps if not d.startswith("code/")])
    assert missing_deps(planted) == ["code/train_student.txt"]
    # the code_deps stage must cover its own closure
    writer = stages["code_deps"]
    assert missing_deps(writer) == []
    missing = missing_deps(dataclasses.replace(writer, deps=["stages"]))
    assert "src/melanoma_kd/code_deps.py" in missing and "src/melanoma_kd/io.py" in missing
    assert all(m.startswith("src/melanoma_kd/") for m in missing)


def test_planted_extra_code_dep_is_reported(stages: dict[str, Stage]) -> None:
    stage = stages["train_student"]
    assert "src/melanoma_kd/report.py" not in required_sources(stage)
    listed = ["src/melanoma_kd/report.py", "stages/train_student.py", "src/melanoma_kd"]
    planted = dataclasses.replace(stage, deps=[*stage.deps, *listed])
    assert extra_deps(planted) == listed
    assert extra_deps(stage) == []


def test_planted_cmd_path_is_reported(stages: dict[str, Stage]) -> None:
    stage = stages["split"]
    planted = dataclasses.replace(stage, cmd=stage.cmd + " --labels data/labels.csv --seed 3")
    assert undeclared_cmd_paths(planted) == ["data/labels.csv"]
    # an input moved out of deps, and a params file read by a stage without params
    manifest = dataclasses.replace(stage, deps=[d for d in stage.deps if d != "data/manifest.csv"])
    assert undeclared_cmd_paths(manifest) == ["data/manifest.csv"]
    assert undeclared_cmd_paths(dataclasses.replace(stage, params=[])) == ["params.yaml"]


@pytest.mark.parametrize("profile", PROFILES, ids=_ids)
def test_remove_hair_reads_truth_inside_the_data_root(profile: Path) -> None:
    data = yaml.safe_load(profile.read_text())["data"]
    stage = _expanded(profile)["remove_hair"]
    truth = dict(cmd_paths(stage.cmd))["--truth"]
    assert Path(truth).parent == Path(data["root"]) and data["root"] in stage.deps
    assert "data.source" in stage.params


def test_cmd_paths_and_script() -> None:
    cmd = "python stages/x.py --params params.yaml --alpha 0.5 --name kd --out a/b.csv --none ''"
    assert script_of(cmd) == "stages/x.py"
    assert cmd_paths(cmd) == [
        (None, "stages/x.py"),
        ("--params", "params.yaml"),
        ("--out", "a/b.csv"),
    ]
    assert script_of("dvc exp show") is None


def test_import_closure_of_a_constructed_package(tmp_path: Path) -> None:
    files = {
        "mk/__init__.py": "",
        "mk/a.py": "import numpy\n\ndef f():\n    from mk.sub import b, NAME\n    return b, NAME\n",
        "mk/sub/__init__.py": "NAME = 1\n",
        "mk/sub/b.py": "from . import c\n",
        "mk/sub/c.py": "from ..d import VALUE\n",
        "mk/d.py": "import typing\nif typing.TYPE_CHECKING:\n    import mk.g\nVALUE = 1\n",
        "mk/g.py": "",
        "mk/unused.py": "import mk.a\n",
        "mk/other/__init__.py": "",
        "mk/other/h.py": "",
    }
    for name, text in files.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    script = tmp_path / "run.py"
    script.write_text("import os\nfrom mk.a import f\nfrom mk.other import h\n")
    got = {
        p.relative_to(tmp_path / "src").as_posix()
        for p in import_closure(script, tmp_path / "src", "mk")
    }
    assert got == {
        "mk/__init__.py",
        "mk/a.py",
        "mk/sub/__init__.py",
        "mk/sub/b.py",
        "mk/sub/c.py",
        "mk/d.py",
        "mk/g.py",
        "mk/other/__init__.py",
        "mk/other/h.py",
    }


def test_cli_prints_a_clean_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].endswith("0 stage(s) with findings")
