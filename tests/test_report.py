"""Tests for melanoma_kd.report and the report stage script on a small constructed evaluation."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest
import yaml

from melanoma_kd.catalog import EvaluationFiles, model_specs
from melanoma_kd.evaluate import evaluate_all, save_evaluation
from melanoma_kd.io import read_json, write_json
from melanoma_kd.plots import write_plot_data
from tests.stage_deps import import_closure
from tests.test_evaluate import CFG, RAW, SELECTED, TEACHER, make_predictions

ROOT = Path(__file__).resolve().parents[1]
EVAL = "metrics/evaluate"  # the evaluation's folder, as dvc.yaml names it
GAIN_LINE = re.compile(
    r"^- ΔROC-AUC = [+−]\d\.\d{4} \(95 % CI [+−]\d\.\d{4}\.\.[+−]\d\.\d{4}\), p = \d", re.M
)


def _stage(name: str = "report") -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_stage", ROOT / "stages" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding params.yaml and the evaluate stage's outputs (no PNGs: kept fast)."""
    root = tmp_path_factory.mktemp("report")
    params = {
        **RAW,
        "evaluate": {"sens_target": 0.95, "ece_bins": 15, "n_boot": CFG.n_boot, "seed": CFG.seed},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    specs, preds = make_predictions()
    ev = evaluate_all(specs, preds, SELECTED, CFG, teacher=TEACHER)
    save_evaluation(ev, EvaluationFiles(root / EVAL, root / "metrics/predictions"))
    write_plot_data(ev, root / "plots", curves=False)
    write_json(root / "metrics/export/student_kd.json", {"native_size_mb": 6.08})
    write_json(root / "metrics/quantize.json", {"int8_size_mb": 1.85})
    return root


def _run(root: Path, out: str, **extra: str) -> str:
    args = {
        "--params": root / "params.yaml",
        "--eval-dir": root / EVAL,
        "--baselines": root / "metrics/baselines.json",
        "--benchmark": root / "metrics/benchmark.json",
        "--plots-dir": root / "plots",
        "--out": root / out,
        "--export-metrics": root / "metrics/export/student_kd.json",
        "--quantize-metrics": root / "metrics/quantize.json",
        "--headline": root / "metrics/headline.json",
    }
    args.update({k: root / v for k, v in extra.items()})
    _stage().main([str(x) for kv in args.items() for x in kv])
    return (root / out).read_text(encoding="utf-8")


def test_report_has_every_model_and_the_kd_gain_line(workdir: Path) -> None:
    text = _run(workdir, "reports/summary.md")
    metrics = {p.stem: read_json(p) for p in (workdir / EVAL / "models").glob("*.json")}
    # teachers, scratch, KD points, 4 ONNX (KD student and best teacher, fp32/INT8), KD w/o transfer
    assert set(metrics) == {s.name for s in model_specs(RAW)}
    for name, m in metrics.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"{m['roc_auc']:.4f} [{m['roc_auc_ci_lo']:.4f}, {m['roc_auc_ci_hi']:.4f}]" in row
        assert f"{m['pauc']:.4f} [{m['pauc_ci_lo']:.4f}, {m['pauc_ci_hi']:.4f}]" in row
    gain = read_json(workdir / EVAL / "kd_gain.json")
    match = GAIN_LINE.search(text)
    assert match, text
    assert f"{gain['roc_auc_delta']:+.4f}".replace("-", "−") in match.group(0)
    assert f"`{SELECTED}` was selected by the select_student stage on validation" in text
    assert "| 4 | 0.5 | response |" in text and "**yes**" in text
    assert "| — | 0.5 | feature |" in text  # feature KD: one row per alpha, no temperature


def test_report_is_byte_identical_across_runs(workdir: Path) -> None:
    first = _run(workdir, "a/summary.md").encode()
    second = _run(workdir, "b/summary.md").encode()
    assert first == second


def test_missing_optional_inputs_are_named(workdir: Path) -> None:
    text = _run(workdir, "reports/missing.md")
    assert "**Missing** — `" in text and "baselines.json` not found" in text
    assert "benchmark.json` not found" in text
    assert "| n/a | n/a | n/a |" in text


def test_baselines_and_benchmark_fill_their_cells(workdir: Path, tmp_path: Path) -> None:
    write_json(
        tmp_path / "baselines.json",
        {
            "n_features": 42,
            "logreg": {
                "roc_auc": 0.71,
                "pauc": 0.05,
                "pr_auc": 0.3,
                "ece": 0.1,
                "sens95_sensitivity": 0.9,
                "sens95_specificity": 0.4,
                "f1": 0.35,
            },
        },
    )

    def runtime(size: float, p50: float) -> dict:
        cell = {"p50_ms": p50, "p90_ms": p50 * 1.1, "mean_ms": p50, "runs": 10}
        return {"size_mb": size, "threads_1": cell, "threads_2": cell}

    write_json(
        tmp_path / "benchmark.json",
        {
            "settings": {"deploy_size": 224},
            "models": {
                "student_kd": {
                    "image_size": 64,
                    "ort_fp32": runtime(6.1, 0.5),
                    "ort_int8": runtime(1.7, 0.4),
                },
                "student_kd_224": {"image_size": 224, "ort_fp32": runtime(6.1, 1.6)},
                "student_scratch": {"image_size": 64, "ort_fp32": runtime(6.1, 0.51)},
                "teacher_best": {
                    "image_size": 64,
                    "ort_fp32": runtime(44.7, 2.5),
                    "ort_int8": runtime(11.2, 1.1),
                },
            },
        },
    )
    text = _run(
        workdir,
        "reports/full.md",
        **{
            "--baselines": str(tmp_path / "baselines.json"),
            "--benchmark": str(tmp_path / "benchmark.json"),
        },
    )
    assert "Missing" not in text.split("## Plots")[0]
    assert "| `logreg` | 0.7100 | 0.0500 |" in text and "(42 features)" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| `")}
    assert rows[f"| `{SELECTED}`"].endswith("| 6.10 | 0.500 | 1.600 |")
    assert rows["| `kd_onnx_int8`"].endswith("| 1.70 | 0.400 | — |")
    assert rows[f"| `{TEACHER}`"].endswith("| 44.70 | 2.500 | — |")  # best on val: exported
    assert rows["| `teacher_onnx_fp32`"].endswith("| 44.70 | 2.500 | — |")
    assert rows["| `teacher_onnx_int8`"].endswith("| 11.20 | 1.100 | — |")
    assert rows["| `teacher_resnet18`"].endswith("| — | — | — |")  # not exported
    assert rows["| `kd_1-0.5-response`"].endswith("| — | — | — |")  # grid point not exported


def test_missing_required_input_is_one_clear_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(workdir / EVAL, workdir / "partial")
    (workdir / "partial" / "kd_gain.json").unlink()
    with pytest.raises(SystemExit) as exc:
        _run(workdir, "reports/never.md", **{"--eval-dir": "partial"})
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "kd_gain.json: not found" in err and "\n" not in err
    assert "run the evaluate stage" in err
    assert not (workdir / "reports/never.md").exists()


def test_headline_is_small_flat_and_taken_from_the_evaluation(workdir: Path) -> None:
    _run(workdir, "reports/headline_check.md")
    head = read_json(workdir / "metrics/headline.json")
    assert len(head) <= 25
    assert all(isinstance(v, str | int | float) for v in head.values())  # flat: DVC shows scalars
    ea = read_json(workdir / EVAL / "error_analysis.json")
    assert head["kd_model"] == ea["student"] and head["teacher_model"] == ea["teacher"]
    kd = read_json(workdir / EVAL / "models" / f"{ea['student']}.json")
    assert head["kd_roc_auc"] == kd["roc_auc"] and head["kd_ece"] == kd["ece"]
    gain = read_json(workdir / EVAL / "kd_gain.json")
    assert head["kd_gain_roc_auc"] == gain["roc_auc_delta"]
    assert head["kd_gain_roc_auc_ci_lo"] <= head["kd_gain_roc_auc"] <= head["kd_gain_roc_auc_ci_hi"]
    fp32 = read_json(workdir / EVAL / "models/kd_onnx_fp32.json")["roc_auc"]
    int8 = read_json(workdir / EVAL / "models/kd_onnx_int8.json")["roc_auc"]
    assert head["int8_roc_auc_drop"] == pytest.approx(fp32 - int8, abs=1e-6)
    assert head["student_fp32_mb"] == 6.08 and head["student_int8_mb"] == 1.85


def test_dvc_yaml_declares_only_the_headline_as_metrics() -> None:
    """Per-run summaries stay git-tracked outputs, but only the headline floods no table."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert dvc["metrics"] == ["metrics/headline.json"]
    staged = [n for n, s in dvc["stages"].items() if "metrics" in s.get("do", s)]
    assert staged == []


def test_plot_stage_draws_from_the_evaluation_folder(workdir: Path, tmp_path: Path) -> None:
    """The plot stage needs the folder, the predictions, the runs' curves and holdout images."""
    ids = [f"H{i:04d}" for i in range(90)]  # make_predictions' holdout images
    with h5py.File(tmp_path / "holdout.h5", "w") as h5:
        h5["ids"] = np.array(ids, dtype=object).astype("S")
        h5["images"] = np.full((len(ids), 8, 8, 3), 128, dtype=np.uint8)
    runs = tmp_path / "runs"
    for run in (
        f"teachers/{TEACHER.removeprefix('teacher_')}",
        "student/scratch",
        "distill/4-0.5-response",
    ):
        folder = runs / run / "live" / "plots" / "metrics"
        folder.mkdir(parents=True)
        (folder / "val_pauc.tsv").write_text("step\tval_pauc\n0\t0.1\n1\t0.12\n")
    plots = tmp_path / "plots"
    args = {
        "--params": workdir / "params.yaml",
        "--eval-dir": workdir / EVAL,
        "--predictions-dir": workdir / "metrics/predictions",
        "--runs-dir": runs,
        "--holdout-cache": tmp_path / "holdout.h5",
        "--plots-dir": plots,
    }
    _stage("plot").main([str(x) for kv in args.items() for x in kv])
    for png in ("holdout_curves.png", "kd_ablation.png", "confidence.png"):
        assert (plots / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((plots / "hard_cases").glob("*.png"))) == 3
    assert sorted(p.stem for p in (plots / "training").glob("*.csv")) == [
        "best_teacher",
        "kd_student",
        "scratch_student",
    ]
    ref = workdir / "plots"  # written in memory by the fixture, from the same evaluation
    for folder in ("roc", "pr", "reliability", "thresholds", "confusion"):
        for csv in (ref / folder).glob("*.csv"):
            assert (plots / folder / csv.name).read_bytes() == csv.read_bytes(), csv


def test_report_and_plot_stages_import_no_scoring_or_training_code() -> None:
    """Their import closures stay torch-free: showing results never loads a model."""
    heavy = ("evaluate.py", "paired.py", "inference.py", "train.py", "runs.py", "dataset.py")
    for script in ("stages/report.py", "stages/plot.py"):
        closure = {
            p.relative_to(ROOT / "src" / "melanoma_kd").as_posix()
            for p in import_closure(ROOT / script)
        }
        loaded = {p for p in closure if p.endswith(heavy) or "/" in p}  # models/, data/, deploy/
        assert not loaded, (script, sorted(closure))
    code = (
        "import runpy, sys\n"
        "for s in ('stages/report.py', 'stages/plot.py'): runpy.run_path(s, run_name='x')\n"
        "print(sorted(m for m in sys.modules if m in ('torch', 'dvclive', 'timm', "
        "'melanoma_kd.evaluate', 'melanoma_kd.paired', 'melanoma_kd.train')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
