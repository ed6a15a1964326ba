"""Cached teacher outputs are stored float16 (half the disk) and read back as float32."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from melanoma_kd.errors import UserError
from melanoma_kd.teacher_outputs import STORED_DTYPE, to_stored
from melanoma_kd.train import TeacherOutputs
from tests.test_train import EPOCHS, STAGES, _teacher_setup

HALF_ULP = 2.0**-11  # float16 has a 10-bit mantissa: round-to-nearest is within 2^-11 relative
SMALLEST_NORMAL = 2.0**-14


def test_file_is_float16_and_reads_back_as_float32(tmp_path: Path) -> None:
    _, _, _, out = _teacher_setup(tmp_path, 32, n=6)
    with h5py.File(out) as h5:
        names = ["logits", *(f"features_{k}" for k in range(STAGES))]
        stored = {name: h5[name][()] for name in names}
        for name in names:
            ds = h5[name]
            assert ds.dtype == np.float16
            assert ds.id.get_storage_size() == ds.size * 2  # 2 bytes a value on disk
    cached = TeacherOutputs(out)
    everything = torch.arange(6)
    for epoch in range(EPOCHS):
        cached.load_epoch(epoch)
        got = cached.batch(everything)
        tensors = [got["logits"], *got["features"]]
        assert all(t.dtype == torch.float32 for t in tensors)
        for name, t in zip(names, tensors, strict=True):
            np.testing.assert_array_equal(t.numpy(), stored[name][epoch].astype(np.float32))
        assert torch.all(torch.isfinite(got["logits"])) and got["logits"].abs().max() > 1e-2


def test_rounding_is_within_half_an_ulp() -> None:
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-9, 4.5, 20_000)
    values = torch.from_numpy(
        (magnitudes * rng.choice([-1.0, 1.0], magnitudes.size)).astype(np.float32)
    )
    back = to_stored(values, "logits").astype(np.float32)
    x = values.numpy()
    err = np.abs(back - x)
    normal = np.abs(x) >= SMALLEST_NORMAL
    assert np.all(err[normal] <= HALF_ULP * np.abs(x[normal]))
    assert np.all(err[~normal] <= 2.0**-25)  # subnormal spacing 2^-24, half of it
    assert to_stored(values, "logits").dtype == STORED_DTYPE


def test_values_beyond_float16_are_a_one_line_error() -> None:
    assert to_stored(torch.tensor([65504.0, -65504.0]), "logits").tolist() == [65504.0, -65504.0]
    with pytest.raises(UserError) as info:
        to_stored(torch.tensor([1.0, 7e4]), "features")
    assert "\n" not in str(info.value) and "float16" in str(info.value)
