"""Multi-process training: torchrun + DDP through the same loop, sharding, rank-0-only outputs.

The end-to-end test trains a LayerNorm student (no BatchNorm, no dropout) with response KD on
cached teacher outputs, once as 1 process with batch 8 and once as 2 torchrun processes with
batch 4 each. With the sharding of ``melanoma_kd.distributed`` the two ranks' j-th batches are
exactly the 1-process run's j-th batch, DDP averages the two half-batch gradients into the
full-batch gradient, and each view is paired with the teacher output cached for its own train
index — so both runs compute the same thing and may differ only by floating-point summation
order (the all-reduce averages two half-batch gradients where one process takes one full-batch
mean): ~1e-6 (the logged curves agree to all 6 decimals). Hence a tolerance of 1e-4 on the
per-epoch losses and validation metrics and on the validation scores. A wrong shard, a wrong
teacher lookup (pairing each view with its batch neighbour's teacher output under DDP only moved
the train loss by 2e-3 and the scores by 1e-2), a missing gradient average or a divergent rank
exceeds it by far.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml

from melanoma_kd import distributed, launch
from melanoma_kd import train as train_mod
from melanoma_kd.config import AugmentParams, TrainParams, load_params
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.errors import UserError
from melanoma_kd.io import read_json, sha256_json
from melanoma_kd.models.build import save_checkpoint
from melanoma_kd.runs import params_hash
from melanoma_kd.teacher_outputs import compute_teacher_outputs
from tests import ddp_run
from tests.conftest import REPO_ROOT

SIZE, N_TRAIN, N_VAL, EPOCHS = 32, 32, 24, 3
TORCHRUN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


# --- pure pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "world", "batch"), [(16, 2, 4), (13, 2, 3), (10, 4, 2), (1, 3, 1)])
def test_shards_together_are_the_one_process_batches(n: int, world: int, batch: int) -> None:
    order = list(np.random.default_rng(n).permutation(n))
    shards = [distributed.shard(order, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same number of batches on every rank
    per_rank = len(shards[0])
    assert per_rank == -(-n // world)
    padded = order + (order * world)[: per_rank * world - n]
    for j in range(0, per_rank, batch):  # rank batches j.. together = one process's big batch
        together = sorted(i for s in shards for i in s[j : j + batch])
        assert together == sorted(padded[j * world : (j + batch) * world])
    assert set().union(*shards) == set(order)


@pytest.mark.parametrize("balanced", [False, True])
def test_rank_loaders_split_the_one_process_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, balanced: bool
) -> None:
    _cache(tmp_path / "train.h5", 16, seed=0)
    ds = CacheDataset(tmp_path / "train.h5")
    cfg = TrainParams(batch_size=4, loss="ce", balanced_sampler=balanced, seed=3)
    one = [
        b["index"].tolist()
        for b in train_mod._loader(ds, cfg.model_copy(update={"batch_size": 8}), 1)
    ]
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank_and_world", lambda r=rank: (r, 2))
        per_rank.append([b["index"].tolist() for b in train_mod._loader(ds, cfg, 1)])
    assert [sorted(a + b) for a, b in zip(*per_rank, strict=True)] == [sorted(b) for b in one]


def test_one_process_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert launch.torchrun_if_needed(TrainParams(nproc=1), ["x.py"]) is None
    assert launch.is_main_process() and launch.threads_per_process(2) == 2
    assert distributed.rank_and_world() == (0, 1)
    launch.join_process_group(1)
    assert distributed.rank_and_world() == (0, 1)
    values = {"a": 1.5, "b": 2.0}
    assert distributed.from_rank0(values, torch.device("cpu")) is values
    with pytest.raises(UserError, match=r"train\.nproc is 2 but 1 training process") as exc:
        launch.join_process_group(2)
    assert "\n" not in str(exc.value)


def test_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launch.torchrun_if_needed(TrainParams(nproc=4), ["x.py"]) is None  # already a worker
    assert not launch.is_main_process()
    assert [launch.threads_per_process(t) for t in (1, 2, 5)] == [1, 1, 2]
    argv = ["stages/train_student.py", "--params", "p.yaml"]
    assert launch.torchrun_args(2, argv) == ["--standalone", "--nproc-per-node=2", *argv]


def test_params_hash_unchanged_at_one_process() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    train = params.train.model_dump()
    assert train["nproc"] == 1
    before = {k: v for k, v in train.items() if k != "nproc"}  # the hash before nproc existed
    assert params_hash(params, "train") == sha256_json({"train": before})[:16]
    two = params.model_copy(update={"train": params.train.model_copy(update={"nproc": 2})})
    assert params_hash(two, "train") != params_hash(params, "train")


# --- torchrun end to end ---------------------------------------------------------------------


def _cache(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(n)]
    images = [rng.integers(8 * y, 8 * y + 248, (SIZE, SIZE, 3)).astype(np.uint8) for y in labels]
    rows = pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, images, SIZE, path.stem, "h")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train/val caches, cached outputs of a random teacher, and the tiny params profile."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "cache").mkdir()
    _cache(root / "cache/train.h5", N_TRAIN, seed=0)
    _cache(root / "cache/val.h5", N_VAL, seed=1)
    torch.manual_seed(0)
    teacher = timm.create_model("test_resnet", num_classes=2)
    save_checkpoint(root / "teacher.pt", teacher, {"arch": "test_resnet", "image_size": SIZE})
    raw = yaml.safe_load((REPO_ROOT / "tests/profiles/tiny.yaml").read_text())
    raw["train"].update(loss="ce", num_threads=1, patience=10)
    raw["student"].update(epochs=EPOCHS, image_size=SIZE)
    raw["cache"]["size"] = SIZE
    (root / "base.yaml").write_text(yaml.safe_dump(raw))
    aug = build_augment(AugmentParams(**raw["augment"]))
    seed = raw["train"]["seed"]
    compute_teacher_outputs(
        root / "teacher.pt", root / "cache/train.h5", aug, seed, EPOCHS, 2, root / "teacher.h5"
    )
    return root


def _argv(root: Path, name: str, nproc: int, batch_size: int) -> list[str]:
    """``tests/ddp_run.py`` arguments for a run writing under ``root/name``."""
    raw = yaml.safe_load((root / "base.yaml").read_text())
    raw["train"].update(nproc=nproc, batch_size=batch_size)
    (root / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return [
        *("--params", str(root / f"{name}.yaml"), "--cache-dir", str(root / "cache")),
        *("--teacher-outputs", str(root / "teacher.h5"), "--out", str(root / name)),
    ]


@pytest.fixture
def _restore_torch_state():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.set_num_threads(threads)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _curves(run: Path) -> pd.DataFrame:
    """Per-epoch train loss and validation metrics that rank 0 logged with dvclive."""
    plots = run / "rank0/metrics/live/plots/metrics"
    keys = ("train_loss", "val_loss", "val_roc_auc", "val_pauc")
    return pd.concat([pd.read_csv(plots / f"{k}.tsv", sep="\t")[k] for k in keys], axis=1)


def _relaunched_under_torchrun(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int | None:
    """Exit status of ``python tests/ddp_run.py ARGV`` (``train.nproc: 2``), its launcher run in
    this process: ``ddp_run.main`` relaunches itself under torchrun exactly as a stage script
    does, and only the two workers are new interpreters (a launcher process would import the
    whole training stack a third time). A watchdog kills the workers after 300 s."""
    script = "tests/ddp_run.py"
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    environ = dict(os.environ)  # the launcher sets OMP_NUM_THREADS and torchelastic variables
    handlers = {sig: signal.getsignal(sig) for sig in TORCHRUN_SIGNALS}  # and signal handlers
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        os.environ.pop(name, None)
    os.environ["PYTHONPATH"] = str(REPO_ROOT)

    def kill_workers() -> None:
        found = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", script], capture_output=True)
        for pid in found.stdout.split():
            os.kill(int(pid), signal.SIGKILL)

    watchdog = threading.Timer(300, kill_workers)
    watchdog.start()
    try:
        with pytest.raises(SystemExit) as exit_info:
            ddp_run.main(argv)
    finally:
        watchdog.cancel()
        os.environ.clear()
        os.environ.update(environ)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return exit_info.value.code


@pytest.mark.usefixtures("_restore_torch_state")
def test_two_processes_train_like_one_with_twice_the_batch(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ddp_run.main(_argv(setup, "one", nproc=1, batch_size=8))  # in this process: rank 0 of 1
    assert _relaunched_under_torchrun(_argv(setup, "two", nproc=2, batch_size=4), monkeypatch) == 0

    one, two = setup / "one", setup / "two"

    # Only rank 0 wrote, and it wrote the same files a single process writes, no temporaries.
    assert [p.name for p in two.iterdir()] == ["rank0"]
    assert _files(two / "rank0") == _files(one / "rank0")
    assert {"model.pt", "metrics/summary.json", "metrics/val_predictions.csv"} <= set(
        _files(two / "rank0")
    )
    assert not [f for f in _files(two) if f.endswith(".tmp")]

    # The same training, up to summation order (see the module docstring for the tolerance).
    c1, c2 = _curves(one), _curves(two)
    assert len(c1) == len(c2) == EPOCHS
    np.testing.assert_allclose(c2.to_numpy(), c1.to_numpy(), atol=1e-4, rtol=0)
    assert c1["train_loss"].iloc[-1] < c1["train_loss"].iloc[0]  # it did learn something
    s1, s2 = (read_json(d / "rank0/metrics/summary.json") for d in (one, two))
    assert s2["best_epoch"] == s1["best_epoch"] and s2["epochs_run"] == s1["epochs_run"]
    for key in ("val_loss", "val_roc_auc", "val_pauc"):
        assert s2[key] == pytest.approx(s1[key], abs=1e-4), key
    p1, p2 = (pd.read_csv(d / "rank0/metrics/val_predictions.csv") for d in (one, two))
    assert p2["image_id"].tolist() == p1["image_id"].tolist()
    np.testing.assert_allclose(p2["score"], p1["score"], atol=1e-4, rtol=0)
