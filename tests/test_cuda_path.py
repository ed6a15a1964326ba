"""The CUDA path of the training loop: ``train.amp`` / ``train.channels_last`` decide autocast
and memory format on CUDA only, and the one per-fit loader (persistent workers) draws each
epoch's order exactly as a fresh per-epoch ``DataLoader`` would. No test needs a GPU: the
decision is a pure function of (params, device), and its effect is checked by handing ``fit`` a
decision made for CUDA while it runs on the CPU (where autocast and channels-last exist too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from melanoma_kd import train as train_mod
from melanoma_kd.config import TrainParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset, balanced_sampler
from melanoma_kd.distill import Supervised
from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD
from melanoma_kd.train import DevicePath, Schedule, autocast, device_path, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUDA, CPU = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU


def _cache(path: Path, n: int, size: int = 16) -> CacheDataset:
    rng = np.random.default_rng(0)
    labels = [int(i % 3 == 0) for i in range(n)]
    rows = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    imgs = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    write_split_cache(path, rows, imgs, size, path.stem, "h")
    return CacheDataset(path)


# --- the decision ----------------------------------------------------------------------------


def test_defaults_turn_bf16_and_channels_last_on_for_cuda_only() -> None:
    cfg = TrainParams()
    assert (cfg.amp, cfg.channels_last) == ("bf16", True)
    assert device_path(cfg, CUDA, bf16_supported=True) == DevicePath(
        torch.bfloat16, True, True, False
    )
    assert device_path(cfg, CPU) == DevicePath(None, False, False, False)


@pytest.mark.parametrize("amp", ["bf16", "off"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_each_param_switches_its_own_effect_on_cuda(amp: str, channels_last: bool) -> None:
    cfg = TrainParams(amp=amp, channels_last=channels_last, num_workers=2)
    path = device_path(cfg, CUDA, bf16_supported=True)
    assert path.amp_dtype == (torch.bfloat16 if amp == "bf16" else None)
    assert path.channels_last is channels_last
    assert path.pin_memory and path.persistent_workers
    assert device_path(cfg, CPU) == DevicePath(None, False, False, True)


def test_bf16_on_a_gpu_without_it_falls_back_to_fp32_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert device_path(TrainParams(), CUDA, bf16_supported=False).amp_dtype is None
    err = capsys.readouterr().err
    assert "train.amp" in err and err.count("\n") == 1


def test_bad_amp_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="amp"):
        TrainParams(amp="fp16")


def test_autocast_context_follows_the_decision() -> None:
    layer, x = nn.Linear(4, 3), torch.randn(2, 4)
    with autocast(DevicePath(torch.bfloat16, False, False, False), CPU):
        assert layer(x).dtype == torch.bfloat16  # torch's CPU autocast runs linear in bf16
    with autocast(DevicePath(None, False, False, False), CPU):
        assert not torch.is_autocast_enabled("cpu")
        assert layer(x).dtype == torch.float32


# --- fit applies it --------------------------------------------------------------------------


class _Probe(nn.Module):
    """A conv student that records, per forward, autocast state and the input/weight layout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)
        self.seen: list[tuple[bool, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            cl = torch.channels_last
            self.seen.append(
                (
                    torch.is_autocast_enabled("cpu"),
                    x.is_contiguous(memory_format=cl) and not x.is_contiguous(),
                    self.conv.weight.is_contiguous(memory_format=cl)
                    and not self.conv.weight.is_contiguous(),
                )
            )
        return self.head(self.conv(x).float().mean((2, 3)))


def _fit_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: DevicePath | None):
    if path is not None:
        monkeypatch.setattr(train_mod, "device_path", lambda *_a, **_k: path)
    train = _cache(tmp_path / "train.h5", 8)
    val = _cache(tmp_path / "val.h5", 4)
    probe = _Probe()
    cfg = TrainParams(batch_size=4, loss="ce", num_threads=1)
    fit(
        Supervised(probe, nn.CrossEntropyLoss()),
        train,
        val,
        cfg,
        Schedule(1, 1e-3, 16, IMAGENET_MEAN, IMAGENET_STD),
        lambda *_: None,
    )
    return set(probe.seen)


def test_fit_on_cpu_ignores_the_cuda_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _fit_probe(tmp_path, monkeypatch, None) == {(False, False, False)}


def test_fit_applies_autocast_and_channels_last_when_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on = DevicePath(torch.bfloat16, True, False, False)
    assert _fit_probe(tmp_path, monkeypatch, on) == {(True, True, True)}
    off = DevicePath(None, False, False, False)
    assert _fit_probe(tmp_path, monkeypatch, off) == {(False, False, False)}


# --- one loader per fit ----------------------------------------------------------------------


def _fresh_epoch_loader(ds: CacheDataset, cfg: TrainParams, epoch: int) -> DataLoader:
    """The reference: a new DataLoader per epoch, seeded as the loop always seeded it (a lone
    last sample dropped)."""
    seed = cfg.seed * 100_003 + epoch
    order = (
        {"sampler": balanced_sampler(ds.labels, seed)}
        if cfg.balanced_sampler
        else {"shuffle": True, "generator": torch.Generator().manual_seed(seed)}
    )
    return DataLoader(
        ds, batch_size=cfg.batch_size, drop_last=len(ds) % cfg.batch_size == 1, **order
    )


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_one_loader_per_fit_draws_each_epoch_like_a_fresh_one(
    tmp_path: Path, balanced: bool, workers: int
) -> None:
    ds = _cache(tmp_path / "train.h5", 13)
    cfg = TrainParams(
        batch_size=4, loss="ce", balanced_sampler=balanced, seed=5, num_workers=workers
    )
    loader = train_mod._loader(ds, cfg, 0, device_path(cfg, CPU))
    assert loader.persistent_workers is (workers > 0)
    torch.manual_seed(123)
    ours, rng_ours = [], []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        ours.append([i for b in loader for i in b["index"].tolist()])
        rng_ours.append(torch.get_rng_state())
    torch.manual_seed(123)
    for epoch in range(3):
        ref = [i for b in _fresh_epoch_loader(ds, cfg, epoch) for i in b["index"].tolist()]
        assert ours[epoch] == ref  # same order; the global RNG (dropout) is used the same way
        assert torch.equal(rng_ours[epoch], torch.get_rng_state())
    assert ours[0] != ours[1]


def test_weights_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    train = _cache(tmp_path / "train.h5", 10)
    val = _cache(tmp_path / "val.h5", 4)

    def weights(workers: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        student = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 16 * 16, 2))
        objective = Supervised(student, nn.CrossEntropyLoss())
        cfg = TrainParams(batch_size=4, loss="ce", num_threads=1, num_workers=workers)
        sched = Schedule(2, 1e-3, 16, IMAGENET_MEAN, IMAGENET_STD)
        fit(objective, train, val, cfg, sched, lambda *_: None)
        return student.state_dict()

    a, b = weights(0), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
