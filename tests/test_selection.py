"""One rule chooses on validation: the distilled teacher, the exported KD point and the teacher
the evaluation compares against all come from :mod:`melanoma_kd.selection`."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoma_kd.catalog import model_specs
from melanoma_kd.deploy import rank_students
from melanoma_kd.errors import UserError
from melanoma_kd.evaluate import best_teacher
from melanoma_kd.io import write_json
from melanoma_kd.selection import best_by_validation, rank_by_validation, run_summaries
from melanoma_kd.teacher_outputs import choose_teacher
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


def test_teacher_choice_and_evaluation_agree_on_the_same_runs(tmp_path: Path) -> None:
    """The evaluation's best teacher is the distilled one, also in a near tie that the
    evaluation's own re-scored metrics could order differently."""
    specs = model_specs(RAW, tmp_path / "models", tmp_path / "metrics")
    teachers = [s for s in specs if s.group == "teacher"]
    archs = [s.name.removeprefix("teacher_") for s in teachers]
    assert len(archs) == 2
    _runs(tmp_path / "metrics" / "teachers", {archs[0]: (0.15, 0.90), archs[1]: (0.15, 0.91)})
    chosen = choose_teacher("best", archs, tmp_path / "metrics" / "teachers")
    assert chosen == archs[1]  # equal pAUC: ROC-AUC decides
    assert best_teacher(specs) == f"teacher_{chosen}"


def test_kd_point_choice_uses_the_same_rule(tmp_path: Path) -> None:
    _runs(tmp_path, {"1-0.5-response": (0.10, 0.85), "4-0.5-response": (0.10, 0.85)})
    ranking = rank_students(tmp_path)
    assert [r["point"] for r in ranking] == ["1-0.5-response", "4-0.5-response"]  # name order
    assert ranking[0] == {"point": "1-0.5-response", "val_pauc": 0.10, "val_roc_auc": 0.85}


def test_evaluation_refuses_a_teacher_that_is_not_one() -> None:
    from melanoma_kd.evaluate import evaluate_all
    from tests.test_evaluate import CFG, SELECTED, SMALL, make_predictions

    specs, preds = make_predictions(SMALL)
    with pytest.raises(UserError, match="'student_scratch' is not a teacher"):
        evaluate_all(specs, preds, SELECTED, CFG, teacher="student_scratch")
