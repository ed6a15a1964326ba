"""What each stage process records about its own CPU and wall time, when asked.

Timings are not reproducible, so they are kept out of every DVC output: when the environment
names a log file (:data:`ENV`, set by ``make repro``), each stage process appends one JSON line
when it ends (:func:`record`, called by :func:`melanoma_kd.errors.cli_entry`). CPU time is user +
system of the process and of its finished children (the parallel hair-removal workers), imports
included. The table by part of the pipeline is :mod:`melanoma_kd.stage_times`, which no stage
imports: regrouping the parts reruns no stage.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

ENV = "MELANOMA_KD_STAGE_TIMES"
_START = time.monotonic()


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def record() -> None:
    """Append this process's stage, CPU and wall seconds to the log the environment names."""
    log = os.environ.get(ENV)
    if not log:
        return
    entry = {
        "stage": Path(sys.argv[0]).stem,
        "args": " ".join(sys.argv[1:]),
        "cpu_s": round(_cpu_seconds(), 2),
        "wall_s": round(time.monotonic() - _START, 2),
    }
    with open(log, "a") as handle:  # one short line per process: appends do not interleave
        handle.write(json.dumps(entry) + "\n")
