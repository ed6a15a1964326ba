"""The tiny-profile pipeline, reproduced once per test session, in the background.

Every pipeline test reads one repo in which ``dvc repro`` ran the whole DAG on
``tests/profiles/tiny.yaml`` (tests that change it restore it or work on a clone). That run costs
minutes of mostly single-threaded CPU (stage scripts are Python imports and training on a few
dozen images), so :class:`TinyPipeline` starts it in a thread as the session starts and the unit
tests run meanwhile (``conftest.py`` moves the pipeline tests to the end of the session).

Once the repo is built and pushed to a local remote, the same thread goes on with the fresh-clone
run-cache check of ``tests/test_workflows.py``: a clone pulls the outputs and the run-cache and,
without ``dvc.lock``, reruns every stage with a git-tracked output. That is the second-longest
piece of the suite; started here it overlaps the other pipeline tests instead of following them.
What it printed is kept in a :class:`FreshClone` for the test to check.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from tests.dvc_repo import env, make_repo, ran_stages

CHECKPOINT = "models/student/scratch.pt"

# Stages with a ``cache: false`` output (metrics, plots, the report: files kept in git).
GIT_TRACKED_STAGES = (
    "import json; from dvc.repo import Repo; "
    "print(json.dumps(sorted(s.addressing for s in Repo('.').index.stages "
    "if any(not o.use_cache for o in s.outs))))"
)


@dataclass(frozen=True)
class Built:
    """The reproduced, committed repo and the local DVC remote it pushed to (with run-cache)."""

    repo: Path
    remote: Path


@dataclass(frozen=True)
class FreshClone:
    """A clone of the built repo after ``dvc pull --run-cache``, and what DVC did there."""

    repo: Path
    repro_with_lock: str  # stdout of ``dvc repro`` right after the pull
    checkpoint_restored: bool  # CHECKPOINT present after that repro
    git_tracked: set[str]  # stages with a ``cache: false`` output
    repro_without_lock: str  # stdout of ``dvc repro`` once dvc.lock was deleted
    committed_lock: str  # ``git show HEAD:dvc.lock``


class Cancelled(Exception):
    """The session ended before the background work did (or did not want it)."""


class TinyPipeline:
    """Builds the tiny repo, then (``fresh_clone=True``) the fresh clone, in one background
    thread; :meth:`close` stops it."""

    def __init__(self, root: Path, *, fresh_clone: bool = True) -> None:
        self.root = root
        self._with_fresh_clone = fresh_clone
        self._built: Future[Built] = Future()
        self._fresh: Future[FreshClone] = Future()
        self._lock = threading.Lock()
        self._stop = False
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._work, name="tiny-pipeline", daemon=True)

    def start(self) -> TinyPipeline:
        atexit.register(self.close)  # also when the session is interrupted
        self._thread.start()
        return self

    def built(self) -> Built:
        """Wait for the reproduced repo (re-raises what stopped the build)."""
        return self._built.result()

    def fresh_clone(self) -> FreshClone:
        """Wait for the fresh-clone run (re-raises what stopped it)."""
        return self._fresh.result()

    def close(self) -> None:
        """Stop the command still running, if any (its whole process group), and the thread."""
        with self._lock:
            self._stop = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        self._thread.join(timeout=60)

    # ------------------------------------------------------------------------------ the thread

    def _run(self, cwd: Path, *args: str) -> str:
        """``dvc_repo.run`` that :meth:`close` can stop: its stdout, or an error with the output."""
        with self._lock:
            if self._stop:
                raise Cancelled(" ".join(args))
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, stage scripts included
            )
            self._proc = proc
        out, err = proc.communicate()
        with self._lock:
            self._proc = None
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n--stdout--\n{out[-4000:]}"
                f"\n--stderr--\n{err[-4000:]}"
            )
        return out

    def _work(self) -> None:
        try:
            built = self._build()
        except Exception as exc:
            self._built.set_exception(exc)
            self._fresh.set_exception(exc)
            return
        self._built.set_result(built)
        if not self._with_fresh_clone:
            self._fresh.set_exception(Cancelled("no selected test needs the fresh clone"))
            return
        try:
            self._fresh.set_result(self._fresh_clone(built))
        except Exception as exc:
            self._fresh.set_exception(exc)

    def _build(self) -> Built:
        repo = make_repo(self.root / "repo")
        out = self._run(repo, "dvc", "repro")
        if "generate" not in ran_stages(out):
            raise AssertionError(f"dvc repro did not run the pipeline\n{out[-4000:]}")
        self._run(repo, "git", "add", "-A")
        self._run(repo, "git", "commit", "-qm", "tiny pipeline results")
        remote = self.root / "remote"
        remote.mkdir()
        self._run(repo, "dvc", "remote", "add", "-f", "-d", "local", str(remote))
        self._run(repo, "git", "commit", "-qam", "local remote")
        self._run(repo, "dvc", "push", "--run-cache")
        # Cloned before the tests start editing the repo's working tree.
        self._run(self.root, "git", "clone", "-q", str(repo), "fresh")
        return Built(repo, remote)

    def _fresh_clone(self, built: Built) -> FreshClone:
        repo = self.root / "fresh"
        self._run(repo, "dvc", "pull", "--run-cache")
        with_lock = self._run(repo, "dvc", "repro")
        restored = (repo / CHECKPOINT).is_file()
        git_tracked = set(json.loads(self._run(repo, "python", "-c", GIT_TRACKED_STAGES)))
        (repo / "dvc.lock").unlink()
        without_lock = self._run(repo, "dvc", "repro")
        committed = self._run(repo, "git", "show", "HEAD:dvc.lock")
        return FreshClone(repo, with_lock, restored, git_tracked, without_lock, committed)
