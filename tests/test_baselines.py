"""Tests for the hand-crafted-feature baselines (features, models, stage, bad input)."""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from melanoma_kd import baselines as bl
from melanoma_kd import handcrafted as hc
from melanoma_kd.data.lesion import segment_lesion
from melanoma_kd.errors import UserError

STAGE = Path(__file__).resolve().parents[1] / "stages" / "baselines.py"
SIZE = 64


# --------------------------------------------------------------------------- helpers


def polygon_mask(radius: Callable[[np.ndarray], np.ndarray], centre=(31.6, 32.3)) -> np.ndarray:
    """A filled polygon r(θ) around ``centre`` on a SIZE×SIZE canvas (sub-pixel vertices)."""
    t = np.linspace(0.0, 2.0 * np.pi, 360, endpoint=False)
    r = radius(t)
    pts = np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], axis=1)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def disc_mask(radius: int = 18) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (SIZE // 2, SIZE // 2), radius, 1, thickness=-1)
    return mask.astype(bool)


def blob_mask() -> np.ndarray:
    """A lopsided, irregular lesion outline."""
    return polygon_mask(
        lambda t: 14 * (1 + 0.35 * np.sin(t) + 0.2 * np.sin(2 * t + 1) + 0.15 * np.cos(3 * t))
    )


def star_mask() -> np.ndarray:
    return polygon_mask(lambda t: 10 + 8 * np.cos(6 * t))


def lesion_image(rng: np.random.Generator, melanoma: bool) -> np.ndarray:
    """A dermoscopy-like picture: noisy skin, a dark lesion roughly centred.

    Melanomas are ragged, asymmetric and multi-coloured (dark and blue-grey blotches); benign
    naevi are round and uniformly brown.
    """
    skin = np.array([222.0, 178.0, 150.0]) + rng.normal(0, 6, 3)
    img = np.broadcast_to(skin, (SIZE, SIZE, 3)) + rng.normal(0, 4, (SIZE, SIZE, 3))
    phases = rng.uniform(0, 2 * np.pi, 3)
    amp = 0.3 if melanoma else 0.03
    r0 = SIZE * rng.uniform(0.18, 0.26)
    centre = SIZE / 2 + rng.normal(0, 2.0, 2)

    def radius(t: np.ndarray) -> np.ndarray:
        wobble = sum(np.sin((k + 1) * t + p) / (k + 1) for k, p in enumerate(phases))
        return r0 * (1 + amp * wobble)

    mask = polygon_mask(radius, centre=tuple(centre))
    brown = np.array([135.0, 90.0, 62.0]) + rng.normal(0, 5, 3)
    img[mask] = brown + rng.normal(0, 4, (int(mask.sum()), 3))
    if melanoma:
        for colour in ([55.0, 38.0, 38.0], [95.0, 100.0, 125.0]):
            spot = np.zeros((SIZE, SIZE), np.uint8)
            ys, xs = np.nonzero(mask)
            k = rng.integers(len(ys))
            cv2.circle(spot, (int(xs[k]), int(ys[k])), int(r0 * 0.5), 1, thickness=-1)
            sel = spot.astype(bool) & mask
            img[sel] = np.array(colour) + rng.normal(0, 4, (int(sel.sum()), 3))
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.float32), (0, 0), 0.8)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_cache(path: Path, n: int, pos: int, seed: int) -> None:
    """A cache HDF5 file in the `cache` stage's format."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, np.int8)
    labels[rng.choice(n, pos, replace=False)] = 1
    images = np.stack([lesion_image(rng, bool(y)) for y in labels])
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, SIZE, SIZE, 3))
        f.create_dataset("labels", data=labels)
        f.create_dataset("ids", data=[f"{path.stem}_{i:04d}" for i in range(n)], dtype=str_dt)
        f.create_dataset("patients", data=[f"p{i // 2}" for i in range(n)], dtype=str_dt)
        f.attrs["size"] = SIZE


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    for seed, (split, n, pos) in enumerate(
        (("train", 160, 40), ("val", 60, 15), ("holdout", 60, 15))
    ):
        write_cache(root / f"{split}.h5", n, pos, seed)
    return root


def run_stage(tmp: Path, cache: Path, *extra: str) -> Path:
    """Run ``stages/baselines.py``'s ``main`` writing under ``tmp``."""
    main = runpy.run_path(str(STAGE), run_name="baselines_stage")["main"]
    tmp.mkdir(parents=True, exist_ok=True)
    params = tmp / "params.yaml"
    params.write_text("evaluate:\n  sens_target: 0.9\n")
    main(
        [
            "--params", str(params),
            "--cache-dir", str(cache),
            "--out-metrics", str(tmp / "metrics" / "baselines.json"),
            "--predictions-dir", str(tmp / "metrics" / "predictions"),
            "--table", str(tmp / "plots" / "baselines.csv"),
            *extra,
        ]
    )  # fmt: skip
    return tmp


# --------------------------------------------------------------------------- features


def test_features_are_finite_with_the_right_shape() -> None:
    rng = np.random.default_rng(0)
    images = np.stack(
        [
            lesion_image(rng, False),
            lesion_image(rng, True),
            np.full((SIZE, SIZE, 3), 200, np.uint8),  # no lesion at all
            np.zeros((SIZE, SIZE, 3), np.uint8),  # all dark
            rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),  # pure noise
        ]
    )
    feats = hc.extract_features(images)
    assert feats.shape == (5, len(hc.FEATURE_NAMES))
    assert len(set(hc.FEATURE_NAMES)) == len(hc.FEATURE_NAMES)
    assert np.isfinite(feats).all()
    # non-square images work too, and each image's features do not depend on its block
    wide = rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    assert np.isfinite(hc.extract_features(wide)).all()
    np.testing.assert_array_equal(hc.extract_features(images[1:2])[0], feats[1])


def test_segmentation_finds_the_lesion() -> None:
    truth = disc_mask(15)
    img = np.full((SIZE, SIZE, 3), (220, 175, 150), np.uint8)
    img[truth] = (160, 115, 90)  # light-brown body ...
    img[disc_mask(10)] = (60, 40, 35)  # ... around a dark core: both are lesion
    img[2:6, 20:24] = (120, 80, 60)  # a dark speck away from the lesion is not
    fov = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(fov, (32, 32), 31, 1, thickness=-1)
    img[fov == 0] = (4, 3, 3)  # black vignette corners, far larger than the lesion
    mask = segment_lesion(img)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    assert segment_lesion(np.full((SIZE, SIZE, 3), 200, np.uint8)).any()  # never empty


def test_asymmetry_is_zero_for_symmetric_shapes_and_large_for_a_blob() -> None:
    disc = hc.shape_features(disc_mask())
    ellipse = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(ellipse, (32, 31), (22, 10), 30, 0, 360, 1, thickness=-1)  # tilted 30°
    tilted = hc.shape_features(ellipse.astype(bool))
    blob = hc.shape_features(blob_mask())
    for sym in (disc, tilted):
        assert sym["asymmetry_major"] < 0.06
        assert sym["asymmetry_minor"] < 0.06
    assert max(blob["asymmetry_major"], blob["asymmetry_minor"]) > 0.2
    assert tilted["eccentricity"] > 0.8 > disc["eccentricity"] + 0.5


def test_border_irregularity_is_one_for_a_circle_and_larger_for_a_star() -> None:
    circle = hc.shape_features(disc_mask())
    star = hc.shape_features(star_mask())
    assert 0.9 < circle["border_irregularity"] < 1.15
    assert star["border_irregularity"] > 2.0
    assert circle["solidity"] > 0.95 > 0.7 > star["solidity"]
    assert star["convexity_defect"] > 5 * circle["convexity_defect"]
    assert circle["area_fraction"] == pytest.approx(np.pi * 18**2 / SIZE**2, rel=0.05)
    assert circle["max_diameter"] == pytest.approx(36 / SIZE, rel=0.05)


def test_texture_features_on_flat_and_checkerboard_regions() -> None:
    flat = np.full((1, SIZE, SIZE), 100, np.uint8)
    checker = ((np.indices((SIZE, SIZE)).sum(axis=0) % 2) * 200).astype(np.uint8)[None]
    mask = disc_mask()[None]
    g_flat, g_checker = hc.glcm_features(flat, mask)[0], hc.glcm_features(checker, mask)[0]
    contrast, homogeneity, energy, correlation, entropy = range(5)
    assert g_flat[contrast] == 0 and g_flat[homogeneity] == pytest.approx(1.0)
    assert g_flat[energy] == pytest.approx(1.0) and g_flat[correlation] == 1.0
    assert g_flat[entropy] == 0
    assert g_checker[contrast] > 50 and g_checker[homogeneity] < 0.5
    lbp = hc.lbp_histograms(np.concatenate([flat, checker]), np.concatenate([mask, mask]))
    np.testing.assert_allclose(lbp.sum(axis=1), 1.0)
    assert lbp[0, 8] == 1.0  # flat: every neighbour >= centre
    # checkerboard: dark centres see only >= neighbours (uniform, 8 ones); bright centres see
    # an alternating ring (8 transitions, non-uniform)
    assert lbp[1, 8] == pytest.approx(0.5, abs=0.02)
    assert lbp[1, 9] == pytest.approx(0.5, abs=0.02)


def test_colour_variegation_counts_colours() -> None:
    names = list(hc.FEATURE_NAMES)
    skin, brown, black, blue = (222, 178, 150), (135, 90, 62), (50, 35, 35), (95, 100, 125)
    plain = np.full((SIZE, SIZE, 3), skin, np.uint8)
    cv2.circle(plain, (32, 32), 18, brown, thickness=-1)
    three = plain.copy()
    cv2.ellipse(three, (32, 32), (18, 18), 0, 0, 120, black, thickness=-1)
    cv2.ellipse(three, (32, 32), (18, 18), 0, 120, 240, blue, thickness=-1)
    rng = np.random.default_rng(3)
    benign, mel = (lesion_image(rng, m) for m in (False, True))
    feats = hc.extract_features(np.stack([plain, three, benign, mel]))
    n_colours = feats[:, names.index("n_colours")]
    assert n_colours[0] == 1 and n_colours[1] == 3
    assert n_colours[3] > n_colours[2]
    entropy = feats[:, names.index("colour_entropy")]
    assert entropy[0] < 0.5 < 1.4 < entropy[1]
    assert feats[1, names.index("lesion_L_std")] > 3 * feats[0, names.index("lesion_L_std")]
    assert feats[1, names.index("lesion_hue_circstd")] > feats[0, names.index("lesion_hue_circstd")]
    assert feats[0, names.index("contrast_L")] < -20  # lesion darker than skin


# --------------------------------------------------------------------------- models and stage


def test_model_registry() -> None:
    assert set(bl.MODELS) == {"logreg", "random_forest", "hist_gbm", "svm"}
    for name in bl.MODELS:
        params = bl.make_model(name).get_params()  # an unfitted scikit-learn estimator
        weights = {v for k, v in params.items() if k.endswith("class_weight")}
        assert weights == {"balanced"}, name
        # parallel tree averaging is not bit-reproducible
        assert all(v in (None, 1) for k, v in params.items() if k.endswith("n_jobs")), name
    with pytest.raises(ValueError, match="unknown baseline model 'knn'"):
        bl.make_model("knn")


def test_thresholds_do_not_read_holdout_labels(cache_dir: Path) -> None:
    splits = [bl.load_split_features(cache_dir / f"{s}.h5") for s in bl.SPLITS]
    train, val, hold = splits
    shuffled = bl.SplitFeatures(
        hold.path, hold.ids, np.random.default_rng(0).permutation(hold.labels), hold.features
    )
    models = {"logreg": bl.MODELS["logreg"]}
    a = bl.fit_and_score(train, val, hold, models=models).metrics["logreg"]
    b = bl.fit_and_score(train, val, shuffled, models=models).metrics["logreg"]
    assert a["sens95_threshold"] == b["sens95_threshold"]
    assert a["f1_threshold"] == b["f1_threshold"]
    assert a["roc_auc"] != b["roc_auc"]


def test_stage_is_deterministic_writes_the_contract_and_models_separate_an_easy_set(
    cache_dir: Path, tmp_path: Path
) -> None:
    """The stage writes what :func:`bl.run_baselines` returns (``save_results``), so the model
    checks read its files rather than fitting every model a third time."""
    first = run_stage(tmp_path / "a", cache_dir)
    second = run_stage(tmp_path / "b", cache_dir)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 1 + 1 + 1 + len(bl.MODELS)  # params, json, table, predictions
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel

    metrics = json.loads((first / "metrics" / "baselines.json").read_text())
    assert metrics["n_features"] == len(hc.FEATURE_NAMES)
    assert set(metrics) - {"n_features"} == set(bl.MODELS)
    for name in bl.MODELS:
        m = metrics[name]
        assert all(isinstance(v, float) for v in m.values())  # no lists, no nesting
        # the models separate an easy data set
        assert m["roc_auc"] > 0.9, name
        assert m["val_roc_auc"] > 0.9, name
        assert all(np.isfinite(v) for v in m.values())
        assert 0.0 <= m["pauc"] <= 0.2
        pred = pd.read_csv(first / "metrics" / "predictions" / f"baseline_{name}.csv")
        assert list(pred.columns) == ["image_id", "label", "score"]
        assert pred["image_id"].iloc[0] == "holdout_0000"
        assert pred["score"].between(0, 1).all() and len(pred) == 60
    table = pd.read_csv(first / "plots" / "baselines.csv")
    assert list(table["model"]) == list(bl.MODELS)
    assert {"roc_auc", "pauc", "ece", "sens95_specificity"} <= set(table.columns)


# --------------------------------------------------------------------------- bad input


def _copy_cache(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for split in bl.SPLITS:
        (dst / f"{split}.h5").write_bytes((src / f"{split}.h5").read_bytes())
    return dst


def _drop(name: str) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        with h5py.File(path, "a") as f:
            del f[name]

    return corrupt


def _replace(name: str, data: Callable[[int], np.ndarray]) -> Callable[[Path], None]:
    """Replace dataset ``name`` by ``data(n)``, n = the number of images."""

    def corrupt(path: Path) -> None:
        with h5py.File(path, "a") as f:
            n = len(f["labels"])
            del f[name]
            f.create_dataset(name, data=data(n))

    return corrupt


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_bytes(b"not an hdf5 file at all"), "cannot read HDF5 cache"),
        (lambda p: p.write_bytes(p.read_bytes()[:3000]), "cannot read HDF5 cache"),
        (lambda p: p.unlink(), "cache file not found"),
        (_drop("labels"), "missing dataset 'labels'"),
        (_drop("images"), "missing dataset 'images'"),
        (_drop("ids"), "missing dataset 'ids'"),
        (_replace("images", lambda n: np.zeros((n, 64, 64), np.uint8)), "uint8 N×H×W×3"),
        (_replace("labels", lambda n: np.zeros(n, np.int8)), "single class"),
        (_replace("labels", lambda n: np.full(n, 2, np.int8)), "only 0 and 1"),
        (_replace("labels", lambda n: np.ones(n - 1, np.int8)), "differ in length"),
        (_replace("ids", np.arange), "must hold strings"),
    ],
    ids=[
        "not-hdf5",
        "truncated",
        "missing-file",
        "no-labels",
        "no-images",
        "no-ids",
        "images-3d",
        "one-class",
        "label-2",
        "short-labels",
        "numeric-ids",
    ],
)
def test_bad_hdf5_gives_one_clear_error(
    cache_dir: Path,
    tmp_path: Path,
    corrupt: Callable[[Path], None],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = _copy_cache(cache_dir, tmp_path / "cache")
    bad = cache / "train.h5"
    corrupt(bad)
    with pytest.raises(UserError, match=message) as info:
        bl.load_split_features(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(SystemExit) as exit_info:
        run_stage(tmp_path / "out", cache)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {bad}: ")
    assert "Traceback" not in "".join(err)


def test_a_late_failure_writes_nothing(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = _copy_cache(cache_dir, tmp_path / "cache")
    _drop("ids")(cache / "holdout.h5")  # train and val are fine and processed first
    with pytest.raises(SystemExit):
        run_stage(tmp_path / "out", cache)
    assert f"{cache / 'holdout.h5'}: missing dataset 'ids'" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["params.yaml"]
