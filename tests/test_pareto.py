"""Tests for melanoma_kd.deploy.pareto: the Pareto marking on hand-made points, and the
deployment table and figure rendered from a hand-made benchmark result and holdout metrics."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from melanoma_kd.catalog import (
    ONNX_FP32,
    ONNX_INT8,
    TEACHER_ONNX_FP32,
    TEACHER_ONNX_INT8,
    EvaluationFiles,
)
from melanoma_kd.deploy import pareto, tables
from melanoma_kd.errors import UserError
from melanoma_kd.io import write_json

# --------------------------------------------------------------------------- Pareto marking


def test_a_point_beaten_on_both_axes_is_dominated() -> None:
    #        fast+bad    slow+good   dominated by both? no: by (1, .8) only
    points = [(1.0, 0.80), (5.0, 0.95), (3.0, 0.79)]
    assert pareto.pareto_optimal(points) == [True, True, False]


def test_equal_latency_keeps_only_the_higher_score() -> None:
    assert pareto.pareto_optimal([(2.0, 0.90), (2.0, 0.85), (4.0, 0.95)]) == [True, False, True]


def test_equal_score_keeps_only_the_faster() -> None:
    assert pareto.pareto_optimal([(2.0, 0.90), (3.0, 0.90)]) == [True, False]


def test_identical_points_do_not_dominate_each_other() -> None:
    assert pareto.pareto_optimal([(2.0, 0.9), (2.0, 0.9), (3.0, 0.8)]) == [True, True, False]


def test_unmeasured_points_are_never_optimal_and_dominate_nothing() -> None:
    assert pareto.pareto_optimal([None, (9.0, 0.5)]) == [False, True]
    assert pareto.pareto_optimal([]) == []
    assert pareto.pareto_optimal([(1.0, 0.5)]) == [True]


def test_a_chain_of_improvements_is_all_optimal() -> None:
    points = [(float(i), 0.5 + i / 100) for i in range(1, 6)]
    assert pareto.pareto_optimal(points) == [True] * 5
    assert pareto.pareto_optimal(points[::-1]) == [True] * 5  # order does not matter


def test_int8_speed_has_a_noise_band() -> None:
    assert pareto.int8_speed(2.0, 2.7) == "slower"
    assert pareto.int8_speed(10.0, 4.0) == "faster"
    assert pareto.int8_speed(2.0, 2.05) == "same"
    assert pareto.int8_speed(2.0, 1.95) == "same"


# --------------------------------------------------------------------------- fixture


def _cell(p50: float) -> dict:
    return {"p50_ms": p50, "p90_ms": p50 * 1.2, "mean_ms": p50, "runs": 10}


def _row(size_mb: float, t1: float, t2: float) -> dict:
    return {"size_mb": size_mb, "threads_1": _cell(t1), "threads_2": _cell(t2)}


def _entry(arch: str, size: int, conv: int, depthwise: int, **runtimes: dict) -> dict:
    return {
        "arch": arch,
        "image_size": size,
        "params": 1_000_000,
        "latency_only": size == 224,
        "conv_layers": conv,
        "depthwise_conv_layers": depthwise,
        **runtimes,
    }


# The measurements: the student's INT8 slower, the teacher's faster.
BENCH = {
    "cpu": {"model": "Test CPU", "logical_cores": 2, "vnni": True, "isa_flags": "avx2"},
    "settings": {
        "batch": 1,
        "warmup": 1,
        "runs": 10,
        "threads": "1,2",
        "deploy_size": 224,
        "torch": "t",
        "onnxruntime": "o",
    },
    "models": {
        "student_kd": _entry(
            "mobilenetv3_small_100",
            64,
            53,
            11,
            ort_fp32=_row(6.09, 0.3, 0.4),
            ort_int8=_row(1.86, 0.35, 0.45),
        ),
        "student_kd_224": _entry(
            "mobilenetv3_small_100",
            224,
            53,
            11,
            ort_fp32=_row(6.09, 2.53, 1.60),
            ort_int8=_row(1.86, 3.41, 2.40),
        ),
        "teacher_best": _entry(
            "resnet10t", 64, 14, 0, ort_fp32=_row(19.7, 1.4, 0.9), ort_int8=_row(5.0, 0.5, 0.4)
        ),
        "teacher_best_224": _entry(
            "resnet10t", 224, 14, 0, ort_fp32=_row(19.7, 16.35, 9.0), ort_int8=_row(5.0, 6.5, 3.6)
        ),
    },
    "ratios": {},
}


def _metrics(auc: float, pauc: float) -> dict:
    return {
        "roc_auc": auc,
        "roc_auc_ci_lo": auc - 0.05,
        "roc_auc_ci_hi": auc + 0.04,
        "pauc": pauc,
        "pauc_ci_lo": pauc - 0.03,
        "pauc_ci_hi": pauc + 0.03,
    }


METRICS = {
    TEACHER_ONNX_FP32: _metrics(0.93, 0.142),
    TEACHER_ONNX_INT8: _metrics(0.929, 0.143),
    ONNX_FP32: _metrics(0.877, 0.116),
    ONNX_INT8: _metrics(0.872, 0.112),
}


def _rows(text: str) -> dict[str, list[str]]:
    """The deployment table's rows by their first cell."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and "(`" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells
    return out


# --------------------------------------------------------------------------- table and figure


def test_deployed_models_take_holdout_metrics_and_deploy_size_latency() -> None:
    models = pareto.deployed_models(BENCH, METRICS)
    assert [(m.family, m.precision, m.name) for m in models] == [
        ("teacher", "fp32", TEACHER_ONNX_FP32),
        ("teacher", "int8", TEACHER_ONNX_INT8),
        ("student", "fp32", ONNX_FP32),
        ("student", "int8", ONNX_INT8),
    ]
    student_int8 = models[3]
    assert student_int8.latency[1].p50 == 3.41
    assert student_int8.latency[2].p90 == pytest.approx(2.40 * 1.2)
    assert student_int8.size_mb == 1.86 and student_int8.timed_px == 224
    assert (student_int8.conv_layers, student_int8.depthwise_conv_layers) == (53, 11)
    with pytest.raises(UserError, match=f"{ONNX_INT8}: no holdout metrics"):
        pareto.deployed_models(BENCH, {k: v for k, v in METRICS.items() if k != ONNX_INT8})


def test_table_marks_the_pareto_set_and_states_int8_speed_from_the_numbers() -> None:
    models = pareto.deployed_models(BENCH, METRICS)
    text = "\n".join(pareto.pareto_section(models, [1, 2], deploy_size=224, vnni=True))
    rows = _rows(text)
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.endswith("| Pareto 1 thr | Pareto 2 thr |")
    assert "p50 ms 1 thr | p90 ms 1 thr | p50 ms 2 thr | p90 ms 2 thr" in header
    student_int8 = rows[f"student INT8 (`{ONNX_INT8}`)"]
    assert student_int8[2] == "0.8720 [0.8220, 0.9120]"
    assert student_int8[4:7] == ["1.86", "224", "3.41"]
    # slower and less accurate than the fp32 student: dominated at both thread counts
    assert student_int8[-2:] == ["no", "no"]
    assert rows[f"student fp32 (`{ONNX_FP32}`)"][-2:] == ["**yes**", "**yes**"]
    assert rows[f"teacher INT8 (`{TEACHER_ONNX_INT8}`)"][-2:] == ["**yes**", "**yes**"]
    # the fp32 teacher is slower but (by point estimate) more accurate: still on the front
    assert rows[f"teacher fp32 (`{TEACHER_ONNX_FP32}`)"][-2:] == ["**yes**", "**yes**"]
    assert "at 1 thread: teacher fp32, teacher INT8, student fp32;" in text
    # INT8 vs fp32, computed: 3.41 / 2.53 = 1.35 and 2.40 / 1.60 = 1.50 slower for the
    # student; 16.35 / 6.5 = 2.52 and 9.0 / 3.6 = 2.50 faster for the teacher
    assert (
        "INT8 is **1.35× slower** than fp32 for the KD student (mobilenetv3_small_100) at "
        "1 thread (p50 3.41 ms vs 2.53 ms at 224 px)."
    ) in text
    assert "INT8 is **1.50× slower** than fp32 for the KD student" in text
    assert "INT8 is 2.52× faster than fp32 for the best teacher (resnet10t) at 1 thread" in text
    assert "INT8 is 2.50× faster than fp32 for the best teacher (resnet10t) at 2 threads" in text
    assert not re.search(r"slower[^\n]*best teacher", text)
    assert "Why: 11 of its 53 convolutions are depthwise" in text
    assert "gain nothing on depthwise ones" in text
    assert "Why: 0 of its 14 convolutions are depthwise; dense convolutions run as integer " in text


def test_no_slower_statement_when_int8_is_not_slower() -> None:
    bench = copy.deepcopy(BENCH)
    kd = bench["models"]["student_kd_224"]
    kd["ort_int8"] = _row(1.86, 2.55, 1.0)  # +0.8 % at 1 thread (noise), faster at 2
    models = pareto.deployed_models(bench, METRICS)
    text = "\n".join(pareto.pareto_section(models, [1, 2], deploy_size=224))
    assert "slower" not in text and "depthwise ones" not in text
    assert "INT8 and fp32 are within 5% of each other for the KD student" in text
    assert "INT8 is 1.60× faster than fp32 for the KD student" in text
    # now the INT8 student is faster at 2 threads: on the front there
    rows = _rows(text)
    assert rows[f"student INT8 (`{ONNX_INT8}`)"][-2:] == ["no", "**yes**"]


def test_a_model_without_timings_is_shown_but_not_marked() -> None:
    bench = copy.deepcopy(BENCH)
    del bench["models"]["teacher_best_224"]["ort_int8"]
    models = pareto.deployed_models(bench, METRICS)
    text = "\n".join(pareto.pareto_section(models, [1, 2], deploy_size=224))
    row = _rows(text)[f"teacher INT8 (`{TEACHER_ONNX_INT8}`)"]
    assert row[5:] == ["—"] * 5 + ["no", "no"]
    assert "for the best teacher" not in text  # no INT8 statement without INT8 timings


def test_deployment_report_and_figure_from_the_fixture(tmp_path: Path) -> None:
    models = pareto.deployed_models(BENCH, METRICS)
    text = tables.write_deployment(
        BENCH, tmp_path / "deployment.md", tmp_path / "pareto.png", None, models
    )
    assert (tmp_path / "deployment.md").read_text() == text
    assert text.index("## Teacher and student, fp32 and INT8") < text.index("## Every timing")
    assert "| student_kd_224 | ORT INT8 static QDQ | 224 |" in text
    assert "| 11 / 53 |" in text and "| 0 / 14 |" in text
    assert f"Figure: `{(tmp_path / 'pareto.png').as_posix()}`" in text
    png = (tmp_path / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_holdout_metrics_reads_the_evaluation_folder(tmp_path: Path) -> None:
    files = EvaluationFiles(root=tmp_path / "evaluate")
    for name, m in METRICS.items():
        write_json(files.model(name), m)
    assert pareto.holdout_metrics(files.root) == METRICS
    files.model(TEACHER_ONNX_INT8).unlink()
    with pytest.raises(UserError, match=f"{TEACHER_ONNX_INT8}.json: not found"):
        pareto.holdout_metrics(files.root)


def test_thread_counts_come_from_the_settings() -> None:
    assert pareto.thread_counts(BENCH) == [1, 2]
    assert pareto.thread_counts({"settings": {"threads": "4"}}) == [4]
