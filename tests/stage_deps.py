"""Do the stages of dvc.yaml declare everything their command reads and writes?

``dvc repro`` reruns a stage only when a declared dep changed. A stage's code is declared through
``code/<script>.txt``, which the ``code_deps`` stage writes from the script's import closure
inside ``src/melanoma_kd`` (:mod:`melanoma_kd.code_deps`); the ``code_deps`` stage itself depends
on the package and stage folders. This module expands dvc.yaml with DVC's own resolver
(foreach/matrix and ``${...}`` against a params file, without opening a DVC repo, so it takes no
lock) and reports:

- **missing deps**: a stage that does not depend on its script's code file (``code_deps``: a
  module of its closure that no dep covers);
- **extra deps**: a stage file or package module listed directly besides the code file (it
  would make the stage rerun for edits it does not see, or duplicate the code file);
- **undeclared cmd paths**: a path-like argument of ``cmd`` that is not a dep or out, not inside
  one, and not a folder holding declared ones.

``python -m tests.stage_deps [params file]`` prints the findings per stage (exit status 1 when
there are any) and how many code entries the stages declare against the closures they cover.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from melanoma_kd.code_deps import code_file, import_closure

REPO = Path(__file__).resolve().parents[1]
SRC = "src"
PACKAGE = "melanoma_kd"
PARAMS_FILE = "params.yaml"
CODE_DEPS_SCRIPT = "stages/code_deps.py"  # the stage that writes code/<script>.txt

# Outputs a command writes on purpose without declaring them, with the reason.
UNTRACKED_OUTPUTS: dict[str, dict[str, str]] = {
    "benchmark": {
        path: "latency is not bitwise reproducible: timings stay out of dvc.lock"
        for path in ("metrics/benchmark.json", "reports/deployment.md", "plots/latency_pareto.png")
    },
}

_FILE_NAME = re.compile(r"[A-Za-z_][\w.-]*\.[A-Za-z]\w*")


@dataclass
class Stage:
    """One expanded stage: its name, command and the paths it declares."""

    name: str
    cmd: str
    deps: list[str]
    outs: list[str]
    params: list[str] = field(default_factory=list)

    @classmethod
    def from_definition(cls, name: str, d: dict) -> Stage:
        """Build from a resolved dvc.yaml stage entry (``cmd``, ``deps``, ``outs``, ...)."""
        cmd = d["cmd"] if isinstance(d["cmd"], str) else " && ".join(d["cmd"])
        outs = [_entry_path(o) for key in ("outs", "metrics", "plots") for o in d.get(key, [])]
        return cls(
            name=name,
            cmd=cmd,
            deps=[_norm(_entry_path(x)) for x in d.get("deps", [])],
            outs=[_norm(o) for o in outs],
            params=[p if isinstance(p, str) else str(p) for p in d.get("params", [])],
        )


def _entry_path(entry: str | dict) -> str:
    if isinstance(entry, str):
        return entry
    (path,) = entry  # {path: {cache: false, ...}}
    return str(path)


def _norm(path: str) -> str:
    return posixpath.normpath(path.strip())


def _is_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or lies inside the folder ``root``."""
    return PurePosixPath(path).is_relative_to(PurePosixPath(root))


# --- expanding dvc.yaml ------------------------------------------------------------------------


def load_stages(dvc_yaml: Path = REPO / "dvc.yaml", params: Path | None = None) -> dict[str, Stage]:
    """Every stage of ``dvc_yaml`` with foreach/matrix expanded, as DVC names them.

    ``${...}`` resolves against ``params`` (default: the ``params.yaml`` beside ``dvc_yaml``);
    a profile is copied to a scratch folder as ``params.yaml``, which is the file DVC reads.
    """
    from dvc.fs import LocalFileSystem
    from dvc.parsing import DataResolver

    data = yaml.safe_load(dvc_yaml.read_text())
    repo = types.SimpleNamespace(fs=LocalFileSystem(), config={})
    with tempfile.TemporaryDirectory() as scratch:
        wdir = dvc_yaml.resolve().parent
        if params is not None and params.resolve() != wdir / PARAMS_FILE:
            shutil.copyfile(params, Path(scratch) / PARAMS_FILE)
            wdir = Path(scratch)
        resolved = DataResolver(repo, str(wdir), data).resolve()
    return {name: Stage.from_definition(name, d) for name, d in resolved["stages"].items()}


# --- the checks -------------------------------------------------------------------------------


def script_of(cmd: str) -> str | None:
    """The Python script a stage command runs (``python <script> ...``), if any."""
    tokens = shlex.split(cmd)
    for i, token in enumerate(tokens[:-1]):
        if PurePosixPath(token).name.startswith("python") and tokens[i + 1].endswith(".py"):
            return _norm(tokens[i + 1])
    return None


def _rel(path: Path, repo: Path) -> str:
    return path.relative_to(repo).as_posix()


def required_sources(stage: Stage, repo: Path = REPO) -> list[str]:
    """The stage's script and its import closure inside the package, repo-relative."""
    script = script_of(stage.cmd)
    if script is None:
        return []
    closure = import_closure(repo / script, repo / SRC)
    return sorted({script} | {_rel(p, repo.resolve()) for p in closure})


def missing_deps(stage: Stage, repo: Path = REPO) -> list[str]:
    """Code the stage runs that none of its deps covers: its script's code file, or for the
    ``code_deps`` stage (which writes the code files) a module of its own closure."""
    script = script_of(stage.cmd)
    if script is None:
        return []
    needed = required_sources(stage, repo) if script == CODE_DEPS_SCRIPT else [code_file(script)]
    return [f for f in needed if not any(_is_within(f, d) for d in stage.deps)]


def extra_deps(stage: Stage, repo: Path = REPO) -> list[str]:
    """Stage scripts or package files a stage lists directly instead of through its code file."""
    if script_of(stage.cmd) in (None, CODE_DEPS_SCRIPT):
        return []
    code = ("stages", f"{SRC}/{PACKAGE}")
    return [d for d in stage.deps if any(_is_within(d, c) for c in code)]


def cmd_paths(cmd: str) -> list[tuple[str | None, str]]:
    """(option, value) for every path-like argument of ``cmd``: a value holding ``/`` or
    shaped like a file name (``params.yaml``); numbers, names and empty values are not paths."""
    tokens = shlex.split(cmd)
    found = []
    for i, token in enumerate(tokens[1:], start=1):
        if not token or token.startswith("-"):
            continue
        if "/" in token or _FILE_NAME.fullmatch(token):
            option = tokens[i - 1] if tokens[i - 1].startswith("-") else None
            found.append((option, _norm(token)))
    return found


def undeclared_cmd_paths(stage: Stage) -> list[str]:
    """Paths in the stage's command that it neither declares nor holds inside a declared one.

    A folder that holds declared deps/outs (``--plots-dir plots``) passes: the script joins
    declared names onto it. ``--params params.yaml`` passes when the stage declares params.
    """
    declared = stage.deps + stage.outs
    allowed = UNTRACKED_OUTPUTS.get(stage.name.split("@")[0], {})
    bad = []
    for option, path in cmd_paths(stage.cmd):
        if option == "--params" and path == PARAMS_FILE and stage.params:
            continue
        if path in allowed:
            continue
        if path == script_of(stage.cmd) and code_file(path) in stage.deps:
            continue  # the script is the first line of its code file
        inside = any(_is_within(path, d) for d in declared)
        holds = any(_is_within(d, path) for d in declared)
        if not (inside or holds):
            bad.append(path)
    return bad


@dataclass
class Report:
    """Findings for one stage."""

    missing: list[str]
    extra: list[str]
    undeclared: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.undeclared)


def check(stages: dict[str, Stage], repo: Path = REPO) -> dict[str, Report]:
    """Per stage with findings: missing deps, extra package deps, undeclared cmd paths."""
    reports = {
        name: Report(missing_deps(s, repo), extra_deps(s, repo), undeclared_cmd_paths(s))
        for name, s in stages.items()
    }
    return {name: r for name, r in reports.items() if r}


def code_entries(stages: dict[str, Stage]) -> int:
    """Number of code entries (code files, scripts, modules, folders) the stages' deps hold."""
    code = ("code", "stages", f"{SRC}/{PACKAGE}")
    return sum(any(_is_within(d, c) for c in code) for s in stages.values() for d in s.deps)


def main(argv: list[str] | None = None) -> int:
    """Print what each stage lacks or over-declares; 1 when anything is found."""
    args = sys.argv[1:] if argv is None else argv
    params = Path(args[0]) if args else None
    stages = load_stages(REPO / "dvc.yaml", params)
    reports = check(stages)
    for name, r in reports.items():
        print(f"{name}:")
        for label, items in (
            ("missing deps", r.missing),
            ("extra deps", r.extra),
            ("undeclared cmd paths", r.undeclared),
        ):
            for item in items:
                print(f"  {label}: {item}")
    needed = sum(len(required_sources(s)) for s in stages.values())
    print(
        f"{len(stages)} stages; {code_entries(stages)} code dep entries declared for "
        f"{needed} (stage, source file) pairs; {len(reports)} stage(s) with findings"
    )
    return 1 if reports else 0


if __name__ == "__main__":
    sys.exit(main())
