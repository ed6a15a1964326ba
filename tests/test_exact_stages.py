"""The data stages write identical bytes whatever vector instructions the CPU offers.

``generate`` … ``synth_positives`` and ``transfer_set`` hold no floating-point training, so their
outputs must match bit for bit on any x86-64 CPU with AVX2. The session's tiny pipeline ran them
with the CPU's own dispatch (pinned by :mod:`melanoma_kd.cpu_kernels`); here they run again in a
new repo as an AVX2-only CPU would run them (OpenCV's AVX-512 code paths switched off), and
every output DVC records for them (data, metrics and plots) must have the md5 the tiny pipeline's
``dvc.lock`` recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

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


def _recorded_outputs(lock: str) -> dict[str, str]:
    """Output path -> the md5 ``dvc.lock`` records (a folder's covers every file in it)."""
    stages = yaml.safe_load(lock)["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def test_data_stages_are_bitwise_equal_under_two_dispatch_settings(
    tiny_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = _recorded_outputs(run(tiny_repo, "git", "show", "HEAD:dvc.lock").stdout)

    for name, value in AVX2_ONLY.items():
        monkeypatch.setenv(name, value)
    assert os.environ["OPENCV_CPU_DISABLE"] == AVX2_ONLY["OPENCV_CPU_DISABLE"]
    repo = make_repo(tmp_path / "repo")
    run(repo, "dvc", "repro", *EXACT)
    avx2 = _recorded_outputs((repo / "dvc.lock").read_text())
    assert set(OUTPUTS) <= avx2.keys()
    assert avx2 == {path: native[path] for path in avx2}
