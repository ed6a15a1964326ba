"""Hair removal: the mask and inpainting on constructed images, parallel invariance, quality
numbers, and the remove_hair stage end to end on a small generated data set."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from melanoma_kd.config import GenerateParams, PreprocessParams
from melanoma_kd.data.hair import (
    hair_mask,
    hair_quality,
    iter_remove_hair,
    remove_hair,
    remove_hair_batch,
)
from melanoma_kd.data.synthetic import IMAGES_FILE, METADATA_FILE, generate_dataset
from melanoma_kd.imaging import PSNR_MAX_DB, decode_image, psnr, ssim
from melanoma_kd.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
P = PreprocessParams(blackhat_kernel=9, threshold=15, dilate=1, inpaint_radius=3, workers=1)
SKIN = (205, 160, 140)


def _flat(size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), SKIN, np.uint8)


def _strand(img: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Draw a dark curved strand; return (hairy image, its pixel mask)."""
    hairy = img.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    t = np.linspace(0, 1, 40)
    pts = np.stack([5 + 54 * t, 10 + 40 * t + 12 * np.sin(3 * t)], 1).astype(np.int32)
    cv2.polylines(hairy, [pts], False, (30, 20, 15), width)
    cv2.polylines(mask, [pts], False, 1, width)
    return hairy, mask


def _smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """Skin-like image with slow shading only (no thin dark structures)."""
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.normal(0, 1, (4, 4)), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.array(SKIN) + 12 * noise[..., None], 0, 255).astype(np.uint8)


def test_strand_on_flat_background_is_removed() -> None:
    clean = _flat()
    hairy, true_mask = _strand(clean)
    out, mask = remove_hair(hairy, P)
    assert mask[true_mask.astype(bool)].mean() > 0.95  # the strand is found
    assert mask.mean() < 4 * true_mask.mean()  # and not much else
    on_hair = true_mask.astype(bool)
    assert np.abs(out[on_hair].astype(int) - clean[on_hair]).max() < 12
    assert psnr(out, clean) > psnr(hairy, clean) + 15


def test_clean_image_is_barely_changed() -> None:
    for seed in range(3):
        img = _smooth_image(seed)
        out, mask = remove_hair(img, P)
        assert mask.sum() == 0
        assert psnr(out, img) == PSNR_MAX_DB


def test_threshold_and_kernel_control_the_mask() -> None:
    hairy, _ = _strand(_flat())
    assert hair_mask(hairy, P.model_copy(update={"threshold": 254})).sum() == 0
    thin = P.model_copy(update={"dilate": 0})
    thick = P.model_copy(update={"dilate": 2})
    assert hair_mask(hairy, thick).sum() > hair_mask(hairy, thin).sum()
    # a strand wider than the kernel is not a "thin dark structure"
    wide, _ = _strand(_flat(), width=9)
    assert hair_mask(wide, P.model_copy(update={"blackhat_kernel": 5})).sum() < 0.2 * (
        hair_mask(wide, P.model_copy(update={"blackhat_kernel": 21})).sum()
    )


def test_short_dark_dots_are_not_hair() -> None:
    img = _flat()
    for x, y in ((15, 15), (40, 20), (25, 45)):
        cv2.circle(img, (x, y), 2, (30, 20, 15), -1)
    assert hair_mask(img, P.model_copy(update={"min_hair_length": 12})).sum() == 0
    assert hair_mask(img, P.model_copy(update={"min_hair_length": 0})).sum() > 0


def test_dark_frame_rim_is_not_hair() -> None:
    """The dermoscope's dark field-of-view border touching the frame is not a hair."""
    img = _flat()
    img[:2] = 20  # a thin dark rim along the top edge
    img[:, :1] = 20
    assert hair_mask(img, P).sum() == 0


def _varied_images(n: int) -> list[np.ndarray]:
    images = []
    for i in range(n):
        img = _smooth_image(i, size=48 + 8 * (i % 3))  # mixed sizes
        if i % 2 == 0:
            img, _ = _strand(img) if img.shape[0] >= 64 else _strand(cv2.resize(img, (64, 64)))
        images.append(img)
    return images


def test_results_do_not_depend_on_worker_count() -> None:
    images = _varied_images(11)
    serial = remove_hair_batch(images, P.model_copy(update={"workers": 1, "chunk_size": 3}))
    parallel = remove_hair_batch(images, P.model_copy(update={"workers": 2, "chunk_size": 4}))
    for a, b, img in zip(serial[0], parallel[0], images, strict=True):
        assert a.shape == img.shape and np.array_equal(a, b)
    for a, b in zip(serial[1], parallel[1], strict=True):
        assert np.array_equal(a, b)
    assert any(m.any() for m in serial[1]) and not all(m.any() for m in serial[1])


def test_stream_keeps_order_and_passes_through_when_disabled() -> None:
    images = _varied_images(7)
    off = P.model_copy(update={"hair_removal": False, "workers": 2, "chunk_size": 2})
    for img, (inp, out, mask) in zip(images, iter_remove_hair(iter(images), off), strict=True):
        assert inp is img and np.array_equal(out, img) and not mask.any()


def test_bad_image_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        remove_hair(np.zeros((8, 8), np.uint8), P)


# --- quality numbers ---------------------------------------------------------------------------


def test_psnr_by_hand() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 10  # one of 12 values off by 10 -> MSE = 100 / 12
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 12 / 100))
    assert psnr(a, a) == PSNR_MAX_DB


def test_ssim_properties() -> None:
    img = _smooth_image(0)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 10, img.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    assert ssim(img, img) == pytest.approx(1.0)
    assert 0 < ssim(img, noisy) < 0.95
    assert ssim(img, noisy) == pytest.approx(ssim(noisy, img))


def test_hair_quality_by_hand() -> None:
    clean = np.full((2, 2, 3), 100, np.uint8)
    hairy = clean.copy()
    hairy[0, 0] = 40  # 3 of 12 values off by 60 -> MSE 900
    dehaired = clean.copy()
    dehaired[0, 0] = 94  # 3 of 12 values off by 6 -> MSE 9
    true_mask = np.array([[1, 1], [0, 0]], np.uint8)
    pred_mask = np.array([[1, 0], [1, 0]], np.uint8)
    untouched = np.full((2, 2, 3), 50, np.uint8)
    changed = untouched.copy()
    changed[1, 1, 2] = 62  # 1 of 12 values off by 12 -> MSE 12; pooled with a 0 -> 6
    q = hair_quality(
        images=[hairy, untouched, untouched],
        dehaired=[dehaired, untouched, changed],
        masks=[pred_mask, np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)],
        clean=[clean, untouched, untouched],
        true_masks=[true_mask, np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)],
        has_hair=[True, False, False],
    )
    assert q["hairy_images"] == 1 and q["hairless_images"] == 2
    assert q["hairy_psnr_input_vs_clean"] == pytest.approx(10 * math.log10(255**2 / 900), abs=1e-5)
    assert q["hairy_psnr_dehaired_vs_clean"] == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-5)
    assert q["hairy_psnr_gain_db"] == pytest.approx(20.0, abs=1e-5)  # MSE 100× smaller
    assert q["mask_iou"] == pytest.approx(1 / 3, abs=1e-5)  # tp 1, fp 1, fn 1
    assert q["mask_precision"] == pytest.approx(0.5) and q["mask_recall"] == pytest.approx(0.5)
    assert q["hairless_psnr_dehaired_vs_input"] == pytest.approx(
        10 * math.log10(255**2 / 6), abs=1e-5
    )
    assert q["hairless_detected_fraction"] == pytest.approx(0.5)


# --- the stage -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small generated data set and its manifest (the ingest stage's layout)."""
    root = tmp_path_factory.mktemp("hairdata")
    raw = root / "raw"
    generate_dataset(GenerateParams(n_images=40, image_size=64, hair_fraction=0.5, seed=3), raw)
    meta = pd.read_csv(raw / METADATA_FILE, dtype=str)
    manifest = pd.DataFrame(
        {
            "image_id": meta["isic_id"],
            "lesion_id": meta["lesion_id"],
            "patient_id": meta["patient_id"],
            "label": meta["target"],
            "source": "synthetic",
            "location": str(raw / IMAGES_FILE),
        }
    )
    manifest.to_csv(root / "manifest.csv", index=False)
    return raw, root / "manifest.csv"


def _stage():
    spec = importlib.util.spec_from_file_location(
        "stage_remove_hair", REPO / "stages/remove_hair.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(
    tmp: Path, manifest: Path, truth: Path | None, source: str = "synthetic", **preprocess: object
) -> dict:
    params = tmp / "params.yaml"
    preprocess = {"workers": 2, "chunk_size": 8, **preprocess}
    no_transfer = {"transfer_images": 0}  # real data would need distill.transfer_dir
    raw = {"data": {"source": source}, "preprocess": preprocess, "distill": no_transfer}
    params.write_text(yaml.safe_dump(raw))
    argv = ["--params", str(params), "--manifest", str(manifest), "--out", str(tmp / "d.h5")]
    argv += ["--metrics", str(tmp / "m.json"), "--plot", str(tmp / "p.png")]
    if truth is not None:
        argv += ["--truth", str(truth)]
    _stage().main(argv)
    return json.loads((tmp / "m.json").read_text())


def test_stage_end_to_end(generated: tuple[Path, Path], tmp_path: Path) -> None:
    raw, manifest_path = generated
    manifest = pd.read_csv(manifest_path, dtype=str)
    metrics = _run(tmp_path, manifest_path, raw)
    out = tmp_path / "d.h5"
    with h5py.File(out, "r") as h5, h5py.File(raw / IMAGES_FILE, "r") as src:
        assert list(h5["ids"].asstr()[()]) == list(manifest["image_id"])
        assert bool(h5.attrs["hair_removal"]) and len(h5.attrs["params_hash"]) == 64
        first = decode_image(h5["images"][0])
        assert first.shape == decode_image(src[manifest["image_id"][0]][()]).shape
    assert metrics["truth_available"] == 1 and metrics["images"] == len(manifest)
    assert metrics["hairy_psnr_dehaired_vs_clean"] > metrics["hairy_psnr_input_vs_clean"] + 2
    assert metrics["hairy_ssim_dehaired_vs_clean"] > metrics["hairy_ssim_input_vs_clean"]
    assert metrics["mask_recall"] > 0.7
    assert (tmp_path / "p.png").is_file()

    digest = sha256_file(out)
    again = _run(tmp_path, manifest_path, raw, workers=1, chunk_size=5)
    assert sha256_file(out) == digest  # byte-identical, whatever the workers and chunks
    assert again == metrics

    no_truth = _run(tmp_path, manifest_path, None)
    assert no_truth["truth_available"] == 0 and 0 < no_truth["detected_hair_fraction"] <= 1
    assert sha256_file(out) == digest


def test_stage_pass_through_is_lossless(generated: tuple[Path, Path], tmp_path: Path) -> None:
    raw, manifest_path = generated
    _run(tmp_path, manifest_path, raw, hair_removal=False)
    with h5py.File(tmp_path / "d.h5", "r") as h5, h5py.File(raw / IMAGES_FILE, "r") as src:
        assert not h5.attrs["hair_removal"]
        for i, image_id in enumerate(h5["ids"].asstr()[()]):
            assert np.array_equal(decode_image(h5["images"][i]), decode_image(src[image_id][()]))


def test_stage_corrupt_image_names_it(
    generated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, manifest_path = generated
    manifest = pd.read_csv(manifest_path, dtype=str)
    broken = tmp_path / "broken.hdf5"
    with h5py.File(raw / IMAGES_FILE, "r") as src, h5py.File(broken, "w") as dst:
        for image_id in manifest["image_id"]:
            dst.create_dataset(image_id, data=src[image_id][()])
        bad = manifest["image_id"][5]
        del dst[bad]
        dst.create_dataset(bad, data=np.bytes_(b"\xff\xd8 not a jpeg"))
    manifest["location"] = str(broken)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, tmp_path / "manifest.csv", raw)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and bad in err
    assert not (tmp_path / "d.h5").exists()  # no half-written output


@pytest.mark.parametrize("source", ["isic2024", "ham10000"])
def test_stage_never_opens_truth_for_real_data(
    generated: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    import melanoma_kd.data.synthetic as synthetic

    raw, manifest_path = generated

    class Unreadable:
        def __init__(self, path: Path) -> None:
            raise AssertionError(f"truth opened: {path}")

    monkeypatch.setattr(synthetic, "Truth", Unreadable)
    with pytest.raises(AssertionError, match="truth opened"):  # the trap works in-process
        _run(tmp_path, manifest_path, raw, workers=1)
    metrics = _run(tmp_path, manifest_path, raw, source=source, workers=1)
    assert metrics["truth_available"] == 0 and metrics["images"] == 40


def test_stage_synthetic_without_truth_file_is_one_line(
    generated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest_path = generated
    missing = tmp_path / "raw" / "truth.hdf5"
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, manifest_path, missing)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err
    assert not (tmp_path / "d.h5").exists()
