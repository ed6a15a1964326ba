"""ingest: tiny fixtures in the real ISIC-2024 and HAM10000 formats, good and bad."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from melanoma_kd.config import DataParams
from melanoma_kd.data.sources import build_manifest
from melanoma_kd.errors import UserError
from tests.conftest import REPO_ROOT, TinyDataset, corrupt_jpeg

COLUMNS = ["image_id", "lesion_id", "patient_id", "label", "source", "location"]


def _params(ds: TinyDataset, source: str, **kw: object) -> DataParams:
    extra = {"image_dirs": ds.image_dirs} if source == "ham10000" else {}
    return DataParams(source=source, root=str(ds.root), **extra, **kw)


def _ingest_error(params: DataParams) -> str:
    with pytest.raises(UserError) as info:
        build_manifest(params)
    msg = str(info.value)
    assert "\n" not in msg, f"error is not one line: {msg!r}"
    return msg


# ---------------------------------------------------------------- ISIC-2024 (and synthetic)


@pytest.mark.parametrize("storage", ["bytes", "void", "uint8"])
def test_isic2024_manifest(isic2024_data: TinyDataset, storage: str) -> None:
    isic2024_data.storage = storage
    isic2024_data.write()
    manifest, report = build_manifest(_params(isic2024_data, "isic2024"))

    assert list(manifest.columns) == COLUMNS
    meta = isic2024_data.metadata
    assert list(manifest["image_id"]) == list(meta["isic_id"])
    assert list(manifest["label"]) == list(meta["target"])
    assert list(manifest["patient_id"]) == list(meta["patient_id"])
    expected_lesion = [
        les or iid for iid, les in zip(meta["isic_id"], meta["lesion_id"], strict=True)
    ]
    assert list(manifest["lesion_id"]) == expected_lesion
    assert set(manifest["source"]) == {"isic2024"}
    assert all(Path(loc) == isic2024_data.root / "train-image.hdf5" for loc in manifest["location"])

    assert report["images"] == len(meta)
    assert report["positives"] == int((meta["target"] == 1).sum())
    assert report["negatives"] == int((meta["target"] == 0).sum())
    assert report["patients"] == meta["patient_id"].nunique()
    # two lesions with ids (IL_0000001 twice, IL_0000002, IL_0000003) + two images without
    assert report["lesions"] == 3 + 2
    assert report["skipped"] == 0


def test_isic2024_missing_lesion_id_makes_each_image_its_own_lesion(
    isic2024_data: TinyDataset,
) -> None:
    isic2024_data.metadata = isic2024_data.metadata.drop(columns=["lesion_id"])
    isic2024_data.write()
    manifest, _ = build_manifest(_params(isic2024_data, "isic2024"))
    assert list(manifest["lesion_id"]) == list(manifest["image_id"])


def test_isic2024_string_target_values(isic2024_data: TinyDataset) -> None:
    isic2024_data.metadata["target"] = ["1.0", "1", "0.0", "0", "0", "0.0"]
    isic2024_data.write()
    manifest, _ = build_manifest(_params(isic2024_data, "isic2024"))
    assert list(manifest["label"]) == [1, 1, 0, 0, 0, 0]
    assert pd.api.types.is_integer_dtype(manifest["label"])


def test_synthetic_source_reads_the_isic2024_layout(isic2024_data: TinyDataset) -> None:
    manifest, _ = build_manifest(_params(isic2024_data, "synthetic"))
    assert set(manifest["source"]) == {"synthetic"}
    assert list(manifest["label"]) == list(isic2024_data.metadata["target"])


# ---------------------------------------------------------------- HAM10000


def test_ham10000_manifest(ham10000_data: TinyDataset) -> None:
    manifest, report = build_manifest(_params(ham10000_data, "ham10000"))
    meta = ham10000_data.metadata

    assert list(manifest.columns) == COLUMNS
    assert list(manifest["image_id"]) == list(meta["image_id"])
    assert list(manifest["label"]) == [int(dx == "mel") for dx in meta["dx"]]
    assert list(manifest["lesion_id"]) == list(meta["lesion_id"])
    assert list(manifest["patient_id"]) == list(meta["lesion_id"])  # no patient id: lesion is group
    assert set(manifest["source"]) == {"ham10000"}
    # images are found in whichever of the two folders holds them
    for image_id, loc in zip(manifest["image_id"], manifest["location"], strict=True):
        path = Path(loc)
        assert path.name == f"{image_id}.jpg"
        assert path.parent.name in ham10000_data.image_dirs
        assert path.read_bytes() == ham10000_data.images[image_id]
    assert {Path(loc).parent.name for loc in manifest["location"]} == set(ham10000_data.image_dirs)

    assert report["images"] == len(meta)
    assert report["positives"] == 2
    assert report["negatives"] == len(meta) - 2
    assert report["lesions"] == report["patients"] == meta["lesion_id"].nunique()


def test_ham10000_single_custom_image_dir(ham10000_data: TinyDataset) -> None:
    ham10000_data.image_dirs = ["images"]
    ham10000_data.write()
    manifest, _ = build_manifest(_params(ham10000_data, "ham10000"))
    assert all(Path(loc).parent == ham10000_data.root / "images" for loc in manifest["location"])


# ---------------------------------------------------------------- bad input, both formats

ID_COL = {"isic2024": "isic_id", "ham10000": "image_id"}
META_FILE = {"isic2024": "train-metadata.csv", "ham10000": "HAM10000_metadata.csv"}


@pytest.fixture(params=["isic2024", "ham10000"])
def dataset(request: pytest.FixtureRequest) -> tuple[str, TinyDataset]:
    name = request.param
    return name, request.getfixturevalue(f"{name}_data")


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_image_fails_naming_file_and_id(
    dataset: tuple[str, TinyDataset], kind: str
) -> None:
    source, ds = dataset
    bad_id = list(ds.images)[2]
    ds.images[bad_id] = corrupt_jpeg(kind, ds.images[bad_id], seed=7)
    ds.write()
    msg = _ingest_error(_params(ds, source))
    assert bad_id in msg
    expected_file = (
        "train-image.hdf5" if source == "isic2024" else f"{bad_id}.jpg"
    )  # the container / the image file
    assert expected_file in msg


def test_empty_ham10000_image_file_fails(ham10000_data: TinyDataset) -> None:
    bad_id = next(iter(ham10000_data.images))
    ham10000_data.images[bad_id] = corrupt_jpeg("empty", b"")
    ham10000_data.write()
    msg = _ingest_error(_params(ham10000_data, "ham10000"))
    assert bad_id in msg


def test_missing_image_fails_naming_the_id(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    missing = list(ds.images)[-1]
    del ds.images[missing]
    ds.write()
    msg = _ingest_error(_params(ds, source))
    assert missing in msg
    if source == "isic2024":
        assert "train-image.hdf5" in msg


def test_missing_image_container_or_folder(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    if source == "isic2024":
        (ds.root / "train-image.hdf5").unlink()
        assert "train-image.hdf5" in _ingest_error(_params(ds, source))
    else:
        params = DataParams(source=source, root=str(ds.root), image_dirs=["no_such_folder"])
        assert ds.metadata["image_id"].iloc[0] in _ingest_error(params)


def test_image_container_not_hdf5(isic2024_data: TinyDataset) -> None:
    (isic2024_data.root / "train-image.hdf5").write_bytes(b"not an hdf5 file" * 10)
    assert "train-image.hdf5" in _ingest_error(_params(isic2024_data, "isic2024"))


def test_missing_metadata_file(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    (ds.root / META_FILE[source]).unlink()
    assert META_FILE[source] in _ingest_error(_params(ds, source))


@pytest.mark.parametrize(
    ("source", "column"),
    [
        ("isic2024", "isic_id"),
        ("isic2024", "patient_id"),
        ("isic2024", "target"),
        ("ham10000", "image_id"),
        ("ham10000", "lesion_id"),
        ("ham10000", "dx"),
    ],
)
def test_missing_column_fails_naming_file_and_column(
    request: pytest.FixtureRequest, source: str, column: str
) -> None:
    ds: TinyDataset = request.getfixturevalue(f"{source}_data")
    ds.metadata = ds.metadata.drop(columns=[column])
    ds.write()
    msg = _ingest_error(_params(ds, source))
    assert META_FILE[source] in msg
    assert column in msg


def test_duplicate_id_fails_naming_file_line_and_id(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    col = ID_COL[source]
    dup_id = ds.metadata[col].iloc[1]
    ds.metadata.loc[3, col] = dup_id  # data row 3 is on CSV line 5 (header is line 1)
    ds.write()
    msg = _ingest_error(_params(ds, source))
    assert META_FILE[source] in msg
    assert dup_id in msg
    assert re.search(r"\b5\b", msg), f"line 5 not named: {msg!r}"


def test_empty_id_fails(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    ds.metadata.loc[2, ID_COL[source]] = ""
    ds.write()
    msg = _ingest_error(_params(ds, source))
    assert META_FILE[source] in msg
    assert re.search(r"\b4\b", msg), f"line 4 not named: {msg!r}"


@pytest.mark.parametrize("bad", ["MEL", "melanoma", "", "nevus"])
def test_unknown_dx_fails_naming_line_and_value(ham10000_data: TinyDataset, bad: str) -> None:
    ham10000_data.metadata.loc[4, "dx"] = bad  # CSV line 6
    ham10000_data.write()
    msg = _ingest_error(_params(ham10000_data, "ham10000"))
    assert "HAM10000_metadata.csv" in msg
    assert "dx" in msg
    assert re.search(r"\b6\b", msg), f"line 6 not named: {msg!r}"
    if bad:
        assert bad in msg


@pytest.mark.parametrize("bad", ["", "NaN", "nan", "2", "-1", "yes", "0.5"])
def test_bad_target_fails_naming_line(isic2024_data: TinyDataset, bad: str) -> None:
    meta = isic2024_data.metadata.astype({"target": object})
    meta.loc[3, "target"] = bad  # CSV line 5
    isic2024_data.metadata = meta
    isic2024_data.write()
    msg = _ingest_error(_params(isic2024_data, "isic2024"))
    assert "train-metadata.csv" in msg
    assert "target" in msg
    assert re.search(r"\b5\b", msg), f"line 5 not named: {msg!r}"


def test_empty_patient_id_fails(isic2024_data: TinyDataset) -> None:
    isic2024_data.metadata.loc[1, "patient_id"] = ""
    isic2024_data.write()
    msg = _ingest_error(_params(isic2024_data, "isic2024"))
    assert "patient_id" in msg
    assert re.search(r"\b3\b", msg)


def test_empty_lesion_id_fails_for_ham10000(ham10000_data: TinyDataset) -> None:
    ham10000_data.metadata.loc[0, "lesion_id"] = ""
    ham10000_data.write()
    msg = _ingest_error(_params(ham10000_data, "ham10000"))
    assert "lesion_id" in msg
    assert re.search(r"\b2\b", msg)


def test_no_positives_fails(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    if source == "isic2024":
        ds.metadata["target"] = 0
    else:
        ds.metadata["dx"] = ds.metadata["dx"].replace("mel", "nv")
    ds.write()
    msg = _ingest_error(_params(ds, source))
    assert "melanoma" in msg or "positive" in msg


def test_no_negatives_fails(isic2024_data: TinyDataset) -> None:
    isic2024_data.metadata["target"] = 1
    isic2024_data.write()
    _ingest_error(_params(isic2024_data, "isic2024"))


def test_header_only_metadata_fails(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    ds.metadata = ds.metadata.iloc[:0]
    ds.images = {}
    ds.write()
    _ingest_error(_params(ds, source))


def test_zero_byte_metadata_file_is_a_user_error(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    (ds.root / META_FILE[source]).write_bytes(b"")
    assert META_FILE[source] in _ingest_error(_params(ds, source))


def test_non_utf8_metadata_file_is_a_user_error(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    (ds.root / META_FILE[source]).write_bytes(b"\xff\xfe\x00\x81" * 50)
    assert META_FILE[source] in _ingest_error(_params(ds, source))


# ---------------------------------------------------------------- on_bad_image: skip


def test_skip_drops_and_counts_the_corrupt_image(dataset: tuple[str, TinyDataset]) -> None:
    source, ds = dataset
    bad_id = list(ds.images)[3]  # a negative in both fixtures
    ds.images[bad_id] = corrupt_jpeg("random", ds.images[bad_id], seed=3)
    ds.write()
    manifest, report = build_manifest(_params(ds, source, on_bad_image="skip"))
    assert bad_id not in set(manifest["image_id"])
    assert len(manifest) == len(ds.metadata) - 1
    assert report["skipped"] == 1
    assert report["skipped_ids"] == [bad_id]
    assert report["images"] == len(manifest)
    assert list(manifest.index) == list(range(len(manifest)))


def test_skip_still_fails_on_metadata_errors(ham10000_data: TinyDataset) -> None:
    ham10000_data.metadata.loc[0, "dx"] = "unknown"
    ham10000_data.write()
    _ingest_error(_params(ham10000_data, "ham10000", on_bad_image="skip"))


def test_skip_that_removes_every_positive_fails(isic2024_data: TinyDataset) -> None:
    for image_id, target in zip(
        isic2024_data.metadata["isic_id"], isic2024_data.metadata["target"], strict=True
    ):
        if target == 1:
            isic2024_data.images[image_id] = b"\x00" * 64
    isic2024_data.write()
    _ingest_error(_params(isic2024_data, "isic2024", on_bad_image="skip"))


# ---------------------------------------------------------------- the stage script


def _run_ingest(
    tmp_path: Path, ds: TinyDataset, source: str
) -> tuple[subprocess.CompletedProcess, Path]:
    params = {
        "data": {"source": source, "root": str(ds.root), "on_bad_image": "fail"},
        "distill": {"transfer_images": 0},  # real data would need distill.transfer_dir
    }
    if source == "ham10000":
        params["data"]["image_dirs"] = ds.image_dirs
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "stages/ingest.py",
        "--params", str(params_path),
        "--out", str(out / "manifest.csv"),
        "--skipped", str(out / "skipped_ids.csv"),
        "--metrics", str(out / "ingest.json"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    return proc, out


def test_stage_bad_input_exits_2_with_one_error_line_and_writes_nothing(
    tmp_path: Path, isic2024_data: TinyDataset
) -> None:
    bad_id = list(isic2024_data.images)[1]
    isic2024_data.images[bad_id] = corrupt_jpeg("truncated", isic2024_data.images[bad_id])
    isic2024_data.write()
    out = tmp_path / "out"
    out.mkdir()
    previous = "image_id,lesion_id,patient_id,label,source,location\nold,old,old,0,x,y\n"
    (out / "manifest.csv").write_text(previous)

    proc, out = _run_ingest(tmp_path, isic2024_data, "isic2024")

    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {proc.stderr!r}"
    assert lines[0].startswith("error:")
    assert bad_id in lines[0]
    assert "Traceback" not in proc.stdout
    assert (out / "manifest.csv").read_text() == previous  # untouched
    assert not (out / "skipped_ids.csv").exists()
    assert not (out / "ingest.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv"]  # no temp files left


def test_stage_writes_manifest_on_good_input(tmp_path: Path, ham10000_data: TinyDataset) -> None:
    proc, out = _run_ingest(tmp_path, ham10000_data, "ham10000")
    assert proc.returncode == 0, proc.stderr
    manifest = pd.read_csv(out / "manifest.csv", dtype={"image_id": str})
    assert list(manifest.columns) == COLUMNS
    assert list(manifest["image_id"]) == list(ham10000_data.metadata["image_id"])
    assert np.array_equal(manifest["label"], (ham10000_data.metadata["dx"] == "mel").astype(int))
    assert pd.read_csv(out / "skipped_ids.csv").columns.tolist() == ["image_id"]
    assert len(pd.read_csv(out / "skipped_ids.csv")) == 0
    assert (out / "ingest.json").is_file()
