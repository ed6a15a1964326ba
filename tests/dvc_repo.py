"""Helpers for tests that drive the real ``git``/``dvc`` CLI in a temporary repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "profiles" / "tiny.yaml"
COPIED = (
    "dvc.yaml",
    "src",
    "stages",
    ".dvcignore",
    # folders a stage depends on as a whole that may hold no stage output (the hair-removal
    # ablation off, no teacher replicates): each keeps a committed README
    "data/hair_ablation/README.md",
    "models/hair_ablation/README.md",
    "models/teacher_replicates/README.md",
)


def env() -> dict[str, str]:
    """Environment with the venv's python/dvc first on PATH and DVC telemetry off.

    ``PYTHONPATH=src`` makes stage scripts import the package copied into the repo (the code
    DVC hashes as their deps), not the editable install: a test repo stays self-consistent
    while the source tree it was copied from is being edited.
    """
    bindir = str(Path(sys.executable).parent)
    pythonpath = os.pathsep.join(p for p in ("src", os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": pythonpath,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "melanoma-kd tests",
        "GIT_AUTHOR_EMAIL": "tests@melanoma-kd.invalid",
        "GIT_COMMITTER_NAME": "melanoma-kd tests",
        "GIT_COMMITTER_EMAIL": "tests@melanoma-kd.invalid",
        "PYTHONHASHSEED": "0",
    }


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in ``repo``; on failure raise with its output attached."""
    proc = subprocess.run(args, cwd=repo, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--stdout--\n{proc.stdout[-4000:]}"
            f"\n--stderr--\n{proc.stderr[-4000:]}"
        )
    return proc


def make_repo(path: Path, params: Path = TINY) -> Path:
    """A git + DVC repo holding the project's pipeline with ``params`` as params.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, path / name)
    shutil.copy2(params, path / "params.yaml")
    run(path, "git", "init", "-q", "-b", "main")
    run(path, "git", "config", "user.name", "melanoma-kd tests")
    run(path, "git", "config", "user.email", "tests@melanoma-kd.invalid")
    run(path, "dvc", "init", "-q")
    run(path, "dvc", "config", "core.check_update", "false")
    # Workspace outputs are hard links to the cache, not copies (committed in .dvc/config, so
    # clones inherit it): the test session's repos, clones and remote hold several GB of real-size
    # checkpoints and ONNX models, and copies doubled it. Safe because DVC removes a stage's
    # outputs before running it and every stage writes its outputs atomically (a new file).
    run(path, "dvc", "config", "cache.type", "hardlink")
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "pipeline")
    return path


def ran_stages(output: str) -> set[str]:
    """Stage names that ``dvc repro`` actually executed, from its output."""
    return {
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    }


def changed_stages(repo: Path) -> set[str]:
    """Stages ``dvc status`` reports as changed."""
    import json

    out = run(repo, "dvc", "status", "--json").stdout
    return set(json.loads(out or "{}"))
