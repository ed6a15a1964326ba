"""KD transfer set: built from unlabelled images only, aligned with the cached teacher outputs,
used by the distillation term and never by the task loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from torch import nn

from melanoma_kd.config import AugmentParams, Params, parse_params
from melanoma_kd.data.cache import resize_shorter_center_crop, write_split_cache
from melanoma_kd.data.dataset import UNLABELLED, CacheDataset, class_weights, training_set
from melanoma_kd.data.synthetic import IMAGES_FILE, METADATA_FILE, generate_dataset, read_image
from melanoma_kd.data.transfer import ID_PREFIX, build_transfer_set
from melanoma_kd.data.transforms import augmented_view, build_augment
from melanoma_kd.distill import ResponseKD, labelled_task_loss
from melanoma_kd.errors import UserError
from melanoma_kd.models.build import save_checkpoint
from melanoma_kd.teacher_outputs import compute_teacher_outputs
from melanoma_kd.train import TeacherOutputs
from tests.conftest import REPO_ROOT

TINY = REPO_ROOT / "tests/profiles/tiny.yaml"
SIZE = 16


def _params(hair_removal: bool = True, **distill: object) -> Params:
    raw = yaml.safe_load(TINY.read_text())
    raw["distill"].update(distill)
    raw["preprocess"].update(workers=1, hair_removal=hair_removal)
    raw["hair_ablation"]["arms"] = []  # its arms must differ from the main preprocessing
    return parse_params(raw, TINY)


def _labelled(ids: list[str]) -> pd.DataFrame:
    splits = ["train", "val", "holdout"]
    return pd.DataFrame({"image_id": ids, "split": [splits[i % 3] for i in range(len(ids))]})


def _cache(path: Path, labels: list[int], seed: int, prefix: str = "img") -> Path:
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    rows = pd.DataFrame(
        {
            "image_id": [f"{prefix}{i}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{prefix}{i}" for i in range(n)],
            "lesion_id": [f"l{prefix}{i}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, list(images), SIZE, path.stem, "h")
    return path


# --- building the set --------------------------------------------------------------------------


def test_synthetic_draw_is_unlabelled_new_and_byte_stable(tmp_path: Path) -> None:
    params = _params(transfer_images=24, transfer_seed=5)
    # the labelled set a generator draw with generate.seed would make, as the split stage sees it
    generate_dataset(params.generate, tmp_path / "labelled")
    meta = pd.read_csv(tmp_path / "labelled" / METADATA_FILE, dtype=str)
    labelled = _labelled(meta["isic_id"].tolist())

    summary = build_transfer_set(params, labelled, tmp_path / "a.h5")
    build_transfer_set(params, labelled, tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert summary["transfer_images"] == 24 and summary["labelled_ids_checked"] == len(labelled)

    ds = CacheDataset(tmp_path / "a.h5")
    assert len(ds) == 24 and ds.size == params.cache.size
    assert set(ds.labels.tolist()) == {UNLABELLED}
    held_out = set(labelled.loc[labelled["split"] != "train", "image_id"])
    assert all(i.startswith(ID_PREFIX) for i in ds.ids)
    assert not set(ds.ids) & held_out
    assert not set(ds.patients) & set(meta["patient_id"])


def _pixels(path: Path) -> set[bytes]:
    with h5py.File(path) as h5:
        return {img.tobytes() for img in h5["images"][()]}


def test_synthetic_draw_shares_no_image_with_the_labelled_set(tmp_path: Path) -> None:
    # without hair removal both sides are just the resized generator output
    params = _params(hair_removal=False, transfer_images=30, transfer_seed=5)
    generate_dataset(params.generate, tmp_path / "labelled")
    meta = pd.read_csv(tmp_path / "labelled" / METADATA_FILE, dtype=str)
    with h5py.File(tmp_path / "labelled" / IMAGES_FILE) as h5:
        labelled = {
            resize_shorter_center_crop(read_image(h5, i), params.cache.size).tobytes()
            for i in meta["isic_id"]
        }
    build_transfer_set(params, _labelled(meta["isic_id"].tolist()), tmp_path / "t.h5")
    assert not _pixels(tmp_path / "t.h5") & labelled
    # the comparison can fail: a draw with generate.seed (refused by the config) is the
    # labelled set again
    n = len(meta)
    same = params.model_copy(
        update={
            "distill": params.distill.model_copy(
                update={"transfer_seed": params.generate.seed, "transfer_images": n}
            ),
            "generate": params.generate.model_copy(update={"n_images": n}),
        }
    )
    build_transfer_set(same, _labelled([]), tmp_path / "same.h5")
    assert _pixels(tmp_path / "same.h5") == labelled


def test_zero_transfer_images_writes_an_empty_set(tmp_path: Path) -> None:
    summary = build_transfer_set(_params(transfer_images=0), _labelled(["a"]), tmp_path / "t.h5")
    assert summary["transfer_images"] == 0
    with h5py.File(tmp_path / "t.h5") as h5:
        assert h5["images"].shape[0] == 0


def _folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_source_takes_images_in_name_order(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["c.png", "a.png", "b.jpg"])
    params = _params(transfer_images=2, transfer_dir=str(folder))
    summary = build_transfer_set(params, _labelled(["x", "y", "z"]), tmp_path / "t.h5")
    assert summary["source"] == str(folder)
    assert CacheDataset(tmp_path / "t.h5").ids == ["a", "b"]


@pytest.mark.parametrize(
    ("names", "n", "labelled", "message"),
    [
        (["a.png", "img7.png"], 2, ["img7", "q", "r", "s", "t"], "'img7' is in the train split"),
        (["a.png", "holdout9.png"], 2, ["x", "y", "holdout9"], "is in the holdout split"),
        (["a.png"], 3, ["x"], "holds 1 images, distill.transfer_images asks for 3"),
    ],
)
def test_folder_source_refuses_labelled_or_missing_images(
    tmp_path: Path, names: list[str], n: int, labelled: list[str], message: str
) -> None:
    folder = _folder(tmp_path, names)
    params = _params(transfer_images=n, transfer_dir=str(folder))
    with pytest.raises(UserError, match=message):
        build_transfer_set(params, _labelled(labelled), tmp_path / "t.h5")
    assert not (tmp_path / "t.h5").exists()


def test_folder_source_names_an_unreadable_image(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png"])
    (folder / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    params = _params(transfer_images=2, transfer_dir=str(folder))
    with pytest.raises(UserError, match=r"b\.jpg: corrupt or unreadable image"):
        build_transfer_set(params, _labelled(["x"]), tmp_path / "t.h5")
    assert not (tmp_path / "t.h5").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"train": {"balanced_sampler": True, "loss": "ce"}}, "plain shuffle"),
        ({"data": {"source": "isic2024"}}, "needs a folder of unlabelled images"),
        ({"distill": {"transfer_seed": 0}}, "equals generate.seed"),
    ],
)
def test_transfer_config_errors(edit: dict, message: str) -> None:
    raw = yaml.safe_load(TINY.read_text())
    for section, values in edit.items():
        raw[section].update(values)
    with pytest.raises(UserError, match=message):
        parse_params(raw, TINY)


# --- training set and teacher outputs ---------------------------------------------------------


def test_training_set_appends_transfer_views_keyed_after_train(tmp_path: Path) -> None:
    train = _cache(tmp_path / "train.h5", [0, 1, 0, 1, 1], seed=0)
    transfer = _cache(tmp_path / "transfer.h5", [UNLABELLED] * 3, seed=1, prefix="t")
    aug = build_augment(AugmentParams())
    ds = training_set(train, aug, 7, transfer)
    assert len(ds) == 8
    assert ds.labels.tolist() == [0, 1, 0, 1, 1, -1, -1, -1]
    ds.set_epoch(2)
    item = ds[6]
    assert item["index"] == 6 and item["label"] == UNLABELLED
    raw = CacheDataset(transfer).read(1)
    assert torch.equal(item["image"], raw)  # items are stored images; views are made per batch
    view = ds.views(item["image"][None], torch.tensor([item["index"]]))[0]
    assert torch.equal(view, augmented_view(raw, aug, 7, 2, 6))
    # the labelled part is exactly the train split's own views
    plain = training_set(train, aug, 7)
    plain.set_epoch(2)
    assert torch.equal(ds[3]["image"], plain[3]["image"])
    both = [d.views(d[3]["image"][None], torch.tensor([3])) for d in (ds, plain)]
    assert torch.equal(*both)
    # class weights come from labelled images only
    torch.testing.assert_close(class_weights(ds.labels), class_weights(plain.labels))


def test_a_transfer_cache_with_labels_is_refused(tmp_path: Path) -> None:
    train = _cache(tmp_path / "train.h5", [0, 1, 0, 1], seed=0)
    transfer = _cache(tmp_path / "transfer.h5", [UNLABELLED, 1, UNLABELLED], seed=1, prefix="t")
    aug = build_augment(AugmentParams())
    with pytest.raises(UserError, match=r"transfer\.h5: transfer-set image 't1' has label 1"):
        training_set(train, aug, 7, transfer)


def test_teacher_outputs_cover_transfer_after_unchanged_train_rows(tmp_path: Path) -> None:
    train = _cache(tmp_path / "train.h5", [0, 1, 0, 1], seed=0)
    transfer = _cache(tmp_path / "transfer.h5", [UNLABELLED] * 5, seed=1, prefix="t")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=2)
    save_checkpoint(tmp_path / "t.pt", model, {"arch": "test_resnet", "image_size": SIZE})
    aug = build_augment(AugmentParams())
    args = (tmp_path / "t.pt", train, aug, 3, 2, 2)
    # batch size 2 divides the 4 train images, so their batches are the same in both passes
    # (CPU kernels differ at the 1e-7 level between batch compositions)
    plain = compute_teacher_outputs(*args, tmp_path / "plain.h5", batch_size=2)
    both = compute_teacher_outputs(
        *args, tmp_path / "both.h5", batch_size=2, transfer_cache=transfer
    )
    assert (plain["images"], both["images"], both["transfer_images"]) == (4, 9, 5)
    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "both.h5") as b:
        assert b["logits"].shape == (2, 9, 2)
        np.testing.assert_array_equal(b["logits"][:, :4], a["logits"][()])
        assert np.abs(b["logits"][:, 4:]).sum() > 0  # the transfer rows were computed
    cached = TeacherOutputs(tmp_path / "both.h5")
    assert (cached.n_views, cached.n_train) == (9, 4)
    cached.check_layout(4, 5)
    cached.check_layout(4, 0)  # the ablation trains on the train split alone
    with pytest.raises(UserError, match="computed for 4 train images, the train split has 5"):
        cached.check_layout(5, 0)
    with pytest.raises(UserError, match=r"cover 5 transfer-set images per epoch, .* has 6"):
        cached.check_layout(4, 6)


# --- the loss -------------------------------------------------------------------------------


def test_task_loss_skips_unlabelled_images_and_kd_uses_them() -> None:
    torch.manual_seed(0)
    ce = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    out = torch.randn(6, 2, requires_grad=True)
    y = torch.tensor([0, 1, UNLABELLED, 1, UNLABELLED, 0])
    keep = y != UNLABELLED
    torch.testing.assert_close(labelled_task_loss(ce, out, y), ce(out[keep], y[keep]))
    none = labelled_task_loss(ce, out, torch.full((6,), UNLABELLED))
    assert float(none.detach()) == 0.0 and none.requires_grad

    student = nn.Linear(4, 2)
    objective = ResponseKD(student, ce, temperature=2.0, alpha=0.5)
    x = torch.randn(6, 4)
    teacher = {"logits": torch.randn(6, 2), "features": []}
    res = objective(x, y, teacher)
    # the KD term is over all six images, the task term over the four labelled ones
    logits = student(x)
    torch.testing.assert_close(res["task_loss"], ce(logits[keep], y[keep]))
    torch.testing.assert_close(
        res["kd_loss"], objective(x, torch.zeros(6).long(), teacher)["kd_loss"]
    )
    res["loss"].backward()  # an unlabelled-only batch still trains through the KD term
    only = objective(x[~keep], y[~keep], {"logits": teacher["logits"][~keep], "features": []})
    student.zero_grad()
    only["loss"].backward()
    assert student.weight.grad.abs().sum() > 0
