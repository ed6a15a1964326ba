"""Patient-grouped negative subsampling (``data.max_negatives``): every melanoma image and whole
patients are kept, benign images are cut to the budget before ingest decodes anything, and the
record reaches ``split_metadata.json``; with the budget unset nothing changes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import yaml

import melanoma_kd.data.sources as sources
from melanoma_kd.config import DataParams, SplitParams
from melanoma_kd.data.sources import build_manifest
from melanoma_kd.data.split import split_manifest
from melanoma_kd.data.subsample import subsample_negatives, subsample_record
from melanoma_kd.errors import UserError
from tests.conftest import REPO_ROOT
from tests.dvc_repo import make_repo, ran_stages, run
from tests.recipe_data import BENIGN_GROUPS, MELANOMA_GROUPS, write_isic2024
from tests.test_split import make_manifest


def manifest_of(patients: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Rows for ``{patient: (melanoma images, benign images)}``, interleaved across patients."""
    rows = []
    for patient, (pos, neg) in patients.items():
        rows += [(patient, 1)] * pos + [(patient, 0)] * neg
    df = pd.DataFrame(rows, columns=["patient_id", "label"]).sample(frac=1.0, random_state=0)
    df.insert(0, "image_id", [f"IMG{i:04d}" for i in range(len(df))])
    df["lesion_id"] = df["image_id"]
    return df.reset_index(drop=True)


def check_whole_patients(before: pd.DataFrame, after: pd.DataFrame, budget: int) -> None:
    """Every melanoma image kept; each kept patient has all its images; the budget holds; and no
    left-out benign-only patient would still have fitted (the greedy fill is complete)."""
    assert set(before.loc[before["label"] == 1, "image_id"]) <= set(after["image_id"])
    sizes = before.groupby("patient_id").size()
    kept_sizes = after.groupby("patient_id").size()
    assert kept_sizes.equals(sizes[kept_sizes.index])
    negatives = int((after["label"] == 0).sum())
    assert negatives <= budget
    benign_only = before.groupby("patient_id")["label"].sum() == 0
    left_out = sizes[benign_only & ~sizes.index.isin(kept_sizes.index)]
    assert left_out.empty or int(left_out.min()) > budget - negatives
    assert list(after["image_id"]) == [i for i in before["image_id"] if i in set(after["image_id"])]


# --- the function ------------------------------------------------------------------------------


def test_hand_checked_counts_and_record() -> None:
    # P1 owns melanoma and 2 benign images (kept whole), P2 melanoma only; four benign-only
    # patients of 2 images. Budget 6 = P1's 2 + two benign-only patients, whichever the seed picks.
    df = manifest_of(
        {"P1": (1, 2), "P2": (2, 0), "P3": (0, 2), "P4": (0, 2), "P5": (0, 2), "P6": (0, 2)}
    )
    out, record = subsample_negatives(df, 6, seed=3)
    assert record == {
        "subsample_max_negatives": 6,
        "subsample_seed": 3,
        "subsample_images_before": 13,
        "subsample_positives_before": 3,
        "subsample_negatives_before": 10,
        "subsample_patients_before": 6,
        "subsample_images_after": 9,
        "subsample_positives_after": 3,
        "subsample_negatives_after": 6,
        "subsample_patients_after": 4,
    }
    assert {"P1", "P2"} <= set(out["patient_id"]) and len(out) == 9
    check_whole_patients(df, out, 6)


def test_a_patient_too_big_for_the_rest_of_the_budget_is_skipped() -> None:
    # Budget 4: P1's 2 benign images, then only the two 1-image patients fit (never P3's 5).
    df = manifest_of({"P1": (1, 2), "P3": (0, 5), "P4": (0, 1), "P5": (0, 1)})
    for seed in range(6):
        out, record = subsample_negatives(df, 4, seed)
        assert sorted(out["patient_id"].unique()) == ["P1", "P4", "P5"]
        assert record["subsample_negatives_after"] == 4


def test_budget_above_the_benign_count_keeps_everything() -> None:
    df = manifest_of({"P1": (1, 2), "P2": (0, 3)})
    out, record = subsample_negatives(df, 5, seed=0)
    assert out.equals(df)
    assert record["subsample_images_after"] == record["subsample_images_before"] == 6


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_all_positives_and_whole_patients_on_a_large_manifest(seed: int) -> None:
    df = make_manifest(n_patients=300, seed=seed)
    negatives = int((df["label"] == 0).sum())
    forced = int(
        df.loc[df.groupby("patient_id")["label"].transform("sum") > 0, "label"].eq(0).sum()
    )
    budget = (forced + negatives) // 2
    out, record = subsample_negatives(df, budget, seed)
    check_whole_patients(df, out, budget)
    assert forced <= record["subsample_negatives_after"] <= budget
    assert record["subsample_positives_after"] == int(df["label"].sum())


def test_deterministic_row_order_free_and_seed_dependent() -> None:
    df = make_manifest(n_patients=300, seed=5)
    budget = int((df["label"] == 0).sum()) // 2
    a, rec_a = subsample_negatives(df, budget, seed=1)
    b, rec_b = subsample_negatives(df, budget, seed=1)
    assert a.equals(b) and rec_a == rec_b
    shuffled, _ = subsample_negatives(df.sample(frac=1.0, random_state=9), budget, seed=1)
    assert set(shuffled["image_id"]) == set(a["image_id"])
    other, _ = subsample_negatives(df, budget, seed=2)
    assert set(other["patient_id"]) != set(a["patient_id"])


def test_budget_below_the_melanoma_patients_benign_images_is_one_line() -> None:
    df = manifest_of({"P1": (1, 3), "P2": (1, 2), "P3": (0, 4)})
    with pytest.raises(UserError) as info:
        subsample_negatives(df, 4, seed=0)
    msg = str(info.value)
    assert "\n" not in msg and "data.max_negatives" in msg and ">= 5" in msg


def test_budget_that_keeps_no_benign_image_is_one_line() -> None:
    df = manifest_of({"P1": (2, 0), "P2": (0, 3), "P3": (0, 4)})
    with pytest.raises(UserError, match="keeps no benign image"):
        subsample_negatives(df, 2, seed=0)


def test_record_of_an_ingest_report() -> None:
    report = {"images": 9, "positives": 3, "subsample_seed": 1, "subsample_images_after": 9}
    assert subsample_record(report) == {"subsample_seed": 1, "subsample_images_after": 9}
    assert subsample_record({"images": 9}) == {}


# --- ingest and split on the ISIC-2024-format fixture ------------------------------------------


# A benign budget that keeps the melanoma patients' benign images and half of the benign-only
# patients' (one image each): below the fixture's benign count, so subsampling drops images.
BUDGET = MELANOMA_GROUPS + BENIGN_GROUPS // 2


@pytest.fixture(scope="module")
def isic(tmp_path_factory: pytest.TempPathFactory):
    return write_isic2024(tmp_path_factory.mktemp("isic") / "isic-2024-challenge")


def _decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    decoded: list[str] = []
    real_get = sources.ImageStore.get

    def counting_get(self: sources.ImageStore, image_id: str):
        decoded.append(image_id)
        return real_get(self, image_id)

    monkeypatch.setattr(sources.ImageStore, "get", counting_get)
    return decoded


def test_ingest_keeps_the_melanoma_patients_and_decodes_only_them(
    isic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixture's melanoma patients own 2 melanoma + 1 benign image each: a budget of exactly
    # their benign images keeps them and nobody else.
    decoded = _decode_counter(monkeypatch)
    params = DataParams(source="isic2024", root=str(isic.root), max_negatives=MELANOMA_GROUPS)
    manifest, report = build_manifest(params)
    n = MELANOMA_GROUPS
    assert (report["images"], report["positives"], report["negatives"]) == (3 * n, 2 * n, n)
    assert report["patients"] == MELANOMA_GROUPS
    assert sorted(decoded) == sorted(manifest["image_id"])
    assert report["subsample_images_before"] == len(isic.metadata)


def test_ingest_subsample_of_the_fixture(isic) -> None:
    before, _ = build_manifest(DataParams(source="isic2024", root=str(isic.root)))
    params = DataParams(
        source="isic2024", root=str(isic.root), max_negatives=BUDGET, subsample_seed=4
    )
    manifest, report = build_manifest(params)
    assert (before["label"] == 0).sum() > BUDGET  # something to drop
    check_whole_patients(before, manifest, BUDGET)
    assert report["positives"] == 2 * MELANOMA_GROUPS
    assert report["subsample_negatives_after"] == report["negatives"] <= BUDGET
    _, summary = split_manifest(manifest, SplitParams())  # every split gets both classes
    assert sum(summary[f"{s}_images"] for s in ("train", "val", "holdout")) == len(manifest)


def test_ingest_without_budget_has_no_record(isic) -> None:
    _, report = build_manifest(DataParams(source="isic2024", root=str(isic.root)))
    assert subsample_record(report) == {}


def _stage(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO_ROOT / f"stages/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("budget", [None, BUDGET])
def test_stages_carry_the_record_into_split_metadata(isic, tmp_path: Path, budget) -> None:
    params = tmp_path / "params.yaml"
    data = {"source": "isic2024", "root": str(isic.root), "max_negatives": budget}
    params.write_text(yaml.safe_dump({"data": data, "distill": {"transfer_images": 0}}))
    p = ("--params", str(params))
    _stage("ingest").main(
        [*p, "--out", str(tmp_path / "m.csv"), "--skipped", str(tmp_path / "s.csv"),
         "--metrics", str(tmp_path / "ingest.json")]
    )  # fmt: skip
    _stage("split").main(
        [*p, "--manifest", str(tmp_path / "m.csv"),
         "--ingest-report", str(tmp_path / "ingest.json"),
         "--out", str(tmp_path / "splits.csv"), "--metrics", str(tmp_path / "split.json")]
    )  # fmt: skip
    ingest = json.loads((tmp_path / "ingest.json").read_text())
    split = json.loads((tmp_path / "split.json").read_text())
    assert subsample_record(split) == subsample_record(ingest)
    if budget is None:
        assert subsample_record(split) == {}
    else:
        assert split["subsample_max_negatives"] == budget and split["subsample_seed"] == 0
        kept = sum(split[f"{s}_images"] for s in ("train", "val", "holdout"))
        assert kept == split["subsample_images_after"] == ingest["images"]
        assert kept < split["subsample_images_before"]


# --- the pipeline: dvc exp run on the ISIC-2024 fixture ----------------------------------------


@pytest.mark.pipeline
def test_exp_run_isic2024_with_subsampling_runs_no_synthetic_generation(tmp_path: Path) -> None:
    """``dvc exp run -S data.source=isic2024 -S data.max_negatives=...`` on the ISIC-2024-format
    fixture: generate writes only its marker, nothing opens a hair truth (a planted unreadable
    one would fail), and ingest → split → remove_hair → cache see only the kept images."""
    from tests.recipe_runs import check_no_synthetic_work, plant_truth_trap

    data = write_isic2024(tmp_path / "isic-2024-challenge")
    plant_truth_trap(data.root)
    repo = make_repo(tmp_path / "repo")
    budget = BUDGET
    out = run(
        repo, "dvc", "exp", "run",
        "-S", "data.source=isic2024", "-S", f"data.root={data.root}",
        "-S", f"data.max_negatives={budget}", "-S", "distill.transfer_images=0",
        "generate", "cache",
    ).stdout  # fmt: skip
    assert {"generate", "ingest", "split", "remove_hair", "cache"} <= ran_stages(out)

    ingest = json.loads((repo / "metrics/ingest.json").read_text())
    split = json.loads((repo / "metrics/split_metadata.json").read_text())
    check_no_synthetic_work(repo, ingest["images"])
    assert not any((repo / "data/raw/synthetic").glob("*.hdf5"))

    manifest = pd.read_csv(repo / "data/manifest.csv", dtype={"patient_id": str})
    meta = data.metadata.rename(columns={"isic_id": "image_id", "target": "label"})
    check_whole_patients(meta, meta[meta["image_id"].isin(manifest["image_id"])], budget)
    assert ingest["positives"] == 2 * MELANOMA_GROUPS
    assert ingest["negatives"] == ingest["subsample_negatives_after"] <= budget
    assert ingest["subsample_images_before"] == len(meta) > ingest["images"]
    assert subsample_record(split) == subsample_record(ingest)

    import h5py

    cached = 0
    for s in ("train", "val", "holdout"):
        with h5py.File(repo / f"data/cache/{s}.h5") as h5:
            cached += len(h5["ids"])
            assert len(h5["ids"]) == split[f"{s}_images"]
    assert cached == ingest["images"] == len(manifest)
