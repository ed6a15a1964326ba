"""``reports/summary.md``: one markdown summary of the evaluation, generated from pipeline outputs.

Every number comes from a file written by an earlier stage (per-model holdout metrics, error
analysis, paired comparisons — KD gain, student vs teacher —, the seed-replicate summary, KD
ablation table, and — when present — scikit-learn baselines and the latency benchmark); nothing
is typed by hand. The text is deterministic: fixed ordering, fixed
number formats, no timestamps, so an unchanged pipeline gives a byte-identical report.
Optional inputs that are absent are named in the report instead of being silently left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from melanoma_kd.catalog import ONNX_FP32, ONNX_INT8, SCRATCH, ModelSpec
from melanoma_kd.config import EvaluateParams
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path, read_json

DASH = "—"
# The figures and plot data the evaluate stage writes, relative to its plots folder.
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
    ("confusion records (val-chosen 95 %-sensitivity threshold)", "confusion"),
    ("training curves (dvclive)", "training"),
    ("KD ablation table", "kd_ablation.csv"),
    ("hard cases list", "hard_cases.csv"),
)


@dataclass
class ReportInputs:
    """Everything the report shows, already read from disk."""

    specs: list[ModelSpec]
    metrics: dict[str, dict[str, Any]]
    error_analysis: dict[str, Any]
    kd_gain: dict[str, Any]
    ablation: pd.DataFrame
    cfg: EvaluateParams
    baselines: dict[str, Any] | None = None
    benchmark: dict[str, Any] | None = None
    baselines_path: str = "metrics/baselines.json"
    benchmark_path: str = "metrics/benchmark.json"
    plots_dir: Path = Path("plots")
    student_vs_teacher: dict[str, Any] | None = None
    seeds: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None


# --------------------------------------------------------------------------- reading


def read_required(path: Path, what: str, stage: str = "evaluate") -> Any:
    """A JSON input the report cannot do without; a clear error naming the stage that writes it."""
    if not path.is_file():
        raise UserError(f"{path}: not found ({what}; run the {stage} stage)")
    return read_json(path)


def _read_optional(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def load_inputs(
    specs: Sequence[ModelSpec],
    cfg: EvaluateParams,
    *,
    metrics_dir: str | Path,
    error_analysis: str | Path,
    kd_gain: str | Path,
    ablation: str | Path,
    baselines: str | Path,
    benchmark: str | Path,
    plots_dir: str | Path,
    student_vs_teacher: str | Path | None = None,
    seeds: str | Path | None = None,
    transfer: str | Path | None = None,
) -> ReportInputs:
    """Read the evaluate stage's outputs (required; the student-vs-teacher comparison and the
    seed-replicate summary when their paths are given) and baselines/benchmark (optional)."""
    metrics = {
        s.name: read_required(Path(metrics_dir) / f"{s.name}.json", f"metrics of {s.name}")
        for s in specs
    }
    ablation_path = Path(ablation)
    if not ablation_path.is_file():
        raise UserError(f"{ablation_path}: not found (KD ablation table; run the evaluate stage)")
    bench = _read_optional(Path(benchmark)) if str(benchmark) else None
    if bench is not None and not isinstance(bench.get("models"), dict):
        raise UserError(f"{benchmark}: expected a 'models' object (written by the benchmark stage)")
    return ReportInputs(
        specs=list(specs),
        metrics=metrics,
        error_analysis=read_required(Path(error_analysis), "error analysis"),
        kd_gain=read_required(Path(kd_gain), "KD gain"),
        ablation=pd.read_csv(ablation_path, dtype={"temperature": str, "alpha": str}),
        cfg=cfg,
        baselines=_read_optional(Path(baselines)),
        benchmark=bench,
        baselines_path=str(baselines),
        benchmark_path=str(benchmark),
        plots_dir=Path(plots_dir),
        student_vs_teacher=(
            None
            if student_vs_teacher is None
            else read_required(Path(student_vs_teacher), "student vs teacher comparison")
        ),
        seeds=None if seeds is None else read_required(Path(seeds), "seed-replicate summary"),
        transfer=(
            None if transfer is None else read_required(Path(transfer), "transfer-set ablation")
        ),
    )


# --------------------------------------------------------------------------- formatting


def f4(v: Any) -> str:
    """A number with 4 decimals, or a dash when absent/not finite."""
    if v is None or isinstance(v, bool):
        return DASH
    try:
        x = float(v)
    except (TypeError, ValueError):
        return DASH
    return f"{x:.4f}" if math.isfinite(x) else DASH


def signed(v: float) -> str:
    """``+0.0123`` / ``−0.0123`` (typographic minus)."""
    return f"{v:+.4f}".replace("-", "−")


def p_value(p: float, n_perm: int) -> str:
    """``p = 0.0123``; flagged when it is the smallest value ``n_perm`` permutations can give."""
    floor = 1.0 / (n_perm + 1)
    if p <= floor * (1 + 1e-6):
        return f"p = {p:.3g} (the smallest value {n_perm} permutations can give)"
    return f"p = {p:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Markdown table; ``align`` has one ``l``/``r`` per column."""
    seps = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(seps) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _ci(m: Mapping[str, Any], key: str) -> str:
    return f"{f4(m.get(key))} [{f4(m.get(key + '_ci_lo'))}, {f4(m.get(key + '_ci_hi'))}]"


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
        t, a, method = spec.point
        return f"KD {method}, T={t}, α={a}" + (
            " **← selected on val**" if spec.name == selected else ""
        )
    if spec.group == "replicate":
        base = "student from scratch" if spec.base == "scratch" else "selected KD point"
        return f"{base}, seed {spec.seed} (replicate)"
    if spec.group == "ablation":
        return "selected KD point without transfer set (ablation)"
    if spec.name == ONNX_FP32:
        return "selected KD student, ONNX fp32"
    if spec.name == ONNX_INT8:
        return "selected KD student, ONNX INT8"
    return spec.group


def _bench_cell(inputs: ReportInputs, spec: ModelSpec, selected: str) -> tuple[str, str, str]:
    """(size MB, ORT p50 ms at trained size, ORT p50 ms at deploy size) from the benchmark."""
    bench = inputs.benchmark
    if bench is None:
        return ("n/a", "n/a", "n/a")
    if spec.group in ("teacher", "scratch"):
        key, runtime = spec.name, "ort_fp32"
    elif spec.name in (selected, ONNX_FP32):
        key, runtime = "student_kd", "ort_fp32"
    elif spec.name == ONNX_INT8:
        key, runtime = "student_kd", "ort_int8"
    else:  # unselected grid points are not exported
        return (DASH, DASH, DASH)
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


def _models_section(inputs: ReportInputs, selected: str, best_teacher: str) -> list[str]:
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
        "ECE",
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
        size, p50, p50_deploy = _bench_cell(inputs, spec, selected)
        rows.append(
            [
                f"`{spec.name}`",
                describe(spec, selected, best_teacher),
                _ci(m, "roc_auc"),
                _ci(m, "pauc"),
                f4(m.get("pr_auc")),
                f4(m.get("ece")),
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
        "partial AUC above 80 % TPR (range 0–0.2). ECE: "
        f"{cfg.ece_bins} equal-width bins. Thresholds are chosen on each model's **validation** "
        f"scores (highest threshold with sensitivity ≥ {cfg.sens_target:g}; max-F1) and applied "
        "unchanged to holdout.",
        "",
        *table(header, rows, "ll" + "r" * (len(header) - 2)),
        "",
    ]
    if bench is None and not inputs.benchmark_path:
        lines.append(
            "Size and latency come from the `benchmark` stage (`reports/deployment.md`, "
            "`metrics/benchmark.json`). Timings are not bitwise reproducible, so they are kept "
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
            "check; INT8 file for the INT8 row). Latency = ONNX Runtime CPU p50, batch 1, "
            f"1 thread, from `{inputs.benchmark_path}`. Unselected KD grid points share the "
            f"student architecture and are not exported ({DASH})."
        )
    return [*lines, ""]


def mean_sd(mean: Any, sd: Any, sign: bool = False) -> str:
    """``0.8123 ± 0.0123`` (``+0.0123 ± …`` with ``sign``; sd a dash when undefined)."""
    shown = signed(float(mean)) if sign and f4(mean) != DASH else f4(mean)
    return f"{shown} ± {f4(sd)}"


def _seeds_section(inputs: ReportInputs, selected: str) -> list[str]:
    sd = inputs.seeds
    if sd is None:
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
        f"`{g[a]}` minus `{g[b]}` on the same holdout images "
        f"(paired; 95 % CI: bootstrap over patients, {int(g.get('n_boot', n_perm))} resamples; "
        "p: two-sided paired permutation test):",
        "",
    ]
    for metric, label in (("roc_auc", "ΔROC-AUC"), ("pauc", "ΔpAUC")):
        if f"{metric}_delta" not in g:
            continue
        out.append(
            f"- {label} = {signed(g[f'{metric}_delta'])} (95 % CI "
            f"{signed(g[f'{metric}_delta_ci_lo'])}..{signed(g[f'{metric}_delta_ci_hi'])}), "
            f"{p_value(float(g[f'{metric}_p']), n_perm)}"
        )
    return [*out, ""]


def _kd_gain_section(inputs: ReportInputs) -> list[str]:
    out = ["## KD gain over the scratch student", ""]
    out += _paired_lines(inputs.kd_gain, "kd_model", "scratch_model", inputs.cfg.n_boot)
    if inputs.student_vs_teacher is not None:
        out += ["## Student vs teacher", ""]
        out += _paired_lines(
            inputs.student_vs_teacher, "student_model", "teacher_model", inputs.cfg.n_boot
        )
    return out


def _transfer_section(inputs: ReportInputs) -> list[str]:
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


def _ablation_section(inputs: ReportInputs, selected: str) -> list[str]:
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
        rows.append(
            [
                str(r["temperature"]),
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
        f"Every grid point on the **validation** split. `{selected}` was selected by the export "
        "stage on validation pAUC (ties: validation ROC-AUC, then name); holdout numbers "
        f"played no part in the choice. Scratch student validation pAUC: {f4(scratch_val)}. "
        "Feature KD (`(1-α)·CE + α·MSE` on pooled features) has no temperature, so its rows "
        "repeat across T by construction.",
        "",
        *table(header, rows, "lll" + "r" * 4 + "l"),
        "",
    ]


def _error_section(inputs: ReportInputs) -> list[str]:
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
        f"`{e['student']}`, each at its own validation-chosen max-F1 threshold "
        f"(teacher {f4(e['teacher_threshold'])}, student {f4(e['student_threshold'])}).",
        "",
        *table(["", "count"], rows, "lr"),
        "",
    ]
    if "int8_roc_auc_drop" in e:
        drop = float(e["int8_roc_auc_drop"])
        verdict = "within" if drop <= 0.01 else "**outside**"
        out += [
            "### INT8 vs fp32 (ONNX, holdout)",
            "",
            f"- ROC-AUC drop fp32 → INT8: {signed(drop)} ({verdict} the 0.01 budget of DESIGN.md)",
            f"- pAUC drop: {signed(float(e['int8_pauc_drop']))}",
            f"- max |P(fp32) − P(INT8)| over holdout images: {f4(e['int8_max_abs_score_diff'])}",
            f"- max |P(ONNX fp32) − P(PyTorch)|: {f4(e['onnx_fp32_max_abs_score_diff_vs_torch'])}",
            "",
        ]
    return out


def _baselines_section(inputs: ReportInputs) -> list[str]:
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


def _plots_section(inputs: ReportInputs, report_dir: Path) -> list[str]:
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
    for title, rel in PLOT_DATA:
        path = inputs.plots_dir / rel
        link = Path(os.path.relpath(path, report_dir)).as_posix()
        state = "" if path.exists() else " — **missing**"
        out.append(f"- [{title}]({link}){state}")
    return [*out, ""]


def render(inputs: ReportInputs, report_path: str | Path = "reports/summary.md") -> str:
    """The whole markdown report (links relative to ``report_path``'s folder)."""
    e = inputs.error_analysis
    selected, best_teacher = str(e["student"]), str(e["teacher"])
    names = {s.name for s in inputs.specs}
    for key, name in (("student", selected), ("teacher", best_teacher)):
        if name not in names:
            raise UserError(
                f"error analysis names {key} {name!r}, which is not a model of this "
                "pipeline; rerun the evaluate stage"
            )
    report_dir = Path(report_path).parent
    lines = [
        "# melanoma-kd — evaluation summary",
        "",
        "Generated by the `report` stage from pipeline outputs (`metrics/`, `plots/`); "
        "do not edit by hand — every number below is computed, none is typed.",
        "",
        *_models_section(inputs, selected, best_teacher),
        *_seeds_section(inputs, selected),
        *_kd_gain_section(inputs),
        *_transfer_section(inputs),
        *_ablation_section(inputs, selected),
        *_error_section(inputs),
        *_baselines_section(inputs),
        *_plots_section(inputs, report_dir),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


HEADLINE_MAX_KEYS = 25  # what `dvc exp show` / `dvc metrics diff` show: keep it readable


def headline(
    inputs: ReportInputs, export: Mapping[str, Any], quantize: Mapping[str, Any]
) -> dict[str, Any]:
    """The pipeline's declared metrics: a few flat keys a reader compares across experiments.

    The selected KD student and the best teacher (both chosen on validation, by the evaluate
    stage) with holdout ROC-AUC / pAUC and their patient-bootstrap CIs, the scratch student,
    the paired KD gain (CI, p) and its mean over seeds, the INT8 drop, calibration and sizes.
    Everything else stays reachable by path (``metrics/evaluate/<model>.json``) or as plots.
    """
    e = inputs.error_analysis
    kd, teacher = inputs.metrics[str(e["student"])], inputs.metrics[str(e["teacher"])]
    scratch, g = inputs.metrics[SCRATCH], inputs.kd_gain
    seeds = inputs.seeds or {}
    out: dict[str, Any] = {
        "kd_model": str(e["student"]),
        "teacher_model": str(e["teacher"]),
        **{f"kd_{k}": kd[k] for k in ("roc_auc", "roc_auc_ci_lo", "roc_auc_ci_hi", "pauc", "ece")},
        "scratch_roc_auc": scratch["roc_auc"],
        "scratch_pauc": scratch["pauc"],
        "teacher_roc_auc": teacher["roc_auc"],
        "teacher_pauc": teacher["pauc"],
        "kd_gain_roc_auc": g["roc_auc_delta"],
        "kd_gain_roc_auc_ci_lo": g["roc_auc_delta_ci_lo"],
        "kd_gain_roc_auc_ci_hi": g["roc_auc_delta_ci_hi"],
        "kd_gain_roc_auc_p": g["roc_auc_p"],
        "kd_gain_pauc": g["pauc_delta"],
        "kd_gain_pauc_p": g["pauc_p"],
        "kd_gain_seed_mean": seeds.get("gain_roc_auc_mean"),
        "kd_gain_seed_sd": seeds.get("gain_roc_auc_sd"),
        "int8_roc_auc_drop": round(
            inputs.metrics[ONNX_FP32]["roc_auc"] - inputs.metrics[ONNX_INT8]["roc_auc"], 6
        ),
        "student_fp32_mb": export.get("native_size_mb"),
        "student_int8_mb": quantize.get("int8_size_mb"),
    }
    out = {k: v for k, v in out.items() if v is not None}
    if len(out) > HEADLINE_MAX_KEYS:  # a guard for whoever adds the next key
        raise AssertionError(f"headline has {len(out)} keys (max {HEADLINE_MAX_KEYS})")
    return out


def write_report(path: str | Path, text: str) -> None:
    """Write the report atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
