"""Deployment: ONNX export parity and thresholds, INT8 quantization, latency benchmark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pandas as pd
import pytest
import timm
import torch
import yaml
from scipy.stats import spearmanr

from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.deploy import benchmark as latency
from melanoma_kd.deploy import export, onnx_model, quantize, tables
from melanoma_kd.errors import UserError
from melanoma_kd.inference import score_checkpoint, score_checkpoint_splits
from melanoma_kd.io import write_json
from melanoma_kd.models.build import NUM_CLASSES, load_checkpoint, save_checkpoint
from melanoma_kd.selection import operating_thresholds
from tests.conftest import REPO_ROOT
from tests.test_bad_input import assert_one_line_error, stage

TINY_ARCH = "mobilenetv3_small_050"
SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny_images(n: int, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random RGB images with a dark blob whose size depends on the label."""
    rng = np.random.default_rng(seed)
    labels = np.array([i % 3 == 0 for i in range(n)], dtype=np.int64)
    images = []
    for label in labels:
        img = rng.integers(90, 230, size=(size, size, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 2.0)
        radius = int(rng.integers(8, 12) if label else rng.integers(3, 7))
        centre = (int(rng.integers(12, size - 12)), int(rng.integers(12, size - 12)))
        cv2.circle(img, centre, radius, tuple(int(v) for v in rng.integers(10, 80, 3)), -1)
        images.append(img)
    return np.stack(images), labels


def write_cache(path: Path, n: int, seed: int, split: str) -> Path:
    """A real cache split file of ``n`` tiny images."""
    images, labels = tiny_images(n, seed=seed)
    rows = pd.DataFrame(
        {
            "image_id": [f"ISIC_{seed:02d}{i:05d}" for i in range(n)],
            "label": labels,
            "patient_id": [f"IP_{i // 2:05d}" for i in range(n)],
            "lesion_id": [f"IL_{i:05d}" for i in range(n)],
        }
    )
    write_split_cache(path, rows, list(images), SIZE, split, "test")
    return path


def tiny_checkpoint(path: Path, cache: Path, seed: int = 0, steps: int = 20) -> Path:
    """A tiny timm model briefly fitted to ``cache`` (a few full-batch Adam steps).

    A few steps give realistic BatchNorm statistics and scores that spread with the input (a
    random-init model scores everything ~0.5), without the cost of real training.
    """
    from melanoma_kd.data.dataset import CacheDataset
    from melanoma_kd.data.transforms import model_input
    from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(seed)
    model = timm.create_model(TINY_ARCH, pretrained=False, num_classes=NUM_CLASSES)
    ds = CacheDataset(cache)
    images = torch.stack([ds.read(i) for i in range(len(ds))])
    x = model_input(images, SIZE, IMAGENET_MEAN, IMAGENET_STD)
    y = torch.from_numpy(ds.labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    meta = {"arch": TINY_ARCH, "image_size": SIZE, "val_pauc": 0.1, "val_roc_auc": 0.8}
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train/val caches, a checkpoint and its fp32 ONNX export (shared by the module)."""
    root = tmp_path_factory.mktemp("deploy")
    torch.set_num_threads(1)
    train = write_cache(root / "cache" / "train.h5", 40, seed=1, split="train")
    val = write_cache(root / "cache" / "val.h5", 36, seed=2, split="val")
    ckpt = tiny_checkpoint(root / "models" / "tiny.pt", train)
    onnx_path = root / "onnx" / "student_kd.onnx"
    report = export.export_checkpoint(
        ckpt,
        onnx_path,
        val,
        name="student_kd",
        opset=17,
        atol=1e-4,
        metadata={"threshold": 0.5, "cache_size": SIZE},
    )
    return {
        "root": root,
        "train": train,
        "val": val,
        "ckpt": ckpt,
        "onnx": onnx_path,
        "report": report,
    }  # type: ignore[dict-item]


def test_validation_calibration_thresholds_on_calibrated_scores(tmp_path: Path) -> None:
    path = tmp_path / "val_predictions.csv"
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9])
    labels = np.array([0, 0, 1, 0, 0, 1, 1])
    pd.DataFrame({"image_id": list("abcdefg"), "label": labels, "score": scores}).to_csv(
        path, index=False
    )
    platt, t = export.validation_calibration(path, 0.95, ece_bins=5)
    calibrated = platt.apply(scores)
    # highest threshold keeping all 3 positives: the calibrated score of the positive at 0.3
    assert t["threshold"] == pytest.approx(calibrated[2])
    assert t["threshold_max_f1"] == pytest.approx(calibrated[5])
    assert "validation" in t["threshold_rule"]
    cal = t["calibration"]
    assert (cal["method"], cal["slope"], cal["intercept"]) == (
        "platt",
        platt.slope,
        platt.intercept,
    )
    assert cal["val_ece_after"] < cal["val_ece_before"]


def test_folded_calibration_matches_the_numpy_map(tmp_path: Path) -> None:
    """The ONNX graph with Platt folded in outputs sigmoid(a*d + b) of the raw margin."""
    from melanoma_kd.calibration import Platt

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    x = torch.rand(5, 3, 2, 2)
    raw = tmp_path / "raw.onnx"
    torch.onnx.export(
        net, (x,), str(raw), dynamo=False, input_names=["image"], output_names=["logits"]
    )
    proto = onnx.load(str(raw))
    platt = Platt(0.5, -1.25)
    onnx_model.fold_platt(proto, platt)
    onnx.checker.check_model(proto)
    import onnxruntime as ort

    got = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x.numpy()})[0]
    logits = net(x).detach().numpy()
    expected = platt.apply(onnx_model.softmax_pos(logits))
    assert np.allclose(onnx_model.softmax_pos(got), expected, atol=1e-6)
    assert np.allclose(got, onnx_model.platt_logits(logits, platt), atol=1e-6)


# --------------------------------------------------------------------------- export


def test_export_parity_metadata_and_dynamic_batch(workspace: dict) -> None:
    path, report = workspace["onnx"], workspace["report"]["native"]
    assert report["max_abs_prob_diff"] <= 1e-4
    assert report["parity_images"] == 32  # the first validation batch
    meta = onnx_model.read_metadata(path)
    assert meta["arch"] == TINY_ARCH and meta["image_size"] == SIZE
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["threshold"] == 0.5 and meta["name"] == "student_kd"
    assert meta["num_params"] > 0 and meta["source_checkpoint"] == str(workspace["ckpt"])
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == [
        "logits"
    ]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    clf = onnx_model.OnnxClassifier(path, threads=1)
    for n in (1, 5):
        assert clf.logits(np.zeros((n, 3, SIZE, SIZE), np.float32)).shape == (n, 2)
    # score_onnx agrees with the PyTorch scorer on the whole split
    onnx_scores = onnx_model.score_onnx(path, workspace["val"], threads=1)
    torch_scores = score_checkpoint(workspace["ckpt"], workspace["val"])
    assert list(onnx_scores.columns) == ["image_id", "label", "score", "patient_id"]
    assert (onnx_scores["image_id"] == torch_scores["image_id"]).all()
    assert np.abs(onnx_scores["score"] - torch_scores["score"]).max() <= 1e-4
    # several splits with one model load give each split's frame as scored alone
    splits = [workspace["train"], workspace["val"]]
    pd.testing.assert_frame_equal(
        pd.concat(onnx_model.score_onnx_splits(path, splits, threads=1)),
        pd.concat([onnx_model.score_onnx(path, c, threads=1) for c in splits]),
    )
    pd.testing.assert_frame_equal(
        pd.concat(score_checkpoint_splits(workspace["ckpt"], splits)),
        pd.concat([score_checkpoint(workspace["ckpt"], c) for c in splits]),
    )


def export_with_deploy_copy(
    workspace: dict, out: Path, deploy_out: Path, deploy_size: int
) -> dict[str, Any]:
    """``export_checkpoint`` of the workspace model with a latency copy at ``deploy_size``."""
    return export.export_checkpoint(
        workspace["ckpt"],
        out,
        workspace["val"],
        name="m",
        opset=17,
        atol=1e-4,
        metadata={"threshold": 0.3, "preprocess": {"hair_removal": False}},
        deploy_out=deploy_out,
        deploy_size=deploy_size,
    )


def test_export_deploy_size_copy(workspace: dict, tmp_path: Path) -> None:
    out, deploy_out = tmp_path / "m.onnx", tmp_path / "m_64.onnx"
    report = export_with_deploy_copy(workspace, out, deploy_out, 64)
    assert report["deploy"]["max_abs_prob_diff"] <= 1e-4
    meta = onnx_model.read_metadata(deploy_out)
    assert meta["image_size"] == 64 and meta["latency_only"] is True
    assert meta["trained_image_size"] == SIZE
    assert "threshold" not in meta and "preprocess" not in meta  # not for predictions
    # a model that takes the deploy size is exported exactly as asked, with no size note
    assert "requested_image_size" not in meta and "input_size_note" not in meta
    assert report["deploy"]["image_size"] == 64
    assert _input_hw(deploy_out) == [64, 64]


def _input_hw(path: Path) -> list[int]:
    """Height and width of the ONNX graph's image input."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims[2:]]


# Tiny timm models (random init, no download): test_vit3 has a strict 160 px patch embedding,
# as vit_*_patch16_224 and swinv2_*_window8_256 do at their sizes; test_mambaout (a token
# mixer without position tables) shares timm's 160 px default config but takes any size;
# test_vit resamples its position embedding to any size, an op the exporter cannot write.
FIXED_ARCH, FIXED_SIZE = "test_vit3", 160
ANY_SIZE_ARCH = "test_mambaout"
DYNAMIC_ARCH = "test_vit"


def _random_checkpoint(path: Path, arch: str, size: int) -> Path:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES).eval()
    save_checkpoint(path, model, {"arch": arch, "image_size": size, "val_pauc": 0.05})
    return path


def test_input_size_problem_asks_the_model() -> None:
    cnn = timm.create_model(TINY_ARCH, pretrained=False, num_classes=NUM_CLASSES)
    assert export.input_size_problem(cnn, 224) is None
    assert export.input_size_problem(cnn, 48) is None
    fixed = timm.create_model(FIXED_ARCH, pretrained=False, num_classes=NUM_CLASSES)
    assert export.input_size_problem(fixed, FIXED_SIZE) is None
    problem = export.input_size_problem(fixed, 224)
    assert problem is not None and "224" in problem and "\n" not in problem
    # no patch embedding to inspect: the window partition itself rejects the size
    windows = timm.create_model("test_maxvit", pretrained=False, num_classes=NUM_CLASSES)
    assert export.input_size_problem(windows, 224) is not None
    assert export.input_size_problem(windows, 160) is None


@pytest.mark.parametrize(
    ("arch", "deploy_size", "expected"),
    [(FIXED_ARCH, 64, FIXED_SIZE), (ANY_SIZE_ARCH, 64, 64)],
    ids=["fixed-size-falls-back", "any-size-takes-deploy-size"],
)
def test_export_deploy_copy_at_a_size_the_model_accepts(
    workspace: dict, tmp_path: Path, arch: str, deploy_size: int, expected: int
) -> None:
    ckpt = _random_checkpoint(tmp_path / f"{arch}.pt", arch, FIXED_SIZE)
    out, deploy_out = tmp_path / "t.onnx", tmp_path / f"t_{deploy_size}.onnx"
    report = export.export_checkpoint(
        ckpt,
        out,
        workspace["val"],
        name=f"teacher_{arch}",
        opset=17,
        atol=1e-4,
        deploy_out=deploy_out,
        deploy_size=deploy_size,
    )
    assert report["native"]["image_size"] == FIXED_SIZE
    assert report["deploy"]["image_size"] == expected
    assert report["deploy"]["max_abs_prob_diff"] <= 1e-4
    assert _input_hw(deploy_out) == [expected, expected]
    meta = onnx_model.read_metadata(deploy_out)
    assert meta["image_size"] == expected and meta["trained_image_size"] == FIXED_SIZE
    if expected == deploy_size:
        assert "requested_image_size" not in meta and "input_size_note" not in meta
    else:
        assert meta["requested_image_size"] == deploy_size
        note = meta["input_size_note"]
        assert arch in note and f"{deploy_size} px" in note and "\n" not in note
    clf = onnx_model.OnnxClassifier(deploy_out, threads=1)  # ORT runs it at that size
    assert clf.logits(np.zeros((2, 3, expected, expected), np.float32)).shape == (2, 2)


def test_export_failure_is_one_line_without_the_ir_dump(
    workspace: dict, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ckpt = _random_checkpoint(tmp_path / "dyn.pt", DYNAMIC_ARCH, FIXED_SIZE)
    model = timm.create_model(DYNAMIC_ARCH, pretrained=False, num_classes=NUM_CLASSES)
    assert export.input_size_problem(model, 64) is None  # PyTorch takes 64 px...
    out, deploy_out = tmp_path / "dyn.onnx", tmp_path / "dyn_64.onnx"
    capfd.readouterr()
    with pytest.raises(UserError) as info:  # ...the exporter cannot write its resampling
        export.export_checkpoint(
            ckpt,
            out,
            workspace["val"],
            name="teacher_dyn",
            opset=17,
            atol=1e-4,
            deploy_out=deploy_out,
            deploy_size=64,
        )
    msg = str(info.value)
    assert "teacher_dyn" in msg and DYNAMIC_ARCH in msg and "64 px" in msg and "\n" not in msg
    printed = capfd.readouterr()
    assert "graph" not in printed.out and len(printed.out) < 200, printed.out[:200]
    print("still printing")  # file descriptor 1 is back
    assert capfd.readouterr().out == "still printing\n"
    assert out.is_file() and not deploy_out.exists()


def test_export_model_that_rejects_its_trained_size_is_one_line(
    workspace: dict, tmp_path: Path
) -> None:
    ckpt = _random_checkpoint(tmp_path / "bad.pt", FIXED_ARCH, 64)  # trained size it rejects
    with pytest.raises(UserError) as info:
        export.export_checkpoint(
            ckpt, tmp_path / "bad.onnx", workspace["val"], name="teacher_x", opset=17, atol=1e-4
        )
    msg = str(info.value)
    assert "teacher_x" in msg and FIXED_ARCH in msg and "64 px" in msg and "\n" not in msg
    assert not (tmp_path / "bad.onnx").exists()


def test_export_parity_failure_raises_and_leaves_no_file(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_model.OnnxClassifier.logits
    monkeypatch.setattr(
        onnx_model.OnnxClassifier, "logits", lambda self, x: real(self, x) + np.array([0.0, 0.5])
    )
    out = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match="parity failed"):
        export.export_checkpoint(
            workspace["ckpt"], out, workspace["val"], name="bad", opset=17, atol=1e-4
        )
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary


def test_export_missing_checkpoint_is_user_error(workspace: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="checkpoint not found"):
        export.export_checkpoint(
            tmp_path / "nope.pt",
            tmp_path / "x.onnx",
            workspace["val"],
            name="x",
            opset=17,
            atol=1e-4,
        )


def test_export_stage_exports_the_selected_point(workspace: dict, tmp_path: Path) -> None:
    """export_student: the KD point select_student recorded, with that point's own validation
    thresholds; a flag of the other source (``--checkpoint``'s) is refused in one line."""
    point = "4-0.5-response"
    (tmp_path / "models" / "distill").mkdir(parents=True)
    shutil.copy(workspace["ckpt"], tmp_path / "models" / "distill" / f"{point}.pt")
    preds = tmp_path / "metrics" / "distill" / point / "val_predictions.csv"
    preds.parent.mkdir(parents=True)
    pd.DataFrame(
        {"image_id": list("abcd"), "label": [0, 1, 0, 1], "score": [0.1, 0.7, 0.3, 0.9]}
    ).to_csv(preds, index=False)
    write_json(tmp_path / "models" / "selected_student.json", {"point": point})
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = [
        *("--params", "params.yaml", "--name", "student_kd", "--val-cache", str(workspace["val"])),
        *("--out", "kd.onnx", "--metrics", "kd.json", "--selected", "models/selected_student.json"),
    ]
    proc = stage(
        "export.py",
        *common,
        *("--checkpoint-dir", "models/distill", "--runs-dir", "metrics/distill"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    meta = onnx_model.read_metadata(tmp_path / "kd.onnx")
    assert meta["source_checkpoint"] == f"models/distill/{point}.pt"
    _, expected = export.validation_calibration(
        preds, params["evaluate"]["sens_target"], params["evaluate"]["ece_bins"]
    )
    assert meta["threshold"] == pytest.approx(expected["threshold"])
    assert meta["calibration"]["slope"] == pytest.approx(expected["calibration"]["slope"])
    proc = stage("export.py", *common, "--val-predictions", str(preds), cwd=tmp_path)
    assert_one_line_error(proc, "--selected")


def test_export_stage_exports_the_teacher_best_on_validation(
    workspace: dict, tmp_path: Path
) -> None:
    """export_teacher: the teacher the select_teacher stage recorded (no run summary is read),
    with that teacher's own validation thresholds; a record naming no teacher of teachers.archs
    is refused in one line."""
    archs = ["a", "b", "c"]
    for arch in archs:
        run = tmp_path / "metrics" / "teachers" / arch
        run.mkdir(parents=True)
        pd.DataFrame(
            {"image_id": list("abcd"), "label": [0, 1, 0, 1], "score": [0.1, 0.7, 0.3, 0.9]}
        ).to_csv(run / "val_predictions.csv", index=False)
    (tmp_path / "models" / "teachers").mkdir(parents=True)
    shutil.copy(workspace["ckpt"], tmp_path / "models" / "teachers" / "b.pt")  # only the best
    write_json(tmp_path / "models" / "best_teacher.json", {"arch": "b"})
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["teachers"]["archs"] = archs
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = [
        *("--params", "params.yaml", "--name", "teacher_best"),
        *("--best-teacher", "models/best_teacher.json"),
        *("--checkpoint-dir", "models/teachers", "--runs-dir", "metrics/teachers"),
        *("--val-cache", str(workspace["val"]), "--out", "t.onnx", "--metrics", "t.json"),
    ]
    proc = stage("export.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = onnx_model.read_metadata(tmp_path / "t.onnx")
    assert meta["source_checkpoint"] == "models/teachers/b.pt" and meta["name"] == "teacher_best"
    assert json.loads((tmp_path / "t.json").read_text())["checkpoint"] == "models/teachers/b.pt"
    write_json(tmp_path / "models" / "best_teacher.json", {"arch": "z"})
    proc = stage("export.py", *args, cwd=tmp_path)
    assert_one_line_error(proc, "best_teacher.json", "'z' is not in teachers.archs")


# --------------------------------------------------------------------------- quantization


def test_calibration_draw_is_seeded_and_distinct() -> None:
    a = quantize.calibration_indices(100, 16, seed=3)
    assert (a == quantize.calibration_indices(100, 16, seed=3)).all()
    assert len(set(a.tolist())) == 16 and (np.diff(a) > 0).all()
    assert not (a == quantize.calibration_indices(100, 16, seed=4)).all()
    assert len(quantize.calibration_indices(10, 16, seed=0)) == 10


QUANTIZE = {"calibration_size": 24, "method": "MinMax", "per_channel": True, "seed": 0}


@pytest.fixture(scope="module")
def quantized(workspace: dict) -> dict:
    d = workspace["root"] / "onnx"
    report = quantize.quantize_model(
        workspace["onnx"],
        d / "student_kd_int8.onnx",
        workspace["train"],
        workspace["val"],
        **QUANTIZE,
        sens_target=0.95,
        out_dynamic=d / "student_kd_int8_dynamic.onnx",
    )
    return report


def test_static_int8_runs_and_tracks_fp32(workspace: dict, quantized: dict) -> None:
    d = workspace["root"] / "onnx"
    int8 = d / "student_kd_int8.onnx"
    fp = onnx_model.score_onnx(workspace["onnx"], workspace["val"], threads=1)
    q = onnx_model.score_onnx(int8, workspace["val"], threads=1)
    rho = spearmanr(fp["score"], q["score"]).statistic
    assert rho >= 0.98, rho
    assert quantized["int8_spearman_vs_fp32"] == pytest.approx(rho, abs=1e-6)
    # it really is a QDQ INT8 graph with int8 weights
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert onnx_model.file_mb(int8) < onnx_model.file_mb(workspace["onnx"])
    meta = onnx_model.read_metadata(int8)
    assert meta["quantization"] == "static_qdq" and meta["calibration_images"] == 24
    assert meta["arch"] == TINY_ARCH and meta["image_size"] == SIZE
    assert meta["threshold"] == pytest.approx(
        operating_thresholds(q["label"].to_numpy(), q["score"].to_numpy(), 0.95)["threshold"]
    )
    assert (d / "student_kd_int8_dynamic.onnx").is_file()


def test_teacher_int8_has_the_student_settings_and_its_own_thresholds(
    workspace: dict, tmp_path: Path
) -> None:
    """quantize_teacher: the exported teacher (a copy of the tiny model, exported as
    ``teacher_best``) gets the student's static QDQ settings, no dynamic model, and decision
    thresholds chosen on its own calibrated validation scores, in its metadata."""
    fp32 = tmp_path / "teacher_best.onnx"
    export.export_checkpoint(
        workspace["ckpt"],
        fp32,
        workspace["val"],
        name="teacher_best",
        opset=17,
        atol=1e-4,
        metadata={"threshold": 0.5, "cache_size": SIZE},
        deploy_out=tmp_path / "teacher_best_48.onnx",
        deploy_size=48,
    )
    report = quantize.quantize_model(
        fp32,
        tmp_path / "teacher_best_int8.onnx",
        workspace["train"],
        workspace["val"],
        **QUANTIZE,
        sens_target=0.95,
        reduce_range=True,
        deploy_fp32=tmp_path / "teacher_best_48.onnx",
        deploy_out=tmp_path / "teacher_best_48_int8.onnx",
    )
    assert not any(k.startswith("int8_dynamic") for k in report)
    assert sorted(p.name for p in tmp_path.glob("*int8*")) == [
        "teacher_best_48_int8.onnx",
        "teacher_best_int8.onnx",
    ]
    assert report["arch"] == TINY_ARCH and report["reduce_range"] is True
    int8 = tmp_path / "teacher_best_int8.onnx"
    meta = onnx_model.read_metadata(int8)
    assert meta["name"] == "teacher_best" and meta["quantization"] == "static_qdq"
    assert (meta["per_channel"], meta["reduce_range"], meta["calibration_images"]) == (
        True,
        True,
        24,
    )
    assert meta["activation_type"] == "QUInt8" and meta["weight_type"] == "QInt8"
    scored = onnx_model.score_onnx(int8, workspace["val"])
    rule = operating_thresholds(scored["label"].to_numpy(), scored["score"].to_numpy(), 0.95)
    assert meta["threshold"] == pytest.approx(rule["threshold"])
    assert meta["threshold_max_f1"] == pytest.approx(rule["threshold_max_f1"])
    assert meta["threshold"] != 0.5  # not the fp32 model's carried-over threshold
    assert "calibration" not in meta or meta["calibration"] == onnx_model.read_metadata(fp32).get(
        "calibration"
    )
    deploy = onnx_model.read_metadata(tmp_path / "teacher_best_48_int8.onnx")
    assert deploy["image_size"] == 48 and deploy["latency_only"] and "threshold" not in deploy


def test_a_deploy_copy_at_the_trained_size_is_exported_and_quantized_once(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A latency copy at the trained size (the recipes' 224 px models) is the native graph
    with the latency metadata: one ONNX export and one static quantization, and the files are
    byte for byte what a separate export and quantization of the copy write."""
    exports, quantizations = [], []
    real_export, real_quantize = export.export_onnx, quantize.quantize_static
    monkeypatch.setattr(
        export, "export_onnx", lambda *a, **k: exports.append(1) or real_export(*a, **k)
    )
    monkeypatch.setattr(
        quantize,
        "quantize_static",
        lambda *a, **k: quantizations.append(1) or real_quantize(*a, **k),
    )
    fp32, deploy = tmp_path / "t.onnx", tmp_path / f"t_{SIZE}.onnx"
    report = export_with_deploy_copy(workspace, fp32, deploy, SIZE)
    int8, deploy_int8 = tmp_path / "t_int8.onnx", tmp_path / f"t_{SIZE}_int8.onnx"
    quantize.quantize_model(
        fp32,
        int8,
        workspace["train"],
        workspace["val"],
        **QUANTIZE,
        sens_target=0.95,
        deploy_fp32=deploy,
        deploy_out=deploy_int8,
    )
    assert (len(exports), len(quantizations)) == (1, 1)
    meta = onnx_model.read_metadata(deploy)
    assert meta["latency_only"] and meta["trained_image_size"] == meta["image_size"] == SIZE
    assert "threshold" not in meta and "preprocess" not in meta
    assert report["deploy"]["max_abs_prob_diff"] == report["native"]["max_abs_prob_diff"]
    assert report["deploy"]["size_mb"] == onnx_model.file_mb(deploy)

    # what the separate export and quantization of the copy write
    model, ckpt_meta = load_checkpoint(workspace["ckpt"])
    again = tmp_path / "again.onnx"
    real_export(
        model,
        ckpt_meta,
        again,
        export.first_batch(workspace["val"]),
        opset=17,
        atol=1e-4,
        image_size=SIZE,
        metadata=meta,
    )
    assert again.read_bytes() == deploy.read_bytes()
    again_int8 = tmp_path / "again_int8.onnx"
    quantize.quantize_static_qdq(
        deploy, again_int8, workspace["train"], **QUANTIZE, reduce_range=True
    )
    assert len(quantizations) == 2  # that one ran ONNX Runtime
    assert again_int8.read_bytes() == deploy_int8.read_bytes()
    assert onnx_model.same_network(fp32, deploy) and onnx_model.same_network(int8, deploy_int8)
    assert not onnx_model.same_network(fp32, int8)


def test_pre_process_falls_back_when_symbolic_shape_inference_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SwinV2's graph defeats ONNX Runtime's symbolic shape inference: quantize it with ONNX's
    shape inference only, and say so in the metadata; any other failure still fails."""
    calls: list[dict] = []

    def gives_up(src: str, dst: str, **kwargs: object) -> None:
        calls.append(kwargs)
        if not kwargs.get("skip_symbolic_shape"):
            raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(quantize, "quant_pre_process", gives_up)
    assert quantize._pre_process("m.onnx", tmp_path / "pre.onnx") == {
        "symbolic_shape_inference": False
    }
    assert calls == [{}, {"skip_symbolic_shape": True}]

    def broken(src: str, dst: str, **kwargs: object) -> None:
        raise Exception("something else")

    monkeypatch.setattr(quantize, "quant_pre_process", broken)
    with pytest.raises(Exception, match="something else"):
        quantize._pre_process("m.onnx", tmp_path / "pre.onnx")


def test_quantize_report_is_flat(quantized: dict) -> None:
    for key in (
        "fp32_size_mb",
        "int8_size_mb",
        "int8_size_ratio",
        "fp32_val_roc_auc",
        "int8_val_roc_auc",
        "int8_val_roc_auc_drop",
        "int8_spearman_vs_fp32",
        "int8_dynamic_val_roc_auc",
        "int8_dynamic_size_mb",
    ):
        assert isinstance(quantized[key], float), key
    assert quantized["method"] == "MinMax" and quantized["activation_type"] == "QUInt8"
    assert quantized["int8_size_ratio"] > 1
    assert all(not isinstance(v, dict | list) for v in quantized.values())


# --------------------------------------------------------------------------- benchmark


def _no_lists(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(_no_lists(v) for v in obj.values())
    return not isinstance(obj, list | tuple)


def test_benchmark_schema_report_and_plot(
    workspace: dict, quantized: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One thread count: the schema is the point, and a 2-thread pool on a shared CI box costs
    # seconds per call.
    d = workspace["root"] / "onnx"
    shutil.copy(workspace["onnx"], d / "student_scratch.onnx")
    shutil.copy(workspace["onnx"], d / "teacher_best.onnx")
    shutil.copy(d / "student_kd_int8.onnx", d / "teacher_best_int8.onnx")
    bench = latency.benchmark(
        d,
        warmup=1,
        runs=3,
        deploy_size=224,
        threads=[1],
        quantize_metrics={"student_kd": quantized},
    )
    json.dumps(bench)  # serialisable
    assert _no_lists(bench)
    assert set(bench) == {"cpu", "settings", "models", "ratios"}
    assert {"model", "logical_cores", "vnni", "isa_avx2", "isa_flags"} <= set(bench["cpu"])
    assert bench["settings"]["runs"] == 3 and bench["settings"]["batch"] == 1
    assert bench["settings"]["threads"] == "1"
    assert set(bench["models"]) == {"student_kd", "student_scratch", "teacher_best"}
    kd = bench["models"]["student_kd"]
    assert {"torch_fp32", "ort_fp32", "ort_int8", "ort_int8_dynamic"} <= set(kd)
    assert kd["params"] > 0 and kd["image_size"] == SIZE
    assert 0 < kd["depthwise_conv_layers"] < kd["conv_layers"]  # MobileNetV3
    for runtime in ("torch_fp32", "ort_fp32", "ort_int8"):
        row = kd[runtime]
        assert row["size_mb"] > 0
        cell = row["threads_1"]
        assert cell["runs"] == 3
        assert 0 < cell["p50_ms"] <= cell["p90_ms"] + 1e-9
    assert kd["ort_int8"]["val_pauc"] == quantized["int8_val_pauc"]
    assert {"ort_fp32", "ort_int8"} <= set(bench["models"]["teacher_best"])
    assert "val_pauc" not in bench["models"]["teacher_best"]["ort_int8"]  # no report given
    assert bench["ratios"]["teacher_best_over_student_ort_fp32_p50_t1"] > 0
    table = tables.deployment_table(bench, {"student_kd": quantized})
    assert "| student_kd | ORT INT8 static QDQ |" in table and "teacher_best_over" in table
    assert "## Teacher and student" not in table  # no holdout metrics given
    assert f"- student_kd ({TINY_ARCH}), static QDQ" in table


def test_benchmark_stage_writes_the_deployment_table_and_plot(
    workspace: dict, quantized: dict, tmp_path: Path
) -> None:
    """The stage: timings and the deployment table (holdout numbers from the evaluation
    folder), the Pareto plot, and the machine-independent ``--timed`` list; a missing holdout
    metric is one line naming the evaluate stage."""
    d = tmp_path / "onnx"
    d.mkdir()
    src = workspace["root"] / "onnx"
    for stem in ("student_kd", "teacher_best"):
        shutil.copy(workspace["onnx"], d / f"{stem}.onnx")
        shutil.copy(src / "student_kd_int8.onnx", d / f"{stem}_int8.onnx")
        shutil.copy(workspace["onnx"], d / f"{stem}_48.onnx")  # stands in for the deploy copy
        shutil.copy(src / "student_kd_int8.onnx", d / f"{stem}_48_int8.onnx")
    shutil.copy(workspace["onnx"], d / "student_scratch.onnx")
    metrics = {"roc_auc": 0.8, "roc_auc_ci_lo": 0.7, "roc_auc_ci_hi": 0.9, "pauc": 0.1}
    metrics |= {"pauc_ci_lo": 0.05, "pauc_ci_hi": 0.15}
    for name in ("kd_onnx_fp32", "kd_onnx_int8", "teacher_onnx_fp32", "teacher_onnx_int8"):
        write_json(tmp_path / "evaluate" / "models" / f"{name}.json", metrics)
    write_json(tmp_path / "quantize.json", quantized)
    write_json(tmp_path / "quantize_teacher.json", quantized)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["benchmark"] = {"warmup": 1, "runs": 10, "deploy_size": 48, "threads": [1]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = [
        *("--params", "params.yaml", "--onnx-dir", "onnx", "--quantize-metrics", "quantize.json"),
        *("--teacher-quantize-metrics", "quantize_teacher.json", "--eval-dir", "evaluate"),
        *("--out", "benchmark.json", "--report", "deployment.md", "--plot", "pareto.png"),
        *("--timed", "timed.json"),
    ]
    proc = stage("benchmark.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "deployment.md").read_text()
    assert "| student INT8 (`kd_onnx_int8`) |" in text and "| Pareto 1 thr |" in text
    assert "0.8000 [0.7000, 0.9000]" in text and "at 1 thread:" in text
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    timed = json.loads((tmp_path / "timed.json").read_text())
    assert timed["threads"] == "1" and "p50" not in json.dumps(timed)
    assert set(timed["models"]["teacher_best_48"]["runtimes"]) >= {"ort_fp32", "ort_int8"}
    models = json.loads((tmp_path / "benchmark.json").read_text())["models"]
    copy, native = models["student_kd_48"], models["student_kd"]
    assert copy["timed_as"] == "student_kd"  # the stand-in copy is the same file: not retimed
    assert copy["ort_int8"]["threads_1"] == native["ort_int8"]["threads_1"]
    assert "val_pauc" in native["ort_int8"] and "val_pauc" not in copy["ort_int8"]
    (tmp_path / "evaluate" / "models" / "teacher_onnx_int8.json").unlink()
    proc = stage("benchmark.py", *args, cwd=tmp_path)
    assert_one_line_error(proc, "teacher_onnx_int8.json: not found", "run the evaluate stage")


def test_benchmark_times_a_fixed_size_model_at_the_size_it_accepts(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "onnx"
    d.mkdir()
    for name in ("student_kd", "student_scratch"):
        shutil.copy(workspace["onnx"], d / f"{name}.onnx")
    ckpt = _random_checkpoint(tmp_path / "fixed.pt", FIXED_ARCH, FIXED_SIZE)
    export.export_checkpoint(
        ckpt,
        d / "teacher_best.onnx",
        workspace["val"],
        name="teacher_best",
        opset=17,
        atol=1e-4,
        deploy_out=d / "teacher_best_224.onnx",  # the name keeps the requested size
        deploy_size=224,
    )
    shutil.copy(d / "teacher_best.onnx", d / "student_kd_224.onnx")  # another network: timed
    timings: list[str] = []
    for name in ("ort_latency", "torch_latency"):
        real = getattr(latency, name)
        monkeypatch.setattr(
            latency, name, lambda *a, n=name, f=real, **k: timings.append(n) or f(*a, **k)
        )
    bench = latency.benchmark(d, warmup=0, runs=2, deploy_size=224, threads=[1])
    json.dumps(bench)
    copy = bench["models"]["teacher_best_224"]
    # the copy at the trained size is the native network: timed once, its rows repeat them
    assert onnx_model.same_network(d / "teacher_best.onnx", d / "teacher_best_224.onnx")
    assert copy["timed_as"] == "teacher_best"
    assert timings.count("ort_latency") == 4 and timings.count("torch_latency") == 4
    assert "timed_as" not in bench["models"]["student_kd_224"]
    for runtime in ("torch_fp32", "ort_fp32"):
        native = bench["models"]["teacher_best"][runtime]
        assert copy[runtime] == native | {"size_mb": copy[runtime]["size_mb"]}
    assert copy["ort_fp32"]["size_mb"] == round(onnx_model.file_mb(d / "teacher_best_224.onnx"), 4)
    assert "timed_as" not in bench["models"]["teacher_best"]
    assert copy["image_size"] == FIXED_SIZE and copy["requested_image_size"] == 224
    assert copy["latency_only"] and {"torch_fp32", "ort_fp32"} <= set(copy)
    assert "requested_image_size" not in bench["models"]["teacher_best"]
    assert tables.timed_models(bench)["models"]["teacher_best_224"]["image_size"] == FIXED_SIZE
    table = tables.deployment_table(bench)
    assert "| model | runtime | input px |" in table
    assert f"| teacher_best_224 | ORT fp32 | {FIXED_SIZE} * |" in table
    assert f"| teacher_best | ORT fp32 | {FIXED_SIZE} |" in table
    assert f"| student_kd | ORT fp32 | {SIZE} |" in table
    note = next(line for line in table.splitlines() if line.startswith("- \\* teacher_best_224"))
    assert f"{FIXED_ARCH} does not accept 224 px input" in note
    assert "- teacher_best_224 holds teacher_best's network at the same size" in table


def test_latency_ratios_name_differing_input_sizes() -> None:
    def entry(size: int, p50: float, **extra: object) -> dict:
        row = {"size_mb": 1.0, "threads_1": {"p50_ms": p50}, "threads_2": {"p50_ms": p50}}
        return {"image_size": size, "ort_fp32": row, **extra}

    models = {
        "teacher_best": entry(256, 8.0, val_pauc=0.1),
        "teacher_best_224": entry(256, 8.0, requested_image_size=224),
        "student_kd": entry(64, 1.0),
        "student_kd_224": entry(224, 2.0),
    }
    ratios = tables.latency_ratios(models, 224)
    assert ratios["teacher_best_over_student_ort_fp32_p50_t1_224"] == 4.0
    assert ratios["input_px_224"] == "teacher 256, student 224"
    assert ratios["input_px"] == "teacher 256, student 64"
    models["teacher_best_224"]["image_size"] = 224
    assert "input_px_224" not in tables.latency_ratios(models, 224)
    int8 = {"size_mb": 0.25, "threads_1": {"p50_ms": 4.0}}
    models["teacher_best_224"]["ort_int8"] = int8
    ratios = tables.latency_ratios(models, 224)
    assert ratios["teacher_best_int8_over_fp32_p50_t1_224"] == 0.5
    assert ratios["teacher_best_fp32_over_int8_size_224"] == 4.0


def test_benchmark_missing_model_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"student_kd\.onnx"):
        latency.benchmark(tmp_path, warmup=0, runs=1, deploy_size=224, threads=[1])


def test_time_runs() -> None:
    stats = latency.time_runs(lambda: None, warmup=2, runs=20)
    assert stats["runs"] == 20 and 0 <= stats["p50_ms"] <= stats["p90_ms"]


def test_conv_census_counts_depthwise_convolutions(workspace: dict, tmp_path: Path) -> None:
    census = latency.conv_census(workspace["onnx"])
    model = timm.create_model(TINY_ARCH, pretrained=False, num_classes=NUM_CLASSES)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1 and m.groups == m.in_channels]
    assert census == {"conv_layers": len(convs), "depthwise_conv_layers": len(depthwise)}
    # by hand: a dense conv, a depthwise one and a grouped (not depthwise) one
    from onnx import TensorProto, helper, numpy_helper

    def conv(name: str, x: str, w_shape: tuple[int, ...], group: int) -> tuple:
        w = numpy_helper.from_array(np.zeros(w_shape, np.float32), f"{name}_w")
        return helper.make_node("Conv", [x, w.name], [name], group=group), w

    nodes, weights = zip(
        conv("dense", "x", (8, 4, 3, 3), 1),
        conv("depthwise", "dense", (8, 1, 3, 3), 8),
        conv("grouped", "depthwise", (8, 4, 1, 1), 2),
        strict=True,
    )
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("grouped", TensorProto.FLOAT, None)],
        list(weights),
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
    assert latency.conv_census(tmp_path / "g.onnx") == {
        "conv_layers": 3,
        "depthwise_conv_layers": 1,
    }


def test_cpu_info_parses_flags(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n")
    info = latency.cpu_info(fake)
    assert info["model"] == "Test CPU 9000"
    assert info["isa_avx2"] and info["isa_avx512f"] and not info["isa_avx512_vnni"]
    assert info["vnni"] is False and "avx2" in info["isa_flags"]


def test_timed_models_is_the_same_on_any_machine() -> None:
    def result(p50: float, cores: int) -> dict:
        row = {"size_mb": 6.1, "threads_1": {"p50_ms": p50}, "threads_2": {"p50_ms": p50 / 2}}
        return {
            "cpu": {"model": f"cpu{cores}", "logical_cores": cores},
            "settings": {
                "batch": 1,
                "warmup": 5,
                "runs": 50,
                "threads": "1,2",
                "deploy_size": 224,
            },
            "models": {
                "student_kd": {
                    "arch": "m",
                    "image_size": 64,
                    "params": 3,
                    "ort_fp32": row,
                    "ort_int8": row,
                    "val_pauc": 0.1,
                },
                "teacher_a": {"arch": "r", "image_size": 64, "params": 9, "torch_fp32": row},
            },
        }

    here, there = tables.timed_models(result(1.0, 2)), tables.timed_models(result(3.0, 16))
    assert here == there
    assert here["models"]["student_kd"]["runtimes"] == ["ort_fp32", "ort_int8"]
    assert here["models"]["teacher_a"] == {"image_size": 64, "runtimes": ["torch_fp32"]}
    assert "p50" not in json.dumps(here) and "cpu" not in json.dumps(here)
