"""The suite's background-job runner (``tests/background.py``): results and failures reach the
waiting test, a job's commands get the priority asked for, and closing stops what still runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.background import Background, Cancelled, Runner, job_count


def test_a_result_and_a_failure_reach_the_future(tmp_path: Path) -> None:
    jobs = Background(2)
    try:
        ok = jobs.submit(lambda r: r.run(tmp_path, "sh", "-c", "echo built"))
        bad = jobs.submit(lambda r: r.run(tmp_path, "sh", "-c", "echo oops >&2; exit 3"))
        assert ok.result(timeout=30) == "built\n"
        with pytest.raises(AssertionError, match=r"exited 3(.|\n)*oops"):
            bad.result(timeout=30)
    finally:
        jobs.close()


def test_a_job_runs_at_the_priority_asked_for(tmp_path: Path) -> None:
    jobs = Background(1)
    try:
        niceness = "ps -o ni= -p $$"
        low = jobs.submit(lambda r: r.run(tmp_path, "sh", "-c", niceness), nice=5)
        normal = jobs.submit(lambda r: r.run(tmp_path, "sh", "-c", niceness))
        base = int(normal.result(timeout=30))
        assert int(low.result(timeout=30)) == min(base + 5, 19)
    finally:
        jobs.close()


def test_close_stops_a_running_command_and_drops_queued_jobs(tmp_path: Path) -> None:
    jobs = Background(1)
    marker = tmp_path / "child.pid"

    def long_job(runner: Runner) -> str:
        # a child of the command: it must die with the process group
        return runner.run(tmp_path, "sh", "-c", f"sleep 60 & echo $! > {marker}; wait")

    running = jobs.submit(long_job)
    queued = jobs.submit(lambda r: r.run(tmp_path, "true"))
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    jobs.close()
    assert time.monotonic() - start < 20  # not the 60 s sleep
    with pytest.raises(AssertionError, match="exited -15"):  # SIGTERM
        running.result(timeout=5)
    assert queued.cancelled()
    child = Path(f"/proc/{int(marker.read_text())}/stat")
    deadline = time.monotonic() + 10  # SIGTERM is delivered, not yet acted on, when close returns
    while child.exists() and " Z " not in child.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.exists() or " Z " in child.read_text(), "the command's child survived"
    with pytest.raises(Cancelled):
        Runner(jobs).run(tmp_path, "true")


def test_the_worker_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MELANOMA_KD_TEST_JOBS", "3")
    assert job_count() == 3
    monkeypatch.setenv("MELANOMA_KD_TEST_JOBS", "zero")
    with pytest.raises(ValueError, match="MELANOMA_KD_TEST_JOBS='zero'"):
        job_count()
