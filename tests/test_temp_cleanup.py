"""The session's clean-up of earlier sessions' temporary folders (``tests/conftest.py``): finished
or crashed sessions' folders go, a running session's folder and this session's stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import _drop_earlier_sessions


class _Factory:
    """Just what the clean-up asks of a ``pytest.TempPathFactory``."""

    def __init__(self, base: Path) -> None:
        self._base = base

    def getbasetemp(self) -> Path:
        return self._base


def _session(root: Path, number: int, lock_age_s: float | None) -> Path:
    folder = root / f"pytest-{number}"
    (folder / "repo").mkdir(parents=True)
    (folder / "repo" / "model.pt").write_bytes(b"x" * 1024)
    if lock_age_s is not None:
        lock = folder / ".lock"
        lock.write_text("4242")
        then = time.time() - lock_age_s
        os.utime(lock, (then, then))
    return folder


def test_earlier_sessions_go_a_running_one_and_this_one_stay(tmp_path: Path) -> None:
    finished = _session(tmp_path, 7, lock_age_s=None)  # pytest removes the lock at exit
    crashed = _session(tmp_path, 8, lock_age_s=4 * 24 * 3600)  # lock older than pytest's 3 days
    running = _session(tmp_path, 9, lock_age_s=60)
    current = _session(tmp_path, 10, lock_age_s=0)
    _drop_earlier_sessions(_Factory(current))  # type: ignore[arg-type]
    assert not finished.exists()
    assert not crashed.exists()
    assert (running / "repo" / "model.pt").is_file()
    assert (current / "repo" / "model.pt").is_file()


def test_a_given_basetemp_is_not_a_session_folder(tmp_path: Path) -> None:
    other = _session(tmp_path, 3, lock_age_s=None)
    given = tmp_path / "chosen"
    given.mkdir()
    _drop_earlier_sessions(_Factory(given))  # type: ignore[arg-type]
    assert other.is_dir()
