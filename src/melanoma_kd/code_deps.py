"""Which package code each stage script runs, and the one small file per script that DVC tracks
in its place.

A stage must rerun when any module its script can import changes, and only then. Listing every
module of every closure in dvc.yaml did that, but made ``dvc.lock`` hold ~1,200 (stage, file)
entries, which DVC parses and rewrites after every stage it runs. Instead the ``code_deps`` stage
depends on the whole package and writes ``code/<script>.txt``: the SHA-256 of the script and of
each module of its import closure (package ``__init__.py`` files included), one per line. Each
stage depends on its script's file, whose bytes change exactly when its closure's do, so DVC
reruns exactly the stages that run an edited module.

The closure is found with :mod:`ast`: every ``import`` / ``from ... import`` of the package in
any scope or branch (a lazy import inside a function counts), relative imports resolved.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path, PurePosixPath

from melanoma_kd.io import atomic_path, sha256_file

PACKAGE = "melanoma_kd"
SRC = Path(__file__).resolve().parents[1]  # the folder holding this package
HEADER = "# sha256 of {script} and of each package module it can import (stages/code_deps.py)"


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


@cache
def _import_statements(text: str, filename: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """``(level, module, names)`` for every import statement of a source text, in any scope:
    ``import a.b`` is ``(0, "", ("a.b",))``, ``from ..a import b`` is ``(2, "a", ("b",))``.
    Cached by text: the scripts' closures share most modules."""
    found = []
    for node in ast.walk(ast.parse(text, filename=filename)):
        if isinstance(node, ast.Import):
            found.append((0, "", tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    return tuple(found)


def imported_modules(path: Path, module: str | None, src: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (any scope, any branch), parents
    included. ``module`` is the file's own dotted name (``None`` for a script), used to resolve
    relative imports; ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for level, source, aliases in _import_statements(path.read_text(), str(path)):
        if not level and not source:  # import a, b.c
            names.update(aliases)
            continue
        if level:
            if module is None:
                raise ValueError(f"{path}: relative import outside a package")
            parts = module.split(".")
            keep = len(parts) - level + (1 if is_package else 0)
            base = ".".join(parts[:keep] + ([source] if source else []))
        else:
            base = source
        names.add(base)
        for alias in aliases:
            if alias != "*" and module_file(f"{base}.{alias}", src):
                names.add(f"{base}.{alias}")
    found: set[str] = set()
    for name in names:
        if name == package or name.startswith(package + "."):
            found.update(m for m in _with_parents(name) if module_file(m, src))
    return found


def import_closure(script: Path, src: Path = SRC, package: str = PACKAGE) -> set[Path]:
    """Files of ``package`` (under ``src``) that running ``script`` can import, recursively,
    with the ``__init__.py`` of every package on the way. Read afresh on every call (only the
    parsing of an unchanged text is cached), so an edit that adds an import counts at once."""
    src = src.resolve()
    seen: dict[str, Path] = {}
    todo = sorted(imported_modules(script.resolve(), None, src, package))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, src)
        if path is None:
            continue
        seen[name] = path
        todo += sorted(imported_modules(path, name, src, package) - seen.keys())
    return set(seen.values())


def code_file(script: str | PurePosixPath, out_dir: str = "code") -> str:
    """Where the code fingerprint of ``stages/<name>.py`` lives: ``code/<name>.txt``."""
    return f"{out_dir}/{PurePosixPath(script).stem}.txt"


def fingerprint(script: Path, src: Path, root: Path) -> str:
    """The text of ``script``'s code file: a header, then ``<sha256>  <path>`` for the script and
    each module of its closure (paths relative to ``root``, the script first, then sorted)."""
    files = sorted(import_closure(script, src), key=lambda p: p.as_posix())
    rel = [p.resolve().relative_to(root.resolve()).as_posix() for p in [script, *files]]
    lines = [HEADER.format(script=rel[0])]
    lines += [f"{sha256_file(root / r)}  {r}" for r in rel]
    return "\n".join(lines) + "\n"


def write_code_files(stages_dir: Path, src: Path, out_dir: Path, root: Path) -> list[Path]:
    """Write ``out_dir/<name>.txt`` for every ``stages_dir/<name>.py`` (the folder is replaced
    as a whole, atomically); the scripts it covered, in order."""
    scripts = sorted(stages_dir.glob("*.py"))
    with atomic_path(out_dir, directory=True) as tmp:
        for script in scripts:
            (tmp / f"{script.stem}.txt").write_text(fingerprint(script, src, root))
    return scripts
