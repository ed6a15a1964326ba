"""Every loss in ``melanoma_kd.losses`` against values worked out by hand with ``math``.

The reference numbers are computed from closed forms (``log(1 + e^-z)`` for a 2-class CE,
``Σ p log(p/q)`` for KL), never by calling the code under test; the decimal values in the
comments are those closed forms evaluated to 6 places.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from melanoma_kd.config import TrainParams
from melanoma_kd.distill import ResponseKD
from melanoma_kd.errors import UserError
from melanoma_kd.losses import FocalLoss, blend, feature_mse, kd_kl, task_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Three samples, two classes. Per-sample CE = -log softmax(z)[y]:
#   [2, 0], y=0 -> log(1 + e^-2) = 0.126928   (p_t = 1/(1+e^-2) = 0.880797)
#   [0, 1], y=1 -> log(1 + e^-1) = 0.313262   (p_t = 1/(1+e^-1) = 0.731059)
#   [1, 1], y=1 -> log 2         = 0.693147   (p_t = 0.5)
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
TARGET = torch.tensor([0, 1, 1])
CE_I = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(2)]
PT_I = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1)), 0.5]


def test_ce_matches_hand_value() -> None:
    loss = task_loss(TrainParams(loss="ce"), torch.tensor([1.0, 3.0]))
    expected = sum(CE_I) / 3  # 0.377779; class weights are ignored by plain CE
    assert float(loss(LOGITS, TARGET)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.377779, abs=1e-6)


def test_weighted_ce_matches_hand_value() -> None:
    # torch's weighted mean: Σ w_{y_i} l_i / Σ w_{y_i}, with w = (1, 3).
    loss = task_loss(TrainParams(loss="weighted_ce"), torch.tensor([1.0, 3.0]))
    expected = (1 * CE_I[0] + 3 * CE_I[1] + 3 * CE_I[2]) / (1 + 3 + 3)  # 0.449451
    assert float(loss(LOGITS, TARGET)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.449451, abs=1e-6)


def test_focal_matches_hand_value() -> None:
    # -α_t (1-p_t)^γ log p_t, batch mean; α=0.75 on the positive class, γ=2.
    loss = task_loss(TrainParams(loss="focal", focal_alpha=0.75, focal_gamma=2.0), torch.ones(2))
    assert isinstance(loss, FocalLoss)
    alpha_t = [0.25, 0.75, 0.75]
    terms = [a * (1 - p) ** 2 * ce for a, p, ce in zip(alpha_t, PT_I, CE_I, strict=True)]
    expected = sum(terms) / 3  # (0.000451 + 0.016994 + 0.129965) / 3 = 0.049137
    assert float(loss(LOGITS, TARGET)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.049137, abs=1e-6)


def test_focal_gamma0_is_alpha_weighted_ce_over_batch_size() -> None:
    """The equality that holds: FocalLoss(α, γ=0) = Σ_i w_{y_i}·CE_i / N with w = (1-α, α).

    That is ``cross_entropy(weight=w, reduction="sum") / N``; it is *not* torch's weighted
    mean ``CrossEntropyLoss(weight=w)``, which divides by Σ_i w_{y_i} instead of N.
    """
    alpha = 0.75
    w = torch.tensor([1 - alpha, alpha])
    focal = float(FocalLoss(alpha, 0.0)(LOGITS, TARGET))
    hand = (0.25 * CE_I[0] + 0.75 * CE_I[1] + 0.75 * CE_I[2]) / 3  # 0.261692
    assert focal == pytest.approx(hand, abs=1e-6)
    assert focal == pytest.approx(
        float(F.cross_entropy(LOGITS, TARGET, weight=w, reduction="sum")) / 3, abs=1e-6
    )
    # Σ w_{y_i} = 1.75 ≠ N = 3, so torch's weighted mean is a different number.
    assert focal != pytest.approx(float(nn.CrossEntropyLoss(weight=w)(LOGITS, TARGET)), abs=1e-3)


def test_task_loss_registry_unknown_name_is_user_error() -> None:
    bad = TrainParams.model_construct(loss="hinge")  # bypasses validation, as a registry probe
    with pytest.raises(UserError, match="hinge") as exc:
        task_loss(bad, torch.ones(2))
    assert "\n" not in str(exc.value)


def _softmax2(a: float, b: float) -> tuple[float, float]:
    ea, eb = math.exp(a), math.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def _kl(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_kd_kl_matches_hand_value() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    T = 2.0
    # KL(p_t ‖ p_s) per sample at temperature T, batch mean, times T².
    kl = [
        _kl(_softmax2(0.0, 0.5), _softmax2(0.5, 0.0)),
        _kl(_softmax2(1.0, 0.0), _softmax2(0.0, 0.0)),
    ]
    expected = T * T * sum(kl) / 2  # 4 · (0.122459 + 0.110944) / 2 = 0.466807
    assert expected == pytest.approx(0.466807, abs=1e-6)
    assert float(kd_kl(s, t, T)) == pytest.approx(expected, abs=1e-6)
    # Direction matters: KL(p_s ‖ p_t) of the second sample is 0.120115, not 0.110944.
    kl_rev = [
        _kl(_softmax2(0.5, 0.0), _softmax2(0.0, 0.5)),
        _kl(_softmax2(0.0, 0.0), _softmax2(1.0, 0.0)),
    ]
    reverse = T * T * sum(kl_rev) / 2
    assert float(kd_kl(s, t, T)) != pytest.approx(reverse, abs=1e-3)


def test_kd_kl_zero_for_identical_logits() -> None:
    z = torch.tensor([[3.0, -1.0], [0.2, 0.7], [-5.0, 5.0]])
    assert float(kd_kl(z, z.clone(), 4.0)) == 0.0


def test_blend_alpha_definition() -> None:
    task, kd = torch.tensor(0.8), torch.tensor(2.0)
    assert torch.equal(blend(task, kd, 0.0), task)
    assert torch.equal(blend(task, kd, 1.0), kd)
    assert float(blend(task, kd, 0.25)) == pytest.approx(0.75 * 0.8 + 0.25 * 2.0)


def test_response_kd_alpha0_is_exactly_ce() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    teacher = {"logits": torch.randn(4, 2) * 3, "features": []}
    out = ResponseKD(student, nn.CrossEntropyLoss(), temperature=4.0, alpha=0.0)(x, y, teacher)
    ce = F.cross_entropy(student(x), y)
    assert torch.equal(out["loss"], ce)
    assert torch.equal(out["task_loss"], ce)
    assert float(out["kd_loss"].detach()) > 0  # the KD term is there, just weighted by 0
    out1 = ResponseKD(student, nn.CrossEntropyLoss(), temperature=4.0, alpha=1.0)(x, y, teacher)
    assert torch.equal(out1["loss"], kd_kl(student(x), teacher["logits"], 4.0))


def test_feature_mse_is_mean_of_per_layer_mse() -> None:
    s = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 1.0, 1.0]])]
    t = [torch.zeros(2, 2), torch.tensor([[0.0, 2.0, 1.0]])]
    # layer 1: (1+4+9+16)/4 = 7.5; layer 2: (1+1+0)/3 = 2/3; mean of the two = 4.083333
    # (pooling all 7 elements would give 32/7 = 4.571429 instead).
    assert float(feature_mse(s, t)) == pytest.approx((7.5 + 2 / 3) / 2, abs=1e-6)


def test_feature_mse_rejects_mismatched_taps() -> None:
    with pytest.raises(ValueError):
        feature_mse([torch.zeros(1, 2)], [])
    with pytest.raises(ValueError):
        feature_mse([], [])
