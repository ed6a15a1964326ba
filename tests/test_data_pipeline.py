"""Augmented views (pure in seed/epoch/index), model input, the HDF5 cache and its dataset."""

from __future__ import annotations

import hashlib
import pickle
import random
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from melanoma_kd.config import AugmentParams
from melanoma_kd.data.cache import resize_shorter_center_crop, write_split_cache
from melanoma_kd.data.dataset import CacheDataset, class_weights
from melanoma_kd.data.transforms import augmented_view, build_augment, model_input, view_seed
from melanoma_kd.errors import UserError

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "patient_id": [f"IP_{i // 2:07d}" for i in range(n)],
            "lesion_id": [f"IL_{i:07d}" for i in range(n)],
        }
    )


def _cache(path: Path, n: int = 6, size: int = SIZE) -> Path:
    write_split_cache(path, _rows(n), _images(n, size), size, "train", "abc123")
    return path


# --- augmented views -------------------------------------------------------------------------


def _image(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(_images(1, 24, seed)[0]).permute(2, 0, 1).contiguous()


def test_view_is_a_pure_function_of_seed_epoch_index() -> None:
    img, aug = _image(), build_augment(AugmentParams())
    a = augmented_view(img, aug, 7, 1, 3)
    # Disturb every RNG a transform could draw from, then ask for the same view.
    torch.manual_seed(12345)
    torch.rand(17)
    random.random()
    np.random.rand(3)
    b = augmented_view(img, aug, 7, 1, 3)
    assert a.dtype == torch.float32 and a.shape == img.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, img.float() / 255)  # it is augmented at all
    assert not torch.equal(a, augmented_view(img, aug, 7, 2, 3))  # next epoch: new view
    assert not torch.equal(a, augmented_view(img, aug, 7, 1, 4))  # other index: new view
    assert not torch.equal(a, augmented_view(img, aug, 8, 1, 3))  # other seed: new view


def test_view_leaves_global_rng_untouched() -> None:
    torch.manual_seed(3)
    state = torch.get_rng_state()
    augmented_view(_image(), build_augment(AugmentParams()), 0, 0, 0)
    assert torch.equal(torch.get_rng_state(), state)


def test_view_does_not_reseed_cuda_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    augmented_view(_image(), build_augment(AugmentParams()), 0, 0, 0)
    assert calls == []


def test_view_seed_separates_fields() -> None:
    assert view_seed(1, 2, 3) == view_seed(1, 2, 3)
    seeds = {view_seed(1, 23, 4), view_seed(12, 3, 4), view_seed(1, 2, 34), view_seed(1, 4, 23)}
    assert len(seeds) == 4
    assert all(0 <= s < 2**63 for s in seeds)


def test_model_input_resizes_and_normalises() -> None:
    img = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    img[1] = 51  # 0.2 after /255
    x = model_input(img, 12, (0.5, 0.2, 0.2), (0.25, 0.1, 0.5))
    assert x.shape == (2, 3, 12, 12) and x.dtype == torch.float32
    # image 0: (1 - 0.5)/0.25 = 2, (1 - 0.2)/0.1 = 8, (1 - 0.2)/0.5 = 1.6
    # image 1: (0.2 - 0.5)/0.25 = -1.2, (0.2 - 0.2)/0.1 = 0, (0.2 - 0.2)/0.5 = 0
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([2.0, 8.0, 1.6]))
    torch.testing.assert_close(x[1, :, 5, 5], torch.tensor([-1.2, 0.0, 0.0]))
    assert img.dtype == torch.uint8 and int(img[0, 0, 0, 0]) == 255  # input untouched
    same = model_input(img, 8, (0.0,) * 3, (1.0,) * 3)
    assert same.shape == (2, 3, 8, 8)
    torch.testing.assert_close(same, img.float() / 255)


# --- dataset ---------------------------------------------------------------------------------


def test_dataset_items_match_the_cache(tmp_path: Path) -> None:
    imgs = _images(6)
    write_split_cache(tmp_path / "train.h5", _rows(6), imgs, SIZE, "train", "h")
    ds = CacheDataset(tmp_path / "train.h5")
    assert len(ds) == 6 and ds.size == SIZE
    item = ds[4]
    assert item["index"] == 4 and item["label"] == 0
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, SIZE, SIZE)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), imgs[4])
    assert ds.ids[4] == "ISIC_0000004" and ds.patients[4] == "IP_0000002"
    assert ds.labels.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("workers", [2])
def test_loader_views_do_not_depend_on_worker_count(tmp_path: Path, workers: int) -> None:
    aug = build_augment(AugmentParams())
    ds = CacheDataset(_cache(tmp_path / "train.h5", n=7), augment=aug, seed=5)

    def views(num_workers: int, epoch: int) -> torch.Tensor:
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=num_workers)
        return torch.cat([ds.views(b["image"], b["index"]) for b in loader])

    serial = views(0, 1)
    assert torch.equal(serial, views(workers, 1))
    direct = torch.stack([augmented_view(ds.read(i), aug, 5, 1, i) for i in range(len(ds))])
    assert torch.equal(serial, direct)
    assert not torch.equal(serial, views(0, 2))


def test_dataset_pickles_without_an_open_handle(tmp_path: Path) -> None:
    ds = CacheDataset(_cache(tmp_path / "train.h5"))
    first = ds[1]["image"]  # opens the HDF5 file lazily
    clone = pickle.loads(pickle.dumps(ds))  # an open h5py.File cannot be pickled at all
    assert clone._h5 is None
    assert torch.equal(clone[1]["image"], first)
    assert torch.equal(ds[2]["image"], clone[2]["image"])


def test_truncated_cache_is_one_line_user_error(tmp_path: Path) -> None:
    good = _cache(tmp_path / "good.h5").read_bytes()
    bad = tmp_path / "train.h5"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError) as exc:
        CacheDataset(bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_foreign_hdf5_is_one_line_user_error(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["images"] = np.zeros((2, 4, 4, 3), np.uint8)
        h5["something"] = np.arange(3)
    with pytest.raises(UserError) as exc:
        CacheDataset(path)
    msg = str(exc.value)
    assert str(path) in msg and "labels" in msg and "\n" not in msg


@pytest.mark.parametrize("content", [None, b"not an hdf5 file at all\n"])
def test_missing_or_non_hdf5_cache_is_user_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "train.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as exc:
        CacheDataset(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_class_weights_are_inverse_frequency() -> None:
    # N / (2 n_c): 4 / (2·3) and 4 / (2·1)
    torch.testing.assert_close(class_weights(np.array([0, 0, 1, 0])), torch.tensor([2 / 3, 2.0]))
    with pytest.raises(UserError):
        class_weights(np.array([0, 0, 0]))


# --- cache -----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_is_byte_identical_on_rerun(tmp_path: Path) -> None:
    a = _cache(tmp_path / "a" / "train.h5")
    b = _cache(tmp_path / "b" / "train.h5")
    assert _sha256(a) == _sha256(b)
    with h5py.File(a, "r") as h5:
        assert h5["images"].dtype == np.uint8 and h5["images"].shape == (6, SIZE, SIZE, 3)
        assert h5["images"].chunks == (1, SIZE, SIZE, 3)
        assert h5["labels"].dtype == np.int8
        assert h5["ids"].asstr()[()].tolist() == _rows(6)["image_id"].tolist()
        assert h5["lesions"].asstr()[0] == "IL_0000000"
        assert dict(h5.attrs) == {"size": SIZE, "split": "train", "inputs_hash": "abc123"}


def test_cache_rejects_wrong_image_shape(tmp_path: Path) -> None:
    imgs = list(_images(3))
    imgs[2] = np.zeros((SIZE, SIZE + 1, 3), np.uint8)
    with pytest.raises(UserError, match="ISIC_0000002"):
        write_split_cache(tmp_path / "x.h5", _rows(3), imgs, SIZE, "train", "h")
    assert not (tmp_path / "x.h5").exists()  # atomic: no half file


def _stripes(h: int, w: int, axis: int) -> np.ndarray:
    """Red | green | blue bands along ``axis``: first quarter, middle half, last quarter."""
    img = np.zeros((h, w, 3), np.uint8)
    n = img.shape[axis]
    bands = [slice(0, n // 4), slice(n // 4, 3 * n // 4), slice(3 * n // 4, n)]
    for channel, band in enumerate(bands):
        index = [slice(None), slice(None), channel]
        index[axis] = band
        img[tuple(index)] = 255
    return img


@pytest.mark.parametrize("axis", [0, 1])
def test_resize_shorter_side_then_centre_crop(axis: int) -> None:
    # 40×80 (or 80×40) → shorter side 20 → 20×40 → centre 20 columns = exactly the green band
    # (red/blue bands are 10 px each after the 2:1 area resize). An off-centre crop shows red/blue.
    shape = (80, 40) if axis == 0 else (40, 80)
    out = resize_shorter_center_crop(_stripes(*shape, axis), 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    expected = np.zeros((20, 20, 3), np.uint8)
    expected[..., 1] = 255
    assert np.array_equal(out, expected)


def test_centre_crop_without_resize_and_upscale() -> None:
    img = _images(1, 60)[0][:30]  # 30×60
    assert np.array_equal(resize_shorter_center_crop(img, 30), img[:, 15:45])
    assert resize_shorter_center_crop(_images(1, 10)[0], 24).shape == (24, 24, 3)
    assert resize_shorter_center_crop(img[:, :31], 30).shape == (30, 30, 3)  # odd margin
