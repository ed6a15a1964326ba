"""Every loss in one place: CE, class-weighted CE, focal, KD-KL (×T²) and feature matching.

Task losses are built from ``train.loss`` through a registry; class imbalance is corrected once
(config rejects a balanced sampler combined with a weighted or focal loss).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from melanoma_kd.config import TrainParams
from melanoma_kd.errors import UserError


class FocalLoss(nn.Module):
    """Focal loss ``-α_t (1-p_t)^γ log p_t`` averaged over the batch.

    ``alpha`` weighs the positive (melanoma) class, ``1-alpha`` the negative; with ``gamma=0``
    this equals cross-entropy weighted by ``(1-alpha, alpha)`` and normalised by batch size.
    """

    def __init__(self, alpha: float, gamma: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        alpha_t = torch.where(target == 1, self.alpha, 1.0 - self.alpha)
        return (-alpha_t * (1.0 - log_p.exp()).pow(self.gamma) * log_p).mean()


def _ce(p: TrainParams, weights: torch.Tensor) -> nn.Module:
    return nn.CrossEntropyLoss()


def _weighted_ce(p: TrainParams, weights: torch.Tensor) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weights)


def _focal(p: TrainParams, weights: torch.Tensor) -> nn.Module:
    return FocalLoss(p.focal_alpha, p.focal_gamma)


TASK_LOSSES: dict[str, Callable[[TrainParams, torch.Tensor], nn.Module]] = {
    "ce": _ce,
    "weighted_ce": _weighted_ce,
    "focal": _focal,
}


def task_loss(params: TrainParams, class_weights: torch.Tensor) -> nn.Module:
    """The supervised loss named by ``train.loss`` (class weights computed from train only)."""
    try:
        return TASK_LOSSES[params.loss](params, class_weights)
    except KeyError:
        raise UserError(f"train.loss: unknown loss {params.loss!r}") from None


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch-mean (Hinton et al.)."""
    log_ps = F.log_softmax(student_logits / T, dim=1)
    log_pt = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * (T * T)


def feature_mse(
    student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]
) -> torch.Tensor:
    """Mean over matched layers of the MSE between (adapted) student and teacher features."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError("feature_mse needs the same, non-zero number of student and teacher taps")
    return torch.stack(
        [F.mse_loss(s, t) for s, t in zip(student_feats, teacher_feats, strict=True)]
    ).mean()


def blend(task: torch.Tensor, kd: torch.Tensor, alpha: float) -> torch.Tensor:
    """The one definition of α: ``(1-α)·task + α·kd`` (α weighs the distillation term)."""
    return (1.0 - alpha) * task + alpha * kd
