"""split: patient-grouped, label-stratified, seeded train/val/holdout assignment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from melanoma_kd.config import SplitParams
from melanoma_kd.data.split import split_manifest
from melanoma_kd.errors import UserError
from tests.conftest import REPO_ROOT

SPLITS = ("train", "val", "holdout")


def make_manifest(
    n_patients: int = 400,
    seed: int = 123,
    melanoma_patient_rate: float = 0.25,
    n_positive_patients: int | None = None,
) -> pd.DataFrame:
    """Patients own 1-4 lesions, lesions have 1-4 images; labels are per lesion (~10-15 %)."""
    rng = np.random.default_rng(seed)
    if n_positive_patients is None:
        prone = rng.random(n_patients) < melanoma_patient_rate
    else:
        prone = np.zeros(n_patients, dtype=bool)
        prone[rng.choice(n_patients, n_positive_patients, replace=False)] = True
    rows = []
    lesion_no = 0
    for p in range(n_patients):
        n_lesions = int(rng.integers(1, 5))
        # a melanoma-prone patient has at least one melanoma lesion, never all of them
        mel = np.zeros(n_lesions, dtype=bool)
        if prone[p]:
            mel[0] = True
        for k in range(n_lesions):
            lesion_no += 1
            for _ in range(int(rng.integers(1, 5))):
                rows.append((f"P{p:04d}", f"L{lesion_no:05d}", int(mel[k])))
    df = pd.DataFrame(rows, columns=["patient_id", "lesion_id", "label"])
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ids not grouped by row
    df.insert(0, "image_id", [f"IMG{i:05d}" for i in range(len(df))])
    df["source"] = "synthetic"
    df["location"] = "data/raw/synthetic/train-image.hdf5"
    return df


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    df = make_manifest()
    rate = df["label"].mean()
    assert 0.09 <= rate <= 0.16, f"fixture positive rate {rate:.3f} outside ~10-15 %"
    assert df["patient_id"].nunique() == 400 and len(df) > 1500
    return df


@pytest.fixture(scope="module")
def lesion_manifest() -> pd.DataFrame:
    df = make_manifest(n_patients=900, seed=11, melanoma_patient_rate=0.12)
    df["patient_id"] = df["lesion_id"]
    assert 0.05 <= df["label"].mean() <= 0.15
    return df


def _split(manifest: pd.DataFrame, **kw: float) -> tuple[pd.DataFrame, dict]:
    return split_manifest(manifest, SplitParams(**kw))


def test_every_row_kept_and_assigned(manifest: pd.DataFrame) -> None:
    out, _ = _split(manifest)
    assert len(out) == len(manifest)
    pd.testing.assert_frame_equal(out.drop(columns="split"), manifest)
    assert set(out["split"]) == set(SPLITS)
    assert out["split"].notna().all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_zero_patient_and_lesion_overlap(manifest: pd.DataFrame, seed: int) -> None:
    out, summary = _split(manifest, seed=seed)
    for group in ("patient_id", "lesion_id"):
        splits_per_group = out.groupby(group)["split"].nunique()
        assert (splits_per_group == 1).all(), f"{group} straddles splits"
    assert summary["patient_overlap"] == 0
    assert summary["lesion_overlap"] == 0


FRACTIONS = [(0.70, 0.15, 0.15), (0.6, 0.2, 0.2)]


def _rates_and_sizes(
    manifest: pd.DataFrame, seed: int, fractions: tuple[float, float, float]
) -> dict[str, tuple[float, float, float]]:
    """split -> (wanted fraction, image fraction, melanoma rate)."""
    params = dict(zip(SPLITS, fractions, strict=True))
    out, _ = _split(manifest, seed=seed, **params)
    result = {}
    for name, frac in params.items():
        part = out[out["split"] == name]
        result[name] = (frac, len(part) / len(out), part["label"].mean())
    return result


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fractions", FRACTIONS)
def test_split_sizes_follow_fractions(
    manifest: pd.DataFrame, seed: int, fractions: tuple[float, float, float]
) -> None:
    for name, (frac, size, _) in _rates_and_sizes(manifest, seed, fractions).items():
        assert abs(size - frac) <= 0.03, f"{name}: {size:.3f} of images, wanted {frac}"


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fractions", FRACTIONS)
def test_melanoma_rate_within_2_points_patients_with_mixed_lesions(
    manifest: pd.DataFrame, seed: int, fractions: tuple[float, float, float]
) -> None:
    overall = manifest["label"].mean()
    for name, (_, _, rate) in _rates_and_sizes(manifest, seed, fractions).items():
        assert abs(rate - overall) <= 0.02, f"{name}: melanoma rate {rate:.3f} vs {overall:.3f}"


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fractions", FRACTIONS)
def test_melanoma_rate_within_2_points_one_label_per_patient(
    lesion_manifest: pd.DataFrame, seed: int, fractions: tuple[float, float, float]
) -> None:
    """HAM10000-like: the patient is the lesion, so every group is all-melanoma or all-benign."""
    df = lesion_manifest
    overall = df["label"].mean()
    for name, (frac, size, rate) in _rates_and_sizes(df, seed, fractions).items():
        assert abs(size - frac) <= 0.03, f"{name}: {size:.3f} of images, wanted {frac}"
        assert abs(rate - overall) <= 0.02, f"{name}: melanoma rate {rate:.3f} vs {overall:.3f}"


def test_same_seed_same_assignment(manifest: pd.DataFrame) -> None:
    a, sa = _split(manifest, seed=7)
    b, sb = _split(manifest.copy(), seed=7)
    assert list(a["split"]) == list(b["split"])
    assert sa == sb


def test_assignment_does_not_depend_on_row_order(manifest: pd.DataFrame) -> None:
    a, _ = _split(manifest, seed=7)
    shuffled = manifest.sample(frac=1.0, random_state=99)
    b, _ = _split(shuffled, seed=7)
    assert (
        a.set_index("image_id")["split"]
        .sort_index()
        .equals(b.set_index("image_id")["split"].sort_index())
    )


def test_different_seed_different_assignment(manifest: pd.DataFrame) -> None:
    a, _ = _split(manifest, seed=0)
    b, _ = _split(manifest, seed=1)
    changed = (a["split"] != b["split"]).mean()
    assert changed > 0.1, f"only {changed:.1%} of images moved between seeds"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_lacking_positives_fails_naming_the_split(seed: int) -> None:
    df = make_manifest(n_patients=60, seed=seed, n_positive_patients=2)
    with pytest.raises(UserError) as info:
        _split(df, seed=seed)
    msg = str(info.value)
    assert "\n" not in msg
    named = [s for s in SPLITS if f" {s} " in f" {msg} "]
    assert len(named) == 1, f"no single split named in {msg!r}"
    assert "melanoma" in msg or "positive" in msg


def test_split_lacking_negatives_fails() -> None:
    df = make_manifest(n_patients=60, seed=5)
    df["label"] = 1
    with pytest.raises(UserError, match=r"benign|negative"):
        _split(df)


def test_summary_counts_add_up(manifest: pd.DataFrame) -> None:
    out, summary = _split(manifest, seed=3, train=0.7, val=0.15, holdout=0.15)
    total = {"images": 0, "positives": 0, "negatives": 0, "patients": 0, "lesions": 0}
    for name in SPLITS:
        part = out[out["split"] == name]
        assert summary[f"{name}_images"] == len(part)
        assert summary[f"{name}_positives"] == int(part["label"].sum())
        assert summary[f"{name}_negatives"] == int((part["label"] == 0).sum())
        assert summary[f"{name}_patients"] == part["patient_id"].nunique()
        assert summary[f"{name}_lesions"] == part["lesion_id"].nunique()
        assert summary[f"{name}_positive_rate"] == pytest.approx(part["label"].mean(), abs=1e-6)
        for key in total:
            total[key] += summary[f"{name}_{key}"]
    assert total["images"] == len(manifest)
    assert total["positives"] == int(manifest["label"].sum())
    assert total["negatives"] == int((manifest["label"] == 0).sum())
    assert total["patients"] == manifest["patient_id"].nunique()
    assert total["lesions"] == manifest["lesion_id"].nunique()
    assert summary["seed"] == 3
    assert (summary["fraction_train"], summary["fraction_val"], summary["fraction_holdout"]) == (
        0.7,
        0.15,
        0.15,
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lesion_shared_by_patients_never_leaks(manifest: pd.DataFrame, seed: int) -> None:
    """A lesion id owned by several patients must be grouped together or rejected, never split."""
    df = manifest.copy()
    patients = sorted(df["patient_id"].unique())[:12]
    first = df.drop_duplicates("patient_id").set_index("patient_id")
    for p in patients:  # one image of each of 12 patients is relabelled as the same lesion
        df.loc[df["image_id"] == first.loc[p, "image_id"], "lesion_id"] = "SHARED"
    try:
        out, _ = _split(df, seed=seed)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert out.loc[out["lesion_id"] == "SHARED", "split"].nunique() == 1


def test_stage_failure_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    manifest_path = tmp_path / "manifest.csv"
    make_manifest(n_patients=60, seed=0, n_positive_patients=2).to_csv(manifest_path, index=False)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"split": {"seed": 0}}))
    out = tmp_path / "out"
    (tmp_path / "ingest.json").write_text("{}")
    cmd = [
        sys.executable,
        "stages/split.py",
        "--params", str(params_path),
        "--manifest", str(manifest_path),
        "--ingest-report", str(tmp_path / "ingest.json"),
        "--out", str(out / "splits.csv"),
        "--metrics", str(out / "split_metadata.json"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not out.exists() or not any(out.iterdir())
