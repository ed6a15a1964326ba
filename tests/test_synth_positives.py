"""Generated positives: train-only provenance, inherited groups, the lesion recipe, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from melanoma_kd.data.lesion import lesion_mask
from melanoma_kd.data.preprocessed import open_preprocessed
from melanoma_kd.data.synth_positives import (
    CANDIDATE_COLUMNS,
    SYNTH_SOURCE,
    SynthParams,
    check_provenance,
    load_synth_params,
    make_positive,
    plan_samples,
    read_candidates,
    read_splits,
    synthesize,
    write_png_store,
    write_table,
)
from melanoma_kd.errors import UserError

SIZE = 40

# image_id, lesion_id, patient_id, label, split
ROWS = [
    ("IMG_01", "L1", "P1", 1, "train"),
    ("IMG_02", "L1", "P1", 1, "train"),
    ("IMG_03", "L2", "P1", 0, "train"),
    ("IMG_04", "L3", "P2", 1, "train"),
    ("IMG_05", "L4", "P2", 0, "train"),
    ("IMG_06", "L5", "P3", 0, "train"),
    ("IMG_07", "L6", "P3", 0, "train"),
    ("IMG_08", "L7", "P4", 1, "val"),
    ("IMG_09", "L8", "P4", 0, "val"),
    ("IMG_10", "L9", "P5", 1, "holdout"),
    ("IMG_11", "L10", "P5", 0, "holdout"),
]


def lesion_image(seed: int, size: int = SIZE, dark: bool = True) -> np.ndarray:
    """Skin with a seeded dark (melanoma-like) or light-brown lesion, texture, black corners."""
    rng = np.random.default_rng(seed)
    skin = np.array([220, 180, 160], np.float32) + rng.uniform(-10, 10, 3)
    img = np.ones((size, size, 3), np.float32) * skin
    img += cv2.GaussianBlur(rng.normal(0, 6, (size, size, 3)).astype(np.float32), (0, 0), 1.5)
    colour = (70, 40, 35) if dark else (170, 120, 90)
    centre = (size // 2 + int(rng.integers(-3, 4)), size // 2 + int(rng.integers(-3, 4)))
    axes = (int(rng.integers(size // 6, size // 4)), int(rng.integers(size // 6, size // 4)))
    lesion = np.zeros((size, size), np.float32)
    cv2.ellipse(lesion, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    lesion = cv2.GaussianBlur(lesion, (0, 0), 1.0)[..., None]
    img = img * (1 - lesion) + np.array(colour, np.float32) * lesion
    yy, xx = np.mgrid[0:size, 0:size]
    corner = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 > (0.55 * size) ** 2
    img[corner] = 8
    return np.clip(img, 0, 255).astype(np.uint8)


def splits_table() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=["image_id", "lesion_id", "patient_id", "label", "split"])
    df["source"] = "synthetic"
    df["location"] = ""
    return df


def write_dataset(root: Path) -> tuple[Path, Path]:
    """``splits.csv`` + ``dehaired.h5`` (PNG store) for :data:`ROWS`; returns their paths."""
    df = splits_table()
    splits = root / "splits.csv"
    df.to_csv(splits, index=False)
    images = [lesion_image(i, dark=bool(label)) for i, label in enumerate(df["label"])]
    store = root / "dehaired.h5"
    write_png_store(store, df["image_id"].tolist(), images)
    return splits, store


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    return write_dataset(tmp_path)


def test_plan_uses_train_positives_and_other_patients_benign_skin() -> None:
    splits = splits_table()
    plan = plan_samples(splits, SynthParams(ratio=3.0))
    train = splits[splits["split"] == "train"].set_index("image_id")
    positives = set(train.index[train["label"] == 1])
    benign = set(train.index[train["label"] == 0])
    assert list(plan.columns) == CANDIDATE_COLUMNS
    assert len(plan) == 3 * len(positives)
    assert set(plan["source_image_id"]) <= positives
    assert set(plan["background_image_id"]) <= benign
    held_out = set(splits.loc[splits["split"] != "train", "image_id"])
    assert not held_out & (set(plan["source_image_id"]) | set(plan["background_image_id"]))
    # groups are inherited from the donor, so the grouped split keeps every sample in train
    donor = train.loc[plan["source_image_id"]]
    assert plan["patient_id"].tolist() == donor["patient_id"].tolist()
    assert plan["lesion_id"].tolist() == donor["lesion_id"].tolist()
    assert set(plan["patient_id"]) <= set(train["patient_id"])
    background_patient = train.loc[plan["background_image_id"], "patient_id"].to_numpy()
    assert (background_patient != plan["patient_id"].to_numpy()).all()
    assert plan["source_image_id"].value_counts().tolist() == [3, 3, 3]  # balanced rounds
    assert (plan["label"] == 1).all() and (plan["source"] == SYNTH_SOURCE).all()
    check_provenance(plan, splits)


def test_plan_count_follows_ratio_and_is_seeded() -> None:
    splits = splits_table()
    assert len(plan_samples(splits, SynthParams(ratio=0.0))) == 0
    assert len(plan_samples(splits, SynthParams(ratio=0.5))) == 2  # round(0.5 * 3)
    a = plan_samples(splits, SynthParams(ratio=2.0, seed=1))
    pd.testing.assert_frame_equal(a, plan_samples(splits, SynthParams(ratio=2.0, seed=1)))
    # row order of the split table does not matter
    shuffled = splits.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(a, plan_samples(shuffled, SynthParams(ratio=2.0, seed=1)))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("source_image_id", "IMG_08", "is not a train positive"),  # val positive
        ("source_image_id", "IMG_10", "is not a train positive"),  # holdout positive
        ("source_image_id", "IMG_03", "is not a train positive"),  # train benign
        ("background_image_id", "IMG_11", "is not a train image"),  # holdout benign
        ("patient_id", "P9", "not inherited"),
        ("lesion_id", "L9", "not inherited"),
    ],
)
def test_provenance_check_rejects_leaks(column: str, value: str, message: str) -> None:
    splits = splits_table()
    plan = plan_samples(splits, SynthParams(ratio=1.0))
    plan.loc[0, column] = value
    with pytest.raises(UserError, match=message):
        check_provenance(plan, splits)


def test_plan_errors_are_one_line() -> None:
    splits = splits_table()
    no_pos = splits[~((splits["split"] == "train") & (splits["label"] == 1))]
    assert len(plan_samples(no_pos, SynthParams(ratio=1.0))) == 0  # ratio x 0 positives
    only_own = splits[~splits["image_id"].isin(["IMG_05", "IMG_06", "IMG_07"])]
    only_own = only_own[only_own["image_id"] != "IMG_04"]  # P1 positives, only P1 benign
    with pytest.raises(UserError, match="no benign train image of a patient other than P1"):
        plan_samples(only_own, SynthParams(ratio=1.0))


def test_lesion_mask_finds_the_lesion_not_the_vignette() -> None:
    img = lesion_image(3, size=64)
    mask = lesion_mask(img)
    assert mask is not None
    truth = (cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 0] < 90) & (img.sum(-1) > 60)
    inter = np.logical_and(mask > 0, truth).sum()
    union = np.logical_or(mask > 0, truth).sum()
    assert inter / union > 0.7
    assert mask[0, 0] == 0 and mask[-1, -1] == 0  # the black corners are not the lesion
    assert (lesion_mask(img, dilate=0.05) > 0).sum() > (mask > 0).sum()
    assert lesion_mask(np.full((32, 32, 3), 200, np.uint8)) is None


def test_make_positive_transplants_a_lesion_onto_background_size() -> None:
    donor = lesion_image(1, size=48)
    background = lesion_image(2, size=40, dark=False)
    out = make_positive(donor, background, np.random.default_rng(0), SynthParams())
    assert out.image.shape == background.shape and out.image.dtype == np.uint8
    assert not out.mask_fallback
    centre = out.image[12:28, 12:28].astype(int).sum(-1)
    assert centre.min() < background[12:28, 12:28].astype(int).sum(-1).min() - 60  # dark lesion
    again = make_positive(donor, background, np.random.default_rng(0), SynthParams())
    assert np.array_equal(out.image, again.image)


def test_synthesize_is_byte_identical_and_readable(dataset: tuple[Path, Path], tmp_path: Path):
    splits_path, store_path = dataset
    splits = read_splits(splits_path)
    params = SynthParams(ratio=2.0)
    outs = []
    for run in ("a", "b"):
        with open_preprocessed(store_path) as store:
            table, summary = synthesize(splits, store, params, tmp_path / f"{run}.h5")
        write_table(tmp_path / f"{run}.csv", table)
        outs.append((tmp_path / f"{run}.h5", tmp_path / f"{run}.csv"))
    assert sha(outs[0][0]) == sha(outs[1][0]) and sha(outs[0][1]) == sha(outs[1][1])
    assert summary == {
        "candidates": 6,
        "train_positives": 3,
        "donors_used": 3,
        "backgrounds_used": summary["backgrounds_used"],
        "mask_fallbacks": 0,
    }
    table = read_candidates(outs[0][1])
    check_provenance(table, splits)
    with open_preprocessed(outs[0][0]) as gen, open_preprocessed(store_path) as real:
        assert list(gen.index) == table["image_id"].tolist()
        for row in table.itertuples():
            img = gen.get(row.image_id)
            assert img.shape == (SIZE, SIZE, 3)
            assert not np.array_equal(img, real.get(row.background_image_id))


def test_load_synth_params(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("cache:\n  size: 64\nsynth:\n  ratio: 2.5\n  high_factor: 2.0\n")
    params, synth = load_synth_params(path)
    assert params.cache.size == 64 and synth.ratio == 2.5 and synth.high_factor == 2.0
    path.write_text("synth:\n  ratio: -1\n")
    with pytest.raises(UserError, match=r"synth\.ratio"):
        load_synth_params(path)
    path.write_text("synth:\n  low_quantile: 0.9\n  high_quantile: 0.1\n")
    with pytest.raises(UserError, match="low_quantile must be <= high_quantile"):
        load_synth_params(path)
    path.write_text("synth:\n  ratioo: 1\n")
    with pytest.raises(UserError, match="unknown key"):
        load_synth_params(path)


def test_bad_split_table_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    splits_table().drop(columns="split").to_csv(path, index=False)
    with pytest.raises(UserError, match="missing column"):
        read_splits(path)
    df = splits_table()
    df["label"] = df["label"].astype(str)
    df.loc[2, "label"] = "mel"
    df.to_csv(path, index=False)
    with pytest.raises(UserError, match="line 4: label must be 0 or 1"):
        read_splits(path)
