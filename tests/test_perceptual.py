"""VGG16 perceptual distance, the band filter, and both stages end to end (tiny, one thread)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from melanoma_kd.data.perceptual import (
    RELU_LAYERS,
    Band,
    band_bounds,
    build_vgg,
    classify,
    distance_matrix,
    extract,
    nearest,
    paired_distance,
    perceptual_filter,
)
from melanoma_kd.data.preprocessed import open_preprocessed
from melanoma_kd.data.synth_positives import CANDIDATE_COLUMNS, read_candidates, read_splits
from melanoma_kd.errors import UserError
from tests.test_synth_positives import lesion_image, write_dataset

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48  # VGG input side in these tests
BATCH = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vgg():
    torch.set_num_threads(1)
    model, pretrained = build_vgg(None, seed=0)
    assert not pretrained
    return model


def _features(model, images):
    return extract(model, images, SIZE, BATCH)


def _distances(model, reference: np.ndarray, images: list[np.ndarray]) -> np.ndarray:
    ref = _features(model, [reference] * len(images))
    return paired_distance(ref, _features(model, images)).numpy()


def test_identical_images_have_zero_distance(vgg) -> None:
    a, b = lesion_image(0, 64), lesion_image(1, 64)
    fa, fb = _features(vgg, [a]), _features(vgg, [b])
    assert paired_distance(fa, fa).item() == 0.0
    assert paired_distance(fa, fb).item() > 0.0
    assert distance_matrix(fa, fa).item() == pytest.approx(0.0, abs=1e-5)
    bank = _features(vgg, [b, a])
    idx, dist = nearest(fa, bank)
    # recomputed from the difference, not the matmul estimate; other batch mates may change the
    # last bits of a's features, hence not exactly 0 here
    assert idx.tolist() == [1] and dist[0] == pytest.approx(0.0, abs=1e-9)
    assert len(fa.flat) == len(RELU_LAYERS)


@pytest.mark.parametrize("kind", ["blur", "noise"])
def test_distance_grows_with_distortion(vgg, kind: str) -> None:
    img = lesion_image(5, 64)
    if kind == "blur":
        ladder = [cv2.GaussianBlur(img, (0, 0), s) for s in (0.5, 1.0, 2.0, 4.0)]
    else:
        noise = np.random.default_rng(0).normal(0.0, 1.0, img.shape)
        ladder = [np.clip(img + noise * s, 0, 255).astype(np.uint8) for s in (4, 8, 16, 32)]
    d = _distances(vgg, img, ladder)
    assert (d > 0).all()
    assert (np.diff(d) > 0).all(), d


def test_random_vgg_is_seeded() -> None:
    a, _ = build_vgg(None, seed=3)
    b, _ = build_vgg(None, seed=3)
    c, _ = build_vgg(None, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["body.0.weight"], sc["body.0.weight"])


def test_local_weights_are_loaded_never_downloaded(tmp_path: Path) -> None:
    donor, _ = build_vgg(None, seed=7)
    body = donor.body.state_dict()
    # a full torchvision vgg16 state_dict has "features.N..." (and classifier) keys
    state = {f"features.{k}": v for k, v in body.items()} | {"classifier.0.bias": torch.zeros(3)}
    torch.save(state, tmp_path / "vgg16.pth")
    model, pretrained = build_vgg(tmp_path, seed=0)
    assert pretrained
    assert all(torch.equal(model.body.state_dict()[k], v) for k, v in body.items())
    # a bare features state_dict nested under "state_dict" works too
    torch.save({"state_dict": dict(body)}, tmp_path / "vgg16.pth")
    assert build_vgg(tmp_path, seed=0)[1]
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "vgg16.pth")
    with pytest.raises(UserError, match=r"not VGG16 weights|has shape"):
        build_vgg(tmp_path, seed=0)
    (tmp_path / "vgg16.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable VGG16 weights file"):
        build_vgg(tmp_path, seed=0)


def test_band_keeps_and_rejects_the_right_candidates() -> None:
    reference = np.linspace(0.0, 1.0, 11)  # quantiles: Q(0.1) = 0.1, Q(0.9) = 0.9
    band = band_bounds(reference, 0.1, 1.0, 0.9, 2.0)
    assert band == Band(pytest.approx(0.1), pytest.approx(1.8))
    d = np.array([0.0, 0.05, 0.1, 0.5, 1.0, 1.8, 1.81, 5.0])
    expected = ["too_close", "too_close", "kept", "kept", "kept", "kept", "too_far", "too_far"]
    assert classify(d, Band(0.1, 1.8)).tolist() == expected
    # the factors scale the quantiles
    wide = band_bounds(reference, 0.1, 0.5, 0.9, 3.0)
    assert (wide.low, wide.high) == (pytest.approx(0.05), pytest.approx(2.7))
    assert classify(d, wide).tolist()[:2] == ["too_close", "kept"]
    with pytest.raises(UserError, match="no real-to-real distances"):
        band_bounds(np.array([]), 0.1, 1.0, 0.9, 1.0)


def test_real_to_real_nearest_excludes_itself(vgg) -> None:
    a, b, c = lesion_image(0, 64), lesion_image(1, 64), lesion_image(2, 64)
    bank = _features(vgg, [a, b, a, c])  # a appears twice
    idx, dist = nearest(bank, bank, exclude=torch.arange(4))
    assert (idx != np.arange(4)).all()
    assert idx[0] == 2 and idx[2] == 0
    assert dist[0] == pytest.approx(0.0, abs=1e-9) and dist[2] == pytest.approx(0.0, abs=1e-9)
    assert dist[1] > 0 and dist[3] > 0
    one = _features(vgg, [a])
    with pytest.raises(UserError, match="too few real train positives"):
        nearest(one, one, exclude=torch.arange(1))


def _filter(model, reals, cands):
    table = pd.DataFrame(
        {
            "image_id": [f"C{i}" for i in range(len(cands))],
            "source_image_id": "R0",
        }
    )
    return perceptual_filter(
        table,
        cands,
        [f"R{i}" for i in range(len(reals))],
        reals,
        model,
        False,
        image_size=SIZE,
        batch_size=BATCH,
        low_quantile=0.05,
        low_factor=1.0,
        high_quantile=0.95,
        high_factor=1.5,
    )


def test_filter_rejects_copies_and_noise_and_is_deterministic() -> None:
    reals = [lesion_image(i, 48) for i in range(6)]
    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    shifted = np.roll(reals[2], 2, axis=1)
    cands = [reals[1].copy(), noise, shifted, lesion_image(20, 48)]
    runs = []
    for _ in range(2):  # a fresh seeded model each time, as two stage runs would build
        model, _ = build_vgg(None, seed=0)
        runs.append(_filter(model, reals, cands))
    a, b = runs
    assert a.candidates["decision"].tolist() == b.candidates["decision"].tolist()
    assert np.array_equal(a.candidates["distance"], b.candidates["distance"])
    assert np.array_equal(a.reals["distance"], b.reals["distance"])
    assert a.band == b.band
    decision = dict(zip(a.candidates["image_id"], a.candidates["decision"], strict=True))
    assert decision["C0"] == "too_close"  # an exact copy of a real positive
    assert decision["C1"] == "too_far"  # uniform noise
    assert a.candidates.loc[0, "nearest_real_id"] == "R1"
    m = a.metrics
    assert m["candidates"] == 4 and m["real_positives"] == 6 and m["pretrained_vgg"] == 0
    assert m["kept"] + m["rejected_too_close"] + m["rejected_too_far"] == 4
    assert m["vgg_images"] == 10 and m["images_per_s"] > 0


# ---------------------------------------------------------------------------- stages, end to end


def _stage(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_stage", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _params(path: Path, weights_dir: Path) -> Path:
    path.write_text(
        f"models:\n  weights_dir: {weights_dir}\n"
        "synth:\n  ratio: 2.0\n  seed: 0\n  image_size: 32\n  batch_size: 4\n  num_threads: 1\n"
    )
    return path


def test_stages_end_to_end_are_deterministic_and_train_only(tmp_path: Path, capsys) -> None:
    splits, images = write_dataset(tmp_path)
    params = _params(tmp_path / "params.yaml", tmp_path / "no_weights")
    synth, filt = _stage("synth_positives"), _stage("perceptual_filter")
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        synth.main([
            "--params", str(params), "--splits", str(splits), "--images", str(images),
            "--out-h5", str(out / "candidates.h5"), "--out-csv", str(out / "candidates.csv"),
        ])  # fmt: skip
        filt.main([
            "--params", str(params), "--splits", str(splits), "--images", str(images),
            "--candidates-h5", str(out / "candidates.h5"),
            "--candidates-csv", str(out / "candidates.csv"),
            "--out-h5", str(out / "kept.h5"), "--out-csv", str(out / "kept.csv"),
            "--distances", str(out / "distances.csv"),
            "--metrics", str(out / "perceptual_filter.json"),
            "--plot-hist", str(out / "hist.png"), "--plot-examples", str(out / "examples.png"),
        ])  # fmt: skip
        digests.append(
            {
                name: hashlib.sha256((out / name).read_bytes()).hexdigest()
                for name in (
                    "candidates.h5",
                    "candidates.csv",
                    "kept.h5",
                    "kept.csv",
                    "distances.csv",
                )
            }
        )
    assert digests[0] == digests[1]
    err = capsys.readouterr().err
    assert "warning: perceptual_filter:" in err and "random-init VGG16" in err

    out = tmp_path / "a"
    table = read_splits(splits)
    train = table[table["split"] == "train"]
    cands, kept = read_candidates(out / "candidates.csv"), read_candidates(out / "kept.csv")
    assert len(cands) == 2 * int(train["label"].sum())
    assert list(kept.columns) == CANDIDATE_COLUMNS
    assert set(kept["image_id"]) <= set(cands["image_id"])
    used = set(cands["source_image_id"]) | set(cands["background_image_id"])
    assert used <= set(train["image_id"])
    metrics = json.loads((out / "perceptual_filter.json").read_text())
    assert metrics["candidates"] == len(cands) and metrics["kept"] == len(kept)
    assert metrics["kept"] + metrics["rejected_too_close"] + metrics["rejected_too_far"] == len(
        cands
    )
    assert metrics["pretrained_vgg"] == 0 and metrics["image_size"] == 32
    distances = pd.read_csv(out / "distances.csv")
    assert (distances["kind"] == "candidate").sum() == len(cands)
    assert (distances["kind"] == "real").sum() == int(train["label"].sum())
    with open_preprocessed(out / "kept.h5") as k, open_preprocessed(out / "candidates.h5") as c:
        assert list(k.index) == kept["image_id"].tolist()
        for image_id in kept["image_id"]:
            assert np.array_equal(k.get(image_id), c.get(image_id))
    for png in ("hist.png", "examples.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_no_candidates_gives_empty_result(vgg) -> None:
    reals = [lesion_image(i, 48) for i in range(3)]
    result = _filter(vgg, reals, [])
    assert len(result.candidates) == 0 and result.metrics["kept"] == 0
    assert result.metrics["real_positives"] == 3 and result.band.low <= result.band.high
