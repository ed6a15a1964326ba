"""Seed replicates, paired comparisons and their report lines (fast unit tests, no pipeline)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from melanoma_kd import metrics as M
from melanoma_kd import runs
from melanoma_kd.catalog import (
    NO_TRANSFER,
    EvaluationFiles,
    kd_points,
    parse_point,
    replicate_name,
)
from melanoma_kd.config import EvaluateParams, load_params, parse_params
from melanoma_kd.data.cache import write_split_cache
from melanoma_kd.data.dataset import UNLABELLED
from melanoma_kd.errors import UserError
from melanoma_kd.evaluate import evaluate_all, save_evaluation
from melanoma_kd.io import read_json, write_json
from melanoma_kd.paired import paired_comparison
from melanoma_kd.plots import write_plot_data
from melanoma_kd.replicates import KINDS, replicate_hash
from tests.test_evaluate import SELECTED, SMALL, make_predictions
from tests.test_train import _separable_cache

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "profiles" / "tiny.yaml"
CFG = EvaluateParams(n_boot=100, seed=0)
ID_COLUMNS = ("image_id", "patient_id", "lesion_id")


# --------------------------------------------------------------------------- paired bootstrap


def _patients(n_patients: int, per_patient: int, rng: np.random.Generator):
    """Labels and patient ids: every patient has one label shared by all their images."""
    y_patient = (rng.random(n_patients) < 0.35).astype(int)
    y_patient[:2] = [0, 1]
    y = np.repeat(y_patient, per_patient)
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], per_patient)
    return y, groups


def test_paired_bootstrap_resamples_patients_not_images() -> None:
    rng = np.random.default_rng(3)
    y1, g1 = _patients(60, 1, rng)
    s_a1 = 1 / (1 + np.exp(-(1.5 * y1 + rng.normal(size=y1.size))))
    s_b1 = 1 / (1 + np.exp(-(1.0 * y1 + rng.normal(size=y1.size))))
    # The same patients, each image copied 4 times: a patient bootstrap draws the same patients
    # (same seed), and ROC-AUC/pAUC ignore uniform copies, so the CI must not change. An image
    # bootstrap would see 4x the sample and give a narrower CI.
    k = 4
    y4, g4, s_a4, s_b4 = (np.repeat(v, k) for v in (y1, g1, s_a1, s_b1))
    for m in ("roc_auc", "pauc"):
        one = M.paired_bootstrap_delta(y1, s_a1, s_b1, g1, m, CFG.n_boot, CFG.seed)
        four = M.paired_bootstrap_delta(y4, s_a4, s_b4, g4, m, CFG.n_boot, CFG.seed)
        images = M.paired_bootstrap_delta(y4, s_a4, s_b4, np.arange(y4.size), m, CFG.n_boot)
        assert four == pytest.approx(one, abs=1e-9)
        width = {
            "patients": four["ci_hi"] - four["ci_lo"],
            "images": images["ci_hi"] - images["ci_lo"],
        }
        assert width["images"] < 0.75 * width["patients"]


def test_paired_ci_contains_zero_for_identical_and_excludes_it_for_a_better_model() -> None:
    rng = np.random.default_rng(7)
    y, groups = _patients(50, 3, rng)
    patient_effect = np.repeat(rng.normal(size=50), 3)  # images of a patient are correlated
    noise = 1 / (1 + np.exp(-(0.3 * y + patient_effect + rng.normal(size=y.size))))
    good = 1 / (1 + np.exp(-(3.0 * y + 0.3 * patient_effect + rng.normal(size=y.size))))

    same = paired_comparison(y, noise, noise.copy(), groups, CFG)
    for m in ("roc_auc", "pauc"):
        assert same[f"{m}_delta_ci_lo"] <= 0.0 <= same[f"{m}_delta_ci_hi"]
        assert same[f"{m}_p"] == 1.0

    better = paired_comparison(y, good, noise, groups, CFG)
    worse = paired_comparison(y, noise, good, groups, CFG)
    for m in ("roc_auc", "pauc"):
        assert better[f"{m}_delta_ci_lo"] > 0.0
        assert worse[f"{m}_delta_ci_hi"] < 0.0
        assert better[f"{m}_p"] < 0.05
    assert better["roc_auc_delta"] == pytest.approx(-worse["roc_auc_delta"], abs=1e-6)


# --------------------------------------------------------------------------- params


def _raw(path: Path = TINY) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_replicate_seeds_validation_is_one_line() -> None:
    raw = _raw()
    raw["replicates"] = {"seeds": [raw["train"]["seed"], 5]}
    with pytest.raises(UserError, match=r"replicates\.seeds must not contain train\.seed") as e:
        parse_params(raw)
    assert "\n" not in str(e.value)
    raw["replicates"] = {"seeds": [3, 3]}
    with pytest.raises(UserError, match=r"replicates\.seeds: must be distinct \(got \[3, 3\]\)$"):
        parse_params(raw)
    raw["replicates"] = {"seeds": []}
    with pytest.raises(UserError, match=r"replicates\.seeds"):
        parse_params(raw)


def test_replicate_list_is_its_own_section_in_the_dag() -> None:
    """Stages that read ``train`` must not depend on the replicate list (no needless reruns)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        keys = [p for p in body.get("params", []) if isinstance(p, str)]
        if "train" in keys or any(k.startswith("train.") for k in keys):
            assert not any(k.startswith("replicates") for k in keys), name
    rep = stages["replicate"]
    assert rep["foreach"] == "${replicates.seeds}"
    assert "replicates" not in " ".join(map(str, rep["do"]["params"]))


def test_parse_point_round_trips_dvc_keys() -> None:
    """Every grid key, as DVC spells the YAML values (``1.0`` stays ``1.0``), parses back to its
    values and keeps its spelling: the key names the checkpoint, run folder and model."""
    temps, alphas = [1, 2.5, 1.0e-5, 10.0], [0.5, 1, 1.0e-5, 0.0]
    distill = {
        "response": {"temperature": temps, "alpha": alphas},
        "feature": {"alpha": alphas},
    }
    expected = [(t, a, "response") for t in temps for a in alphas]
    expected += [(None, a, "feature") for a in alphas]
    keys = kd_points(distill)
    assert len(keys) == len(expected) == len(set(keys))
    for key, (t, a, method) in zip(keys, expected, strict=True):
        parsed = parse_point(key)
        assert (parsed.temperature, parsed.alpha, parsed.method) == (
            None if t is None else float(t),
            float(a),
            method,
        ), key
        assert parsed.key == key
    assert keys[0] == "1-0.5-response" and keys[-1] == "0.0-feature"
    with pytest.raises(UserError, match="unknown method"):
        parse_point("1-0.5-magic")
    with pytest.raises(UserError, match="expected <alpha>-feature"):
        parse_point("4-0.5-feature")  # feature KD has no temperature
    with pytest.raises(UserError, match="expected <temperature>-<alpha>-response"):
        parse_point("0.5-response")


def test_replicate_names_per_kind() -> None:
    assert [replicate_name(kind, 3) for kind in KINDS] == [
        "student_scratch_seed3",
        "kd_selected_seed3",
        "kd_selected_no_transfer_seed3",
    ]


# --------------------------------------------------------------------------- replicate vs main


def _fake_fit(calls: list[dict[str, Any]]):
    """Replace the training loop: record what it was given, report one 'best' epoch."""

    def fake(objective, train, val, cfg, sched, on_best, log=None, teacher=None, desc=""):
        state = objective.student.state_dict()
        calls.append(
            {
                "desc": desc,
                "augment_seed": train.seed,
                "cfg": cfg.model_dump(),
                "init": torch.cat([v.flatten().float() for v in state.values()]).clone(),
                "teacher": teacher is not None,
                "train_len": len(train),
            }
        )
        metrics = {"train_loss": 0.5, "val_loss": 0.5, "val_roc_auc": 0.5, "val_pauc": 0.1}
        on_best(0, metrics, np.full(len(val), 0.5))
        return {
            "best_epoch": 1,
            "epochs_run": 1,
            "val_roc_auc": 0.5,
            "val_pauc": 0.1,
            "train_seconds": 0.0,
            "train_images_per_s": 0.0,
        }

    return fake


def _stage(name: str):
    return runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name=f"{name}_stage")["main"]


def _meta(path: Path) -> dict[str, Any]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.pop("state_dict")
    return payload


def _teacher_outputs(path: Path, epochs: int, n_transfer: int) -> None:
    """Cached teacher outputs (all-zero logits) for the 8 train images and the transfer set."""
    with h5py.File(path, "w") as h5:
        shape = (epochs, 8 + n_transfer, 2)
        h5.create_dataset("logits", data=np.zeros(shape, np.float32))
        h5.attrs["n_features"] = 0
        h5.attrs["feature_dims"] = [16, 32]
        h5.attrs["n_train"] = 8
        h5.attrs["n_transfer"] = n_transfer


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    params = load_params(TINY)
    size = params.cache.size
    cache = tmp_path / "cache"
    cache.mkdir()
    _separable_cache(cache / "train.h5", 8, size, seed=0)
    _separable_cache(cache / "val.h5", 6, size, seed=1)
    n_transfer = params.distill.transfer_images
    assert n_transfer > 0  # the tiny profile exercises the transfer set
    rows = pd.DataFrame({c: [f"t{i}" for i in range(n_transfer)] for c in ID_COLUMNS})
    rows["label"] = UNLABELLED
    images = np.zeros((n_transfer, size, size, 3), np.uint8)
    write_split_cache(tmp_path / "transfer.h5", rows, list(images), size, "transfer", "h")
    _teacher_outputs(tmp_path / "teacher_outputs.h5", params.student.epochs, n_transfer)
    selected = tmp_path / "selected_student.json"
    write_json(selected, {"point": "2-0.5-response"})
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(runs, "fit", _fake_fit(calls))
    torch_threads = torch.get_num_threads()
    yield tmp_path, params, calls
    torch.set_num_threads(torch_threads)
    torch.use_deterministic_algorithms(False)


def test_replicate_differs_from_main_run_only_by_seed(workspace) -> None:
    tmp, params, calls = workspace
    common = ["--params", str(TINY), "--cache-dir", str(tmp / "cache")]
    _stage("train_student")(
        [*common, "--checkpoint", str(tmp / "main/scratch.pt"), "--metrics-dir", str(tmp / "m/s")]
    )
    _stage("distill")(
        [
            *common,
            *("--point", "2-0.5-response"),
            *("--teacher-outputs", str(tmp / "teacher_outputs.h5")),
            *("--transfer", str(tmp / "transfer.h5")),
            *("--checkpoint", str(tmp / "main/kd.pt"), "--metrics-dir", str(tmp / "m/k")),
        ]
    )
    seed = params.train.seed + 1
    _stage("replicate")(
        [
            *common,
            *("--seed", str(seed), "--selected", str(tmp / "selected_student.json")),
            *("--teacher-outputs", str(tmp / "teacher_outputs.h5")),
            *("--transfer", str(tmp / "transfer.h5")),
            *("--out-dir", str(tmp / "rep"), "--metrics-dir", str(tmp / "r")),
        ]
    )
    # the replicate trains every kind; with a transfer set, "no_transfer" is a training too
    assert KINDS == ("scratch", "kd", "no_transfer")
    main_s, main_k, rep_s, rep_k, rep_nt = calls
    point = parse_point("2-0.5-response")
    n_transfer = params.distill.transfer_images
    cases = (
        (main_s, rep_s, "scratch", "scratch", None, True),
        (main_k, rep_k, "kd", "kd", point, True),
        (main_k, rep_nt, "kd", "no_transfer", point, False),  # the ablation at this seed
    )
    for main, rep, main_kind, kind, pt, with_transfer in cases:
        # the training loop gets the same recipe except the seed, and the same augmentation seed
        assert rep["augment_seed"] == main["augment_seed"] == params.train.seed
        assert rep["cfg"]["seed"] == seed and main["cfg"]["seed"] == params.train.seed
        assert {**rep["cfg"], "seed": None} == {**main["cfg"], "seed": None}
        assert rep["teacher"] == main["teacher"] == (pt is not None)
        # KD runs (main and replicate) train on the train split + the transfer set; the
        # no_transfer replicate on the train split alone
        assert main["train_len"] == 8 + (pt is not None) * n_transfer
        assert rep["train_len"] == 8 + (pt is not None and with_transfer) * n_transfer
        assert not torch.equal(rep["init"], main["init"])  # the seed changes the init
        # checkpoint metadata: equal apart from the seed (and the hash that covers it) and, for
        # no_transfer, the transfer set
        m = _meta(tmp / "main" / f"{main_kind}.pt")
        r = _meta(tmp / "rep" / f"{kind}.pt")
        assert r.pop("seed") == seed
        assert r.pop("params_hash") != m.pop("params_hash") or pytest.fail("hash ignores seed")
        if not with_transfer:
            assert (m.pop("transfer_images"), r.pop("transfer_images")) == (n_transfer, 0)
        assert r == m
        # the hash function reproduces the main run's hash when given the main seed
        assert (
            replicate_hash(params, params.train.seed, pt)
            == _meta(tmp / "main" / f"{main_kind}.pt")["params_hash"]
        )
        rep_hash = replicate_hash(params, seed, pt, with_transfer)
        assert rep_hash == _meta(tmp / "rep" / f"{kind}.pt")["params_hash"]
        assert (tmp / "r" / kind / "summary.json").is_file()
        assert (tmp / "r" / kind / "val_predictions.csv").is_file()
    assert torch.equal(rep_nt["init"], rep_k["init"])  # same seed: same initial weights
    assert replicate_hash(params, seed, point, False) != replicate_hash(params, seed, point)
    assert replicate_hash(params, seed, None) != replicate_hash(params, seed + 1, None)


def test_transfer_ablation_differs_from_the_selected_run_only_by_the_transfer_set(
    workspace,
) -> None:
    tmp, params, calls = workspace
    common = ["--params", str(TINY), "--cache-dir", str(tmp / "cache")]
    teacher = ("--teacher-outputs", str(tmp / "teacher_outputs.h5"))
    _stage("distill")(
        [
            *common,
            *("--point", "2-0.5-response"),
            *teacher,
            *("--transfer", str(tmp / "transfer.h5")),
            *("--checkpoint", str(tmp / "main/kd.pt"), "--metrics-dir", str(tmp / "m/k")),
        ]
    )
    _stage("transfer_ablation")(
        [
            *common,
            *("--selected", str(tmp / "selected_student.json"), *teacher),
            *("--distill-dir", str(tmp / "main"), "--runs-dir", str(tmp / "m")),
            *("--checkpoint", str(tmp / "abl/kd.pt"), "--metrics-dir", str(tmp / "a")),
        ]
    )
    main, ablation = calls
    assert main["train_len"] == 8 + params.distill.transfer_images and ablation["train_len"] == 8
    assert ablation["cfg"] == main["cfg"] and ablation["augment_seed"] == main["augment_seed"]
    assert torch.equal(ablation["init"], main["init"])  # same seed: same initial weights
    m, a = _meta(tmp / "main/kd.pt"), _meta(tmp / "abl/kd.pt")
    assert m.pop("transfer_images") == params.distill.transfer_images
    assert a.pop("transfer_images") == 0
    point = parse_point("2-0.5-response")
    assert a.pop("params_hash") == replicate_hash(params, params.train.seed, point, False)
    assert m.pop("params_hash") == replicate_hash(params, params.train.seed, point)
    assert a == m
    assert read_json(tmp / "a" / "summary.json")["transfer_images"] == 0


def test_without_a_transfer_set_the_no_transfer_runs_are_copies(workspace) -> None:
    """``distill.transfer_images: 0``: a "without transfer set" run would repeat its KD run
    exactly (same hash), so the ablation and the replicate's no_transfer run are byte copies of
    the KD runs and nothing is trained twice."""
    tmp, _, calls = workspace
    raw = _raw()
    raw["distill"]["transfer_images"] = 0
    params_file = tmp / "params_no_transfer.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(params_file)
    _teacher_outputs(tmp / "teacher_nt.h5", params.student.epochs, 0)
    point = parse_point("2-0.5-response")
    assert replicate_hash(params, params.train.seed, point, False) == replicate_hash(
        params, params.train.seed, point
    )
    common = ["--params", str(params_file), "--cache-dir", str(tmp / "cache")]
    teacher = ("--teacher-outputs", str(tmp / "teacher_nt.h5"))
    transfer = ("--transfer", str(tmp / "transfer.h5"))
    selected = ("--selected", str(tmp / "selected_student.json"))
    distill_dir, runs_dir = tmp / "distill", tmp / "runs"
    _stage("distill")(
        [
            *common,
            *("--point", point.key, *teacher, *transfer),
            *("--checkpoint", str(distill_dir / f"{point.key}.pt")),
            *("--metrics-dir", str(runs_dir / point.key)),
        ]
    )
    assert len(calls) == 1 and calls[0]["train_len"] == 8
    _stage("transfer_ablation")(
        [
            *common,
            *(*selected, *teacher),
            *("--distill-dir", str(distill_dir), "--runs-dir", str(runs_dir)),
            *("--checkpoint", str(tmp / "abl/kd.pt"), "--metrics-dir", str(tmp / "a")),
        ]
    )
    assert len(calls) == 1  # copied, not trained
    main = (distill_dir / f"{point.key}.pt", runs_dir / point.key)
    assert (tmp / "abl/kd.pt").read_bytes() == main[0].read_bytes()
    for name in ("summary.json", "val_predictions.csv"):
        assert (tmp / "a" / name).read_bytes() == (main[1] / name).read_bytes()
    assert (tmp / "a/live").is_dir()

    seed = params.train.seed + 1
    _stage("replicate")(
        [
            *common,
            *("--seed", str(seed), *selected, *teacher, *transfer),
            *("--out-dir", str(tmp / "rep"), "--metrics-dir", str(tmp / "r")),
        ]
    )
    assert [c["desc"].split(": ")[-1] for c in calls[1:]] == ["scratch", f"KD {point.key}"]
    assert (tmp / "rep/no_transfer.pt").read_bytes() == (tmp / "rep/kd.pt").read_bytes()
    for name in ("summary.json", "val_predictions.csv"):
        assert (tmp / "r/no_transfer" / name).read_bytes() == (tmp / "r/kd" / name).read_bytes()
    assert _meta(tmp / "rep/kd.pt")["params_hash"] == replicate_hash(params, seed, point, False)


def test_replicate_refuses_the_main_seed(workspace, capsys: pytest.CaptureFixture[str]) -> None:
    tmp, params, _ = workspace
    with pytest.raises(SystemExit):
        _stage("replicate")(
            [
                *("--params", str(TINY), "--cache-dir", str(tmp / "cache")),
                *(
                    "--seed",
                    str(params.train.seed),
                    "--selected",
                    str(tmp / "selected_student.json"),
                ),
                *("--teacher-outputs", str(tmp / "teacher_outputs.h5")),
                *("--transfer", str(tmp / "transfer.h5")),
                *("--out-dir", str(tmp / "rep"), "--metrics-dir", str(tmp / "r")),
            ]
        )
    assert "is train.seed" in capsys.readouterr().err
    assert not (tmp / "rep").exists()


# --------------------------------------------------------------------------- evaluate + report

RAW_REPS = {**SMALL, "replicates": {"seeds": [1, 2]}}


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def test_report_shows_mean_sd_over_seeds_and_both_paired_lines(tmp_path: Path) -> None:
    specs, preds = make_predictions(RAW_REPS)
    names = [s.name for s in specs]
    assert {"student_scratch_seed1", "kd_selected_seed2", "kd_selected_no_transfer_seed2"} <= set(
        names
    )
    rep = next(s for s in specs if s.name == "kd_selected_seed2")
    assert rep.path == Path("models/replicates/2/kd.pt")
    rep = next(s for s in specs if s.name == "kd_selected_no_transfer_seed2")
    assert rep.path == Path("models/replicates/2/no_transfer.pt")
    assert (rep.seed, rep.base) == (2, "no_transfer")
    ev = evaluate_all(specs, preds, SELECTED, CFG, teacher="teacher_resnet18")  # SMALL's only
    save_evaluation(
        ev, EvaluationFiles(tmp_path / "metrics/evaluate", tmp_path / "metrics/predictions")
    )
    write_plot_data(ev, tmp_path / "plots", curves=False)
    write_json(tmp_path / "metrics/export/student_kd.json", {"native_size_mb": 6.08})
    write_json(tmp_path / "metrics/quantize.json", {"int8_size_mb": 1.85})
    params = {**RAW_REPS, "evaluate": CFG.model_dump()}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp_path / "reports/summary.md"
    args = {
        "--params": "params.yaml",
        "--eval-dir": "metrics/evaluate",
        "--baselines": "metrics/baselines.json",
        "--benchmark": "",
        "--plots-dir": "plots",
        "--out": "reports/summary.md",
        "--export-metrics": "metrics/export/student_kd.json",
        "--quantize-metrics": "metrics/quantize.json",
        "--headline": "metrics/headline.json",
    }
    argv = [a for kv in args.items() for a in (kv[0], str(tmp_path / kv[1]) if kv[1] else "")]
    _stage("report")(argv)
    text = out.read_text(encoding="utf-8")

    m = {p.stem: read_json(p) for p in (tmp_path / "metrics/evaluate/models").glob("*.json")}
    groups = {
        "student from scratch": [
            "student_scratch",
            "student_scratch_seed1",
            "student_scratch_seed2",
        ],
        "(selected on val)": [SELECTED, "kd_selected_seed1", "kd_selected_seed2"],
    }
    section = text.split("## Seed replicates (holdout)")[1].split("\n## ")[0]
    for label, models in groups.items():
        row = next(line for line in section.splitlines() if line.startswith("|") and label in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "3"
        assert cells[2] == _mean_sd([m[n]["roc_auc"] for n in models])
        assert cells[3] == _mean_sd([m[n]["pauc"] for n in models])
        assert cells[4] == f"{m[models[0]]['roc_auc']:.4f}"  # the single-seed main run
    gain_row = next(line for line in section.splitlines() if "KD − scratch" in line)
    scratch_models, kd_models = groups.values()
    per_seed = [
        m[k]["roc_auc"] - m[s]["roc_auc"] for s, k in zip(scratch_models, kd_models, strict=True)
    ]
    mean, sd = np.mean(per_seed), np.std(per_seed, ddof=1)
    shown = f"{mean:+.4f}".replace("-", "−") + f" ± {sd:.4f}"
    assert shown in gain_row.split("|")[3], gain_row
    seeds_json = read_json(tmp_path / "metrics/evaluate/seed_replicates.json")
    assert seeds_json["n_seeds"] == 3
    assert seeds_json["kd_pauc_mean"] == pytest.approx(
        np.mean([m[n]["pauc"] for n in groups["(selected on val)"]]), abs=1e-6
    )

    # the comparisons pooled over the three seeds: Δ is the mean per-seed paired difference
    pooled = read_json(tmp_path / "metrics/evaluate/pooled.json")
    no_transfer = [NO_TRANSFER, "kd_selected_no_transfer_seed1", "kd_selected_no_transfer_seed2"]
    teacher = ev.roles["best_teacher"]
    pooled_part = text.split("## Comparisons pooled over seeds (headline)")[1].split("\n## ")[0]
    for key, title, a_models, b_models in (
        ("kd_gain", "KD gain:", kd_models, scratch_models),
        ("student_vs_teacher", "Student vs teacher:", kd_models, [teacher] * 3),
        ("transfer", "Transfer set:", kd_models, no_transfer),
    ):
        assert pooled[key]["a_models"] == ",".join(a_models)
        assert pooled[key]["b_models"] == ",".join(dict.fromkeys(b_models))
        row = next(
            line
            for line in pooled_part.splitlines()
            if line.startswith(f"| {title}") and "| ROC-AUC |" in line
        )
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "3"
        delta = np.mean(
            [m[x]["roc_auc"] - m[y]["roc_auc"] for x, y in zip(a_models, b_models, strict=True)]
        )
        assert float(cells[3].replace("−", "-")) == pytest.approx(delta, abs=1e-4), row
        assert cells[7] == f"{pooled[key]['roc_auc_mde']:.4f}"

    line = re.compile(
        r"^- ΔROC-AUC = ([+−]\d\.\d{4}) \(95 % CI [+−]\d\.\d{4}\.\.[+−]\d\.\d{4}\), "
        r"p [=<] \d[^,]*, MDE \d\.\d{4} — ",
        re.M,
    )
    kd_part = text.split("## KD gain over the scratch student")[1].split("\n## ")[0]
    st_part = text.split("## Student vs teacher\n")[1].split("\n## ")[0]
    transfer = text.split("## Transfer set")[1].split("\n## ")[0]
    effect, without = transfer.split("KD gain without the transfer set:")
    assert "Effect of the transfer set" in effect
    for part, a, b in (
        (kd_part, SELECTED, "student_scratch"),
        (st_part, SELECTED, teacher),
        (effect, SELECTED, NO_TRANSFER),
        (without, NO_TRANSFER, "student_scratch"),
    ):
        found = line.search(part)
        assert found, part
        delta = m[a]["roc_auc"] - m[b]["roc_auc"]
        assert float(found.group(1).replace("−", "-")) == pytest.approx(delta, abs=1e-4)
        assert f"`{a}` minus `{b}`" in part
