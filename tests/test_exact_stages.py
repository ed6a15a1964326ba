"""The data stages write identical bytes whatever vector instructions the CPU offers.

``generate`` … ``synth_positives`` and ``transfer_set`` hold no floating-point training, so their
outputs must match bit for bit on any x86-64 CPU with AVX2. The tiny pipeline's data stages run
twice: once with the CPU's own dispatch (pinned by :mod:`melanoma_kd.cpu_kernels`) and once as
an AVX2-only CPU would run them (OpenCV's AVX-512 code paths switched off). Every output file
must be byte-identical.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.dvc_repo import make_repo, run

pytestmark = pytest.mark.pipeline

EXACT = ("synth_positives", "transfer_set")
OUTPUTS = (
    "data/raw/synthetic",
    "data/manifest.csv",
    "data/splits.csv",
    "data/interim/dehaired.h5",
    "data/synth/candidates.h5",
    "data/synth/candidates.csv",
    "data/transfer.h5",
)
AVX2_ONLY = {"OPENCV_CPU_DISABLE": "AVX512_SKX,AVX512_ICL,AVX512F,AVX512_COMMON"}


def _digests(repo: Path) -> dict[str, str]:
    out = {}
    for name in OUTPUTS:
        path = repo / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[f.relative_to(repo).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


def test_data_stages_are_bitwise_equal_under_two_dispatch_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    run(repo, "dvc", "repro", *EXACT)
    native = _digests(repo)
    assert len(native) >= len(OUTPUTS)

    for name, value in AVX2_ONLY.items():
        monkeypatch.setenv(name, value)
    assert os.environ["OPENCV_CPU_DISABLE"] == AVX2_ONLY["OPENCV_CPU_DISABLE"]
    run(repo, "dvc", "repro", "-f", *EXACT)
    assert _digests(repo) == native
