"""Bad input through the real stage scripts: one ``error:`` line on stderr, exit 2, no partial
output, and an earlier output at the same path left intact.

Most cases call the script's ``main`` in this process (``stage``), as ``python stages/<script>``
would; that a fresh interpreter prints nothing else on stderr (no import-time warning, no
traceback) is checked by one subprocess per script: ``stage_process`` here for train_teacher,
``tests/test_ingest.py`` for ingest and ``tests/test_split.py`` for split."""

from __future__ import annotations

import contextlib
import io
import runpy
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from melanoma_kd.data.cache import write_split_cache
from tests.conftest import REPO_ROOT, TinyDataset, corrupt_jpeg

SENTINEL = b"previous complete output\n"


def stage_process(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python stages/<script> ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "stages" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def stage(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The script's ``main`` run in this process from ``cwd``: its exit status and stderr, as
    :func:`stage_process` would report them (an uncaught exception fails the test itself)."""
    main = runpy.run_path(str(REPO_ROOT / "stages" / script), run_name="stage_under_test")["main"]
    out, err = io.StringIO(), io.StringIO()
    sigterm = signal.getsignal(signal.SIGTERM)  # cli_entry installs its own handler
    code: int | str | None = 0
    try:
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            main(list(args))
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([script, *args], returncode, out.getvalue(), err.getvalue())


@pytest.fixture
def _restore_torch_state() -> Iterator[None]:
    """A training stage's main sets torch's thread count and deterministic mode."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.set_num_threads(threads)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def params_file(tmp: Path, root: Path | None = None, **sections: dict) -> Path:
    data: dict = {
        "data": {"source": "isic2024", "root": str(root or tmp)},
        "distill": {"transfer_images": 0},  # real data would need distill.transfer_dir
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_ingest(tmp: Path, params: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp / "out" / "manifest.csv"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(SENTINEL)
    proc = stage(
        "ingest.py",
        "--params", str(params),
        "--out", str(out),
        "--skipped", str(tmp / "out" / "skipped.csv"),
        "--metrics", str(tmp / "out" / "ingest.json"),
        cwd=tmp,
    )  # fmt: skip
    return proc, out


def _corrupt(ds: TinyDataset) -> str:
    ds.images["ISIC_0000003"] = corrupt_jpeg("truncated", ds.images["ISIC_0000003"])
    return "ISIC_0000003"


def _missing_column(ds: TinyDataset) -> str:
    ds.metadata = ds.metadata.drop(columns=["target"])
    return "target"


def _nan_label(ds: TinyDataset) -> str:
    ds.metadata["target"] = ds.metadata["target"].astype(object)
    ds.metadata.loc[2, "target"] = np.nan
    return "line 4"


def _duplicate_id(ds: TinyDataset) -> str:
    ds.metadata.loc[4, "isic_id"] = ds.metadata.loc[1, "isic_id"]
    return "duplicate isic_id"


def _no_positives(ds: TinyDataset) -> str:
    ds.metadata["target"] = 0
    return "no melanoma"


@pytest.mark.parametrize(
    "breaker", [_corrupt, _missing_column, _nan_label, _duplicate_id, _no_positives]
)
def test_ingest_rejects_bad_data(
    isic2024_data: TinyDataset, tmp_path: Path, breaker: Callable[[TinyDataset], str]
) -> None:
    needle = breaker(isic2024_data)
    isic2024_data.write()
    proc, out = run_ingest(tmp_path, params_file(tmp_path, isic2024_data.root))
    assert_one_line_error(proc, needle)
    assert out.read_bytes() == SENTINEL
    assert not (tmp_path / "out" / "ingest.json").exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ("distill", {"response": {"alpha": [1.5]}}, "distill.response.alpha"),
        ("distill", {"response": {"temperature": [0]}}, "distill.response.temperature"),
        ("distill", {"feature": {"alpha": [-0.1]}}, "distill.feature.alpha"),
        ("cache", {"size": -64}, "cache.size"),
        ("teachers", {"epocsh": 3}, "teachers.epocsh"),
        ("split", {"train": 0.9}, "split"),
    ],
)
def test_bad_params_stop_any_stage_before_it_writes(
    isic2024_data: TinyDataset, tmp_path: Path, section: str, values: dict, needle: str
) -> None:
    params = params_file(tmp_path, isic2024_data.root, **{section: values})
    proc, out = run_ingest(tmp_path, params)
    assert_one_line_error(proc, needle)
    assert out.read_bytes() == SENTINEL


def test_split_with_an_empty_class_fails(tmp_path: Path) -> None:
    manifest = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(40)],
            "lesion_id": [f"l{k}" for k in range(40)],
            "patient_id": [f"p{k // 2}" for k in range(40)],
            "label": [1, 1] + [0] * 38,  # one melanoma patient: val/holdout get none
            "source": "synthetic",
            "location": "",
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "splits.csv"
    out.write_bytes(SENTINEL)
    (tmp_path / "ingest.json").write_text("{}")
    proc = stage(
        "split.py",
        "--params", str(params_file(tmp_path)),
        "--manifest", str(tmp_path / "manifest.csv"),
        "--ingest-report", str(tmp_path / "ingest.json"),
        "--out", str(out),
        "--metrics", str(tmp_path / "split.json"),
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "no melanoma")
    assert out.read_bytes() == SENTINEL


def _tiny_cache(cache_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6), ("holdout", 6)):
        rows = pd.DataFrame(
            {
                "image_id": [f"{split}{k}" for k in range(n)],
                "patient_id": [f"p{split}{k}" for k in range(n)],
                "lesion_id": [f"l{split}{k}" for k in range(n)],
                "label": [k % 2 for k in range(n)],
            }
        )
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        write_split_cache(cache_dir / f"{split}.h5", rows, list(images), 32, split, "test")


def _train_args(tmp: Path, params: Path, *extra: str) -> list[str]:
    return [
        "--params", str(params),
        "--cache-dir", str(tmp / "cache"),
        "--checkpoint", str(tmp / "models" / "model.pt"),
        "--metrics-dir", str(tmp / "metrics"),
        *extra,
    ]  # fmt: skip


@pytest.mark.usefixtures("_restore_torch_state")
def test_truncated_cache_is_named(tmp_path: Path) -> None:
    _tiny_cache(tmp_path / "cache")
    train = tmp_path / "cache" / "train.h5"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 3])
    params = params_file(tmp_path, teachers={"image_size": 32}, student={"image_size": 32})
    proc = stage("train_student.py", *_train_args(tmp_path, params), cwd=tmp_path)
    assert_one_line_error(proc, "train.h5")
    assert not (tmp_path / "models" / "model.pt").exists()


def test_unknown_architecture_is_named(tmp_path: Path) -> None:
    _tiny_cache(tmp_path / "cache")
    params = params_file(tmp_path, teachers={"image_size": 32}, student={"image_size": 32})
    args = _train_args(tmp_path, params, "--arch", "resnet_does_not_exist")
    proc = stage_process("train_teacher.py", *args, cwd=tmp_path)
    assert_one_line_error(proc, "resnet_does_not_exist")
    assert not (tmp_path / "models").exists()
