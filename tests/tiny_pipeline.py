"""The tiny-profile pipeline, reproduced once per test session, in the background.

Every pipeline test reads one repo in which ``dvc repro`` ran the whole DAG on
``tests/profiles/tiny.yaml`` (tests that change it restore it or work on a clone). That run costs
minutes of mostly single-threaded CPU (stage scripts are Python imports and training on a few
dozen images), so :class:`TinyPipeline` submits it as a job of the session's
:class:`~tests.background.Background` as the session starts and the unit tests run meanwhile
(``conftest.py`` moves the pipeline tests to the end of the session).

Once the repo is built and pushed to a local remote, the same job goes on with the fresh-clone
run-cache check of ``tests/test_workflows.py``: a clone pulls the outputs and the run-cache and,
without ``dvc.lock``, reproduces :data:`FRESH_TARGET` and what it depends on: the stages with a
git-tracked output rerun, the others are restored from the run-cache. The target is the first
trained model, so both kinds are in its chain and the training stage reads restored data. (The
whole DAG took as long as the build itself, ~220 CPU s, for the same check of every stage, which
``make verify`` makes on the default pipeline in a fresh clone anyway; this chain takes ~30.)
Started here it overlaps the other pipeline tests instead of following them. What it printed is
kept in a :class:`FreshClone` for the test to check.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.background import Background, Cancelled, Runner
from tests.dvc_repo import make_repo, ran_stages

T = TypeVar("T")

CHECKPOINT = "models/student/scratch.pt"
FRESH_TARGET = "train_student"  # reproduced without dvc.lock in the fresh clone

# The target's stage and every stage it depends on, and which of those have a ``cache: false``
# output (metrics, plots, the report: files kept in git), as DVC's own graph says.
CHAIN = (
    "import json, sys, networkx as nx; from dvc.repo import Repo; index = Repo('.').index; "
    "target = next(s for s in index.stages if s.addressing == sys.argv[1]); "
    "chain = [target, *nx.descendants(index.graph, target)]; "
    "print(json.dumps({'chain': sorted(s.addressing for s in chain), "
    "'git_tracked': sorted(s.addressing for s in chain if any(not o.use_cache for o in s.outs))}))"
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
    chain: set[str]  # FRESH_TARGET and the stages it depends on
    git_tracked: set[str]  # those of them with a ``cache: false`` output
    repro_without_lock: str  # stdout of ``dvc repro FRESH_TARGET`` once dvc.lock was deleted
    committed_lock: str  # ``git show HEAD:dvc.lock``


class TinyPipeline:
    """Builds the tiny repo, then (``fresh_clone=True``) the fresh clone, as one job of a
    :class:`~tests.background.Background` (the clone needs the build)."""

    def __init__(self, root: Path, *, fresh_clone: bool = True) -> None:
        self.root = root
        self._with_fresh_clone = fresh_clone
        self._built: Future[Built] = Future()
        self._fresh: Future[FreshClone] = Future()
        self._job: Future[None] | None = None

    def start(self, background: Background) -> TinyPipeline:
        self._job = background.submit(self._work)
        return self

    def built(self) -> Built:
        """Wait for the reproduced repo (re-raises what stopped the build)."""
        return self._wait(self._built)

    def fresh_clone(self) -> FreshClone:
        """Wait for the fresh-clone run (re-raises what stopped it)."""
        return self._wait(self._fresh)

    def _wait(self, future: Future[T]) -> T:
        if self._job is not None and self._job.cancelled():  # the session closed first
            raise Cancelled("the tiny pipeline job never started")
        return future.result()

    # ------------------------------------------------------------------------------ the job

    def _work(self, runner: Runner) -> None:
        try:
            built = self._build(runner)
        except Exception as exc:
            self._built.set_exception(exc)
            self._fresh.set_exception(exc)
            return
        self._built.set_result(built)
        if not self._with_fresh_clone:
            self._fresh.set_exception(Cancelled("no selected test needs the fresh clone"))
            return
        try:
            self._fresh.set_result(self._fresh_clone(runner, built))
        except Exception as exc:
            self._fresh.set_exception(exc)

    def _build(self, runner: Runner) -> Built:
        run = runner.run
        repo = make_repo(self.root / "repo")
        out = run(repo, "dvc", "repro")
        if "generate" not in ran_stages(out):
            raise AssertionError(f"dvc repro did not run the pipeline\n{out[-4000:]}")
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", "tiny pipeline results")
        remote = self.root / "remote"
        remote.mkdir()
        run(repo, "dvc", "remote", "add", "-f", "-d", "local", str(remote))
        run(repo, "git", "commit", "-qam", "local remote")
        run(repo, "dvc", "push", "--run-cache")
        # Cloned before the tests start editing the repo's working tree.
        run(self.root, "git", "clone", "-q", str(repo), "fresh")
        return Built(repo, remote)

    def _fresh_clone(self, runner: Runner, built: Built) -> FreshClone:
        run = runner.run
        repo = self.root / "fresh"
        run(repo, "dvc", "pull", "--run-cache")
        with_lock = run(repo, "dvc", "repro")
        restored = (repo / CHECKPOINT).is_file()
        stages = json.loads(run(repo, "python", "-c", CHAIN, FRESH_TARGET))
        (repo / "dvc.lock").unlink()
        without_lock = run(repo, "dvc", "repro", FRESH_TARGET)
        committed = run(repo, "git", "show", "HEAD:dvc.lock")
        return FreshClone(
            repo,
            with_lock,
            restored,
            set(stages["chain"]),
            set(stages["git_tracked"]),
            without_lock,
            committed,
        )
