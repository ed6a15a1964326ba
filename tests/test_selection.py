"""One rule chooses on validation: the distilled teacher, the exported KD point and the teacher
the evaluation compares against all come from :mod:`melanoma_kd.selection`; the best teacher is
chosen once (the select_teacher stage) and every other stage reads that record."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from melanoma_kd.catalog import model_specs, read_selected
from melanoma_kd.errors import UserError
from melanoma_kd.evaluate import best_teacher
from melanoma_kd.io import write_json
from melanoma_kd.selection import (
    RULE,
    best_by_validation,
    rank_by_validation,
    rank_students,
    read_best_teacher,
    run_summaries,
    select_student,
)
from melanoma_kd.teacher_outputs import choose_teacher
from tests.conftest import REPO_ROOT
from tests.test_bad_input import assert_one_line_error, stage
from tests.test_evaluate import RAW


def _runs(root: Path, scores: dict[str, tuple[float, float]]) -> dict[str, Path]:
    for name, (pauc, auc) in scores.items():
        write_json(root / name / "summary.json", {"val_pauc": pauc, "val_roc_auc": auc})
    return run_summaries(root, list(scores))


def test_rank_is_pauc_then_roc_auc_then_listing_order(tmp_path: Path) -> None:
    runs = _runs(
        tmp_path, {"a": (0.10, 0.80), "b": (0.12, 0.70), "c": (0.10, 0.85), "d": (0.10, 0.85)}
    )
    assert [r.name for r in rank_by_validation(runs)] == ["b", "c", "d", "a"]
    reordered = {k: runs[k] for k in ("d", "c", "b", "a")}
    assert [r.name for r in rank_by_validation(reordered)] == ["b", "d", "c", "a"]


def test_bad_or_missing_summaries_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run summary not found"):
        best_by_validation(run_summaries(tmp_path, ["ghost"]))
    write_json(tmp_path / "x" / "summary.json", {"val_pauc": "n/a", "val_roc_auc": 0.9})
    with pytest.raises(UserError, match="needs numeric val_pauc"):
        best_by_validation(run_summaries(tmp_path, ["x"]))
    with pytest.raises(UserError, match="no candidate"):
        best_by_validation({})


def _select_teacher_stage(root: Path, archs: list[str]) -> subprocess.CompletedProcess[str]:
    """``stages/select_teacher.py`` run in ``root`` with ``teachers.archs`` set to ``archs``."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["teachers"]["archs"] = archs
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return stage(
        "select_teacher.py",
        *("--params", "params.yaml", "--teacher-metrics", "metrics/teachers"),
        *("--out", "models/best_teacher.json"),
        cwd=root,
    )


def test_every_stage_reads_the_one_recorded_teacher_choice(tmp_path: Path) -> None:
    """select_teacher chooses (a near tie: equal pAUC, ROC-AUC decides); what distils, evaluates
    and exports the best teacher reads its record, and no longer the run summaries."""
    specs = model_specs(RAW, tmp_path / "models", tmp_path / "metrics")
    archs = [s.name.removeprefix("teacher_") for s in specs if s.group == "teacher"]
    assert len(archs) == 2
    _runs(tmp_path / "metrics" / "teachers", {archs[0]: (0.15, 0.90), archs[1]: (0.15, 0.91)})
    proc = _select_teacher_stage(tmp_path, archs)
    assert proc.returncode == 0, proc.stderr
    record = tmp_path / "models" / "best_teacher.json"
    assert json.loads(record.read_text()) == {"arch": archs[1]}  # the arch only
    for summary in (tmp_path / "metrics" / "teachers").rglob("summary.json"):
        summary.unlink()  # the consumers must not need them
    assert read_best_teacher(record, archs) == archs[1]
    assert choose_teacher("best", archs, record) == archs[1]  # teacher_outputs
    assert best_teacher(record, specs) == f"teacher_{archs[1]}"  # evaluate


def test_select_teacher_stage_missing_summary_is_one_line(tmp_path: Path) -> None:
    _runs(tmp_path / "metrics" / "teachers", {"resnet18": (0.10, 0.90)})
    proc = _select_teacher_stage(tmp_path, ["resnet18", "efficientnet_b0"])
    assert_one_line_error(proc, "efficientnet_b0/summary.json", "not found")
    assert not (tmp_path / "models" / "best_teacher.json").exists()


def test_a_bad_teacher_record_is_one_line(tmp_path: Path) -> None:
    record = tmp_path / "best_teacher.json"
    with pytest.raises(UserError, match="written by the select_teacher stage"):
        read_best_teacher(record, ["resnet18"])
    for bad in ({"arch": "vgg11"}, {"point": "resnet18"}, ["resnet18"]):
        write_json(record, bad)
        with pytest.raises(UserError, match=r"is not in teachers\.archs") as exc:
            read_best_teacher(record, ["resnet18"])
        assert "\n" not in str(exc.value)


def test_the_best_teacher_is_chosen_in_one_place() -> None:
    """The rule is applied to the teachers' run summaries by one library function, which only
    the select_teacher stage calls."""
    calls: dict[str, list[str]] = {}
    sources = [*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "stages").glob("*.py")]
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in ("best_by_validation", "select_teacher"):
                    calls.setdefault(name, []).append(path.relative_to(REPO_ROOT).as_posix())
    assert calls == {
        "best_by_validation": ["src/melanoma_kd/selection.py"],
        "select_teacher": ["stages/select_teacher.py"],
    }


def test_kd_point_choice_uses_the_same_rule(tmp_path: Path) -> None:
    _runs(tmp_path, {"1-0.5-response": (0.10, 0.85), "4-0.5-response": (0.10, 0.85)})
    ranking = rank_students(tmp_path)
    assert [r["point"] for r in ranking] == ["1-0.5-response", "4-0.5-response"]  # name order
    assert ranking[0] == {"point": "1-0.5-response", "val_pauc": 0.10, "val_roc_auc": 0.85}


def _summary(root: Path, point: str, pauc: float, auc: float, **extra: float) -> None:
    write_json(root / point / "summary.json", {"val_pauc": pauc, "val_roc_auc": auc, **extra})


def test_select_student_uses_validation_pauc_then_auc_then_name(tmp_path: Path) -> None:
    _summary(tmp_path, "1-0.5-response", 0.10, 0.80)
    _summary(tmp_path, "2-0.5-response", 0.10, 0.85)
    # best on holdout, worse on validation: must not be chosen
    _summary(tmp_path, "0.9-feature", 0.09, 0.99, holdout_pauc=0.2)
    assert select_student(tmp_path) == "2-0.5-response"
    _summary(tmp_path, "0-0.5-response", 0.10, 0.85)  # exact tie -> name order
    assert select_student(tmp_path) == "0-0.5-response"
    ranking = rank_students(tmp_path)
    assert [r["point"] for r in ranking][-1] == "0.9-feature"


def test_select_student_restricted_to_the_current_grid(tmp_path: Path) -> None:
    _summary(tmp_path, "1-0.5-response", 0.10, 0.80)
    _summary(tmp_path, "9-0.5-response", 0.19, 0.99)  # a stale point no longer in params
    assert select_student(tmp_path, ["1-0.5-response"]) == "1-0.5-response"
    with pytest.raises(UserError, match=r"0\.9-feature"):
        select_student(tmp_path, ["1-0.5-response", "0.9-feature"])


def test_select_student_bad_summaries(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        select_student(tmp_path / "missing")
    with pytest.raises(UserError, match="no KD point"):
        select_student(tmp_path)
    write_json(tmp_path / "p" / "summary.json", {"val_roc_auc": 0.8})
    with pytest.raises(UserError, match="val_pauc"):
        select_student(tmp_path)


def _select_stage(root: Path, grid: list[str]) -> subprocess.CompletedProcess[str]:
    """``stages/select_student.py`` run in ``root`` with a params file whose grid is ``grid``
    (points ``T-alpha-response``, every T x alpha of them, and ``alpha-feature``; floats, so
    YAML and DVC spell ``1.0`` as ``1.0``)."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    response = [p.split("-") for p in grid if p.endswith("-response")]
    feature = [p.split("-") for p in grid if p.endswith("-feature")]
    raw["distill"]["response"] = {
        "temperature": sorted({float(t) for t, _, _ in response}),
        "alpha": sorted({float(a) for _, a, _ in response}),
    }
    raw["distill"]["feature"]["alpha"] = sorted({float(a) for a, _ in feature})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return stage(
        "select_student.py",
        *("--params", "params.yaml", "--select-from", "metrics/distill"),
        *("--checkpoint-dir", "models/distill", "--out", "models/selected_student.json"),
        cwd=root,
    )


@pytest.mark.parametrize("best", ["1.0-0.5-response", "0.5-feature"])
def test_select_student_stage_records_the_best_point_on_validation(
    tmp_path: Path, best: str
) -> None:
    grid = ["1.0-0.5-response", "0.5-feature"]
    runs = tmp_path / "metrics" / "distill"
    _runs(runs, {p: (0.12, 0.70) if p == best else (0.10, 0.90) for p in grid})
    _runs(runs, {"9.0-0.5-response": (0.19, 0.99)})  # stale: not in the grid any more
    proc = _select_stage(tmp_path, grid)
    assert proc.returncode == 0, proc.stderr
    assert best in proc.stdout
    out = tmp_path / "models" / "selected_student.json"
    assert json.loads(out.read_text()) == {
        "point": best,
        "val_pauc": 0.12,
        "val_roc_auc": 0.70,
        "checkpoint": f"models/distill/{best}.pt",
        "candidates": 2,
        "selected_on": RULE,
    }
    # what export, the ablation and the replicates read: the key as DVC spells it
    assert read_selected(out).key == best


def test_select_student_stage_missing_summary_is_one_line(tmp_path: Path) -> None:
    _runs(tmp_path / "metrics" / "distill", {"1.0-0.5-response": (0.10, 0.90)})
    proc = _select_stage(tmp_path, ["1.0-0.5-response", "0.5-feature"])
    assert_one_line_error(proc, "0.5-feature/summary.json", "not found")
    assert not (tmp_path / "models" / "selected_student.json").exists()


def test_evaluation_refuses_a_teacher_that_is_not_one() -> None:
    from melanoma_kd.evaluate import evaluate_all
    from tests.test_evaluate import CFG, SELECTED, SMALL, make_predictions

    specs, preds = make_predictions(SMALL)
    with pytest.raises(UserError, match="'student_scratch' is not a teacher"):
        evaluate_all(specs, preds, SELECTED, CFG, teacher="student_scratch")
