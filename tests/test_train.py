"""The training loop, cached teacher outputs, teacher choice, model building and checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from torch import nn

from melanoma_kd import train as train_mod
from melanoma_kd.config import AugmentParams, TrainParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import augmented_view, build_augment, model_input
from melanoma_kd.distill import Objective, Supervised, pooled_taps
from melanoma_kd.errors import UserError
from melanoma_kd.io import write_json
from melanoma_kd.models.build import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
    check_arch,
    load_checkpoint,
    save_checkpoint,
)
from melanoma_kd.teacher_outputs import choose_teacher, compute_teacher_outputs
from melanoma_kd.train import Schedule, TeacherOutputs, fit, set_determinism

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEAN, STD = IMAGENET_MEAN, IMAGENET_STD


def _rows(labels: list[int]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )


def _separable_cache(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """Class 1 is bright, class 0 is dark (plus noise): trivially learnable."""
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(n)]
    lows = [150 if y else 0 for y in labels]
    imgs = np.stack([rng.integers(lo, lo + 106, (size, size, 3)) for lo in lows]).astype(np.uint8)
    write_split_cache(path, _rows(labels), imgs, size, path.stem, "h")
    return path


def _cfg(**kw: object) -> TrainParams:
    base = {"batch_size": 8, "num_threads": 1, "weight_decay": 0.0, "loss": "ce", "patience": 50}
    return TrainParams(**{**base, **kw})


def _linear(size: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2))


def _no_best(*_: object) -> None:
    return None


# --- the loop --------------------------------------------------------------------------------


def test_fit_overfits_a_tiny_separable_set(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train = CacheDataset(_separable_cache(tmp_path / "train.h5", 16, 16))
    val = CacheDataset(_separable_cache(tmp_path / "val.h5", 8, 16, seed=1))
    objective = Supervised(timm.create_model("resnet18", num_classes=2), nn.CrossEntropyLoss())
    losses: list[float] = []
    result = fit(
        objective,
        train,
        val,
        _cfg(),
        Schedule(3, 1e-3, 16, MEAN, STD),
        _no_best,
        log=lambda epoch, m: losses.append(m["train_loss"]),
    )
    assert len(losses) == 3 == result["epochs_run"]
    # Chance level for 2 balanced classes is log 2 = 0.693; a working loop goes well below it.
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < 0.35


def _scripted_validate(paucs: list[float], calls: list[int]):
    def fake(objective, val, sched):
        epoch = len(calls)
        calls.append(epoch)
        metrics = {
            "val_loss": 1.0 - paucs[epoch],
            "val_roc_auc": 0.5 + paucs[epoch],
            "val_pauc": paucs[epoch],
        }
        return metrics, np.full(len(val), float(epoch))

    return fake


def _fit_scripted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    paucs: list[float],
    n_train: int = 8,
    **cfg: object,
):
    calls: list[int] = []
    monkeypatch.setattr(train_mod, "validate", _scripted_validate(paucs, calls))
    train = CacheDataset(_separable_cache(tmp_path / "train.h5", n_train, 16))
    val = CacheDataset(_separable_cache(tmp_path / "val.h5", 4, 16))
    best: list[tuple[int, float, float]] = []
    lrs: list[float] = []
    result = fit(
        Supervised(_linear(16), nn.CrossEntropyLoss()),
        train,
        val,
        _cfg(**cfg),
        Schedule(len(paucs), 0.1, 16, MEAN, STD),
        lambda epoch, m, scores: best.append((epoch, m["val_pauc"], float(scores[0]))),
        log=lambda epoch, m: lrs.append(m["lr"]),
    )
    return result, best, calls, lrs


def test_on_best_at_strict_improvements_and_early_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paucs = [0.10, 0.05, 0.12, 0.12, 0.11, 0.30, 0.50]
    result, best, calls, _ = _fit_scripted(
        tmp_path, monkeypatch, paucs, schedule="plateau", patience=2
    )
    # New best at epochs 0 and 2; epoch 3 only ties (not strict) and epoch 4 is worse: two stale
    # epochs = patience, so training stops after epoch 4 and never sees 0.30.
    assert best == [(0, 0.10, 0.0), (2, 0.12, 2.0)]  # scores are that epoch's validation scores
    assert calls == [0, 1, 2, 3, 4]
    assert result["epochs_run"] == 5 and result["best_epoch"] == 3  # 1-based
    assert result["val_pauc"] == 0.12 and result["val_roc_auc"] == pytest.approx(0.62)


def test_plateau_schedule_follows_val_pauc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paucs = [0.10, 0.05, 0.12, 0.12, 0.11, 0.30, 0.50]
    result, best, _, lrs = _fit_scripted(
        tmp_path, monkeypatch, paucs, schedule="plateau", patience=10, lr_patience=1
    )
    assert [b[0] for b in best] == [0, 2, 5, 6]
    assert result["epochs_run"] == 7 and result["best_epoch"] == 7
    # pAUC (mode max) is stale after epochs 3 and 4 > lr_patience=1, so the lr halves after epoch 4.
    assert lrs == [0.1] * 5 + [0.05] * 2


def test_warmup_cosine_factors() -> None:
    """Linear warmup (step + 1) / w, then 0.5 · (1 + cos(π · k / span)), k = step − w,
    span = total − w, held at 0 after the end."""
    f = train_mod.warmup_cosine(2, 6)  # span 4
    expected = [
        1 / 2,  # warmup
        2 / 2,
        0.5 * (1 + 1.0),  # k = 0: cos 0
        0.5 * (1 + 0.7071067811865476),  # k = 1: cos(π/4)
        0.5 * (1 + 0.0),  # k = 2: cos(π/2)
        0.5 * (1 - 0.7071067811865476),  # k = 3: cos(3π/4)
        0.0,  # k = 4: cos π
        0.0,  # past the end
    ]
    assert [f(step) for step in range(8)] == pytest.approx(expected, abs=1e-12)
    g = train_mod.warmup_cosine(0, 3)  # no warmup: decay from the first step
    assert [g(step) for step in range(4)] == pytest.approx([1.0, 0.75, 0.25, 0.0], abs=1e-12)
    h = train_mod.warmup_cosine(3, 3)  # all warmup: the span is clamped to one step
    assert [h(step) for step in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 0.0])


def test_cosine_keeps_the_final_weights_and_never_stops_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the best validation pAUC is at epoch 1 and later epochs only get worse (more than
    # patience stale epochs): plateau would stop and keep epoch 1; cosine trains every epoch
    # and keeps the last one
    paucs = [0.10, 0.30, 0.12, 0.11, 0.05]
    result, best, calls, lrs = _fit_scripted(
        tmp_path, monkeypatch, paucs, n_train=16, schedule="cosine", warmup_epochs=2, patience=1
    )
    assert calls == [0, 1, 2, 3, 4]
    assert best == [(4, 0.05, 4.0)]  # on_best once, with the last epoch's validation scores
    assert result["epochs_run"] == 5 and result["best_epoch"] == 5  # 1-based
    assert result["val_pauc"] == 0.05 and result["val_roc_auc"] == pytest.approx(0.55)
    # 16 images / batch 8 = 2 steps per epoch: warmup 4 steps, span 6; the lr logged after
    # epoch e is 0.1 · factor(2 (e + 1)): 3/4, then cos(0), cos(π/3), cos(2π/3), cos(π) decay
    assert lrs == pytest.approx([0.075, 0.1, 0.075, 0.025, 0.0], abs=1e-9)


def _train_once(tmp_path: Path, seed: int) -> dict[str, torch.Tensor]:
    set_determinism(seed, 1)
    aug = build_augment(AugmentParams())
    train = CacheDataset(_separable_cache(tmp_path / "train.h5", 16, 16), augment=aug, seed=seed)
    val = CacheDataset(_separable_cache(tmp_path / "val.h5", 4, 16))
    objective = Supervised(
        timm.create_model("mobilenetv3_small_050", num_classes=2), nn.CrossEntropyLoss()
    )
    fit(objective, train, val, _cfg(seed=seed), Schedule(2, 1e-3, 16, MEAN, STD), _no_best)
    return {k: v.clone() for k, v in objective.student.state_dict().items()}


def test_same_seed_gives_bitwise_identical_weights(tmp_path: Path) -> None:
    a, b = _train_once(tmp_path, 3), _train_once(tmp_path, 3)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _train_once(tmp_path, 4)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fit_survives_a_last_batch_of_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train = CacheDataset(_separable_cache(tmp_path / "train.h5", 9, 32))
    val = CacheDataset(_separable_cache(tmp_path / "val.h5", 4, 32))
    objective = Supervised(timm.create_model("resnet18", num_classes=2), nn.CrossEntropyLoss())
    fit(objective, train, val, _cfg(), Schedule(1, 1e-3, 32, MEAN, STD), _no_best)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_with_weighted_loss_on_cuda(tmp_path: Path) -> None:
    train = CacheDataset(_separable_cache(tmp_path / "train.h5", 8, 16))
    val = CacheDataset(_separable_cache(tmp_path / "val.h5", 4, 16))
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    fit(
        Supervised(_linear(16), loss),
        train,
        val,
        _cfg(),
        Schedule(1, 1e-3, 16, MEAN, STD),
        _no_best,
    )


# --- cached teacher outputs ------------------------------------------------------------------

CACHE_SIZE, SEED, EPOCHS, STAGES = 24, 11, 2, 2


def _teacher_checkpoint(path: Path, image_size: int) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=2)
    with torch.no_grad():  # O(1) logits, so atol=1e-5 is a real check
        model.get_classifier().weight.normal_()
    save_checkpoint(path, model, {"arch": "resnet18", "image_size": image_size})
    return path


def _teacher_setup(tmp_path: Path, teacher_size: int, n: int = 6):
    train_path = _separable_cache(tmp_path / "train.h5", n, CACHE_SIZE)
    ckpt = _teacher_checkpoint(tmp_path / "teacher.pt", teacher_size)
    aug = build_augment(AugmentParams())
    out = tmp_path / "teacher_outputs.h5"
    info = compute_teacher_outputs(ckpt, train_path, aug, SEED, EPOCHS, STAGES, out, batch_size=4)
    assert info == {
        "teacher": "resnet18",
        "epochs": EPOCHS,
        "images": n,
        "train_images": n,
        "transfer_images": 0,
    }
    return train_path, ckpt, aug, out


@pytest.mark.parametrize("teacher_size", [CACHE_SIZE, 32])
def test_cached_teacher_outputs_equal_a_live_forward(tmp_path: Path, teacher_size: int) -> None:
    train_path, ckpt, aug, out = _teacher_setup(tmp_path, teacher_size)
    model, meta = load_checkpoint(ckpt)
    ds = CacheDataset(train_path)
    cached = TeacherOutputs(out)
    assert cached.epochs == EPOCHS and cached.n_features == STAGES
    per_epoch = []
    for epoch in range(EPOCHS):
        cached.load_epoch(epoch)
        for i in range(len(ds)):
            view = augmented_view(ds.read(i), aug, SEED, epoch, i)
            x = model_input(view[None], teacher_size, tuple(meta["mean"]), tuple(meta["std"]))
            with torch.no_grad():
                live = model(x)
                _, feats = pooled_taps(model, x, STAGES)
            got = cached.batch(torch.tensor([i]))
            assert live.abs().max() > 1e-2
            # stored float16: rounding adds at most 2^-11 relative (rtol 2^-10 leaves room for
            # the 1e-6-level float32 differences between the cached and the live forward)
            torch.testing.assert_close(got["logits"], live, atol=1e-5, rtol=2**-10)
            for f_cached, f_live in zip(got["features"], feats, strict=True):
                torch.testing.assert_close(f_cached, f_live, atol=1e-5, rtol=2**-10)
        per_epoch.append(cached.batch(torch.arange(len(ds)))["logits"].clone())
    assert not torch.equal(per_epoch[0], per_epoch[1])  # each epoch has its own views
    with pytest.raises(UserError, match="2 epochs"):
        cached.load_epoch(EPOCHS)


class _Spy(Objective):
    """Records every student input with the teacher batch the loop handed over."""

    def __init__(self, size: int) -> None:
        super().__init__(_linear(size), nn.CrossEntropyLoss())
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x, y, teacher=None):
        self.seen.append((x.detach().clone(), y.clone(), teacher["logits"].clone()))
        out = self.student(x)
        task = self.task_loss(out, y)
        return {"loss": task, "task_loss": task, "kd_loss": torch.zeros(()), "output": out}


def test_fit_pairs_each_view_with_its_cached_teacher_output(tmp_path: Path) -> None:
    n = 8  # batches of 3, 3, 2 (a lone last sample would be dropped)
    train_path, _, aug, out = _teacher_setup(tmp_path, 32, n=n)
    val = CacheDataset(_separable_cache(tmp_path / "val.h5", 4, CACHE_SIZE))
    train = CacheDataset(train_path, augment=aug, seed=SEED)
    spy = _Spy(CACHE_SIZE)
    fit(
        spy,
        train,
        val,
        _cfg(batch_size=3, seed=5),
        Schedule(EPOCHS, 1e-3, CACHE_SIZE, MEAN, STD),
        _no_best,
        teacher=TeacherOutputs(out),
    )
    cached = TeacherOutputs(out)
    plain = CacheDataset(train_path)
    per_epoch = len(spy.seen) // EPOCHS
    assert per_epoch == 3  # ceil(8 / 3)
    for epoch in range(EPOCHS):
        cached.load_epoch(epoch)
        views = torch.stack([augmented_view(plain.read(i), aug, SEED, epoch, i) for i in range(n)])
        inputs = model_input(views, CACHE_SIZE, MEAN, STD)
        found = []
        for x, y, t in spy.seen[epoch * per_epoch : (epoch + 1) * per_epoch]:
            for row in range(len(x)):
                match = [i for i in range(n) if torch.allclose(inputs[i], x[row], atol=1e-6)]
                assert len(match) == 1
                i = match[0]
                found.append(i)
                assert int(y[row]) == int(plain.labels[i])
                assert torch.equal(t[row], cached.batch(torch.tensor([i]))["logits"][0])
        assert sorted(found) == list(range(n))


def test_teacher_outputs_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.h5"):
        TeacherOutputs(tmp_path / "missing.h5")


# --- teacher choice, model building, checkpoints ----------------------------------------------


def test_choose_teacher(tmp_path: Path) -> None:
    """``best`` is the select_teacher stage's record; a named arch needs no record."""
    archs = ["resnet18", "efficientnet_b0", "resnet34"]
    record = tmp_path / "best_teacher.json"
    assert choose_teacher("resnet34", archs, record) == "resnet34"  # not read: absent
    with pytest.raises(UserError, match="select_teacher"):
        choose_teacher("best", archs, record)
    write_json(record, {"arch": "efficientnet_b0"})
    assert choose_teacher("best", archs, record) == "efficientnet_b0"
    assert choose_teacher("resnet18", archs, record) == "resnet18"  # a named arch wins
    with pytest.raises(UserError, match="vit_small") as exc:
        choose_teacher("vit_small", archs, record)
    assert "\n" not in str(exc.value)
    write_json(record, {"arch": "vit_small"})  # a record of another teachers.archs
    with pytest.raises(UserError, match=r"'vit_small' is not in teachers\.archs"):
        choose_teacher("best", archs, record)


def test_unknown_arch_is_one_line_user_error(tmp_path: Path) -> None:
    for call in (lambda: check_arch("not_a_model"), lambda: build_model("not_a_model", tmp_path)):
        with pytest.raises(UserError, match="not_a_model") as exc:
            call()
        assert "\n" not in str(exc.value)
    check_arch("resnet18")  # a known one passes


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", num_classes=2)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # move BN running stats off their defaults
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        model,
        {"arch": "mobilenetv3_small_050", "image_size": 32, "params_hash": "abc", "epoch": 3},
    )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["arch"] == "mobilenetv3_small_050" and payload["image_size"] == 32
    assert payload["mean"] == list(IMAGENET_MEAN) and payload["std"] == list(IMAGENET_STD)
    assert payload["params_hash"] == "abc" and payload["epoch"] == 3

    torch.manual_seed(123)  # a different random init, so equality below comes from the file
    rebuilt, meta = load_checkpoint(path)
    assert not rebuilt.training and meta["image_size"] == 32
    ref = model.state_dict()
    assert rebuilt.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in rebuilt.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))

    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "bad.pt", model, {"arch": "mobilenetv3_small_050"})
    (tmp_path / "junk.pt").write_bytes(b"junk")
    for bad in (tmp_path / "junk.pt", tmp_path / "none.pt"):
        with pytest.raises(UserError, match=re.escape(bad.name)):
            load_checkpoint(bad)


def test_build_model_local_weights_or_random(tmp_path: Path) -> None:
    arch = "mobilenetv3_small_050"
    model, pretrained = build_model(arch, tmp_path)
    assert pretrained is False and model.get_classifier().out_features == 2
    torch.manual_seed(1)
    imagenet = timm.create_model(arch, num_classes=1000)  # stands in for ImageNet weights
    torch.save(imagenet.state_dict(), tmp_path / f"{arch}.pth")
    loaded, pretrained = build_model(arch, tmp_path)
    assert pretrained is True and loaded.get_classifier().out_features == 2
    src = imagenet.state_dict()
    backbone = [k for k in src if not k.startswith("classifier.")]
    assert all(torch.equal(loaded.state_dict()[k], src[k]) for k in backbone)
