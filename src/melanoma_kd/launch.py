"""Run training as ``train.nproc`` processes: relaunch under torchrun, join the process group.

A training stage calls :func:`torchrun_if_needed` once its params are checked. With
``train.nproc > 1`` and not yet inside torchrun, it runs the same script with the same arguments
as ``torchrun --standalone --nproc-per-node N`` would, and hands back the exit code. torchrun's
launcher runs in this process, so a failed worker ends the stage with that worker's one-line
error and exit code instead of torchrun's report. Each worker's ``run_training`` then joins the
process group (:func:`join_process_group`: gloo on CPU, NCCL on CUDA). ``train.nproc`` is the
total number of processes (the world size): a multi-node torchrun started by hand must agree
with it. With ``train.nproc: 1`` nothing here does anything.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed import run as torchrun_cli
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from melanoma_kd.config import TrainParams
from melanoma_kd.errors import UserError


def in_torchrun() -> bool:
    """True in a process started by torchrun."""
    return "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """True for rank 0 (and for a plain single process): the only one that writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def threads_per_process(num_threads: int) -> int:
    """``num_threads`` shared by the training processes on this machine (at least 1 each)."""
    return max(1, num_threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def torchrun_args(nproc: int, argv: list[str]) -> list[str]:
    """torchrun arguments running script ``argv[0]`` with arguments ``argv[1:]`` as ``nproc``
    processes on this machine."""
    return ["--standalone", f"--nproc-per-node={nproc}", *argv]


def torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``argv`` (a script and its arguments) under torchrun as ``nproc`` processes; 0, or
    the exit code of the first process that failed (its error is already on stderr)."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun_cli.run(torchrun_cli.parse_args(torchrun_args(nproc, argv)))
    except ChildFailedError as exc:
        code = exc.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # killed by signal -code
    return 0


def torchrun_if_needed(cfg: TrainParams, argv: list[str] | None = None) -> int | None:
    """Run this script under torchrun when ``cfg.nproc > 1`` and return torchrun's exit code;
    ``None`` when this process should train itself (``nproc`` 1, or already a worker)."""
    if cfg.nproc == 1 or in_torchrun():
        return None
    # torchrun would otherwise set it to 1 with a warning; each worker sets its own thread count.
    os.environ["OMP_NUM_THREADS"] = str(max(1, cfg.num_threads // cfg.nproc))
    return torchrun(cfg.nproc, list(sys.argv if argv is None else argv))


def join_process_group(nproc: int) -> None:
    """Join the DDP process group (nothing for a single process), checking that torchrun
    started ``train.nproc`` processes.

    Joined once per process and destroyed when the process exits: a stage may train more than
    once, and a default group re-created under torchrun's store hangs at its first collective.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != nproc:
        raise UserError(
            f"train.nproc is {nproc} but {world} training process(es) were started; run the "
            f"stage script itself (it starts torchrun) or set train.nproc to {world}"
        )
    if world == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(dist.destroy_process_group)
