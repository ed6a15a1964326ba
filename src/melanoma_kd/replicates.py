"""Retrained variants of the students: seed replicates and the transfer-set ablation.

Seed replicates: the scratch student and the validation-selected KD point with and without its
transfer set, retrained per seed. The ablation at the main seed: the selected KD point retrained
without its transfer set.

A replicate differs from its main run (``train_student`` / ``distill@<point>``) **only** by the
seed of model initialisation and of the shuffle order. Everything else is the main run's:
the data, the recipe (``train``, ``augment``, ``models``, ``student``) and — on purpose — the
augmentation seed, which stays ``train.seed``. The cached teacher outputs
(``data/teacher_outputs.h5``) are indexed by ``(epoch, train index)`` of the views made with
``train.seed``; keeping that seed keeps them exactly the teacher's view of each sample the
replicate trains on, so no second teacher pass is needed.

What each run is (hash, recorded metadata, objective) is :func:`melanoma_kd.runs.student_run`'s
definition, the same one the main runs use.

The replicate seeds live in their own params section (``replicates.seeds``), not in ``train``:
``train`` is a dependency of every training stage, and editing the list of replicate seeds must
not rerun them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from melanoma_kd.config import Params
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path
from melanoma_kd.points import KDPoint
from melanoma_kd.runs import RunPaths, student_run, train

Kind = Literal["scratch", "kd", "no_transfer"]
KINDS: tuple[Kind, ...] = ("scratch", "kd", "no_transfer")


def replicate_hash(
    params: Params, seed: int, point: KDPoint | None = None, use_transfer: bool = True
) -> str:
    """Checkpoint params hash of a run: the main run's hash plus the seed when it differs.

    With ``seed == train.seed`` this is exactly the hash the ``train_student`` (no ``point``) and
    ``distill`` stages record, so replicate and main run differ by the seed and nothing else.
    ``use_transfer=False`` is the hash of the KD point trained without its transfer set.
    """
    return student_run(params, point, seed=seed, use_transfer=use_transfer).params_hash


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
    """Train one replicate with init/shuffle ``seed``: ``kind`` scratch, kd (the selected point,
    with the ``transfer`` set as its main run when ``distill.transfer_images`` > 0) or
    no_transfer (the selected point without it: the transfer-set ablation at this seed)."""
    if seed == params.train.seed:
        raise UserError(f"replicate: seed {seed} is train.seed; that run is the main run")
    if kind not in KINDS:
        raise UserError(f"replicate: unknown kind {kind!r} (known: {list(KINDS)})")
    if kind != "scratch" and (point is None or teacher_outputs is None):
        raise UserError(
            f"replicate: a {kind} replicate needs the selected point and teacher outputs"
        )
    run = student_run(
        params, None if kind == "scratch" else point, seed=seed, use_transfer=kind == "kd"
    )
    return train(
        params,
        run,
        cache_dir=cache_dir,
        paths=paths,
        teacher_outputs=teacher_outputs,
        transfer=transfer,
    )


def trains_without_transfer(params: Params) -> bool:
    """Whether a "without transfer set" run is a training of its own. With
    ``distill.transfer_images`` 0 every KD run already trains without one, so that run would
    repeat its KD run exactly: it is copied from it instead (:func:`copy_run`)."""
    return params.distill.transfer_images > 0


def copy_run(src: RunPaths, dst: RunPaths) -> None:
    """``dst`` as a byte copy of run ``src`` (checkpoint, summary, validation predictions and
    curves), each written atomically."""
    for a, b in ((src.checkpoint, dst.checkpoint), (src.summary, dst.summary)):
        with atomic_path(b) as tmp:
            shutil.copyfile(a, tmp)
    with atomic_path(dst.val_predictions) as tmp:
        shutil.copyfile(src.val_predictions, tmp)
    with atomic_path(dst.live_dir, directory=True) as tmp:
        shutil.copytree(src.live_dir, tmp, dirs_exist_ok=True)


def train_without_transfer(
    params: Params, point: KDPoint, *, cache_dir: Path, paths: RunPaths, teacher_outputs: Path
) -> dict[str, Any]:
    """The transfer-set ablation: the selected KD point retrained on the labelled train split
    only (same seed, recipe and teacher outputs; the transfer views are simply not drawn)."""
    run = student_run(params, point, use_transfer=False)
    return train(params, run, cache_dir=cache_dir, paths=paths, teacher_outputs=teacher_outputs)
