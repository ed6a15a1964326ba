"""Do the stages of dvc.yaml declare everything their command reads and writes?

``dvc repro`` reruns a stage only when a declared dep changed, so a stage must depend on every
module its script can import from the package, and on every path its command names. This module
expands dvc.yaml with DVC's own resolver (foreach/matrix and ``${...}`` against a params file,
without opening a DVC repo, so it takes no lock), computes each stage script's import closure
inside ``src/melanoma_kd`` with :mod:`ast`, and reports:

- **missing deps**: a module of the closure (package ``__init__.py`` files included) that no
  dep covers (the file itself or a folder above it);
- **extra deps**: a package module listed in ``deps`` that the script never imports (it makes
  the stage rerun for edits it does not see);
- **undeclared cmd paths**: a path-like argument of ``cmd`` that is not a dep or out, not inside
  one, and not a folder holding declared ones.

``python -m tests.stage_deps [params file]`` prints the findings per stage (exit status 1 when
there are any) and the number of (stage, source file) dependency pairs.
``python -m tests.stage_deps --fix`` rewrites each stage's run of script/package deps in
dvc.yaml to exactly its closure (the stage must list its script for the run to be found).
"""

from __future__ import annotations

import ast
import posixpath
import re
import shlex
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = "src"
PACKAGE = "melanoma_kd"
PARAMS_FILE = "params.yaml"

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


# --- import closure --------------------------------------------------------------------------


def module_file(module: str, src: Path) -> Path | None:
    """The file that defines ``module`` under ``src`` (``a/b.py`` or ``a/b/__init__.py``)."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path, module: str | None, src: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (any scope, any branch), parents
    included. ``module`` is the file's own dotted name (``None`` for a script), used to resolve
    relative imports; ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    raise ValueError(f"{path}: relative import outside a package")
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            for alias in node.names:
                if alias.name != "*" and module_file(f"{base}.{alias.name}", src):
                    names.add(f"{base}.{alias.name}")
    found: set[str] = set()
    for name in names:
        if name == package or name.startswith(package + "."):
            found.update(m for m in _with_parents(name) if module_file(m, src))
    return found


def import_closure(script: Path, src: Path = REPO / SRC, package: str = PACKAGE) -> set[Path]:
    """Files of ``package`` (under ``src``) that running ``script`` can import, recursively,
    with the ``__init__.py`` of every package on the way."""
    return set(_closure(script.resolve(), src.resolve(), package))


@cache
def _closure(script: Path, src: Path, package: str) -> frozenset[Path]:
    seen: dict[str, Path] = {}
    todo = sorted(imported_modules(script, None, src, package))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, src)
        if path is None:
            continue
        seen[name] = path
        todo += sorted(imported_modules(path, name, src, package) - seen.keys())
    return frozenset(seen.values())


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
    """Sources the stage runs that none of its deps covers."""
    return [
        f for f in required_sources(stage, repo) if not any(_is_within(f, d) for d in stage.deps)
    ]


def extra_deps(stage: Stage, repo: Path = REPO) -> list[str]:
    """Package modules in ``deps`` that the stage's script never imports."""
    needed = set(required_sources(stage, repo))
    package = f"{SRC}/{PACKAGE}"
    return [
        d for d in stage.deps if d.endswith(".py") and _is_within(d, package) and d not in needed
    ]


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


def source_pairs(stages: dict[str, Stage]) -> int:
    """Number of (stage, .py file) entries in the stages' deps."""
    return sum(d.endswith(".py") for s in stages.values() for d in s.deps)


_SOURCE_DEP = re.compile(r"^(\s*)- ((?:stages|src/" + PACKAGE + r")/\S+\.py)\s*$")


def fixed_dvc_yaml(text: str, stages: dict[str, Stage], repo: Path = REPO) -> str:
    """``text`` with every contiguous run of source deps replaced by the stage's closure.

    A top-level stage (``foreach``/``matrix`` included) is matched to its expanded stages by
    name; all expansions run the same script, so the first one's closure is used.
    """
    out: list[str] = []
    stage: str | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        top = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if top:
            stage = top.group(1)
        m = _SOURCE_DEP.match(line)
        if not m or stage is None:
            out.append(line)
            i += 1
            continue
        while i < len(lines) and _SOURCE_DEP.match(lines[i]):
            i += 1
        expanded = [s for n, s in stages.items() if n == stage or n.startswith(stage + "@")]
        if not expanded:
            raise SystemExit(f"dvc.yaml: stage {stage!r} not found after expansion")
        script = script_of(expanded[0].cmd)
        files = sorted(required_sources(expanded[0], repo), key=lambda f: (f != script, f))
        out.extend(f"{m.group(1)}- {f}" for f in files)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print what each stage lacks or over-declares; 1 when anything is found."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--fix"]:
        path = REPO / "dvc.yaml"
        path.write_text(fixed_dvc_yaml(path.read_text(), load_stages(path)))
        args = args[1:]
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
        f"{len(stages)} stages; {source_pairs(stages)} (stage, source file) dep pairs declared, "
        f"{needed} needed; {len(reports)} stage(s) with findings"
    )
    return 1 if reports else 0


if __name__ == "__main__":
    sys.exit(main())
