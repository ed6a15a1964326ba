"""Stage scripts take every path and the params file from dvc.yaml's ``cmd``: their flags are
required (no default that could drift from dvc.yaml), and each stage's command parses."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from tests.stage_deps import REPO, Stage, load_stages, script_of

# Flags that are optional by nature (no path default): what leaving them out means.
OPTIONAL: dict[str, set[str]] = {
    "stages/remove_hair.py": {"--truth"},  # only read when data.source is synthetic
    # '' or absent: not in the report
    "stages/report.py": {"--baselines", "--benchmark", "--hair-effect"},
    "stages/hair_train.py": {"--best-teacher"},  # read for --role teacher only
    # three export modes: a checkpoint with its validation predictions, the selected KD point
    # (record, checkpoint folder, run folder) or the best teacher (select_teacher's record,
    # checkpoint folder, run folder); the scratch student has no deploy-size copy
    "stages/export.py": {
        "--checkpoint",
        "--val-predictions",
        "--selected",
        "--best-teacher",
        "--checkpoint-dir",
        "--runs-dir",
        "--deploy-out",
    },
    "stages/quantize.py": {"--dynamic-out"},  # the student's comparison model only
}
# Scripts whose flags are not checked for defaults (their commands are still checked to parse).
NOT_CHECKED_FOR_DEFAULTS: set[str] = set()


class _Parsed(BaseException):
    """Raised instead of running the stage once its arguments are parsed."""

    def __init__(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        super().__init__()
        self.parser, self.namespace = parser, args


@cache
def _stages() -> dict[str, Stage]:
    return load_stages(REPO / "dvc.yaml", REPO / "params.yaml")


@cache
def _module(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"stage_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_only(
    script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser a stage's ``main`` builds and what it makes of ``argv``; nothing else runs."""
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, args=None, namespace=None):
        raise _Parsed(self, real(self, args, namespace))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        m.setattr("signal.signal", lambda *_: None)  # cli_entry's SIGTERM handler
        try:
            _module(script).main(argv)
        except _Parsed as parsed:
            return parsed.parser, parsed.namespace
    raise AssertionError(f"{script}: main() returned without parsing arguments")


def _script_stages() -> list[tuple[str, str, list[str]]]:
    out = []
    for name, stage in _stages().items():
        script = script_of(stage.cmd)
        if script is not None:
            tokens = shlex.split(stage.cmd)
            out.append((name, script, tokens[tokens.index(script) + 1 :]))
    return out


@pytest.mark.parametrize(("name", "script", "argv"), _script_stages(), ids=lambda v: str(v)[:40])
def test_stage_command_parses(
    name: str, script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every flag the script requires is in the command, and the command has no unknown flag."""
    _, args = parse_only(script, argv, monkeypatch)
    # a stage that reads params names the file; code_deps, which reads none, takes no --params
    expected = "params.yaml" if _stages()[name].params else None
    assert getattr(args, "params", None) == expected, name


def _checked_scripts() -> list[str]:
    scripts = {script for _, script, _ in _script_stages()}
    return sorted(scripts - NOT_CHECKED_FOR_DEFAULTS)


@pytest.mark.parametrize("script", _checked_scripts())
def test_stage_flags_are_required(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No flag has a default that could silently differ from dvc.yaml's command."""
    argv = next(a for _, s, a in _script_stages() if s == script)
    parser, _ = parse_only(script, argv, monkeypatch)
    optional = {
        flag
        for action in parser._actions
        if action.option_strings and not action.required and action.dest != "help"
        for flag in action.option_strings
        if flag.startswith("--")
    }
    assert optional == OPTIONAL.get(script, set()), script
    for action in parser._actions:
        if not action.required and action.dest != "help":
            assert action.default in (None, ""), f"{script} {action.option_strings}: default"


def test_a_missing_flag_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check sees a dropped flag (argparse exits 2 naming it)."""
    _, script, argv = next(s for s in _script_stages() if s[0] == "split")
    i = argv.index("--metrics")
    with pytest.raises(SystemExit) as exc:
        parse_only(script, argv[:i] + argv[i + 2 :], monkeypatch)
    assert exc.value.code == 2
