"""The synthetic dermoscopy generator: format, cohort structure, truth, determinism, the stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from melanoma_kd.config import GenerateParams
from melanoma_kd.data.synthetic import (
    IMAGES_FILE,
    METADATA_FILE,
    NOT_GENERATED_FILE,
    TRUTH_FILE,
    generate_dataset,
    open_truth,
    plot_samples,
)
from melanoma_kd.data.synthetic_render import ARTEFACT_NAMES, BUBBLE, HAIR_TYPES, RULER
from melanoma_kd.imaging import encode_jpeg
from melanoma_kd.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
SMALL = GenerateParams(
    n_images=60, image_size=48, positive_rate=0.2, hair_fraction=0.4, label_noise=0.0, seed=7
)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    return out, generate_dataset(SMALL, out)


def _decode(h5: h5py.File, isic_id: str) -> np.ndarray:
    """Read an image the way ISIC-2024 users do: np.frombuffer on the scalar + cv2.imdecode."""
    raw = np.frombuffer(h5[isic_id][()], np.uint8)
    return cv2.imdecode(raw, cv2.IMREAD_COLOR)[..., ::-1]


def test_isic2024_layout(small_set: tuple[Path, dict]) -> None:
    out, _ = small_set
    meta = pd.read_csv(out / METADATA_FILE)
    assert list(meta.columns[:4]) == ["isic_id", "patient_id", "lesion_id", "target"]
    assert len(meta) == SMALL.n_images and meta["isic_id"].is_unique
    assert meta["isic_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert set(meta["target"]) <= {0, 1}
    with h5py.File(out / IMAGES_FILE, "r") as h5:
        assert sorted(h5.keys()) == sorted(meta["isic_id"])
        assert h5[meta["isic_id"][0]].shape == ()  # one scalar of JPEG bytes per image
        for isic_id in meta["isic_id"][:10]:
            img = _decode(h5, isic_id)
            assert img.shape == (SMALL.image_size, SMALL.image_size, 3)
            assert img.std() > 5  # not a blank picture


def test_truth_matches_metadata_and_images(small_set: tuple[Path, dict]) -> None:
    out, _ = small_set
    meta = pd.read_csv(out / METADATA_FILE)
    size = SMALL.image_size
    with h5py.File(out / TRUTH_FILE, "r") as truth, h5py.File(out / IMAGES_FILE, "r") as images:
        assert list(truth["ids"].asstr()[()]) == list(meta["isic_id"])
        assert truth["clean"].shape == (SMALL.n_images, size, size, 3)
        assert truth["hair_mask"].shape == (SMALL.n_images, size, size)
        has_hair = truth["has_hair"][()].astype(bool)
        masks = truth["hair_mask"][()]
        assert set(np.unique(masks)) <= {0, 1}
        assert not masks[~has_hair].any()
        assert (masks[has_hair].reshape(has_hair.sum(), -1).sum(1) > 0).mean() > 0.8
        for i, isic_id in enumerate(meta["isic_id"]):
            img = _decode(images, isic_id).astype(float)
            clean = truth["clean"][i].astype(float)
            hair = masks[i].astype(bool)
            if not has_hair[i]:  # the image is exactly the JPEG of its clean truth
                raw = encode_jpeg(truth["clean"][i], SMALL.jpeg_quality)
                assert raw == images[isic_id][()]
            else:  # dark hairs and ruler ink make the image darker than the truth there
                dark = hair & np.isin(truth["artefact"][i], [1, 2, RULER])
                if dark.sum() > 20:
                    assert (clean - img).mean(axis=2)[dark].mean() > 25


def test_cohort_structure(small_set: tuple[Path, dict]) -> None:
    out, summary = small_set
    meta = pd.read_csv(out / METADATA_FILE)
    per_lesion = meta.groupby("lesion_id")
    assert (per_lesion["target"].nunique() == 1).all()  # label is per lesion
    assert (per_lesion["patient_id"].nunique() == 1).all()  # a lesion belongs to one patient
    assert per_lesion.size().max() <= SMALL.max_images_per_lesion
    assert meta.groupby("patient_id")["lesion_id"].nunique().max() <= SMALL.max_lesions_per_patient
    assert meta["lesion_id"].nunique() < len(meta)  # some lesions have several views
    assert summary["images"] == len(meta)
    assert summary["positives"] == meta["target"].sum()
    assert summary["patients"] == meta["patient_id"].nunique()
    assert summary["lesions"] == meta["lesion_id"].nunique()
    lesion_rate = per_lesion["target"].first().mean()
    assert abs(lesion_rate - SMALL.positive_rate) < 0.03


def test_rates_and_label_noise_at_scale() -> None:
    """Positive rate, hair rate and the class-balanced label noise on a larger cohort."""
    from melanoma_kd.data.synthetic import _make_patients_and_lesions

    p = GenerateParams(n_images=3000, positive_rate=0.1, label_noise=0.1, seed=1)
    patients, lesions = _make_patients_and_lesions(p, np.random.default_rng(1))
    assert sum(le.n_images for le in lesions) == p.n_images
    truly = [le for le in lesions if le.malignant]
    flipped_down = sum(le.target == 0 for le in truly)
    flipped_up = sum(le.target == 1 and not le.malignant for le in lesions)
    assert flipped_down == flipped_up == round(0.1 * len(truly))
    assert abs(sum(le.target for le in lesions) / len(lesions) - 0.1) < 0.005
    assert len({le.patient for le in lesions}) == len(patients)


def test_classes_differ_on_average() -> None:
    """Melanoma lesions are larger and more variegated on average, but the classes overlap."""
    from melanoma_kd.data.synthetic_render import draw_traits, render_lesion

    rng = np.random.default_rng(0)
    stats: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for malignant in (True, False):
        for _ in range(60):
            colour, alpha = render_lesion(rng, draw_traits(rng, malignant), 48)
            area = float((alpha > 0.3).mean())
            variegation = float(colour[alpha > 0.3].std(axis=0).mean())
            stats[malignant].append((area, variegation))
    mel, ben = np.array(stats[True]), np.array(stats[False])
    assert mel[:, 0].mean() > 1.2 * ben[:, 0].mean()
    assert mel[:, 1].mean() > 1.2 * ben[:, 1].mean()
    # overlap: some benign lesions are larger than the median melanoma
    assert (ben[:, 0] > np.median(mel[:, 0])).mean() > 0.03


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    p = GenerateParams(n_images=24, image_size=32, seed=11)
    generate_dataset(p, tmp_path / "a")
    generate_dataset(p, tmp_path / "b")
    generate_dataset(p.model_copy(update={"seed": 12}), tmp_path / "c")
    for name in (IMAGES_FILE, METADATA_FILE, TRUTH_FILE):
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)
        assert sha256_file(tmp_path / "a" / name) != sha256_file(tmp_path / "c" / name)


def test_failed_run_leaves_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import melanoma_kd.data.synthetic as synthetic

    out = tmp_path / "raw"
    generate_dataset(GenerateParams(n_images=20, image_size=32), out)
    before = sha256_file(out / IMAGES_FILE)

    def boom(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "encode_jpeg", boom)
    with pytest.raises(RuntimeError):
        generate_dataset(GenerateParams(n_images=20, image_size=32, seed=5), out)
    assert sha256_file(out / IMAGES_FILE) == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary left behind


def test_open_truth(small_set: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = small_set
    meta = pd.read_csv(out / METADATA_FILE)
    with open_truth(out) as truth:  # a folder works as well as the file
        assert truth is not None
        clean, mask, has_hair = truth.get(meta["isic_id"][0])
        assert clean.shape == (SMALL.image_size, SMALL.image_size, 3) and mask.ndim == 2
        assert isinstance(has_hair, bool)
        assert truth.get("ISIC_not_there") is None
    with open_truth(tmp_path / "missing.hdf5") as truth:
        assert truth is None


def test_plot_samples(small_set: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = small_set
    path = tmp_path / "plots" / "samples.png"
    plot_samples(out, path, per_class=4)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 100


def _stage():
    spec = importlib.util.spec_from_file_location("stage_generate", REPO / "stages/generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"generate": {"n_images": 20, "image_size": 32}}))
    out, plot = tmp_path / "raw", tmp_path / "samples.png"
    _stage().main(["--params", str(params), "--out", str(out), "--plot", str(plot)])
    assert (out / IMAGES_FILE).is_file() and plot.is_file()
    assert "generate:" in capsys.readouterr().out

    params.write_text(yaml.safe_dump({"generate": {"n_images": 5}}))
    with pytest.raises(SystemExit) as exc:
        _stage().main(["--params", str(params), "--out", str(out), "--plot", str(plot)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "generate.n_images" in err


@pytest.mark.parametrize("source", ["isic2024", "ham10000"])
def test_stage_generates_nothing_for_real_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    import melanoma_kd.data.synthetic as synthetic

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("synthetic work for real data")

    for name in ("generate_dataset", "render_view", "render_lesion", "plot_samples"):
        monkeypatch.setattr(synthetic, name, boom)
    params = tmp_path / "params.yaml"
    real = {"data": {"source": source, "root": "data/raw/real"}, "distill": {"transfer_images": 0}}
    params.write_text(yaml.safe_dump(real))
    out, plot = tmp_path / "raw", tmp_path / "samples.png"
    out.mkdir()
    (out / IMAGES_FILE).write_bytes(b"stale")  # a previous synthetic run's output goes away
    _stage().main(["--params", str(params), "--out", str(out), "--plot", str(plot)])
    assert [p.name for p in out.iterdir()] == [NOT_GENERATED_FILE]
    marker = json.loads((out / NOT_GENERATED_FILE).read_text())
    assert marker["generated"] is False and marker["data_source"] == source
    assert cv2.imread(str(plot)) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw", "samples.png"]

    params.write_text(yaml.safe_dump({"data": {"source": "synthetic"}}))
    with pytest.raises(AssertionError, match="synthetic work"):  # the trap is live
        _stage().main(["--params", str(params), "--out", str(out), "--plot", str(plot)])


# --- hair variety, rulers and bubbles ---------------------------------------------------------


def test_artefact_truth_is_consistent(small_set: tuple[Path, dict]) -> None:
    out, summary = small_set
    with h5py.File(out / TRUTH_FILE, "r") as truth:
        artefact, removal = truth["artefact"][()], truth["hair_mask"][()].astype(bool)
        hair_type, lesion = truth["hair_type"][()], truth["lesion_mask"][()]
        has_hair = truth["has_hair"][()].astype(bool)
        assert truth["artefact"].attrs["codes"] == ",".join(ARTEFACT_NAMES)
    # the removal mask is exactly the hair and ruler pixels; bubbles are never in it
    assert np.array_equal(removal, (artefact >= 1) & (artefact <= RULER))
    assert (artefact[removal] != BUBBLE).all()
    for i in range(len(hair_type)):  # one hair type per image, the one recorded
        codes = set(np.unique(artefact[i])) & set(range(1, len(HAIR_TYPES) + 1))
        assert codes <= {hair_type[i]}
    # has_hair: hairs or a ruler were drawn (their ink may fall outside the field of view)
    assert has_hair[removal.reshape(len(removal), -1).any(1) | (hair_type > 0)].all()
    assert set(np.unique(lesion)) == {0, 1} and lesion.mean() > 0.02
    assert summary["hairy"] == int((hair_type > 0).sum())
    assert sum(summary["hair_types"].values()) == summary["hairy"]


def _truth_arrays(out: Path) -> dict[str, np.ndarray]:
    with h5py.File(out / TRUTH_FILE, "r") as truth:
        return {k: truth[k][()] for k in ("clean", "hair_mask", "artefact", "hair_type")}


def test_each_hair_type_and_artefact_is_drawn(tmp_path: Path) -> None:
    base = SMALL.model_copy(update={"n_images": 24, "hair_fraction": 1.0})
    for name in ("thin", "grey", "blond"):
        shares = {"hair_thin": 0.0, "hair_grey": 0.0, "hair_blond": 0.0, f"hair_{name}": 1.0}
        p = GenerateParams(**(base.model_dump() | shares))
        generate_dataset(p, tmp_path / name)
        t = _truth_arrays(tmp_path / name)
        code = 1 + HAIR_TYPES.index(name)
        assert (t["hair_type"] == code).all()
        assert (t["artefact"] == code).any()
    # blond hairs are light: on their pixels the image is not darker than the clean truth
    with h5py.File(tmp_path / "blond" / IMAGES_FILE, "r") as images:
        meta = pd.read_csv(tmp_path / "blond" / METADATA_FILE)
        t = _truth_arrays(tmp_path / "blond")
        diffs = [
            (t["clean"][i].astype(float) - _decode(images, isic_id)).mean(axis=2)[
                t["artefact"][i] == 1 + HAIR_TYPES.index("blond")
            ]
            for i, isic_id in enumerate(meta["isic_id"])
        ]
        assert np.concatenate(diffs).mean() < 10
    every = SMALL.model_copy(update={"n_images": 20, "ruler_fraction": 1.0, "bubble_fraction": 1.0})
    generate_dataset(every, tmp_path / "every")
    t = _truth_arrays(tmp_path / "every")
    for k in range(every.n_images):
        assert (t["artefact"][k] == RULER).any() and (t["artefact"][k] == BUBBLE).any()


def test_rulers_and_bubbles_leave_other_images_unchanged(tmp_path: Path) -> None:
    """Rulers and bubbles are drawn from their own per-image generator: turning them on
    changes the images that get them and no other byte."""
    off = SMALL.model_copy(update={"n_images": 30, "ruler_fraction": 0.0, "bubble_fraction": 0.0})
    on = off.model_copy(update={"ruler_fraction": 0.4, "bubble_fraction": 0.4})
    generate_dataset(off, tmp_path / "off")
    generate_dataset(on, tmp_path / "on")
    b = _truth_arrays(tmp_path / "on")
    touched = (b["artefact"] >= RULER).reshape(len(b["artefact"]), -1).any(1)
    assert 0 < touched.sum() < len(touched)
    with (
        h5py.File(tmp_path / "off" / IMAGES_FILE, "r") as x,
        h5py.File(tmp_path / "on" / IMAGES_FILE, "r") as y,
    ):
        ids = list(x.keys())
        meta = pd.read_csv(tmp_path / "on" / METADATA_FILE)
        row = {isic_id: i for i, isic_id in enumerate(meta["isic_id"])}
        for isic_id in ids:
            same = x[isic_id][()] == y[isic_id][()]
            assert same != touched[row[isic_id]]


def test_hair_shares_must_fit() -> None:
    with pytest.raises(ValueError, match="must be <= 1"):
        GenerateParams(hair_thin=0.5, hair_grey=0.4, hair_blond=0.2)
