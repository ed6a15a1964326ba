"""The markdown sections of ``reports/summary.md``.

One function per section — every model on holdout, the seed replicates, the paired comparisons,
the transfer set, the KD ablation, the teacher-vs-student error analysis, the baselines and the
plot links — each taking the :class:`melanoma_kd.report.ReportInputs` and returning its lines.
Fixed ordering, fixed number formats, no timestamps: unchanged inputs give identical bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from melanoma_kd import metrics as M
from melanoma_kd.catalog import (
    ONNX_FP32,
    ONNX_INT8,
    SCRATCH,
    STUDENT_STEM,
    TEACHER_ONNX_FP32,
    TEACHER_ONNX_INT8,
    TEACHER_STEM,
    ModelSpec,
)
from melanoma_kd.compare import verdict as compare_verdict
from melanoma_kd.errors import UserError
from melanoma_kd.markdown import DASH, ci, f4, mean_sd, p_value, signed, table

if TYPE_CHECKING:
    from melanoma_kd.report import ReportInputs

INT8_ROC_AUC_BUDGET = 0.01  # DESIGN.md: INT8 may lose at most this much holdout ROC-AUC
# The figures and plot data the plot stage writes, relative to its plots folder.
PLOT_LINKS: tuple[tuple[str, str], ...] = (
    ("ROC, precision-recall and reliability curves (key models)", "holdout_curves.png"),
    ("KD ablation heatmap (validation pAUC)", "kd_ablation.png"),
    ("Confidence distributions per class", "confidence.png"),
    ("Hard cases: teacher right, KD student wrong", "hard_cases/teacher_right_student_wrong.png"),
    ("Hard cases: KD student right, teacher wrong", "hard_cases/student_right_teacher_wrong.png"),
    ("Hard cases: KD student's most confident errors", "hard_cases/high_confidence_errors.png"),
)
PLOT_DATA: tuple[tuple[str, str], ...] = (
    ("ROC curves (fpr, tpr)", "roc"),
    ("precision-recall curves", "pr"),
    ("reliability tables", "reliability"),
    ("sensitivity / specificity / F1 vs threshold", "thresholds"),
    ("confusion records (each model's decision threshold)", "confusion"),
    ("training curves", "training"),
)
# Tables of the evaluation's folder: (title, EvaluationFiles attribute).
EVALUATION_TABLES: tuple[tuple[str, str], ...] = (
    ("KD ablation table", "ablation"),
    ("hard cases list", "hard_cases"),
)


def describe(spec: ModelSpec, selected: str, best_teacher: str) -> str:
    """Human description of a model row."""
    if spec.group == "teacher":
        arch = spec.name.removeprefix("teacher_")
        return f"teacher {arch}" + (
            " (best on val → error analysis)" if spec.name == best_teacher else ""
        )
    if spec.group == "scratch":
        return "student from scratch (KD baseline)"
    if spec.group == "kd" and spec.point is not None:
        return spec.point.label + (" **← selected on val**" if spec.name == selected else "")
    if spec.group == "replicate":
        base = {
            "scratch": "student from scratch",
            "kd": "selected KD point",
            "no_transfer": "selected KD point without transfer set",
        }[spec.base or "kd"]
        return f"{base}, seed {spec.seed} (replicate)"
    if spec.group == "ablation":
        return "selected KD point without transfer set (ablation)"
    if spec.name == ONNX_FP32:
        return "selected KD student, ONNX fp32"
    if spec.name == ONNX_INT8:
        return "selected KD student, ONNX INT8"
    if spec.name == TEACHER_ONNX_FP32:
        return f"best teacher ({best_teacher.removeprefix('teacher_')}), ONNX fp32"
    if spec.name == TEACHER_ONNX_INT8:
        return f"best teacher ({best_teacher.removeprefix('teacher_')}), ONNX INT8"
    return spec.group


def _bench_cell(
    inputs: ReportInputs, spec: ModelSpec, selected: str, best_teacher: str
) -> tuple[str, str, str]:
    """(size MB, ORT p50 ms at trained size, ORT p50 ms at deploy size) from the benchmark."""
    bench = inputs.benchmark
    if bench is None:
        return ("n/a", "n/a", "n/a")
    exported = {
        SCRATCH: (SCRATCH, "ort_fp32"),
        selected: (STUDENT_STEM, "ort_fp32"),
        ONNX_FP32: (STUDENT_STEM, "ort_fp32"),
        ONNX_INT8: (STUDENT_STEM, "ort_int8"),
        best_teacher: (TEACHER_STEM, "ort_fp32"),
        TEACHER_ONNX_FP32: (TEACHER_STEM, "ort_fp32"),
        TEACHER_ONNX_INT8: (TEACHER_STEM, "ort_int8"),
    }
    if spec.name not in exported:  # unselected grid points and teachers are not exported
        return (DASH, DASH, DASH)
    key, runtime = exported[spec.name]
    models = bench["models"]
    deploy = bench.get("settings", {}).get("deploy_size")

    def cell(entry_key: str, field: str) -> str:
        row = models.get(entry_key, {}).get(runtime)
        if not isinstance(row, dict):
            return DASH
        if field == "size_mb":
            return f"{row['size_mb']:.2f}" if "size_mb" in row else DASH
        t1 = row.get("threads_1", {})
        return f"{t1['p50_ms']:.3f}" if "p50_ms" in t1 else DASH

    deploy_cell = cell(f"{key}_{deploy}", "p50") if deploy is not None else DASH
    return (cell(key, "size_mb"), cell(key, "p50"), deploy_cell)


# --------------------------------------------------------------------------- sections


def models_section(inputs: ReportInputs, selected: str, best_teacher: str) -> list[str]:
    cfg = inputs.cfg
    sens = f"{cfg.sens_target:.0%}"
    any_m = inputs.metrics[inputs.specs[0].name]
    bench = inputs.benchmark
    deploy = bench.get("settings", {}).get("deploy_size") if bench else None
    kd_entry = (bench or {}).get("models", {}).get("student_kd")
    trained_px = kd_entry.get("image_size", "trained") if isinstance(kd_entry, dict) else "trained"
    header = [
        "model",
        "what",
        "ROC-AUC [95 % CI]",
        "pAUC [95 % CI]",
        "PR-AUC",
        "ECE raw → Platt",
        f"sens @ val {sens}-sens t",
        f"spec @ val {sens}-sens t",
        "F1 @ val max-F1 t",
        "size MB",
        f"p50 ms ({trained_px} px)",
        f"p50 ms ({deploy or 'deploy'} px)",
    ]
    rows = []
    for spec in inputs.specs:
        m = inputs.metrics[spec.name]
        size, p50, p50_deploy = _bench_cell(inputs, spec, selected, best_teacher)
        rows.append(
            [
                f"`{spec.name}`",
                describe(spec, selected, best_teacher),
                ci(m, "roc_auc"),
                ci(m, "pauc"),
                f4(m.get("pr_auc")),
                f"{f4(m.get('ece'))} → {f4(m.get('ece_calibrated'))}",
                f4(m.get("sens95_sensitivity")),
                f4(m.get("sens95_specificity")),
                f4(m.get("f1")),
                size,
                p50,
                p50_deploy,
            ]
        )
    lines = [
        "## Every model on holdout",
        "",
        f"Holdout: {any_m.get('n_holdout', DASH)} images, {any_m.get('n_holdout_melanoma', DASH)} "
        f"melanoma, {any_m.get('n_holdout_patients', DASH)} patients. 95 % CIs: percentile "
        f"bootstrap over **patients** ({cfg.n_boot} resamples, seed {cfg.seed}). pAUC: ISIC-2024 "
        f"partial AUC above {100 * M.PAUC_MIN_TPR:g} % TPR (range 0–{1 - M.PAUC_MIN_TPR:g}). ECE: "
        f"{cfg.ece_bins} equal-width bins, of the scores as output (raw) and after Platt scaling "
        "fitted on the model's **validation** scores (the map every exported ONNX model carries, "
        "so the `*_onnx_*` rows are calibrated already and their refit changes little). "
        "Thresholds are chosen on each model's **validation** "
        f"scores (the decision threshold: highest with sensitivity ≥ {cfg.sens_target:g}; and "
        "max-F1) — an exported ONNX model keeps the ones it carries — and applied unchanged "
        "to holdout.",
        "",
        *table(header, rows, "ll" + "r" * (len(header) - 2)),
        "",
    ]
    if bench is None and not inputs.benchmark_path:
        lines.append(
            "Size and latency come from the `benchmark` stage (`reports/deployment.md`, "
            "`metrics/benchmark.json`), whose deployment table puts the `*_onnx_*` rows above "
            "(best teacher and KD student, fp32 and INT8) next to their file size and latency at "
            "`benchmark.deploy_size` and marks the Pareto-optimal ones (figure: "
            "`plots/latency_pareto.png`). Timings are not bitwise reproducible, so they are kept "
            "out of this committed, verified summary by design; cells show n/a."
        )
    elif bench is None:
        lines.append(
            f"Size and latency: **missing** — `{inputs.benchmark_path}` not found "
            "(run the `benchmark` stage); cells show n/a."
        )
    else:
        lines.append(
            "Size = ONNX file (fp32 for the PyTorch rows, which are exported with a parity "
            "check; the INT8 file for the INT8 rows). Latency = ONNX Runtime CPU p50, batch 1, "
            f"1 thread, from `{inputs.benchmark_path}`. Unselected KD grid points share the "
            f"student architecture and are not exported, nor are the teachers other than the "
            f"best on validation ({DASH})."
        )
    return [*lines, ""]


def seeds_section(inputs: ReportInputs, selected: str) -> list[str]:
    sd = inputs.seeds
    if not sd:
        return []
    kd_spec = next((s for s in inputs.specs if s.name == selected), None)
    kd_what = describe(kd_spec, "", "") if kd_spec is not None else selected
    main = {"scratch": inputs.metrics.get(SCRATCH, {}), "kd": inputs.metrics.get(selected, {})}
    gain = inputs.kd_gain
    rows = []
    for base, what in (
        ("scratch", "student from scratch"),
        ("kd", f"{kd_what} (selected on val)"),
        ("gain", "KD − scratch, per seed"),
    ):
        if base == "gain":
            single = [signed(gain[f"{m}_delta"]) for m in ("roc_auc", "pauc")]
        else:
            single = [f4(main[base].get(m)) for m in ("roc_auc", "pauc")]
        rows.append(
            [
                what,
                str(sd.get("n_seeds", DASH)),
                *(
                    mean_sd(sd.get(f"{base}_{m}_mean"), sd.get(f"{base}_{m}_sd"), base == "gain")
                    for m in ("roc_auc", "pauc")
                ),
                *single,
            ]
        )
    header = [
        "model",
        "seeds",
        "holdout ROC-AUC mean ± sd",
        "holdout pAUC mean ± sd",
        "main run ROC-AUC",
        "main run pAUC",
    ]
    reps = sd.get("replicate_seeds") or DASH
    return [
        "## Seed replicates (holdout)",
        "",
        f"The main run (`train.seed`) plus replicate seeds {reps} (`replicates.seeds`), each "
        "retrained with only the init/shuffle seed changed (same data, augmented views and "
        "cached teacher outputs; the KD point is the one selected on validation). mean ± sd: "
        "sample sd (n − 1) over the seeds. The single-seed grid points are in the table above "
        "and the ablation below.",
        "",
        *table(header, rows, "lr" + "r" * 4),
        "",
    ]


def _paired_lines(g: Mapping[str, Any], a: str, b: str, n_perm_default: int) -> list[str]:
    """``a`` minus ``b``: one ``Δ (95 % CI lo..hi), p`` line per metric, whatever the sign."""
    n_perm = int(g.get("n_perm", n_perm_default))
    out = [
        f"`{g[a]}` minus `{g[b]}` on the same holdout images, one seed "
        f"(paired; 95 % CI: bootstrap over patients, {int(g.get('n_boot', n_perm))} resamples; "
        "p: two-sided paired permutation test; MDE: the smallest true difference this "
        "comparison detects with 80 % power at α = 0.05):",
        "",
    ]
    for metric, label in (("roc_auc", "ΔROC-AUC"), ("pauc", "ΔpAUC")):
        if f"{metric}_delta" not in g:
            continue
        lo, hi = g[f"{metric}_delta_ci_lo"], g[f"{metric}_delta_ci_hi"]
        out.append(
            f"- {label} = {signed(g[f'{metric}_delta'])} (95 % CI {signed(lo)}..{signed(hi)}), "
            f"{p_value(float(g[f'{metric}_p']), n_perm)}, {_mde(g.get(f'{metric}_mde'))} — "
            f"{verdict(lo, hi, float(g[f'{metric}_p']), f'`{g[a]}`', f'`{g[b]}`')}"
        )
    return [*out, ""]


def _mde(value: Any) -> str:
    return f"MDE {value:.4f}" if isinstance(value, int | float) else f"MDE {DASH}"


def verdict(lo: float, hi: float, p: float, a: str, b: str) -> str:
    """:func:`melanoma_kd.compare.verdict` of ``a − b`` (CI excludes 0 and p < 0.05, else
    "within noise"), with the models named."""
    said = compare_verdict(lo, hi, p)
    return {"A better": f"{a} better", "B better": f"{b} better"}.get(said, said)


POOLED_TITLES: dict[str, tuple[str, str, str]] = {
    # comparison -> (title, A, B)
    "kd_gain": ("KD gain", "selected KD student", "scratch student"),
    "student_vs_teacher": ("Student vs teacher", "selected KD student", "best teacher"),
    "transfer": ("Transfer set", "KD with transfer set", "KD without it"),
}


def pooled_section(inputs: ReportInputs) -> list[str]:
    """The comparisons pooled over seeds: the headline numbers (the single-seed ones below
    are detail)."""
    pooled = inputs.pooled
    if not pooled:
        return []
    any_p = next(iter(pooled.values()))
    n_boot = int(any_p.get("n_boot", inputs.cfg.n_boot))
    rows = []
    for key, (title, a, b) in POOLED_TITLES.items():
        g = pooled.get(key)
        if not g:
            continue
        for metric, label in (("roc_auc", "ROC-AUC"), ("pauc", "pAUC")):
            lo, hi = g[f"{metric}_ci_lo"], g[f"{metric}_ci_hi"]
            rows.append(
                [
                    f"{title}: {a} − {b}",
                    label,
                    str(g["n_seeds"]),
                    signed(g[f"{metric}_delta"]),
                    f"{signed(lo)}..{signed(hi)}",
                    f"±{(hi - lo) / 2:.4f}",
                    p_value(float(g[f"{metric}_p"]), int(g.get("n_perm", n_boot))).removeprefix(
                        "p = "
                    ),
                    f"{g[f'{metric}_mde']:.4f}",
                    verdict(lo, hi, float(g[f"{metric}_p"]), a, b),
                ]
            )
    header = ["comparison", "metric", "seeds", "Δ", "95 % CI", "CI half-width", "p", "MDE", ""]
    return [
        "## Comparisons pooled over seeds (headline)",
        "",
        "Each seed trains both models on the same data and augmented views; Δ is the mean over "
        "seeds of the paired per-seed difference on the same holdout images. 95 % CI: two-level "
        f"bootstrap ({n_boot} resamples of patients, then of seeds); p: two-sided paired "
        "permutation test swapping the two models per patient in every seed at once; MDE: the "
        "smallest true Δ detectable with 80 % power at α = 0.05 (2.80 × bootstrap SE). "
        '"within noise" unless the CI excludes zero and p < 0.05 (the rule of `melanoma-kd '
        "compare`). The single-seed comparisons below are detail.",
        "",
        *table(header, rows, "llrrrrrrl"),
        "",
    ]


HAIR_ARMS: dict[str, str] = {
    "none": "no hair removal",
    "reference": "reference detector",
    "shape": "shape detector",
}
HAIR_ROLES: dict[str, str] = {"student": "scratch student", "teacher": "best teacher"}


def hair_section(inputs: ReportInputs) -> list[str]:
    """The hair-removal ablation (``metrics/hair_effect.json``): each arm's scratch student and
    best teacher over seeds, and every pair of arms compared, pooled over seeds."""
    h = inputs.hair_effect
    if h is None:
        return []
    title = "## Hair removal: effect on the classifier"
    if not h.get("arms"):
        return [title, "", "Not run: `hair_ablation.arms` is empty.", ""]
    main, n_boot = h["main_arm"], int(h["n_boot"])
    arms = h["arms"].split(",")
    means, rows = [], []
    for role, who in HAIR_ROLES.items():
        for arm in arms:
            a = h[role]["arms"][arm]
            label = HAIR_ARMS[arm] + (" (main pipeline)" if arm == main else "")
            means.append(
                [
                    who,
                    label,
                    *(mean_sd(a[f"{m}_mean"], a[f"{m}_sd"]) for m in ("roc_auc", "pauc")),
                ]
            )
        for c in h[role]["comparisons"].values():
            what = f"{who}: {HAIR_ARMS[c['a']]} − {HAIR_ARMS[c['b']]}"
            for metric, name in (("roc_auc", "ROC-AUC"), ("pauc", "pAUC")):
                lo, hi, pv = c[f"{metric}_ci_lo"], c[f"{metric}_ci_hi"], c[f"{metric}_p"]
                rows.append(
                    [
                        what,
                        name,
                        signed(c[f"{metric}_delta"]),
                        f"{signed(lo)}..{signed(hi)}",
                        p_value(float(pv), n_boot).removeprefix("p = "),
                        f"{c[f'{metric}_mde']:.4f}",
                        verdict(lo, hi, float(pv), HAIR_ARMS[c["a"]], HAIR_ARMS[c["b"]]),
                    ]
                )
    teacher = h.get("teacher_arch", DASH)
    return [
        title,
        "",
        f"The scratch student and the best teacher (`{teacher}`, chosen on validation) retrained "
        f"on images preprocessed each way — {', '.join(HAIR_ARMS[a] for a in arms)} — at seeds "
        f"{h['seeds'].replace(',', ', ')} (`hair_ablation`); only the images differ (same "
        "recipe, seeds and augmented views). Each model is scored on its own preprocessing of "
        "the same "
        f"{h['n_holdout']} holdout images ({h['n_holdout_melanoma']} melanoma). Δ: mean over seeds "
        f"of the paired per-seed difference; 95 % CI: two-level bootstrap ({n_boot} resamples of "
        "patients, then of seeds); p: patient-level paired permutation test; MDE: 2.80 × SE. "
        '"within noise" unless the CI excludes zero and p < 0.05.',
        "",
        *table(
            ["model", "preprocessing", "holdout ROC-AUC mean ± sd", "holdout pAUC mean ± sd"],
            means,
            "llrr",
        ),
        "",
        *table(["comparison", "metric", "Δ", "95 % CI", "p", "MDE", ""], rows, "llrrrrl"),
        "",
    ]


def kd_gain_section(inputs: ReportInputs) -> list[str]:
    out = ["## KD gain over the scratch student", ""]
    out += _paired_lines(inputs.kd_gain, "kd_model", "scratch_model", inputs.cfg.n_boot)
    if inputs.student_vs_teacher:
        out += ["## Student vs teacher", ""]
        out += _paired_lines(
            inputs.student_vs_teacher, "student_model", "teacher_model", inputs.cfg.n_boot
        )
    return out


def transfer_section(inputs: ReportInputs) -> list[str]:
    tr = inputs.transfer
    if not tr:
        return []

    def part(prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in tr.items() if k.startswith(prefix)} | tr

    n = int(tr.get("transfer_images", 0))
    out = [
        "## Transfer set",
        "",
        f"{n} unlabelled images (`distill.transfer_images`; a new generator draw for synthetic "
        "data, never a labelled image) are added to every KD run's training set, with the "
        "distillation term only. The KD point selected on validation is retrained without them "
        f"(`{tr['no_transfer_model']}`, same seed and teacher outputs)."
        + (" With 0 transfer images both runs are the same training." if n == 0 else ""),
        "",
        "Effect of the transfer set:",
        "",
    ]
    out += _paired_lines(part("effect_"), "kd_model", "no_transfer_model", inputs.cfg.n_boot)
    out += ["KD gain without the transfer set:", ""]
    out += _paired_lines(
        part("gain_without_"), "no_transfer_model", "scratch_model", inputs.cfg.n_boot
    )
    return out


def ablation_section(inputs: ReportInputs, selected: str) -> list[str]:
    ab = inputs.ablation
    scratch_val = inputs.metrics[SCRATCH]["val_pauc"] if SCRATCH in inputs.metrics else None
    header = [
        "T",
        "α",
        "method",
        "val ROC-AUC",
        "val pAUC",
        "Δ val pAUC vs scratch",
        "val PR-AUC",
        "selected",
    ]
    rows = []
    for _, r in ab.iterrows():
        delta = signed(r["val_pauc"] - scratch_val) if scratch_val is not None else DASH
        t = r["temperature"]
        rows.append(
            [
                DASH if pd.isna(t) or t in ("", "nan") else str(t),
                str(r["alpha"]),
                str(r["method"]),
                f4(r["val_roc_auc"]),
                f4(r["val_pauc"]),
                delta,
                f4(r["val_pr_auc"]),
                "**yes**" if bool(r["selected"]) else "",
            ]
        )
    flagged = ab.loc[ab["selected"].astype(bool), "model"].tolist()
    if flagged != [selected]:
        raise UserError(
            f"KD ablation table marks {flagged} as selected, error analysis uses "
            f"{selected!r}; rerun the evaluate stage"
        )
    return [
        "## KD ablation (validation split)",
        "",
        f"Every grid point on the **validation** split. `{selected}` was selected by the "
        "select_student stage on validation pAUC (ties: validation ROC-AUC, then name); "
        "holdout numbers played no part in the choice. "
        f"Scratch student validation pAUC: {f4(scratch_val)}. "
        "The grid: response KD (`(1-α)·CE + α·T²·KL` of the softened outputs) over "
        "temperature × α (`distill.response`), feature KD (`(1-α)·CE + α·MSE` of adapted "
        "pooled stage features) over α only (`distill.feature`): it has no temperature, so "
        "it is trained once per α, never once per T.",
        "",
        *table(header, rows, "lll" + "r" * 4 + "l"),
        "",
    ]


def error_section(inputs: ReportInputs) -> list[str]:
    e = inputs.error_analysis
    n = int(e["n"])

    def pct(k: str) -> str:
        return f"{int(e[k])} ({100.0 * int(e[k]) / n:.1f} %)"

    rows = [
        ["images", str(n)],
        ["agreement (same prediction)", f"{100.0 * float(e['agreement']):.1f} %"],
        ["both right", pct("both_right")],
        ["teacher right only", pct("teacher_only_right")],
        ["student right only", pct("student_only_right")],
        ["both wrong", pct("both_wrong")],
        ["… both missed a melanoma", pct("both_missed_melanoma")],
        ["… both false alarm", pct("both_false_alarm")],
        [
            "teacher / student accuracy",
            f"{f4(e['teacher_accuracy'])} / {f4(e['student_accuracy'])}",
        ],
        ["McNemar exact p (discordant pairs)", f"{float(e['mcnemar_p']):.3g}"],
    ]
    out = [
        "## Teacher vs KD student error analysis (holdout)",
        "",
        f"Best teacher `{e['teacher']}` (highest validation pAUC) vs selected KD student "
        f"`{e['student']}`, each deciding at its own decision threshold (the highest with "
        f"sensitivity ≥ {inputs.cfg.sens_target:g} on its validation scores, as deployed): "
        f"teacher {f4(e['teacher_threshold'])}, student {f4(e['student_threshold'])}.",
        "",
        *table(["", "count"], rows, "lr"),
        "",
    ]
    if "int8_roc_auc_drop" in e:
        drop = float(e["int8_roc_auc_drop"])
        verdict = "within" if drop <= INT8_ROC_AUC_BUDGET else "**outside**"
        out += [
            "### INT8 vs fp32 (ONNX, holdout)",
            "",
            f"- ROC-AUC drop fp32 → INT8: {signed(drop)} ({verdict} the "
            f"{INT8_ROC_AUC_BUDGET:g} budget of DESIGN.md)",
            f"- pAUC drop: {signed(float(e['int8_pauc_drop']))}",
            f"- max |P(fp32) − P(INT8)| over holdout images: {f4(e['int8_max_abs_score_diff'])}",
            f"- max |P(ONNX fp32) − P(PyTorch)|: {f4(e['onnx_fp32_max_abs_score_diff_vs_torch'])}",
            "",
        ]
    return out


def baselines_section(inputs: ReportInputs) -> list[str]:
    out = ["## Baselines: hand-crafted features + scikit-learn (holdout)", ""]
    b = inputs.baselines
    if b is None:
        return [
            *out,
            f"**Missing** — `{inputs.baselines_path}` not found (run the `baselines` stage).",
            "",
        ]
    models = {k: v for k, v in b.items() if isinstance(v, dict)}
    if not models:
        return [*out, f"**Missing** — `{inputs.baselines_path}` holds no model.", ""]
    header = ["baseline", "ROC-AUC", "pAUC", "PR-AUC", "ECE", "sens @ val t", "spec @ val t", "F1"]
    rows = [
        [
            f"`{name}`",
            f4(m.get("roc_auc")),
            f4(m.get("pauc")),
            f4(m.get("pr_auc")),
            f4(m.get("ece")),
            f4(m.get("sens95_sensitivity")),
            f4(m.get("sens95_specificity")),
            f4(m.get("f1")),
        ]
        for name, m in sorted(models.items())
    ]
    n_feat = b.get("n_features")
    intro = f"From `{inputs.baselines_path}`" + (f" ({n_feat} features)." if n_feat else ".")
    return [
        *out,
        intro + " Same splits and validation-chosen thresholds.",
        "",
        *table(header, rows, "l" + "r" * 7),
        "",
    ]


def plots_section(inputs: ReportInputs, report_dir: Path) -> list[str]:
    out = ["## Plots", ""]
    for title, rel in PLOT_LINKS:
        path = inputs.plots_dir / rel
        link = Path(os.path.relpath(path, report_dir)).as_posix()
        if path.exists():
            out.append(f"### {title}\n\n![{title}]({link})\n")
        else:
            out.append(f"### {title}\n\n**Missing** — `{path.as_posix()}` not found.\n")
    out += [
        "Plot data for `dvc plots show` / `dvc plots diff` (key models: best teacher, "
        "scratch student, KD student, KD student INT8):",
        "",
    ]
    paths = [(title, inputs.plots_dir / rel) for title, rel in PLOT_DATA]
    paths += [(title, getattr(inputs.files, attr)) for title, attr in EVALUATION_TABLES]
    for title, path in paths:
        link = Path(os.path.relpath(path, report_dir)).as_posix()
        state = "" if path.exists() else " — **missing**"
        out.append(f"- [{title}]({link}){state}")
    return [*out, ""]
