"""``make verify``: the committed ``dvc.lock`` and results must be exactly what the code produces.

Run after ``dvc repro``. Compares the working tree with ``HEAD`` for ``dvc.lock`` and every
git-tracked file under ``metrics/``, ``plots/`` and ``reports/``, and fails naming what changed.
Latency cannot be bitwise stable, so by design the ``benchmark`` stage is excluded: its outputs are
DVC-cached (never committed) and its ``dvc.lock`` entry is ignored here.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

RESULT_DIRS = ("metrics", "plots", "reports")
UNSTABLE_STAGES = frozenset({"benchmark"})


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def _stable_lock(text: str) -> dict:
    lock = yaml.safe_load(text) or {}
    stages = lock.get("stages", {})
    return {name: entry for name, entry in stages.items() if name not in UNSTABLE_STAGES}


def changed_results() -> list[str]:
    """Paths whose content differs from ``HEAD`` (or that are new and untracked)."""
    changed = []
    committed = _git("show", "HEAD:dvc.lock")
    with open("dvc.lock") as handle:
        current = handle.read()
    old, new = _stable_lock(committed), _stable_lock(current)
    changed += [
        f"dvc.lock [{s}]" for s in sorted(old.keys() | new.keys()) if old.get(s) != new.get(s)
    ]
    status = _git("status", "--porcelain", "--untracked-files=all", "--", *RESULT_DIRS)
    changed += [line[3:] for line in status.splitlines() if line.strip()]
    return changed


def main() -> None:
    changed = changed_results()
    if changed:
        print("make verify: committed results differ from what the code produces:", file=sys.stderr)
        for path in changed:
            print(f"  {path}", file=sys.stderr)
        print("run `make repro` and commit dvc.lock and the result files", file=sys.stderr)
        raise SystemExit(1)
    print("make verify: dvc.lock and committed results match the code")


if __name__ == "__main__":
    main()
