"""Start-up of a stage or CLI process: its imports run without Python's cyclic garbage collector.

A stage that trains or runs a network imports torch, torchvision (which pulls in
``torch._dynamo`` and SymPy) and timm: some 450,000 Python objects. While they are created the
collector runs over the growing heap again and again, and the interpreter's shutdown runs it over
all of them once more. On the 2-core development host that was about 2 s of the 5.6 s a training
stage spent importing and exiting (``benchmarks/stage_imports.py`` prints the ratio, stage by
stage). What an import creates is not garbage. So in a ``stages/<name>.py`` or ``melanoma-kd``
process, :func:`pause_for_imports` (run by ``import melanoma_kd``, before the program's other
imports) switches the collector off, and :func:`imports_done` (run by
:func:`melanoma_kd.errors.cli_entry` as ``main`` starts) moves every object alive by then to the
permanent generation (:func:`gc.freeze`), which later collections and the shutdown skip, and
switches the collector back on; :func:`main_done` freezes what ``main`` left alive. Results do
not change: reference counting still frees every object that is not in a cycle.

Any other process (the tests, a notebook, a script that imports the package) is left alone.
``MELANOMA_KD_IMPORT_GC=1`` keeps the collector on in a stage too (the benchmark's baseline).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

ENV = "MELANOMA_KD_IMPORT_GC"
_paused = False  # this process's imports ran with the collector paused


def is_own_program(argv0: str) -> bool:
    """Whether ``argv0`` (``sys.argv[0]``) is a pipeline stage script, ``stages/<name>.py``, or
    the ``melanoma-kd`` command."""
    path = Path(argv0)
    return (path.suffix == ".py" and path.parent.name == "stages") or path.name == "melanoma-kd"


def pause_for_imports() -> None:
    """Switch the collector off in a stage or CLI process (see the module docstring)."""
    global _paused
    if _paused or os.environ.get(ENV, "0") == "1" or not gc.isenabled():
        return
    if sys.argv and is_own_program(sys.argv[0]):
        gc.disable()
        _paused = True


def imports_done() -> None:
    """Freeze what the imports created and switch the collector back on (only where
    :func:`pause_for_imports` paused it)."""
    if _paused and not gc.isenabled():
        gc.freeze()
        gc.enable()


def main_done() -> None:
    """Freeze what ``main`` left alive, so the shutdown does not scan it (only where
    :func:`pause_for_imports` paused the collector)."""
    if _paused:
        gc.freeze()
