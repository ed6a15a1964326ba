"""Long ``dvc repro`` runs that pipeline tests check, started as the session starts.

The slow part of the suite is a handful of whole-pipeline reproductions (the tiny profile, then
its fresh clone; each published recipe at toy size). They are mostly single-threaded Python, so
:class:`Background` runs them as jobs on a few worker threads (``MELANOMA_KD_TEST_JOBS``, default
2) while the unit tests run in the main thread; a test then waits on the job's
:class:`~concurrent.futures.Future` and checks what it built. ``conftest.py`` submits only the
jobs a selected test needs, in the order the tests will want them, and orders those tests last.

Every command a job runs goes through :meth:`Runner.run`, in its own process group, so that
:meth:`Background.close` (at the end of the session, or when it is interrupted) stops it and the
stage scripts it started. A job may run at a lower CPU priority (``nice``): the tiny pipeline
heads the suite's longest chain (its build, then the tests that read it), the recipe runs can
wait; the process group stays in pytest's session, so the priority counts against the rest of
the suite (Linux's autogroup scheduling shares the CPU equally between sessions).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tests.dvc_repo import env

T = TypeVar("T")

JOBS_ENV = "MELANOMA_KD_TEST_JOBS"


class Cancelled(Exception):
    """The session ended before the background work did (or did not want it)."""


def job_count() -> int:
    """Worker threads: ``$MELANOMA_KD_TEST_JOBS``, else 2 (one per core of the CI host)."""
    raw = os.environ.get(JOBS_ENV, "2")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{JOBS_ENV}={raw!r}: expected a whole number >= 1")
    return int(raw)


class Runner:
    """Runs a job's commands; refuses new ones once the session is closing."""

    def __init__(self, owner: Background, nice: int = 0) -> None:
        self._owner = owner
        self._nice = nice

    def run(self, cwd: Path, *args: str) -> str:
        """``args`` in ``cwd`` with :func:`tests.dvc_repo.env`: its stdout, or an
        :class:`AssertionError` carrying the end of its output when it exits non-zero."""
        command = ("nice", "-n", str(self._nice), *args) if self._nice else args
        proc = self._owner._spawn(cwd, command)
        try:
            out, err = proc.communicate()
        finally:
            self._owner._forget(proc)
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n--stdout--\n{out[-4000:]}"
                f"\n--stderr--\n{err[-4000:]}"
            )
        return out


class Background:
    """A small pool of worker threads for whole-pipeline jobs (first submitted, first started)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or job_count()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pipeline-job")
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()
        self._stopping = False
        atexit.register(self.close)  # also when the session is interrupted

    def submit(self, job: Callable[[Runner], T], nice: int = 0) -> Future[T]:
        """Queue ``job(runner)``, its commands at CPU priority ``nice``; its result (or
        exception) arrives in the returned future."""
        return self._pool.submit(job, Runner(self, nice))

    def close(self) -> None:
        """Stop every command still running (its whole process group) and drop queued jobs."""
        with self._lock:
            self._stopping = True
            live = list(self._live)
        for proc in live:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _spawn(self, cwd: Path, args: tuple[str, ...]) -> subprocess.Popen[str]:
        with self._lock:
            if self._stopping:
                raise Cancelled(" ".join(args))
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                process_group=0,  # its own process group (stage scripts included), same session
            )
            self._live.add(proc)
        return proc

    def _forget(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.discard(proc)
