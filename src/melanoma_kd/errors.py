"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback wall."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from melanoma_kd import stage_clock, startup

F = TypeVar("F", bound=Callable[..., object])

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input (file, row, field or parameter) that the user must fix."""


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cli_entry(func: F) -> F:
    """Wrap a stage/CLI ``main``: a :class:`UserError` prints one line and exits 2."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        # SIGTERM unwinds like Ctrl-C, so atomic writers delete their temporary files.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        startup.imports_done()  # a stage process: the collector is back on from here
        try:
            result = func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        startup.main_done()
        stage_clock.record()  # only when make repro asks for it (never into DVC outputs)
        return result

    return wrapper  # type: ignore[return-value]
