"""Batched augmented views: pure in (seed, epoch, index), batch- and worker-independent, and equal
to the per-sample torchvision definition (``reference_view``) and to hand-computed cases."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from melanoma_kd.config import AugmentParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.views import (
    BatchAugment,
    ViewParams,
    adjust_contrast,
    adjust_hue,
    affine_grid,
    apply_views,
    draw_view_params,
    reference_view,
)

# The ISIC profile's augmentation (configs/isic2024.yaml): the default plus hue jitter.
ISIC = AugmentParams(hue=0.2)
NO_COLOUR = AugmentParams(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
# Batched vs per-sample torchvision (float32 both): the ops are the same formulas, evaluated in a
# different order (grid written out per element, factors broadcast, hue by its closed form), so
# they agree to float32 rounding — observed ≤ 6e-6 on [0, 1] images; 1e-4 is 0.026 of a grey level.
PARITY_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)


def _params(n: int, **fields: float | bool) -> ViewParams:
    """``n`` identical views with the given parameters (identity for the rest)."""
    base = {
        "flip": False,
        "angle": 0.0,
        "scale": 1.0,
        "brightness": 1.0,
        "contrast": 1.0,
        "saturation": 1.0,
        "hue": 0.0,
    } | fields
    return ViewParams(
        **{
            k: torch.full((n,), v, dtype=torch.bool if k == "flip" else torch.float64)
            for k, v in base.items()
        }
    )


# --- purity and independence from batch makeup -----------------------------------------------


def test_same_seed_epoch_index_gives_the_same_bytes_twice() -> None:
    images, aug = _images(4, 32), BatchAugment(ISIC)
    a = aug(images, 7, 1, [3, 9, 0, 12])
    torch.manual_seed(12345)  # disturb every RNG a transform could draw from
    torch.rand(17)
    random.random()
    np.random.rand(3)
    b = aug(images, 7, 1, [3, 9, 0, 12])
    assert a.dtype == torch.float32 and a.shape == images.shape
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert not torch.equal(a, aug(images, 7, 2, [3, 9, 0, 12]))  # next epoch: new views
    assert not torch.equal(a, aug(images, 8, 1, [3, 9, 0, 12]))  # other seed: new views
    assert not torch.equal(a[0], aug(images[:1], 7, 1, [4])[0])  # other index: new view


def test_drawing_leaves_global_rng_untouched() -> None:
    torch.manual_seed(3)
    state = torch.get_rng_state()
    BatchAugment(ISIC)(_images(2, 16), 0, 0, [0, 1])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("size", [20, 64, 256])  # one chunk, chunks of 8 and of 1 on the CPU
def test_view_does_not_depend_on_batch_composition(size: int) -> None:
    n = 32 if size < 256 else 10
    images, aug = _images(n, size, seed=size), BatchAugment(ISIC)
    indices = torch.arange(100, 100 + n)
    whole = aug(images, 5, 2, indices)
    for k in (0, n // 2, n - 1):  # batch of one
        assert torch.equal(aug(images[k : k + 1], 5, 2, indices[k : k + 1])[0], whole[k])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    assert torch.equal(aug(images[perm], 5, 2, indices[perm]), whole[perm])  # shuffled batch
    odd = aug(images[3:10], 5, 2, indices[3:10])  # a batch straddling chunk boundaries
    assert torch.equal(odd, whole[3:10])


def test_view_does_not_depend_on_thread_count() -> None:
    images, aug = _images(12, 64), BatchAugment(ISIC)
    one = aug(images, 0, 0, range(12))
    torch.set_num_threads(2)
    assert torch.equal(aug(images, 0, 0, range(12)), one)
    assert torch.equal(aug(images[5:6], 0, 0, [5])[0], one[5])


def _cache(path: Path, n: int, size: int) -> Path:
    rows = pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "patient_id": [f"IP_{i:07d}" for i in range(n)],
            "lesion_id": [f"IL_{i:07d}" for i in range(n)],
        }
    )
    images = _images(n, size).permute(0, 2, 3, 1).numpy()
    write_split_cache(path, rows, images, size, "train", "abc123")
    return path


def test_loader_views_do_not_depend_on_worker_count_or_order(tmp_path: Path) -> None:
    ds = CacheDataset(_cache(tmp_path / "train.h5", 9, 24), augment=BatchAugment(ISIC), seed=4)
    ds.set_epoch(3)

    def views(**loader: object) -> dict[int, torch.Tensor]:
        out = {}
        for batch in DataLoader(ds, **loader):
            assert batch["image"].dtype == torch.uint8  # workers only read stored images
            views = ds.views(batch["image"], batch["index"])
            out.update(zip(batch["index"].tolist(), views, strict=True))
        return out

    serial = views(batch_size=4, num_workers=0)
    shuffled = views(
        batch_size=2, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(serial) == sorted(shuffled) == list(range(9))
    assert all(torch.equal(serial[i], shuffled[i]) for i in range(9))


# --- parity with the per-sample torchvision definition ----------------------------------------


@pytest.mark.parametrize(
    ("p", "size"),
    [(ISIC, 24), (ISIC, 61), (AugmentParams(), 32), (AugmentParams(hue=0.5, rotation=180.0), 32)],
)
def test_batched_views_match_the_per_sample_reference(p: AugmentParams, size: int) -> None:
    n = 16
    images = _images(n, size, seed=size)
    vp = draw_view_params(p, 11, 4, range(n))
    batched = apply_views(images, vp, p)
    reference = torch.stack([reference_view(images[k], vp.row(k), p) for k in range(n)])
    diff = (batched - reference).abs().max().item()
    assert diff <= PARITY_ATOL, diff


def test_non_square_views_match_the_reference() -> None:
    images = _images(6, 40)[:, :, :24, :]  # 24 × 40
    vp = draw_view_params(ISIC, 0, 0, range(6))
    reference = torch.stack([reference_view(images[k], vp.row(k), ISIC) for k in range(6)])
    torch.testing.assert_close(apply_views(images, vp, ISIC), reference, atol=PARITY_ATOL, rtol=0)


def test_grid_is_torch_affine_grid() -> None:
    vp = draw_view_params(ISIC, 2, 0, range(5))
    rad = torch.deg2rad(vp.angle)
    sign = torch.where(vp.flip, -1.0, 1.0)
    cos, sin = torch.cos(rad) / vp.scale, torch.sin(rad) / vp.scale
    zeros = torch.zeros_like(cos)
    theta = torch.stack(
        (torch.stack((sign * cos, sign * sin, zeros), 1), torch.stack((-sin, cos, zeros), 1)), 1
    ).float()
    expected = F.affine_grid(theta, [5, 3, 16, 16], align_corners=False)
    torch.testing.assert_close(affine_grid(vp, 16, 16, torch.device("cpu")), expected)


def test_hue_matches_torchvision_on_edge_pixels() -> None:
    """Greys, ties for the maximum, primaries, and hues near the 0/1 wrap."""
    pixels = [
        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5),  # greys: hue undefined, C = 0
        (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0),  # two channels tie for the max
        (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),  # primaries
        (1.0, 0.0, 1e-6), (1.0, 1e-6, 0.0), (0.3, 0.2, 0.2 + 1e-7),  # just either side of 0
    ]  # fmt: skip
    x = torch.tensor(pixels, dtype=torch.float32).T.reshape(1, 3, 3, 4)
    x = torch.cat([x, torch.rand(1, 3, 3, 4, generator=torch.Generator().manual_seed(0))])
    for shift in (-0.5, -0.2, 0.0, 1e-3, 1 / 3, 0.5):
        got = adjust_hue(x, torch.full((2,), shift, dtype=torch.float64))
        expected = torch.stack([TF.adjust_hue(img, shift) for img in x])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# --- hand-computed cases ----------------------------------------------------------------------


def test_identity_flip_and_quarter_turn_move_pixels_exactly() -> None:
    images = _images(2, 9)
    x = images.float() / 255
    same = apply_views(images, _params(2), NO_COLOUR)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = apply_views(images, _params(2, flip=True), NO_COLOUR)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)
    # a positive angle of torchvision's affine (RandomAffine's op) turns the image clockwise
    turned = apply_views(images, _params(2, angle=90.0), NO_COLOUR)
    torch.testing.assert_close(turned, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_zoom_in_by_two_samples_between_pixel_centres() -> None:
    # scale 2 about the centre of a 4-px ramp (40 per pixel): output pixel centres −1.5, −0.5,
    # 0.5, 1.5 px from the centre sample the input at half those offsets
    row = torch.tensor([0.0, 40.0, 80.0, 120.0])
    images = row.expand(1, 3, 4, 4).to(torch.uint8)
    out = apply_views(images, _params(1, scale=2.0), NO_COLOUR)[0, 0, 1] * 255
    # — input pixel coordinates 0.75, 1.25, 1.75, 2.25 (pixel k spans [k − 0.5, k + 0.5])
    torch.testing.assert_close(out, torch.tensor([30.0, 50.0, 70.0, 90.0]), atol=1e-3, rtol=0)


def test_colour_factors_as_defined() -> None:
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = 0.8  # red 0.8, green 0.2, blue 0
    x[:, 1] = 0.2
    only_brightness = AugmentParams(brightness=0.5, contrast=0, saturation=0, hue=0)
    bright = apply_views(x, _params(2, brightness=0.5), only_brightness)
    torch.testing.assert_close(bright[:, :, 0, 0], torch.tensor([[0.4, 0.1, 0.0]] * 2))
    # contrast 0 replaces every pixel by the mean grey 0.2989·0.8 + 0.587·0.2
    grey = 0.2989 * 0.8 + 0.587 * 0.2
    flat = adjust_contrast(x, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(flat[0], torch.full((3, 2, 2), grey))
    torch.testing.assert_close(flat[1], x[1])
    # a third of a turn of hue permutes the channels, (R, G, B) → (B, R, G); back a third,
    # (R, G, B) → (G, B, R) (hue 1/24 → 3/8 and → 17/24, S and V kept)
    turned = adjust_hue(x, torch.tensor([1 / 3, -1 / 3], dtype=torch.float64))
    torch.testing.assert_close(turned[0, :, 0, 0], torch.tensor([0.0, 0.8, 0.2]))
    torch.testing.assert_close(turned[1, :, 0, 0], torch.tensor([0.2, 0.0, 0.8]))


def test_view_parameters_span_their_ranges() -> None:
    vp = draw_view_params(ISIC, 0, 0, range(2000))
    assert 0.45 < vp.flip.double().mean() < 0.55
    assert vp.angle.abs().max() <= 30.0 and vp.angle.abs().max() > 29.0
    assert 0.8 <= vp.scale.min() < 0.81 and 1.19 < vp.scale.max() <= 1.2
    for factor in (vp.brightness, vp.contrast, vp.saturation):
        assert 0.8 <= factor.min() < 0.81 and 1.19 < factor.max() <= 1.2
    assert vp.hue.abs().max() <= 0.2 and vp.hue.min() < -0.19 and vp.hue.max() > 0.19
    # a strength of 0 draws exactly the identity
    none = draw_view_params(NO_COLOUR.model_copy(update={"hflip": 0.0}), 0, 0, range(50))
    assert not none.flip.any()
    assert bool((none.brightness == 1).all()) and bool((none.hue == 0).all())
    assert math.isclose(float(vp.angle.mean()), 0.0, abs_tol=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_on_cuda_match_the_cpu() -> None:
    images, aug = _images(16, 64), BatchAugment(ISIC)
    cpu = aug(images, 1, 2, range(16))
    cuda = aug(images.cuda(), 1, 2, range(16))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0)
    assert torch.equal(aug(images.cuda()[3:4], 1, 2, [3])[0], cuda[3])  # batch-independent
