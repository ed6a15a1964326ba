"""KD objectives: the one interface, feature adapters (trained, never exported), timm taps."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from melanoma_kd.distill import METHODS, FeatureKD, ResponseKD, Supervised, pooled_taps
from melanoma_kd.losses import blend, feature_mse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spread_weights(model: nn.Module) -> nn.Module:
    """Give BN running stats and the classifier non-trivial values, so logits are O(1).

    A freshly initialised efficientnet_b0 in eval mode outputs logits of ~1e-5, which would make
    an ``atol=1e-5`` comparison vacuous.
    """
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    head = model.get_classifier()
    head.weight.data.copy_(torch.randn(head.weight.shape, generator=gen))
    return model


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "mobilenetv3_small_100"])
def test_pooled_taps_logits_are_the_real_forward(arch: str) -> None:
    torch.manual_seed(0)
    model = _spread_weights(timm.create_model(arch, num_classes=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = pooled_taps(model, x, 2)
        ref = model(x)
    assert ref.abs().max() > 1e-2  # the comparison below is not between two near-zero tensors
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    # The last two feature stages, globally pooled to (N, C).
    widths = [info["num_chs"] for info in model.feature_info[-2:]]
    assert [tuple(f.shape) for f in feats] == [(2, c) for c in widths]


def test_feature_kd_adapters_get_gradients_and_stay_out_of_the_student() -> None:
    torch.manual_seed(0)
    arch, size, teacher_dims = "mobilenetv3_small_050", 32, [8, 6]
    student = timm.create_model(arch, num_classes=2)
    objective = FeatureKD(
        student,
        nn.CrossEntropyLoss(),
        alpha=0.5,
        n_stages=2,
        teacher_dims=teacher_dims,
        image_size=size,
    )
    assert student.training  # building the adapters must not leave the student in eval mode
    widths = [info["num_chs"] for info in student.feature_info[-2:]]
    assert [(a.in_features, a.out_features) for a in objective.adapters] == list(
        zip(widths, teacher_dims, strict=True)
    )

    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 0, 1])
    teacher = {"logits": torch.randn(4, 2), "features": [torch.randn(4, d) for d in teacher_dims]}
    out = objective(x, y, teacher)
    assert set(out) == {"loss", "task_loss", "kd_loss", "output"}
    assert out["output"].shape == (4, 2)
    torch.testing.assert_close(out["loss"], blend(out["task_loss"], out["kd_loss"], 0.5))
    out["loss"].backward()
    for adapter in objective.adapters:
        assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
        assert adapter.bias.grad is not None and adapter.bias.grad.abs().sum() > 0
    assert student.get_classifier().weight.grad.abs().sum() > 0

    # The optimizer sees the adapters (they are registered on the objective) ...
    objective_keys = set(objective.state_dict())
    assert {"adapters.0.weight", "adapters.1.weight"} <= objective_keys
    param_ids = {id(p) for p in objective.parameters()}
    assert all(id(p) in param_ids for p in objective.adapters.parameters())
    # ... but what gets exported, objective.student, is exactly the plain timm model.
    exported = set(objective.student.state_dict())
    assert exported == set(timm.create_model(arch, num_classes=2).state_dict())
    assert not any("adapter" in k for k in exported)


def test_feature_kd_loss_is_mse_of_adapted_features() -> None:
    torch.manual_seed(0)
    student = timm.create_model("mobilenetv3_small_050", num_classes=2).eval()
    objective = FeatureKD(
        student, nn.CrossEntropyLoss(), alpha=0.3, n_stages=2, teacher_dims=[5, 7], image_size=32
    )
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    teacher = {"logits": torch.randn(2, 2), "features": [torch.randn(2, 5), torch.randn(2, 7)]}
    with torch.no_grad():
        out = objective(x, y, teacher)
        _, feats = pooled_taps(student, x, 2)
        adapted = [a(f) for a, f in zip(objective.adapters, feats, strict=True)]
    torch.testing.assert_close(out["kd_loss"], feature_mse(adapted, teacher["features"]))


def test_one_interface_for_every_objective() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x, y = torch.randn(3, 3, 2, 2), torch.tensor([0, 1, 1])
    teacher = {"logits": torch.randn(3, 2), "features": []}
    for objective in (
        Supervised(student, nn.CrossEntropyLoss()),
        ResponseKD(student, nn.CrossEntropyLoss(), temperature=2.0, alpha=0.5),
    ):
        out = objective(x, y, teacher)
        assert set(out) == {"loss", "task_loss", "kd_loss", "output"}
        assert objective.student is student
    assert Supervised(student, nn.CrossEntropyLoss())(x, y)["kd_loss"] == 0
    assert set(METHODS) == {"response", "feature"}
