"""``melanoma-kd predict``: training preprocessing from the model file alone, and bad files
(non-image, truncated, over-large) refused one line each while the good ones are answered."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from melanoma_kd.cli import main
from melanoma_kd.config import PreprocessParams
from melanoma_kd.data.cache import resize_shorter_center_crop
from melanoma_kd.data.hair import output_params, remove_hair
from melanoma_kd.data.transforms import model_input
from melanoma_kd.deploy import export, onnx_model
from melanoma_kd.errors import EXIT_USER_ERROR
from melanoma_kd.imaging import bgr_to_rgb
from melanoma_kd.predict import Predictor, check_image_file
from tests.test_deploy import SIZE, tiny_checkpoint, write_cache


def _jpeg(path: Path, h: int, w: int, seed: int = 0, hair: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(60, 230, (h, w, 3), dtype=np.uint8), (7, 7), 2.0)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (40, 50, 90), -1)
    if hair:
        cv2.line(img, (0, 0), (w - 1, h - 1), (5, 5, 5), 1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width``×``height`` (cheap stand-in for a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported model carrying threshold, cache size and hair-removal params."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict-model")
    train = write_cache(root / "train.h5", 24, seed=1, split="train")
    ckpt = tiny_checkpoint(root / "tiny.pt", train, steps=5)
    from melanoma_kd.models.build import load_checkpoint

    net, meta = load_checkpoint(ckpt)
    images = export.first_batch(train, 8)
    out = root / "student_kd.onnx"
    export.export_onnx(
        net,
        meta,
        out,
        images,
        opset=17,
        atol=1e-4,
        metadata={
            "threshold": 0.5,
            "threshold_rule": "highest threshold with sensitivity >= 0.95 on validation",
            "cache_size": SIZE,
            "preprocess": output_params(PreprocessParams()),
        },
    )
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("predict-images")
    good = _jpeg(d / "good.jpg", 60, 80, hair=True)
    text = d / "notes.jpg"
    text.write_text("this is a text file, not a JPEG\n")
    big = _jpeg(d / "big.jpg", 160, 200, seed=3).read_bytes()
    truncated = d / "truncated.jpg"
    truncated.write_bytes(big[: len(big) // 2])
    huge = _png_header_only(d / "huge.png", 50_000, 50_000)  # 2.5e9 px, a few dozen bytes
    return {"good": good, "text": text, "truncated": truncated, "huge": huge}


def test_preprocessing_is_the_training_pipeline(model: Path, files: dict[str, Path]) -> None:
    pred = Predictor(model, max_pixels=40_000_000)
    rgb = bgr_to_rgb(cv2.imread(str(files["good"]), cv2.IMREAD_COLOR))
    p = PreprocessParams()
    dehaired, mask = remove_hair(rgb, p)
    assert mask.any()  # the drawn hair was found, so the step matters
    cached = resize_shorter_center_crop(dehaired, SIZE)
    chw = torch.from_numpy(cached).permute(2, 0, 1).unsqueeze(0)
    expected = model_input(chw, SIZE, pred.clf.mean, pred.clf.std).numpy()
    np.testing.assert_array_equal(pred.prepare(pred.load(files["good"])), expected)
    result = pred.predict(files["good"])
    assert result.error is None and 0.0 <= result.p_melanoma <= 1.0
    assert result.decision == ("melanoma" if result.p_melanoma >= 0.5 else "benign")


def test_bad_files_get_one_clear_line_and_good_ones_an_answer(
    model: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    order = ["text", "good", "truncated", "huge"]
    code = main(["predict", *(str(files[k]) for k in order), "--model", str(model)])
    out, err = capsys.readouterr()
    assert code == EXIT_USER_ERROR
    out_lines, err_lines = out.strip().splitlines(), err.strip().splitlines()
    assert len(out_lines) == 1 and out_lines[0].startswith(str(files["good"]))
    assert "P(melanoma)=" in out_lines[0] and "decision=" in out_lines[0]
    assert len(err_lines) == 3 and all(line.startswith("error: ") for line in err_lines)
    by_file = {
        k: next(line for line in err_lines if str(files[k]) in line)
        for k in ("text", "truncated", "huge")
    }
    assert "not an image" in by_file["text"]
    assert "truncated" in by_file["truncated"]
    assert "too large" in by_file["huge"] and "50000x50000" in by_file["huge"]
    assert "Traceback" not in err


def test_json_output_keeps_order_and_marks_errors(
    model: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["predict", str(files["good"]), str(files["huge"]), "--model", str(model), "--json"]
    )
    out, err = capsys.readouterr()
    assert code == EXIT_USER_ERROR and len(err.strip().splitlines()) == 1
    records = json.loads(out)
    assert [r["image"] for r in records] == [str(files["good"]), str(files["huge"])]
    assert set(records[0]) >= {"p_melanoma", "decision", "threshold", "threshold_rule"}
    assert "error" not in records[0] and "too large" in records[1]["error"]


def test_all_good_exits_zero(model: Path, files: dict[str, Path], capsys) -> None:
    assert main(["predict", str(files["good"]), "--model", str(model), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_max_pixels_comes_from_params(
    model: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("predict:\n  max_pixels: 1000\n")  # the 80x60 good image is 4800 px
    code = main(["predict", str(files["good"]), "--model", str(model), "--params", str(params)])
    assert code == EXIT_USER_ERROR
    assert "predict.max_pixels 1,000" in capsys.readouterr().err


def test_missing_model_and_latency_only_model(
    model: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(files["good"]), "--model", str(tmp_path / "none.onnx")])
    assert exc.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ONNX model not found" in err[0]
    latency = tmp_path / "latency.onnx"
    latency.write_bytes(model.read_bytes())
    onnx_model.update_metadata(latency, {"latency_only": True, "trained_image_size": SIZE})
    with pytest.raises(SystemExit):
        main(["predict", str(files["good"]), "--model", str(latency)])
    assert "latency-only" in capsys.readouterr().err


def test_check_image_file_refuses_before_decoding(files: dict[str, Path]) -> None:
    from melanoma_kd.errors import UserError

    assert check_image_file(files["good"], 10_000) == (80, 60)
    with pytest.raises(UserError, match="too large"):
        check_image_file(files["huge"], 40_000_000)
    with pytest.raises(UserError, match="file not found"):
        check_image_file(files["good"].with_name("missing.jpg"), 10_000)


def test_console_script_end_to_end(model: Path, files: dict[str, Path]) -> None:
    """The installed ``melanoma-kd`` in a fresh process: exact stderr lines and exit status."""
    exe = Path(sys.executable).with_name("melanoma-kd")
    if not exe.exists():
        pytest.skip("melanoma-kd console script not installed")
    order = ["good", "text", "truncated", "huge"]
    proc = subprocess.run(
        [str(exe), "predict", *(str(files[k]) for k in order), "--model", str(model)],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert proc.returncode == EXIT_USER_ERROR
    assert len(proc.stdout.strip().splitlines()) == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 3, proc.stderr
    assert err[0] == f"error: {files['text']}: not an image (unrecognised format)"
    assert err[1].startswith(f"error: {files['truncated']}: truncated or corrupt image")
    assert err[2].startswith(f"error: {files['huge']}: image too large: 50000x50000")
