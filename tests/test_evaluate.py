"""Tests for melanoma_kd.evaluate, .paired, .results, .plots and .figures on small constructed
predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from melanoma_kd import metrics as M
from melanoma_kd.catalog import EvaluationFiles, kd_points, model_specs, selected_point
from melanoma_kd.config import EvaluateParams
from melanoma_kd.errors import UserError
from melanoma_kd.evaluate import (
    Evaluation,
    Predictions,
    checked_predictions,
    evaluate_all,
    evaluate_model,
    save_evaluation,
)
from melanoma_kd.figures import render_pngs
from melanoma_kd.io import read_json, write_json
from melanoma_kd.paired import error_analysis, hard_cases
from melanoma_kd.plots import (
    THRESHOLD_GRID,
    reliability_points,
    threshold_sweep,
    training_curves,
    write_plot_data,
)
from melanoma_kd.results import load_evaluation

CFG = EvaluateParams(n_boot=100, seed=0)
RAW = {
    "teachers": {"archs": ["resnet18", "efficientnet_b0"]},
    "distill": {"response": {"temperature": [1, 4], "alpha": [0.5]}, "feature": {"alpha": [0.5]}},
}
SELECTED = "kd_4-0.5-response"
TEACHER = "teacher_efficientnet_b0"  # chosen on validation by the stage (selection.py)
SMALL = {  # five models: enough for the full evaluate_all path, cheap to run twice
    "teachers": {"archs": ["resnet18"]},
    "distill": {"response": {"temperature": [4], "alpha": [0.5]}, "feature": {"alpha": []}},
}


def _split(tag: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` images of ``n // 3`` patients (three images each), ~25 % melanoma."""
    y = (rng.random(n) < 0.25).astype(int)
    y[:4] = [0, 1, 0, 1]
    return pd.DataFrame(
        {
            "image_id": [f"{tag}{i:04d}" for i in range(n)],
            "label": y,
            "patient_id": [f"P{tag}{i // 3:03d}" for i in range(n)],
        }
    )


def _scored(frame: pd.DataFrame, strength: float, rng: np.random.Generator) -> pd.DataFrame:
    y = frame["label"].to_numpy()
    logit = rng.normal(size=len(y)) + strength * y - 1.0
    return frame.assign(score=1.0 / (1.0 + np.exp(-logit)))


def make_predictions(
    raw: dict = RAW, n: int = 90, seed: int = 0
) -> tuple[list, dict[str, Predictions]]:
    """Specs of ``raw`` and plausible predictions for each (same val/holdout images)."""
    rng = np.random.default_rng(seed)
    specs = model_specs(raw, "models", "metrics")
    val, hold = _split("V", n, rng), _split("H", n, rng)
    preds = {}
    for k, spec in enumerate(specs):
        strength = 1.0 + 0.3 * k
        v = _scored(val, strength, rng).drop(columns="patient_id")
        preds[spec.name] = checked_predictions(spec.name, v, _scored(hold, strength, rng))
    return specs, preds


@pytest.fixture(scope="module")
def evaluation() -> Evaluation:
    specs, preds = make_predictions()
    return evaluate_all(specs, preds, SELECTED, CFG, teacher=TEACHER)


# --------------------------------------------------------------------------- model list


def test_kd_points_are_named_like_dvc_stage_keys() -> None:
    response = {"temperature": [1, 2.5], "alpha": [0.5, 1]}
    assert kd_points({"response": response, "feature": {"alpha": []}}) == [
        "1-0.5-response",
        "1-1-response",
        "2.5-0.5-response",
        "2.5-1-response",
    ]
    assert kd_points({"response": response, "feature": {"alpha": [0.5, 1]}})[4:] == [
        "0.5-feature",
        "1-feature",
    ]
    off = {"temperature": [], "alpha": [0.5]}
    assert kd_points({"response": off, "feature": {"alpha": [0.9]}}) == ["0.9-feature"]
    with pytest.raises(UserError, match=r"distill\.feature\.alpha must be a list"):
        kd_points({"response": response})
    specs = model_specs(RAW, "models", "metrics")
    assert [s.name for s in specs] == [
        "teacher_resnet18",
        "teacher_efficientnet_b0",
        "student_scratch",
        "kd_1-0.5-response",
        "kd_4-0.5-response",
        "kd_0.5-feature",  # feature KD has no temperature: one point per alpha
        "kd_onnx_fp32",
        "kd_onnx_int8",
        "teacher_onnx_fp32",
        "teacher_onnx_int8",
        "kd_selected_no_transfer",
    ]
    assert specs[-1].path == Path("models/ablation/no_transfer.pt")
    kd = specs[4]
    assert kd.path == Path("models/distill/4-0.5-response.pt")
    assert kd.run_dir == Path("metrics/distill/4-0.5-response")
    assert (kd.point.temperature, kd.point.alpha, kd.point.method) == (4.0, 0.5, "response")
    feature = specs[5]
    assert feature.path == Path("models/distill/0.5-feature.pt")
    assert feature.run_dir == Path("metrics/distill/0.5-feature")
    assert (feature.point.temperature, feature.point.alpha, feature.point.method) == (
        None,
        0.5,
        "feature",
    )


def test_selected_point_validates_the_export_file(tmp_path: Path) -> None:
    specs = model_specs(RAW)
    path = tmp_path / "selected_student.json"
    with pytest.raises(UserError, match="not found"):
        selected_point(path, specs)
    write_json(path, {"point": "9-0.5-response"})
    with pytest.raises(UserError, match="not in the distill grid"):
        selected_point(path, specs)
    write_json(path, {"point": "4-0.5-response"})
    assert selected_point(path, specs) == SELECTED


def test_bad_predictions_fail_with_one_clear_line() -> None:
    good = pd.DataFrame(
        {"image_id": ["a", "b"], "label": [0, 1], "score": [0.2, 0.7], "patient_id": ["p", "q"]}
    )
    with pytest.raises(UserError, match="missing column"):
        checked_predictions("m", good, good.drop(columns="patient_id"))
    with pytest.raises(UserError, match=r"row 1 \(b\).*not a probability"):
        checked_predictions("m", good.assign(score=[0.2, 1.5]), good)
    specs, preds = make_predictions()
    other = make_predictions(seed=1)[1]
    preds = {**preds, "kd_onnx_int8": other["kd_onnx_int8"]}
    with pytest.raises(UserError, match="holdout images/labels differ"):
        evaluate_all(specs, preds, SELECTED, CFG, teacher=TEACHER)


# --------------------------------------------------------------------------- metrics


def test_thresholds_never_read_holdout_labels() -> None:
    """Shuffling holdout labels (or replacing holdout scores) leaves every threshold put."""
    specs, preds = make_predictions(SMALL)
    base = evaluate_all(specs, preds, SELECTED, CFG, teacher="teacher_resnet18")
    rng = np.random.default_rng(123)
    perm = rng.permutation(len(preds[SELECTED].holdout))
    shuffled = {}
    for name, p in preds.items():
        hold = p.holdout.assign(label=p.holdout["label"].to_numpy()[perm])
        shuffled[name] = Predictions(p.val, hold)
    again = evaluate_all(specs, shuffled, SELECTED, CFG, teacher="teacher_resnet18")
    for name in base.metrics:
        for key in ("sens95_threshold", "f1_threshold"):
            assert again.metrics[name][key] == base.metrics[name][key], (name, key)
        assert again.metrics[name]["roc_auc"] != base.metrics[name]["roc_auc"]
    # and the test is sensitive: changing VALIDATION labels does move thresholds
    p = preds[SELECTED]
    val = p.val.assign(label=p.val["label"].to_numpy()[rng.permutation(len(p.val))])
    moved = evaluate_model(Predictions(val, p.holdout), CFG)
    assert (moved["sens95_threshold"], moved["f1_threshold"]) != (
        base.metrics[SELECTED]["sens95_threshold"],
        base.metrics[SELECTED]["f1_threshold"],
    )


def test_evaluate_model_reproduces_sklearn_and_hand_values() -> None:
    _, preds = make_predictions()
    p = preds["student_scratch"]
    m = evaluate_model(p, CFG)
    y, s = p.holdout["label"].to_numpy(), p.holdout["score"].to_numpy()
    yv, sv = p.val["label"].to_numpy(), p.val["score"].to_numpy()
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    closed = 0.02 + 0.36 * (roc_auc_score(1 - y, -s, max_fpr=0.2) - 0.5)
    assert m["pauc"] == pytest.approx(closed, abs=1e-6)
    assert m["val_roc_auc"] == pytest.approx(roc_auc_score(yv, sv), abs=1e-6)
    assert m["roc_auc_ci_lo"] <= m["roc_auc"] <= m["roc_auc_ci_hi"]
    assert m["pauc_ci_lo"] <= m["pauc"] <= m["pauc_ci_hi"]
    assert m["n_holdout"] == 90 and m["n_holdout_patients"] == 30
    assert all(not isinstance(v, list | dict) for v in m.values())  # flat for dvc metrics


def test_hand_computed_operating_point() -> None:
    """Val: positives at 0.9, 0.6, 0.3 → the highest threshold with sens ≥ 0.95 is 0.3."""
    val = pd.DataFrame(
        {
            "image_id": list("abcdef"),
            "label": [1, 1, 1, 0, 0, 0],
            "score": [0.9, 0.6, 0.3, 0.5, 0.2, 0.1],
        }
    )
    hold = pd.DataFrame(
        {
            "image_id": list("ghijkl"),
            "label": [1, 1, 0, 0, 1, 0],
            "score": [0.35, 0.25, 0.31, 0.1, 0.8, 0.05],
            "patient_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
        }
    )
    m = evaluate_model(checked_predictions("hand", val, hold), EvaluateParams(n_boot=100))
    assert m["sens95_threshold"] == 0.3
    # holdout rule s >= 0.3: positives 0.35, 0.8 caught, 0.25 missed; negative 0.31 flagged
    assert m["sens95_sensitivity"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["sens95_specificity"] == pytest.approx(2 / 3, abs=1e-6)


def test_thresholds_are_chosen_on_unrounded_validation_scores() -> None:
    """A validation score is never rounded before a threshold is chosen on it."""
    val = pd.DataFrame(
        {
            "image_id": list("abcdef"),
            "label": [1, 1, 1, 0, 0, 0],
            "score": [0.9, 0.6, 0.3000004, 0.5, 0.2, 0.1],  # 0.3000004 rounds to 0.3
        }
    )
    hold = pd.DataFrame(
        {
            "image_id": list("ghij"),
            "label": [1, 0, 1, 0],
            "score": [0.3, 0.1, 0.8, 0.6],
            "patient_id": ["p1", "p2", "p3", "p4"],
        }
    )
    m = evaluate_model(checked_predictions("hand", val, hold), CFG)
    assert m["sens95_threshold"] == 0.3000004  # full precision, also in the published JSON
    assert m["sens95_sensitivity"] == 0.5  # holdout 0.3 < 0.3000004: missed


def test_a_deployed_models_recorded_thresholds_are_used() -> None:
    """An ONNX model's metadata thresholds decide; they are not chosen again."""
    _, preds = make_predictions(SMALL)
    p = preds["student_scratch"]
    own = evaluate_model(p, CFG)
    recorded = Predictions(p.val, p.holdout, {"threshold": 0.4242, "threshold_max_f1": 0.6161})
    m = evaluate_model(recorded, CFG)
    assert (m["sens95_threshold"], m["f1_threshold"]) == (0.4242, 0.6161)
    assert own["sens95_threshold"] != 0.4242
    y, s = p.holdout["label"].to_numpy(), p.holdout["score"].to_numpy()
    assert m["sens95_sensitivity"] == round(M.metrics_at_threshold(y, s, 0.4242)["sensitivity"], 6)
    assert m["f1"] == round(M.metrics_at_threshold(y, s, 0.6161)["f1"], 6)
    only_t = evaluate_model(Predictions(p.val, p.holdout, {"threshold": 0.4242}), CFG)
    assert only_t["f1_threshold"] == own["f1_threshold"]  # the missing one is chosen on val


def test_ece_uses_the_configured_bins() -> None:
    """ECE in the per-model metrics = a hand computation over ``evaluate.ece_bins`` bins (4
    here, not the default 15), the bins the reliability plot draws."""
    _, preds = make_predictions(SMALL)
    p = preds["student_scratch"]
    cfg = EvaluateParams(n_boot=100, seed=0, ece_bins=4)
    m = evaluate_model(p, cfg)
    y = p.holdout["label"].to_numpy(np.float64)
    s = p.holdout["score"].to_numpy(np.float64)
    which = np.minimum((s * 4).astype(int), 3)  # [0, .25), [.25, .5), [.5, .75), [.75, 1]
    gaps = [
        abs(s[which == b].mean() - y[which == b].mean()) for b in range(4) if (which == b).any()
    ]
    weights = [(which == b).mean() for b in range(4) if (which == b).any()]
    ece = float(np.dot(weights, gaps))
    assert m["ece"] == pytest.approx(ece, abs=1e-6)
    assert m["ece"] != evaluate_model(p, CFG)["ece"]  # 15 bins give another number
    rel = reliability_points(y.astype(int), s, cfg.ece_bins)
    assert len(rel) <= 4
    plotted = float(np.sum(rel["count"] / len(y) * np.abs(rel["mean_p"] - rel["frac_pos"])))
    assert plotted == pytest.approx(m["ece"], abs=1e-6)


def _hand_frames(
    val_scores: list[float], hold_scores: list[float]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    val = pd.DataFrame(
        {
            "image_id": [f"v{i}" for i in range(7)],
            "label": [1, 1, 1, 0, 0, 0, 0],
            "score": val_scores,
        }
    )
    hold = pd.DataFrame(
        {
            "image_id": [f"h{i}" for i in range(6)],
            "label": [1, 1, 1, 0, 0, 0],
            "score": hold_scores,
            "patient_id": [f"p{i}" for i in range(6)],
        }
    )
    return val, hold


def test_error_analysis_decides_at_the_sensitivity_target_threshold() -> None:
    """Teacher and student each decide at their 95 %-sensitivity threshold, as deployed — not
    at their (here different) max-F1 threshold.

    Teacher validation: positives 0.9, 0.8, 0.2, negatives 0.7, 0.6, 0.5, 0.3: catching every
    positive needs t = 0.2; max F1 is 0.8 at t = 0.8. Student: positives 0.95, 0.85, 0.4,
    negatives 0.9, 0.5, 0.45, 0.1: t = 0.4; max F1 (2/3, a tie) at the higher t = 0.85.
    Holdout (labels 1 1 1 0 0 0) at t = 0.2 / 0.4: teacher right on all but image 3, student
    right on all but images 0 and 3 -> both right 4, teacher only 1, student only 0, both wrong
    1 (a false alarm). At the max-F1 thresholds it would be 3 / 1 / 1 / 1 (a missed melanoma).
    """
    t_val, t_hold = _hand_frames(
        [0.9, 0.8, 0.2, 0.7, 0.6, 0.5, 0.3], [0.9, 0.5, 0.25, 0.6, 0.1, 0.15]
    )
    s_val, s_hold = _hand_frames(
        [0.95, 0.85, 0.4, 0.9, 0.5, 0.45, 0.1], [0.3, 0.45, 0.95, 0.5, 0.35, 0.05]
    )
    specs = model_specs(SMALL, "models", "metrics")
    preds = {
        spec.name: checked_predictions(
            spec.name, *(s_val, s_hold) if spec.name == SELECTED else (t_val, t_hold)
        )
        for spec in specs
    }
    ev = evaluate_all(specs, preds, SELECTED, CFG, teacher="teacher_resnet18")
    teacher, student = ev.metrics["teacher_resnet18"], ev.metrics[SELECTED]
    assert (teacher["sens95_threshold"], teacher["f1_threshold"]) == (0.2, 0.8)
    assert (student["sens95_threshold"], student["f1_threshold"]) == (0.4, 0.85)
    e = ev.error_analysis
    assert (e["teacher_threshold"], e["student_threshold"]) == (0.2, 0.4)
    counts = ("both_right", "teacher_only_right", "student_only_right", "both_wrong")
    assert tuple(e[k] for k in counts) == (4, 1, 0, 1)
    assert (e["both_false_alarm"], e["both_missed_melanoma"]) == (1, 0)
    assert e["teacher_accuracy"] == pytest.approx(5 / 6, abs=1e-6)
    assert e["student_accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    trsw = ev.hard_cases[ev.hard_cases["kind"] == "teacher_right_student_wrong"]
    assert trsw["image_id"].tolist() == ["h0"]  # the student's 0.3 < 0.4 on a melanoma


def test_error_analysis_counts_and_mcnemar() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
    s_t = np.array([0.9, 0.2, 0.1, 0.7, 0.8, 0.2, 0.6, 0.1])  # right: T F T F T T F F
    s_s = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.9, 0.1, 0.2])  # right: T T T T F F T F
    e = error_analysis(y, s_t, 0.5, s_s, 0.5)
    assert (e["both_right"], e["teacher_only_right"], e["student_only_right"], e["both_wrong"]) == (
        2,
        2,
        3,
        1,
    )
    assert e["both_missed_melanoma"] == 1 and e["both_false_alarm"] == 0
    assert e["agreement"] == pytest.approx(3 / 8)
    ct, cs = (s_t >= 0.5) == y, (s_s >= 0.5) == y
    assert e["mcnemar_p"] == pytest.approx(
        M.mcnemar_pvalue(ct.astype(int), cs.astype(int)), abs=1e-6
    )


def test_evaluate_all_roles_gain_and_int8(evaluation: Evaluation) -> None:
    ev = evaluation
    assert ev.roles == {
        "best_teacher": TEACHER,
        "scratch_student": "student_scratch",
        "kd_student": SELECTED,
        "kd_student_int8": "kd_onnx_int8",
    }
    e = ev.error_analysis
    assert (
        e["both_right"] + e["teacher_only_right"] + e["student_only_right"] + e["both_wrong"]
        == e["n"]
        == 90
    )
    assert e["int8_roc_auc_drop"] == pytest.approx(
        ev.metrics["kd_onnx_fp32"]["roc_auc"] - ev.metrics["kd_onnx_int8"]["roc_auc"], abs=2e-6
    )
    g = ev.kd_gain
    assert g["roc_auc_delta"] == pytest.approx(
        ev.metrics[SELECTED]["roc_auc"] - ev.metrics["student_scratch"]["roc_auc"], abs=2e-6
    )
    assert g["roc_auc_delta_ci_lo"] <= g["roc_auc_delta"] <= g["roc_auc_delta_ci_hi"]
    assert 0 < g["roc_auc_p"] <= 1
    assert g["roc_auc_mde"] > 0 and g["pauc_mde"] > 0
    assert ev.ablation["selected"].tolist() == [False, True, False]
    assert ev.ablation["model"].tolist() == ["kd_1-0.5-response", SELECTED, "kd_0.5-feature"]
    # as the grid names them; feature KD has no temperature
    assert ev.ablation["temperature"].tolist() == ["1", "4", "—"]
    assert ev.ablation["method"].tolist() == ["response", "response", "feature"]
    assert set(ev.hard_cases["kind"]) <= {
        "teacher_right_student_wrong",
        "student_right_teacher_wrong",
        "high_confidence_errors",
    }


def test_mde_and_one_seed_pooled_comparisons(evaluation: Evaluation) -> None:
    """Every paired comparison carries its MDE, (z_0.975 + z_0.80) · bootstrap SE; without
    replicates the pooled comparisons are the single-seed ones (the same models, one seed)."""
    ev = evaluation
    hold = ev.predictions[SELECTED].holdout
    y, groups = hold["label"].to_numpy(), hold["patient_id"].astype(str).to_numpy()
    scratch = ev.predictions["student_scratch"].holdout["score"].to_numpy()
    d = M.paired_bootstrap_delta(
        y, hold["score"].to_numpy(), scratch, groups, "roc_auc", CFG.n_boot, CFG.seed
    )
    assert d["se"] > 0
    assert ev.kd_gain["roc_auc_mde"] == pytest.approx(2.801585 * d["se"], abs=2e-6)
    assert set(ev.pooled) == {"kd_gain", "student_vs_teacher", "transfer"}
    gain = ev.pooled["kd_gain"]
    assert (gain["a_models"], gain["b_models"], gain["n_seeds"]) == (
        SELECTED,
        "student_scratch",
        1,
    )
    assert ev.pooled["student_vs_teacher"]["b_models"] == TEACHER
    assert ev.pooled["transfer"]["b_models"] == "kd_selected_no_transfer"
    for metric in ("roc_auc", "pauc"):
        assert gain[f"{metric}_delta"] == pytest.approx(ev.kd_gain[f"{metric}_delta"], abs=2e-6)
        assert gain[f"{metric}_ci_lo"] <= gain[f"{metric}_delta"] <= gain[f"{metric}_ci_hi"]
        assert gain[f"{metric}_mde"] == pytest.approx(2.801585 * gain[f"{metric}_se"], abs=2e-6)
        assert 0 < gain[f"{metric}_p"] <= 1


def test_hard_cases_are_ordered_hardest_first() -> None:
    hold = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "label": [1, 1, 0, 0]})
    s_t = np.array([0.9, 0.8, 0.1, 0.2])
    s_s = np.array([0.4, 0.1, 0.7, 0.95])
    cases = hard_cases(hold, s_t, 0.5, s_s, 0.5, k=3)
    trsw = cases[cases["kind"] == "teacher_right_student_wrong"]
    assert trsw["image_id"].tolist() == ["d", "b", "c"]  # student errors 0.95, 0.9, 0.7
    assert trsw["rank"].tolist() == [1, 2, 3]
    assert cases[cases["kind"] == "student_right_teacher_wrong"].empty


# --------------------------------------------------------------------------- outputs


def _files(root: Path) -> EvaluationFiles:
    return EvaluationFiles(root / "metrics/evaluate", root / "metrics/predictions")


def test_saved_files_recompute_exactly(evaluation: Evaluation, tmp_path: Path) -> None:
    files = _files(tmp_path)
    save_evaluation(evaluation, files)
    assert sorted(p.stem for p in files.models.glob("*.json")) == sorted(evaluation.metrics)
    df = pd.read_csv(files.prediction(SELECTED), dtype={"score": str})
    assert list(df.columns) == ["image_id", "label", "score"]
    assert all(len(v.split(".")[1]) == 6 for v in df["score"])
    y, s = df["label"].to_numpy(), df["score"].astype(float).to_numpy()
    m = read_json(files.model(SELECTED))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    # the published threshold decides exactly as the evaluation did
    at = M.metrics_at_threshold(y, s, m["sens95_threshold"])
    assert round(at["sensitivity"], 6) == m["sens95_sensitivity"]
    assert round(at["specificity"], 6) == m["sens95_specificity"]
    assert read_json(files.error_analysis)["student"] == SELECTED
    assert read_json(files.roles) == evaluation.roles


def test_the_folder_reads_back_as_the_evaluation(evaluation: Evaluation, tmp_path: Path) -> None:
    """What plot and report read is what evaluate computed; plot data from either is equal."""
    files = _files(tmp_path)
    save_evaluation(evaluation, files)
    back = load_evaluation(files, evaluation.specs, CFG, key_predictions=True)
    parts = ("metrics", "roles", "error_analysis", "kd_gain", "student_vs_teacher", "seeds")
    for part in (*parts, "transfer", "pooled"):
        assert getattr(back, part) == getattr(evaluation, part), part
    pd.testing.assert_frame_equal(
        back.ablation.astype(str), evaluation.ablation.astype(str), check_dtype=False
    )
    assert back.hard_cases["image_id"].tolist() == evaluation.hard_cases["image_id"].tolist()
    assert set(back.holdout) == set(evaluation.roles.values())
    write_plot_data(evaluation, tmp_path / "memory", curves=False)
    write_plot_data(back, tmp_path / "disk", curves=False)
    written = sorted(p.relative_to(tmp_path / "memory") for p in (tmp_path / "memory").rglob("*"))
    assert written and written == sorted(
        p.relative_to(tmp_path / "disk") for p in (tmp_path / "disk").rglob("*")
    )
    for rel in written:
        if (tmp_path / "memory" / rel).is_file():
            assert (tmp_path / "memory" / rel).read_bytes() == (
                tmp_path / "disk" / rel
            ).read_bytes()
    (files.root / "kd_gain.json").unlink()
    with pytest.raises(UserError, match=r"kd_gain.json: not found \(KD gain; run the evaluate"):
        load_evaluation(files, evaluation.specs, CFG)


def test_confusion_csv_has_one_record_per_sample(evaluation: Evaluation, tmp_path: Path) -> None:
    write_plot_data(evaluation, tmp_path, curves=False)
    for role, name in evaluation.roles.items():
        conf = pd.read_csv(tmp_path / "confusion" / f"{role}.csv")
        hold = evaluation.predictions[name].holdout
        assert list(conf.columns) == ["actual", "predicted"]
        assert len(conf) == len(hold)
        t = evaluation.metrics[name]["sens95_threshold"]
        counts = M.metrics_at_threshold(hold["label"], hold["score"], t)
        assert (
            int(((conf.actual == "melanoma") & (conf.predicted == "melanoma")).sum())
            == counts["tp"]
        )
        assert (
            int(((conf.actual == "benign") & (conf.predicted == "melanoma")).sum()) == counts["fp"]
        )
    roc = pd.read_csv(tmp_path / "roc" / "kd_student.csv")
    assert list(roc.columns) == ["fpr", "tpr"] and roc["fpr"].is_monotonic_increasing
    pr = pd.read_csv(tmp_path / "pr" / "kd_student.csv")
    assert list(pr.columns) == ["recall", "precision"] and pr["recall"].is_monotonic_increasing
    thr = pd.read_csv(tmp_path / "thresholds" / "best_teacher.csv")
    assert list(thr.columns) == ["threshold", "sensitivity", "specificity", "f1"]
    assert len(thr) == 101
    rel = pd.read_csv(tmp_path / "reliability" / "kd_student.csv")
    assert rel["count"].sum() == 90 and rel["count"].gt(0).all()
    assert not (tmp_path / "training").exists()


def test_threshold_sweep_matches_metrics_at_threshold() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(60) < 0.3).astype(int)
    s = np.round(rng.random(60), 2)  # scores on the grid: ties with thresholds
    sweep = threshold_sweep(y, s)
    for t, row in zip(THRESHOLD_GRID, sweep.itertuples(), strict=True):
        ref = M.metrics_at_threshold(y, s, float(t))
        assert (row.sensitivity, row.specificity, row.f1) == pytest.approx(
            (ref["sensitivity"], ref["specificity"], ref["f1"]), abs=1e-12
        ), t


def test_training_curves_merge_dvclive_tsvs(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "live" / "plots" / "metrics"
    folder.mkdir(parents=True)
    (folder / "val_pauc.tsv").write_text("step\tval_pauc\n0\t0.1\n1\t0.12\n")
    (folder / "train_loss.tsv").write_text("step\ttrain_loss\n0\t0.7\n1\t0.5\n")
    df = training_curves(tmp_path / "run")
    assert list(df.columns) == ["step", "train_loss", "val_pauc"]
    assert df["val_pauc"].tolist() == [0.1, 0.12]
    with pytest.raises(UserError, match="no training curves"):
        training_curves(tmp_path / "missing")


def test_pngs_are_written(evaluation: Evaluation, tmp_path: Path) -> None:
    def load(_: str) -> np.ndarray:
        return np.full((16, 16, 3), 128, dtype=np.uint8)

    paths = render_pngs(evaluation, tmp_path, load)
    assert len(paths) == 6
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_exported_teacher_must_be_the_best_teacher() -> None:
    """export_teacher and the evaluation choose the best teacher by the same rule; an exported
    teacher of another arch (a stale export) is refused in one line."""
    specs, preds = make_predictions(SMALL)
    p = preds["teacher_onnx_int8"]
    wrong = {**preds, "teacher_onnx_int8": Predictions(p.val, p.holdout, arch="resnet50")}
    with pytest.raises(UserError, match="exported teacher is resnet50, but the best teacher"):
        evaluate_all(specs, wrong, SELECTED, CFG, teacher="teacher_resnet18")
    right = {**preds, "teacher_onnx_int8": Predictions(p.val, p.holdout, arch="resnet18")}
    ev = evaluate_all(specs, right, SELECTED, CFG, teacher="teacher_resnet18")
    assert {"teacher_onnx_fp32", "teacher_onnx_int8"} <= set(ev.metrics)
