"""Shared fixtures: tiny data sets written in the real ISIC-2024 and HAM10000 on-disk formats.

Each fixture returns a :class:`TinyDataset` already written under ``tmp_path``. A test may edit
its ``metadata`` and ``images`` (or use :func:`corrupt_jpeg`) and call ``write()`` again to
produce a broken variant of the same data set.

The pipeline fixtures (``tiny_repo``, ``tiny_remote``, ``fresh_clone``) share one reproduction
of the tiny profile per session, and ``recipe_runs`` one of each published recipe at toy size:
background jobs (``tests/background.py``) that run while the unit tests do
(``tests/tiny_pipeline.py``, ``tests/recipe_runs.py``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from tests.background import Background
from tests.tiny_pipeline import FreshClone, TinyPipeline

if TYPE_CHECKING:
    from tests.recipe_runs import RecipeRun

REPO_ROOT = Path(__file__).resolve().parents[1]

Storage = Literal["bytes", "void", "uint8"]


def encode_jpeg(seed: int, size: int = 24) -> bytes:
    """A small seeded RGB JPEG (smoothed noise, so it is not trivially constant)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 1.5)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def corrupt_jpeg(
    kind: Literal["random", "truncated", "empty"], good: bytes, seed: int = 0
) -> bytes:
    """A broken image payload: random bytes, the first half of a JPEG, or nothing at all."""
    if kind == "random":
        return (
            np.random.default_rng(seed).integers(0, 256, size=len(good), dtype=np.uint8).tobytes()
        )
    if kind == "truncated":
        return good[: len(good) // 2]
    return b""


@dataclass
class TinyDataset:
    """Metadata rows + encoded images, and the writer that puts them on disk in one format."""

    root: Path
    metadata: pd.DataFrame
    images: dict[str, bytes]
    writer: Callable[[TinyDataset], None]
    storage: Storage = "bytes"
    image_dirs: list[str] = field(default_factory=list)

    def write(self) -> TinyDataset:
        self.writer(self)
        return self


def _h5_value(raw: bytes, storage: Storage) -> object:
    if storage == "bytes":  # what the real train-image.hdf5 holds: a scalar |S<n> string
        return np.bytes_(raw)
    if storage == "void":  # opaque scalar
        return np.void(raw)
    return np.frombuffer(raw, dtype=np.uint8)  # 1-D uint8 array


def _write_isic(ds: TinyDataset) -> None:
    ds.root.mkdir(parents=True, exist_ok=True)
    ds.metadata.to_csv(ds.root / "train-metadata.csv", index=False)
    with h5py.File(ds.root / "train-image.hdf5", "w") as h5:
        for image_id, raw in ds.images.items():
            h5.create_dataset(image_id, data=_h5_value(raw, ds.storage))


def _write_ham(ds: TinyDataset) -> None:
    ds.root.mkdir(parents=True, exist_ok=True)
    ds.metadata.to_csv(ds.root / "HAM10000_metadata.csv", index=False)
    for d in ds.image_dirs:
        folder = ds.root / d
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()
    for i, (image_id, raw) in enumerate(ds.images.items()):
        # Spread images over the folders, as the real archive splits them over two parts.
        (ds.root / ds.image_dirs[i % len(ds.image_dirs)] / f"{image_id}.jpg").write_bytes(raw)


# Three patients; P1 has two lesions (one with two images); two images have no lesion_id.
ISIC_ROWS = [
    # isic_id,       patient_id,  lesion_id,  target
    ("ISIC_0000001", "IP_0000001", "IL_0000001", 1),
    ("ISIC_0000002", "IP_0000001", "IL_0000001", 1),
    ("ISIC_0000003", "IP_0000001", "IL_0000002", 0),
    ("ISIC_0000004", "IP_0000002", "", 0),
    ("ISIC_0000005", "IP_0000002", "IL_0000003", 0),
    ("ISIC_0000006", "IP_0000003", "", 0),
]

# Five lesions, seven images; two melanoma images (one lesion) and every other dx class.
HAM_ROWS = [
    # lesion_id,    image_id,        dx
    ("HAM_0000001", "ISIC_0024306", "mel"),
    ("HAM_0000001", "ISIC_0024307", "mel"),
    ("HAM_0000002", "ISIC_0024308", "nv"),
    ("HAM_0000003", "ISIC_0024309", "bkl"),
    ("HAM_0000003", "ISIC_0024310", "bcc"),
    ("HAM_0000004", "ISIC_0024311", "akiec"),
    ("HAM_0000005", "ISIC_0024312", "df"),
    ("HAM_0000005", "ISIC_0024313", "vasc"),
]


@pytest.fixture
def isic2024_data(tmp_path: Path) -> TinyDataset:
    """A tiny ISIC-2024 data set: ``train-image.hdf5`` (JPEG bytes by isic_id) + metadata CSV."""
    meta = pd.DataFrame(ISIC_ROWS, columns=["isic_id", "patient_id", "lesion_id", "target"])
    # Real metadata carries many more columns; the reader must ignore them.
    meta.insert(2, "age_approx", [45, 45, 45, 60, 60, 30])
    meta["anatom_site_general"] = "posterior torso"
    images = {iid: encode_jpeg(seed) for seed, iid in enumerate(meta["isic_id"])}
    return TinyDataset(tmp_path / "isic2024", meta, images, _write_isic).write()


@pytest.fixture
def ham10000_data(tmp_path: Path) -> TinyDataset:
    """A tiny HAM10000 data set: metadata CSV + ``<image_id>.jpg`` in two image folders."""
    meta = pd.DataFrame(HAM_ROWS, columns=["lesion_id", "image_id", "dx"])
    meta["dx_type"] = "histo"
    meta["age"] = 50.0
    meta["sex"] = "male"
    meta["localization"] = "back"
    images = {iid: encode_jpeg(100 + seed) for seed, iid in enumerate(meta["image_id"])}
    dirs = ["HAM10000_images_part_1", "HAM10000_images_part_2"]
    return TinyDataset(tmp_path / "ham10000", meta, images, _write_ham, image_dirs=dirs).write()


def _needs(fixture: str, item: pytest.Item) -> bool:
    return fixture in getattr(item, "fixturenames", ())  # the fixture closure of the test


def _needs_tiny_pipeline(item: pytest.Item) -> bool:
    return _needs("tiny_pipeline", item)


def _recipe(item: pytest.Item) -> str | None:
    """The recipe whose background reproduction the test checks (``@pytest.mark.recipe``)."""
    marker = item.get_closest_marker("recipe")
    return marker.args[0] if marker is not None else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that wait for a background job last, so that the jobs run while the others do:
    the tiny pipeline's tests, then the recipes' (the jobs' order); the other pipeline tests just
    before them. (A stable sort: file order otherwise.)"""
    items.sort(
        key=lambda it: (
            _recipe(it) is not None,
            _needs_tiny_pipeline(it),
            it.get_closest_marker("pipeline") is not None,
        )
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Collect the tests (which imports torch, timm, SymPy...: ~500,000 objects) without the
    cyclic collector, as ``melanoma_kd.startup`` does for a stage process."""
    gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the collection imported, so the collector's full passes during the session
    skip it, and switch the collector back on."""
    gc.freeze()
    gc.enable()


@pytest.fixture(scope="session")
def background() -> Iterator[Background]:
    """The session's worker threads for whole-pipeline jobs (``tests/background.py``)."""
    jobs = Background()
    yield jobs
    jobs.close()


@pytest.fixture(scope="session")
def tiny_pipeline(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    background: Background,
) -> TinyPipeline:
    """The tiny-profile pipeline, reproduced once per session as a background job (and the
    fresh-clone run after it when a selected test needs ``fresh_clone``)."""
    fresh = any(_needs("fresh_clone", item) for item in request.session.items)
    return TinyPipeline(tmp_path_factory.mktemp("tiny"), fresh_clone=fresh).start(background)


@pytest.fixture(scope="session")
def recipe_runs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    background: Background,
) -> dict[str, Future[RecipeRun]]:
    """Each recipe a selected test marks, reproduced at toy size as a background job
    (``tests/recipe_runs.py``), in the order the tests come."""
    from tests.recipe_runs import reproduce_recipe  # imports this module's data-set writers

    runs: dict[str, Future[RecipeRun]] = {}
    for item in request.session.items:
        recipe = _recipe(item)
        if recipe is not None and recipe not in runs:
            root = tmp_path_factory.mktemp(recipe)
            # below the tiny pipeline's priority: more tests wait for it
            runs[recipe] = background.submit(partial(reproduce_recipe, recipe, root), nice=5)
    return runs


def _drop_earlier_sessions(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Delete earlier sessions' numbered temporary folders now, not at exit.

    pytest deletes them when a session ends (``tmp_path_retention_count`` in pyproject.toml);
    a host that kept a few from before that setting, or from failed sessions, would otherwise
    hold them through this session too, which writes several GB. A folder whose lock is live (a
    session still running) is left alone, exactly as pytest's own clean-up does.
    """
    from _pytest.pathlib import LOCK_TIMEOUT, cleanup_numbered_dir  # pytest is pinned

    base = tmp_path_factory.getbasetemp()
    if not base.name.startswith("pytest-") or not base.name[len("pytest-") :].isdigit():
        return  # --basetemp given, or an xdist worker's folder: not a numbered session folder
    cleanup_numbered_dir(
        root=base.parent,
        prefix="pytest-",
        keep=1,
        consider_lock_dead_if_created_before=base.stat().st_mtime - LOCK_TIMEOUT,
    )


@pytest.fixture(scope="session", autouse=True)
def _start_background_jobs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Queue the jobs the selected tests need as the session starts (none in test-fast): the
    tiny pipeline first (most tests wait for it), then the recipes. Earlier sessions'
    temporary folders go first."""
    _drop_earlier_sessions(tmp_path_factory)
    items = request.session.items
    if any(_needs_tiny_pipeline(item) for item in items):
        request.getfixturevalue("tiny_pipeline")
    if any(_recipe(item) is not None for item in items):
        request.getfixturevalue("recipe_runs")


@pytest.fixture(scope="session")
def tiny_repo(tiny_pipeline: TinyPipeline) -> Path:
    """A git + DVC repo with the whole pipeline reproduced on the tiny profile and committed,
    with a local DVC remote (``tiny_remote``) holding its outputs and run-cache.

    Shared by the pipeline/workflow tests; tests that change it restore it or work on a clone.
    """
    return tiny_pipeline.built().repo


@pytest.fixture(scope="session")
def tiny_remote(tiny_pipeline: TinyPipeline) -> Path:
    """The local DVC remote ``tiny_repo`` pushed its outputs and run-cache to."""
    return tiny_pipeline.built().remote


@pytest.fixture(scope="session")
def fresh_clone(tiny_pipeline: TinyPipeline) -> FreshClone:
    """A clone of ``tiny_repo`` that pulled the run-cache and reran without ``dvc.lock``."""
    return tiny_pipeline.fresh_clone()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test on one torch thread (results then do not depend on the core count), and
    restore the deterministic-algorithms setting a training run under test may change."""
    import torch

    before = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.set_num_threads(before)
