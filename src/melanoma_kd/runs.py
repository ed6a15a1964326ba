"""One training run end to end: what it is (:class:`Run`), then datasets → objective → fit →
checkpoint, metrics, curves.

A run's identity — recipe, objective (supervised or a KD grid point), params hash, recorded
metadata and name — is built here and nowhere else: :func:`teacher_run` and :func:`student_run`
(the scratch student, a KD point, a seed replicate of either, the KD point without its transfer
set) are what the ``train_teacher``, ``train_student``, ``distill``, ``replicate`` and
``transfer_ablation`` stages and the benchmarks train with :func:`train`. Outputs of a run
named ``<group>/<name>``: ``models/<group>/<name>.pt``, ``metrics/<group>/<name>/summary.json``
(flat), the validation predictions used later for threshold selection, and dvclive curves under
``.../live``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from melanoma_kd.config import Params
from melanoma_kd.data.dataset import (
    CacheDataset,
    TrainWithTransfer,
    class_weights,
    training_set,
)
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.distill import METHODS, Objective, Supervised
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path, sha256_json, write_json
from melanoma_kd.launch import is_main_process, join_process_group, threads_per_process
from melanoma_kd.losses import task_loss
from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD, build_model, save_checkpoint
from melanoma_kd.points import KDPoint
from melanoma_kd.train import EpochLogger, Schedule, TeacherOutputs, fit, set_determinism

log = logging.getLogger(__name__)

MakeObjective = Callable[[torch.nn.Module, torch.nn.Module], Objective]
# The param sections a run's params hash covers (and its stage lists in dvc.yaml).
TEACHER_SECTIONS: tuple[str, ...] = ("train", "augment", "models")
STUDENT_SECTIONS: tuple[str, ...] = ("train", "augment", "models", "student")


@dataclass(frozen=True)
class RunPaths:
    """Where one run writes."""

    checkpoint: Path
    metrics_dir: Path

    @property
    def summary(self) -> Path:
        return self.metrics_dir / "summary.json"

    @property
    def val_predictions(self) -> Path:
        return self.metrics_dir / "val_predictions.csv"

    @property
    def live_dir(self) -> Path:
        return self.metrics_dir / "live"


def params_hash(params: Params, *sections: str, extra: dict[str, Any] | None = None) -> str:
    """Hash of the param sections (and extra settings) a run depends on."""
    data = {s: getattr(params, s).model_dump() for s in sections}
    if data.get("train", {}).get("nproc") == 1:
        del data["train"]["nproc"]  # added later: left out at 1, so earlier hashes still hold
    return sha256_json({**data, **(extra or {})})[:16]


def transfer_meta(params: Params, use_transfer: bool = True) -> dict[str, Any]:
    """What a KD run records (and hashes) about its transfer set: nothing when it has none."""
    n = params.distill.transfer_images if use_transfer else 0
    return {"transfer_images": n} if n else {}


@dataclass(frozen=True)
class Run:
    """What one training run is: the model and schedule it trains, its objective, and the
    metadata (``record``, params hash included) its checkpoint and summary carry, in order.

    ``point`` is the KD grid point (``None``: supervised); ``seed`` a seed replicate's
    init/shuffle seed (``None``: ``train.seed``); ``uses_transfer`` whether the transfer set is
    appended to the training set.
    """

    desc: str
    arch: str
    epochs: int
    lr: float
    image_size: int
    record: dict[str, Any]
    point: KDPoint | None = None
    seed: int | None = None
    uses_transfer: bool = False

    @property
    def params_hash(self) -> str:
        return self.record["params_hash"]


def _variant(params: Params, seed: int | None, hair: str | None) -> tuple[dict[str, Any], str]:
    """What a seed replicate (``seed`` other than ``train.seed``) and a hair-removal ablation arm
    (``hair``: the preprocessing its images had) add to a run's hash and record, and to its
    description."""
    extra: dict[str, Any] = {}
    desc = []
    if seed is not None and seed != params.train.seed:
        extra["replicate_seed"] = seed
        desc.append(f"seed {seed}")
    if hair is not None:
        extra["hair_arm"] = hair
        desc.append(f"hair arm {hair}")
    return extra, ", ".join(desc)


def teacher_run(
    params: Params, arch: str, *, seed: int | None = None, hair: str | None = None
) -> Run:
    """One teacher (``train_teacher@<arch>``); with ``seed`` other than ``train.seed`` a seed
    replicate of it (``teacher_replicate``), with ``hair`` trained on an ablation arm's images
    (``hair_teacher``)."""
    t = params.teachers
    schedule = {"arch": arch, "epochs": t.epochs, "lr": t.lr, "size": t.image_size}
    variant, label = _variant(params, seed, hair)
    digest = params_hash(params, *TEACHER_SECTIONS, extra=schedule | variant)
    record = {"role": "teacher", **variant, "params_hash": digest}
    desc = f"teacher {arch}" + (f" ({label})" if label else "")
    replicate = seed if "replicate_seed" in variant else None
    return Run(desc, arch, t.epochs, t.lr, t.image_size, record, seed=replicate)


def student_run(
    params: Params,
    point: KDPoint | None = None,
    *,
    seed: int | None = None,
    use_transfer: bool = True,
    hair: str | None = None,
) -> Run:
    """A student run: from scratch (no ``point``) or distilled at ``point``.

    ``seed`` other than ``train.seed`` makes it a seed replicate: only the init/shuffle seed
    differs from the main run, and the hash adds it. ``use_transfer=False`` is a KD point
    trained without its transfer set (the ablation); with ``distill.transfer_images`` 0 every KD
    run is. ``hair`` (scratch only) is the student of a hair-removal ablation arm
    (``hair_student``), trained on that arm's images.
    """
    replicate = seed is not None and seed != params.train.seed
    extra: dict[str, Any] = {}
    record: dict[str, Any] = {"seed": seed} if replicate else {}
    if hair is not None and point is not None:
        raise UserError("a hair-removal ablation arm trains the scratch student only")
    if hair is not None:
        record |= {"role": "student", "hair_arm": hair}
        extra["hair_arm"] = hair
        desc = f"hair arm {hair}, seed {params.train.seed if seed is None else seed}: scratch"
    elif point is None:
        record["role"] = "student"
        desc = f"replicate seed {seed}: scratch" if replicate else "student (scratch)"
    else:
        transfer = transfer_meta(params, use_transfer)
        extra = {**point.as_meta(), **transfer}
        record |= {"role": "distilled", **point.as_meta()}
        record |= transfer if use_transfer else {"transfer_images": 0}
        if replicate:
            desc = f"replicate seed {seed}: KD {point.key}"
        elif use_transfer:
            desc = f"distill {point.key}"
        else:
            desc = f"KD {point.key} without transfer set"
    if replicate:
        extra["replicate_seed"] = seed
    record["params_hash"] = params_hash(params, *STUDENT_SECTIONS, extra=extra)
    s = params.student
    return Run(
        desc,
        s.arch,
        s.epochs,
        s.lr,
        s.image_size,
        record,
        point,
        seed if replicate else None,
        point is not None and bool(transfer_meta(params, use_transfer)),
    )


def kd_objective(params: Params, point: KDPoint, feature_dims: list[int]) -> MakeObjective:
    """``make_objective`` of a KD point (its method, T and alpha; feature KD's taps/adapters)."""
    make = functools.partial(
        METHODS[point.method],
        temperature=point.temperature,
        alpha=point.alpha,
        n_stages=params.distill.feature.stages,
        teacher_dims=feature_dims,
        image_size=params.student.image_size,
    )
    return lambda student, loss: make(student, loss)


def train(
    params: Params,
    run: Run,
    *,
    cache_dir: Path,
    paths: RunPaths,
    teacher_outputs: Path | None = None,
    transfer: Path | None = None,
) -> dict[str, Any]:
    """Train ``run``: supervised, or its KD point on the cached ``teacher_outputs`` (and the
    ``transfer`` set when the run uses one). See :func:`run_training`."""
    make: MakeObjective = Supervised
    if run.point is not None:
        if teacher_outputs is None:
            raise UserError(f"{run.desc}: a distillation run needs the cached teacher outputs")
        make = kd_objective(params, run.point, TeacherOutputs(teacher_outputs).feature_dims)
    return run_training(
        params,
        arch=run.arch,
        schedule_epochs=run.epochs,
        lr=run.lr,
        image_size=run.image_size,
        cache_dir=cache_dir,
        paths=paths,
        make_objective=make,
        extra_meta=dict(run.record),
        teacher_outputs=teacher_outputs if run.point is not None else None,
        desc=run.desc,
        seed=run.seed,
        transfer=transfer if run.uses_transfer else None,
    )


@contextlib.contextmanager
def _curves(live_dir: Path, enabled: bool) -> Iterator[EpochLogger | None]:
    """An epoch logger writing dvclive curves under ``live_dir``; ``None`` when not enabled."""
    if not enabled:
        yield None
        return
    with Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            for key, value in metrics.items():
                live.log_metric(key, round(float(value), 6))
            live.next_step()

        yield log_epoch


def run_training(
    params: Params,
    *,
    arch: str,
    schedule_epochs: int,
    lr: float,
    image_size: int,
    cache_dir: Path,
    paths: RunPaths,
    make_objective: MakeObjective,
    extra_meta: dict[str, Any],
    teacher_outputs: Path | None = None,
    desc: str = "train",
    seed: int | None = None,
    transfer: Path | None = None,
) -> dict[str, Any]:
    """Train one model and write its checkpoint, summary, validation predictions and curves.

    With ``train.nproc > 1`` this runs in each torchrun worker; only rank 0 writes anything
    (the others return ``{}``).

    ``seed`` (a seed replicate) replaces ``train.seed`` for model init and shuffle order only:
    augmented views stay keyed by ``train.seed``, the key the cached teacher outputs use.

    ``transfer`` (a transfer-set cache) appends unlabelled images to the training set; they need
    ``teacher_outputs`` computed over them too.
    """
    cfg = params.train if seed is None else params.train.model_copy(update={"seed": seed})
    set_determinism(cfg.seed, threads_per_process(cfg.num_threads))
    main = is_main_process()
    train_ds = training_set(
        cache_dir / "train.h5", build_augment(params.augment), params.train.seed, transfer
    )
    val_ds = CacheDataset(cache_dir / "val.h5")
    model, pretrained = build_model(arch, params.models.weights_dir)
    if not pretrained and main:
        print(f"{desc}: {arch}: no local weights in {params.models.weights_dir}, random init")
    objective = make_objective(model, task_loss(cfg, class_weights(train_ds.labels)))
    sched = Schedule(schedule_epochs, lr, image_size, IMAGENET_MEAN, IMAGENET_STD)
    meta = {
        "arch": arch,
        "image_size": image_size,
        "pretrained": pretrained,
        "params_hash": extra_meta.pop("params_hash"),
        **extra_meta,
    }

    best: dict[str, Any] = {}

    def on_best(epoch: int, metrics: dict[str, float], scores: np.ndarray) -> None:
        state = {k: v.detach().cpu().clone() for k, v in objective.student.state_dict().items()}
        best.update(epoch=epoch, metrics=metrics, scores=scores, state=state)

    teacher = TeacherOutputs(teacher_outputs) if teacher_outputs else None
    if teacher is not None:
        n_train = train_ds.n_train if isinstance(train_ds, TrainWithTransfer) else len(train_ds)
        teacher.check_layout(n_train, len(train_ds) - n_train)
    if teacher is None and transfer is not None:
        raise UserError(f"{desc}: a transfer set is only used with a distillation objective")
    join_process_group(cfg.nproc)
    with _curves(paths.live_dir, enabled=main) as log_epoch:
        result = fit(
            objective,
            train_ds,
            val_ds,
            cfg,
            sched,
            on_best,
            log_epoch,
            teacher,
            desc=desc,
        )
    if not main:
        return {}
    if not best:
        raise UserError(f"{desc}: validation pAUC was never finite; nothing to save")
    # Outputs appear only once training has finished (an interrupted run leaves none).
    objective.student.load_state_dict(best["state"])
    save_checkpoint(
        paths.checkpoint, objective.student, {**meta, "epoch": best["epoch"] + 1, **best["metrics"]}
    )
    with atomic_path(paths.val_predictions) as tmp:
        pd.DataFrame(
            {"image_id": val_ds.ids, "label": val_ds.labels, "score": best["scores"]}
        ).to_csv(tmp, index=False, float_format="%.8f")
    timing = {k: result.pop(k) for k in ("train_seconds", "train_images_per_s")}
    summary = {
        "arch": arch,
        "image_size": image_size,
        "pretrained": pretrained,
        **result,
        **{k: v for k, v in extra_meta.items() if isinstance(v, int | float | str | bool)},
    }
    summary = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in summary.items()}
    write_json(paths.summary, summary)
    print(
        f"{desc}: best epoch {result['best_epoch']}/{result['epochs_run']} "
        f"val ROC-AUC {result['val_roc_auc']:.4f} pAUC {result['val_pauc']:.4f} "
        f"({timing['train_seconds']} s, {timing['train_images_per_s']} img/s)"
    )
    return {**summary, **timing}
