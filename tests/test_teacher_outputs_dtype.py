"""``compute_teacher_outputs(dtype=...)``: the pipeline default stays float16, float32 keeps the
teacher's values, and the float16 file is exactly the float32 one rounded (numpy's cast)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import timm
import torch

from melanoma_kd.config import AugmentParams
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.errors import UserError
from melanoma_kd.models.build import save_checkpoint
from melanoma_kd.teacher_outputs import compute_teacher_outputs, to_stored


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    n, size = 6, 24
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    cache = tmp_path / "train.h5"
    write_split_cache(
        cache, rows, rng.integers(0, 256, (n, size, size, 3), np.uint8), size, "t", "h"
    )
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=2)
    with torch.no_grad():
        model.get_classifier().weight.normal_()
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(ckpt, model, {"arch": "resnet10t", "image_size": size})
    return cache, ckpt


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in h5}


def test_float16_file_is_the_float32_file_rounded(tmp_path: Path) -> None:
    cache, ckpt = _setup(tmp_path)
    aug = build_augment(AugmentParams())
    files = {}
    for name, dtype in (("default", None), ("fp32", np.float32)):
        out = tmp_path / f"{name}.h5"
        extra = {} if dtype is None else {"dtype": dtype}
        compute_teacher_outputs(ckpt, cache, aug, 3, 2, 2, out, batch_size=4, **extra)
        files[name] = _read(out)
    assert files["default"].keys() == files["fp32"].keys() == {"logits", "features_0", "features_1"}
    for key, full in files["fp32"].items():
        assert full.dtype == np.float32 and files["default"][key].dtype == np.float16
        np.testing.assert_array_equal(files["default"][key], full.astype(np.float16))
        assert np.any(full != full.astype(np.float16).astype(np.float32))  # float32 kept more


def test_range_check_follows_the_dtype() -> None:
    big = torch.tensor([1.0, 7e4])
    assert to_stored(big, "logits", np.float32).tolist() == [1.0, 70000.0]
    with pytest.raises(UserError, match="float16"):
        to_stored(big, "logits")
