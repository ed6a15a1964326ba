"""The one training loop, for teachers, the scratch student and every distilled student.

Read top to bottom: seed → loaders → optimizer/scheduler → epochs (train, validate, schedule)
→ checkpoint → summary. ``train.schedule: cosine`` (default) warms up, decays the LR to zero per
step and keeps the final weights; ``plateau`` checkpoints the best validation pAUC and stops
early. The objective (``distill.py``)
decides the loss; the loop knows nothing about KD beyond passing cached teacher outputs along.

On CUDA, :func:`device_path` turns ``train.amp`` and ``train.channels_last`` into bf16 autocast
and channels-last memory, and the loader pins memory; one loader serves every epoch (its sampler
is told the epoch), so with ``num_workers`` > 0 its workers persist. On CPU the step is float32
and contiguous whatever those params say, and the results do not depend on the worker count.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from melanoma_kd import distributed
from melanoma_kd.config import TrainParams
from melanoma_kd.data.dataset import CacheDataset, balanced_sampler
from melanoma_kd.data.transforms import model_input
from melanoma_kd.distill import Objective, TeacherBatch
from melanoma_kd.errors import UserError
from melanoma_kd.inference import default_device, predict_logits, probabilities
from melanoma_kd.metrics import pauc_above_tpr, roc_auc

EpochLogger = Callable[[int, dict[str, float]], None]


def set_determinism(seed: int, num_threads: int) -> None:
    """Seed every RNG, fix the thread count and ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


class TeacherOutputs:
    """Cached teacher logits/features per (epoch, view index), loaded one epoch at a time
    (stored float16, returned float32).

    Views ``0..n_train-1`` are the train split's; a transfer set's follow them. ``feature_dims``
    are the widths of the pooled teacher feature taps (what feature KD's adapters map to)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as h5:
                self.epochs, self.n_views = (int(n) for n in h5["logits"].shape[:2])
                self.n_features = int(h5.attrs.get("n_features", 0))
                self.n_train = int(h5.attrs["n_train"])
                self.feature_dims = [int(d) for d in h5.attrs.get("feature_dims", [])]
        except (OSError, KeyError) as exc:
            raise UserError(f"{self.path}: not a readable teacher-outputs file ({exc})") from None
        self._epoch = -1
        self._logits: torch.Tensor | None = None
        self._feats: list[torch.Tensor] = []

    def check_layout(self, n_train: int, n_transfer: int) -> None:
        """Raise unless these outputs were computed for ``n_train`` train views followed by at
        least ``n_transfer`` transfer views (the layout the training set indexes into)."""
        if self.n_train != n_train:
            raise UserError(
                f"{self.path}: teacher outputs were computed for {self.n_train} train images, "
                f"the train split has {n_train} (rerun teacher_outputs)"
            )
        if self.n_views < n_train + n_transfer:
            raise UserError(
                f"{self.path}: teacher outputs cover {self.n_views - self.n_train} transfer-set "
                f"images per epoch, the training set has {n_transfer} (rerun teacher_outputs)"
            )

    def load_epoch(self, epoch: int) -> None:
        """Load epoch ``epoch``'s outputs into memory."""
        if epoch >= self.epochs:
            raise UserError(
                f"{self.path}: teacher outputs cover {self.epochs} epochs, need {epoch + 1}"
            )
        with h5py.File(self.path, "r") as h5:
            self._logits = torch.from_numpy(h5["logits"][epoch].astype(np.float32))
            self._feats = [
                torch.from_numpy(h5[f"features_{k}"][epoch].astype(np.float32))
                for k in range(self.n_features)
            ]
        self._epoch = epoch

    def batch(self, indices: torch.Tensor) -> TeacherBatch:
        """Outputs for train indices of the loaded epoch."""
        return {"logits": self._logits[indices], "features": [f[indices] for f in self._feats]}


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warmup from 1/warmup to 1 over ``warmup_steps``,
    then cosine decay to 0 at ``total_steps`` (the last step trains at a small positive LR)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))

    return factor


@dataclass(frozen=True)
class Schedule:
    """Per-run settings that differ between teachers and students."""

    epochs: int
    lr: float
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DevicePath:
    """What the training step does on its device: autocast dtype (``None``: float32),
    channels-last memory, pinned loader memory, persistent loader workers."""

    amp_dtype: torch.dtype | None
    channels_last: bool
    pin_memory: bool
    persistent_workers: bool


def device_path(
    cfg: TrainParams, device: torch.device, bf16_supported: bool | None = None
) -> DevicePath:
    """``train.amp`` / ``train.channels_last`` as they apply on ``device``: CUDA only (CPU
    training stays float32 and contiguous, so CPU results never depend on them). ``amp: bf16`` on
    a GPU without bf16 (``bf16_supported``; asked of the GPU when ``None``) falls back to float32
    with a warning. Pinned memory on CUDA; workers persist whenever there are any."""
    cuda = device.type == "cuda"
    amp = cuda and cfg.amp == "bf16"
    if amp and not (torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported):
        print(
            "warning: train.amp is bf16 but this GPU lacks bf16; training in float32",
            file=sys.stderr,
        )
        amp = False
    return DevicePath(
        amp_dtype=torch.bfloat16 if amp else None,
        channels_last=cuda and cfg.channels_last,
        pin_memory=cuda,
        persistent_workers=cfg.num_workers > 0,
    )


def autocast(path: DevicePath, device: torch.device) -> contextlib.AbstractContextManager:
    """The training step's autocast context: ``path.amp_dtype`` on ``device``, or none."""
    if path.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=path.amp_dtype)


class EpochOrder(Sampler[int]):
    """The current epoch's seeded order (or balanced draw) — under DDP this rank's shard of it.

    One loader serves every epoch (so its workers can persist); :meth:`set_epoch` picks the
    epoch, whose order is drawn when the loader is next iterated, exactly as a fresh
    ``DataLoader(shuffle=True, generator=seeded)`` (or with the balanced sampler) of that epoch
    would draw it — the same RNG use, so the order never depends on the worker count."""

    def __init__(self, labels: np.ndarray, cfg: TrainParams, epoch: int = 0) -> None:
        self.labels, self.cfg, self.epoch = labels, cfg, epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass over the loader yields."""
        self.epoch = epoch

    def _order(self) -> list[int]:
        seed = self.cfg.seed * 100_003 + self.epoch
        order = (
            {"sampler": balanced_sampler(self.labels, seed)}
            if self.cfg.balanced_sampler
            else {"shuffle": True, "generator": torch.Generator().manual_seed(seed)}
        )
        n = len(self.labels)
        full = next(iter(DataLoader(range(n), batch_size=n, **order))).tolist()
        rank, world = distributed.rank_and_world()
        return distributed.shard(full, rank, world) if world > 1 else full

    def __len__(self) -> int:
        world = distributed.rank_and_world()[1]
        return -(-len(self.labels) // world)  # a shard is padded to a multiple of world

    def __iter__(self) -> Iterator[int]:
        return iter(self._order())


def _loader(
    ds: CacheDataset, cfg: TrainParams, epoch: int, path: DevicePath | None = None
) -> DataLoader:
    """A loader in epoch ``epoch``'s order (``loader.sampler.set_epoch`` moves it on); a lone last
    sample is dropped, since BatchNorm cannot train on a batch of one. ``path`` (default: CPU's)
    sets pinned memory and persistent workers."""
    path = path or device_path(cfg, torch.device("cpu"))
    order = EpochOrder(ds.labels, cfg, epoch)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=order,
        num_workers=cfg.num_workers,
        pin_memory=path.pin_memory,
        persistent_workers=path.persistent_workers,
        drop_last=len(order) % cfg.batch_size == 1,
        # only seeds the workers (the order is the sampler's): keeps the global RNG untouched
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def validate(
    objective: Objective, val: CacheDataset, sched: Schedule
) -> tuple[dict[str, float], np.ndarray]:
    """Validation loss (task loss), ROC-AUC and pAUC; returns (metrics, P(melanoma))."""
    logits = predict_logits(objective.student, val, sched.image_size, sched.mean, sched.std)
    device = next(objective.student.parameters()).device
    labels = torch.from_numpy(val.labels).to(device)
    with torch.no_grad():
        loss = float(objective.task_loss(logits.to(device), labels))
    scores = probabilities(logits)
    return {
        "val_loss": loss,
        "val_roc_auc": roc_auc(val.labels, scores),
        "val_pauc": pauc_above_tpr(val.labels, scores),
    }, scores


def fit(
    objective: Objective,
    train: CacheDataset,
    val: CacheDataset,
    cfg: TrainParams,
    sched: Schedule,
    on_best: Callable[[int, dict[str, float], np.ndarray], None],
    log: EpochLogger | None = None,
    teacher: TeacherOutputs | None = None,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``objective``; call ``on_best(epoch, metrics, val_scores)`` with the weights to keep:
    the last epoch's (cosine) or each new best validation pAUC's (plateau).

    Under torchrun each rank trains on its shard and sees the same metrics (``distributed.py``).
    """
    device = default_device()
    path = device_path(cfg, device)
    objective.to(device)
    if path.channels_last:
        objective.to(memory_format=torch.channels_last)
    model = distributed.wrap(objective, device)  # DDP under torchrun, else objective itself
    rank = distributed.rank_and_world()[0]
    optim_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    optimizer = optim_cls(objective.parameters(), lr=sched.lr, weight_decay=cfg.weight_decay)
    cosine = cfg.schedule == "cosine"
    loader = _loader(train, cfg, 0, path)
    if cosine:
        steps = len(loader)
        per_step = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(cfg.warmup_epochs * steps, sched.epochs * steps)
        )
    else:
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience
        )
    best, best_epoch, stale, start = -math.inf, -1, 0, time.perf_counter()
    history: list[dict[str, float]] = []
    for epoch in range(sched.epochs):
        train.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        if teacher is not None:
            teacher.load_epoch(epoch)
        objective.train()
        total, seen = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"{desc} {epoch + 1}/{sched.epochs}",
            disable=None if rank == 0 else True,
            leave=False,
            unit="batch",
        )
        for batch in bar:
            views = train.views(batch["image"].to(device, non_blocking=True), batch["index"])
            x = model_input(views, sched.image_size, sched.mean, sched.std)
            if path.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device, non_blocking=True)
            tb = None
            if teacher is not None:
                tb = {
                    k: (v.to(device) if torch.is_tensor(v) else [t.to(device) for t in v])
                    for k, v in teacher.batch(batch["index"]).items()
                }
            with autocast(path, device):
                out = model(x, y, tb)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if cosine:
                per_step.step()
            total += float(out["loss"].detach()) * len(y)
            seen += len(y)
        total, seen = distributed.sum_across([total, seen], device)
        distributed.sync_buffers(objective)
        metrics, scores = validate(objective, val, sched)
        metrics = {
            "train_loss": total / max(seen, 1),
            **distributed.from_rank0(metrics, device),
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(metrics)
        if log is not None:
            log(epoch, metrics)
        if cosine:  # the final weights are the run's result: no picking on validation
            if epoch == sched.epochs - 1:
                best_epoch = epoch
                on_best(epoch, metrics, scores)
            continue
        plateau.step(metrics["val_pauc"])
        if metrics["val_pauc"] > best:
            best, best_epoch, stale = metrics["val_pauc"], epoch, 0
            on_best(epoch, metrics, scores)
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    objective.to("cpu")
    best_metrics = history[best_epoch]
    return {
        "best_epoch": best_epoch + 1,
        "epochs_run": len(history),
        "val_roc_auc": best_metrics["val_roc_auc"],
        "val_pauc": best_metrics["val_pauc"],
        "val_loss": best_metrics["val_loss"],
        "train_seconds": round(time.perf_counter() - start, 1),
        "train_images_per_s": round(
            len(train) * len(history) / max(time.perf_counter() - start, 1e-9), 1
        ),
    }
