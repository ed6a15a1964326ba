"""Training objectives: one small class per method behind one interface.

``forward(x, y, teacher)`` returns ``{"loss", "task_loss", "kd_loss", "output"}``. ``teacher``
holds cached teacher outputs for the batch (``logits`` and pooled stage ``features``); no
objective ever runs the teacher. The student to export is always ``objective.student``;
anything else an objective owns (feature adapters) is training-only. Adding a method is one new
class plus one registry entry.
"""

from __future__ import annotations

import torch
from torch import nn

from melanoma_kd.data.cache import UNLABELLED
from melanoma_kd.losses import blend, feature_mse, kd_kl

TeacherBatch = dict[str, torch.Tensor | list[torch.Tensor]]


def pooled_taps(
    model: nn.Module, x: torch.Tensor, n_stages: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and globally average-pooled features of the last ``n_stages`` stages (timm)."""
    final, inters = model.forward_intermediates(x, indices=n_stages)
    logits = model.forward_head(final)
    return logits, [f.mean(dim=(2, 3)) if f.ndim == 4 else f.mean(dim=1) for f in inters]


def labelled_task_loss(task_loss: nn.Module, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task loss over the batch's labelled images; transfer-set images (label
    :data:`UNLABELLED`) only enter the distillation term. Zero for a batch without labels."""
    keep = y != UNLABELLED
    if bool(keep.all()):
        return task_loss(out, y)
    if not bool(keep.any()):
        return out.sum() * 0.0
    return task_loss(out[keep], y[keep])


class Objective(nn.Module):
    """Base: holds the student and the task loss."""

    def __init__(self, student: nn.Module, task_loss: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.task_loss = task_loss

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, teacher: TeacherBatch | None = None
    ) -> dict:
        raise NotImplementedError


class Supervised(Objective):
    """Plain supervised training (teachers and the scratch student)."""

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, teacher: TeacherBatch | None = None
    ) -> dict:
        out = self.student(x)
        task = self.task_loss(out, y)
        return {"loss": task, "task_loss": task, "kd_loss": torch.zeros(()), "output": out}


class ResponseKD(Objective):
    """``(1-α)·task + α·T²·KL(p_t^T ‖ p_s^T)`` on cached teacher logits."""

    def __init__(
        self,
        student: nn.Module,
        task_loss: nn.Module,
        temperature: float,
        alpha: float,
        **_: object,
    ) -> None:
        super().__init__(student, task_loss)
        self.temperature = temperature
        self.alpha = alpha

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, teacher: TeacherBatch | None = None
    ) -> dict:
        out = self.student(x)
        task = labelled_task_loss(self.task_loss, out, y)
        kd = kd_kl(out, teacher["logits"], self.temperature)
        return {
            "loss": blend(task, kd, self.alpha),
            "task_loss": task,
            "kd_loss": kd,
            "output": out,
        }


class FeatureKD(Objective):
    """``(1-α)·task + α·MSE(adapter(pooled student stage), pooled teacher stage)``.

    Linear adapters map each tapped student stage to the paired teacher stage's width; they are
    trained with the student and dropped at export.
    """

    def __init__(
        self,
        student: nn.Module,
        task_loss: nn.Module,
        alpha: float,
        n_stages: int,
        teacher_dims: list[int],
        image_size: int,
        **_: object,
    ) -> None:
        super().__init__(student, task_loss)
        self.alpha = alpha
        self.n_stages = n_stages
        was_training = student.training
        student.eval()
        with torch.no_grad():
            _, feats = pooled_taps(student, torch.zeros(1, 3, image_size, image_size), n_stages)
        student.train(was_training)
        self.adapters = nn.ModuleList(
            nn.Linear(f.shape[1], d) for f, d in zip(feats, teacher_dims, strict=True)
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, teacher: TeacherBatch | None = None
    ) -> dict:
        out, feats = pooled_taps(self.student, x, self.n_stages)
        task = labelled_task_loss(self.task_loss, out, y)
        adapted = [a(f) for a, f in zip(self.adapters, feats, strict=True)]
        kd = feature_mse(adapted, list(teacher["features"]))
        return {
            "loss": blend(task, kd, self.alpha),
            "task_loss": task,
            "kd_loss": kd,
            "output": out,
        }


METHODS: dict[str, type[Objective]] = {"response": ResponseKD, "feature": FeatureKD}
