"""Retrained variants of the students: seed replicates and the transfer-set ablation.

Seed replicates: the scratch student and the validation-selected KD point, retrained per seed.
The ablation: the selected KD point retrained without its transfer set.

A replicate differs from its main run (``train_student`` / ``distill@<point>``) **only** by the
seed of model initialisation and of the shuffle order. Everything else is the main run's:
the data, the recipe (``train``, ``augment``, ``models``, ``student``) and — on purpose — the
augmentation seed, which stays ``train.seed``. The cached teacher outputs
(``data/teacher_outputs.h5``) are indexed by ``(epoch, train index)`` of the views made with
``train.seed``; keeping that seed keeps them exactly the teacher's view of each sample the
replicate trains on, so no second teacher pass is needed.

The replicate seeds live in their own params section (``replicates.seeds``), not in ``train``:
``train`` is a dependency of every training stage, and editing the list of replicate seeds must
not rerun them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from melanoma_kd.catalog import KDPoint
from melanoma_kd.config import Params
from melanoma_kd.distill import METHODS, Objective, Supervised
from melanoma_kd.errors import UserError
from melanoma_kd.runs import RunPaths, params_hash, run_training, transfer_meta

Kind = Literal["scratch", "kd"]
KINDS: tuple[Kind, ...] = ("scratch", "kd")
# The param sections a student run's checkpoint hash covers (train_student and distill stages).
RUN_SECTIONS: tuple[str, ...] = ("train", "augment", "models", "student")


def replicate_hash(
    params: Params, seed: int, point: KDPoint | None = None, use_transfer: bool = True
) -> str:
    """Checkpoint params hash of a run: the main run's hash plus the seed when it differs.

    With ``seed == train.seed`` this is exactly the hash the ``train_student`` (no ``point``) and
    ``distill`` stages record, so replicate and main run differ by the seed and nothing else.
    ``use_transfer=False`` is the hash of the KD point trained without its transfer set.
    """
    extra: dict[str, Any] = (
        {**point.as_meta(), **transfer_meta(params, use_transfer)} if point is not None else {}
    )
    if seed != params.train.seed:
        extra["replicate_seed"] = seed
    return params_hash(params, *RUN_SECTIONS, extra=extra)


def kd_objective(
    params: Params, point: KDPoint, feature_dims: list[int]
) -> Callable[[torch.nn.Module, torch.nn.Module], Objective]:
    """``make_objective`` for a KD point, built the way the distill stage builds it."""
    make = functools.partial(
        METHODS[point.method],
        temperature=point.temperature,
        alpha=point.alpha,
        n_stages=params.distill.feature_stages,
        teacher_dims=feature_dims,
        image_size=params.student.image_size,
    )
    return lambda student, loss: make(student, loss)


def train_replicate(
    params: Params,
    kind: Kind,
    seed: int,
    *,
    cache_dir: Path,
    paths: RunPaths,
    point: KDPoint | None = None,
    teacher_outputs: Path | None = None,
    transfer: Path | None = None,
) -> dict[str, Any]:
    """Train one replicate (``kind`` scratch or kd) with init/shuffle ``seed``; a kd replicate
    uses the ``transfer`` set as its main run does (when ``distill.transfer_images`` > 0)."""
    if seed == params.train.seed:
        raise UserError(f"replicate: seed {seed} is train.seed; that run is the main run")
    if kind == "scratch":
        point = None  # the scratch run has no KD point (nor is one part of its hash)
    meta: dict[str, Any] = {"seed": seed, "params_hash": replicate_hash(params, seed, point)}
    if kind == "scratch":
        make: Callable[[torch.nn.Module, torch.nn.Module], Objective] = Supervised
        meta["role"] = "student"
        desc = f"replicate seed {seed}: scratch"
    elif kind == "kd":
        if point is None or teacher_outputs is None:
            raise UserError(
                "replicate: a kd replicate needs the selected point and teacher outputs"
            )
        from melanoma_kd.teacher_outputs import teacher_feature_dims

        make = kd_objective(params, point, teacher_feature_dims(teacher_outputs))
        meta.update(role="distilled", **point.as_meta(), **transfer_meta(params))
        desc = f"replicate seed {seed}: KD {point.key}"
    else:
        raise UserError(f"replicate: unknown kind {kind!r} (known: {list(KINDS)})")
    return _student_run(
        params,
        cache_dir=cache_dir,
        paths=paths,
        make=make,
        meta=meta,
        desc=desc,
        seed=seed,
        teacher_outputs=teacher_outputs if kind == "kd" else None,
        transfer=transfer if kind == "kd" and params.distill.transfer_images else None,
    )


def train_without_transfer(
    params: Params, point: KDPoint, *, cache_dir: Path, paths: RunPaths, teacher_outputs: Path
) -> dict[str, Any]:
    """The transfer-set ablation: the selected KD point retrained on the labelled train split
    only (same seed, recipe and teacher outputs; the transfer views are simply not drawn)."""
    from melanoma_kd.teacher_outputs import teacher_feature_dims

    meta = {
        "role": "distilled",
        **point.as_meta(),
        "transfer_images": 0,
        "params_hash": replicate_hash(params, params.train.seed, point, use_transfer=False),
    }
    return _student_run(
        params,
        cache_dir=cache_dir,
        paths=paths,
        make=kd_objective(params, point, teacher_feature_dims(teacher_outputs)),
        meta=meta,
        desc=f"KD {point.key} without transfer set",
        teacher_outputs=teacher_outputs,
    )


def _student_run(
    params: Params,
    *,
    cache_dir: Path,
    paths: RunPaths,
    make: Callable[[torch.nn.Module, torch.nn.Module], Objective],
    meta: dict[str, Any],
    desc: str,
    seed: int | None = None,
    teacher_outputs: Path | None = None,
    transfer: Path | None = None,
) -> dict[str, Any]:
    """One student run with the student recipe (arch, epochs, lr, size) of ``params``."""
    s = params.student
    return run_training(
        params,
        arch=s.arch,
        schedule_epochs=s.epochs,
        lr=s.lr,
        image_size=s.image_size,
        cache_dir=cache_dir,
        paths=paths,
        make_objective=make,
        extra_meta=meta,
        teacher_outputs=teacher_outputs,
        desc=desc,
        seed=seed,
        transfer=transfer,
    )
