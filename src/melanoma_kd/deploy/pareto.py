"""The deployment Pareto: the best teacher and the KD student, each as ONNX fp32 and INT8, with
holdout ROC-AUC/pAUC (and their patient-bootstrap CIs, from the evaluation), file size and CPU
latency at the deploy size (from the benchmark), the Pareto-optimal models marked at each thread
count, and what INT8 did to latency, stated from the measured numbers.

Functions of plain dicts (the benchmark result, the evaluation's per-model metrics; only
:func:`holdout_metrics` reads files and :func:`plot_pareto` writes one): no torch and no ONNX
Runtime. The markdown section opens ``reports/deployment.md`` and the figure is
``plots/latency_pareto.png``, both written by the benchmark stage with the timings (untracked, so
never in ``dvc.lock``). :func:`pareto_optimal` is the one Pareto rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melanoma_kd.catalog import DEPLOYED, EvaluationFiles
from melanoma_kd.errors import UserError
from melanoma_kd.io import atomic_path
from melanoma_kd.metrics import PAUC_MIN_TPR
from melanoma_kd.results import read_required

# INT8 and fp32 p50s within this fraction of each other are reported as "about as fast": the p50
# of a few dozen runs moves by a few percent between runs on a quiet machine.
SAME_SPEED = 0.05
FAMILY_LABELS = {"teacher": "best teacher", "student": "KD student"}


@dataclass(frozen=True)
class Timing:
    """ONNX Runtime latency of one model at one thread count (ms, batch 1)."""

    p50: float
    p90: float


@dataclass(frozen=True)
class DeployedModel:
    """One row of the deployment table."""

    family: str  # teacher | student
    precision: str  # fp32 | int8
    name: str  # the evaluation's model name
    arch: str
    metrics: Mapping[str, Any]  # holdout metrics of the evaluation (roc_auc, pauc, CIs)
    size_mb: float | None = None
    timed_px: int | None = None
    latency: dict[int, Timing] = field(default_factory=dict)  # threads -> timing
    conv_layers: int | None = None
    depthwise_conv_layers: int | None = None

    @property
    def label(self) -> str:
        return f"{self.family} {'INT8' if self.precision == 'int8' else 'fp32'}"

    @property
    def roc_auc(self) -> float:
        return float(self.metrics["roc_auc"])


def pareto_optimal(points: Sequence[tuple[float, float] | None]) -> list[bool]:
    """Which ``(latency, score)`` points are Pareto-optimal: lower latency and higher score are
    better, and a point is dominated when another one is at least as good on both and strictly
    better on one. Identical points dominate neither each other; of two points with the same
    latency only the higher score survives. ``None`` (not measured) is never optimal and
    dominates nothing."""
    out = []
    for i, p in enumerate(points):
        if p is None:
            out.append(False)
            continue
        dominated = any(
            q is not None and q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1])
            for j, q in enumerate(points)
            if j != i
        )
        out.append(not dominated)
    return out


def threads_key(n: int) -> str:
    """The key of a benchmark cell timed with ``n`` intra-op threads."""
    return f"threads_{n}"


def thread_counts(bench: Mapping[str, Any]) -> list[int]:
    """The thread counts a benchmark result was timed at (``settings.threads``, ``"1,2"``)."""
    return [int(t) for t in str(bench["settings"]["threads"]).split(",") if t.strip()]


def holdout_metrics(eval_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The evaluation's holdout metrics of the four deployed models, by model name."""
    files = EvaluationFiles(root=Path(eval_dir))
    return {
        name: read_required(files.model(name), f"holdout metrics of {name}")
        for _, name in DEPLOYED.values()
    }


def deployed_models(
    bench: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]]
) -> list[DeployedModel]:
    """The four deployment rows (:data:`melanoma_kd.catalog.DEPLOYED`), latency at the deploy
    size. ``metrics``: the evaluation's per-model holdout metrics, by model name."""
    deploy = int(bench["settings"]["deploy_size"])
    threads = thread_counts(bench)
    rows = []
    for (family, precision), (stem, name) in DEPLOYED.items():
        if name not in metrics:
            raise UserError(f"{name}: no holdout metrics (run the evaluate stage)")
        runtime = "ort_fp32" if precision == "fp32" else "ort_int8"
        native = bench["models"].get(stem, {})
        timed = bench["models"].get(f"{stem}_{deploy}", {})
        row = timed.get(runtime) or {}
        size_row = native.get(runtime) or row
        rows.append(
            DeployedModel(
                family=family,
                precision=precision,
                name=name,
                arch=str(native.get("arch") or timed.get("arch") or "?"),
                metrics=metrics[name],
                size_mb=size_row.get("size_mb"),
                timed_px=timed.get("image_size") if row else None,
                latency={
                    t: Timing(row[threads_key(t)]["p50_ms"], row[threads_key(t)]["p90_ms"])
                    for t in threads
                    if threads_key(t) in row
                },
                conv_layers=timed.get("conv_layers", native.get("conv_layers")),
                depthwise_conv_layers=timed.get(
                    "depthwise_conv_layers", native.get("depthwise_conv_layers")
                ),
            )
        )
    return rows


def pareto_marks(models: Sequence[DeployedModel], threads: int) -> list[bool]:
    """Pareto-optimal rows at ``threads`` threads (holdout ROC-AUC up, p50 latency down)."""
    return pareto_optimal(
        [(m.latency[threads].p50, m.roc_auc) if threads in m.latency else None for m in models]
    )


def _pair(models: Sequence[DeployedModel], family: str) -> tuple[DeployedModel, DeployedModel]:
    by = {(m.family, m.precision): m for m in models}
    return by[(family, "fp32")], by[(family, "int8")]


def int8_speed(fp32_ms: float, int8_ms: float, tolerance: float = SAME_SPEED) -> str:
    """``"slower"``, ``"faster"`` or ``"same"``: INT8 p50 against fp32 p50."""
    ratio = int8_ms / fp32_ms
    if ratio > 1 + tolerance:
        return "slower"
    if ratio < 1 / (1 + tolerance):
        return "faster"
    return "same"


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def int8_findings(
    models: Sequence[DeployedModel], threads: Sequence[int], vnni: bool | None = None
) -> list[str]:
    """One sentence per family and thread count saying whether INT8 was slower or faster than
    fp32 (from the measured p50s), then why, from each network's convolution census."""
    lines = []
    for family in ("student", "teacher"):
        fp32, int8 = _pair(models, family)
        who = f"the {FAMILY_LABELS[family]} ({fp32.arch})"
        verdicts = set()
        for t in threads:
            if t not in fp32.latency or t not in int8.latency:
                continue
            a, b = fp32.latency[t].p50, int8.latency[t].p50
            verdict = int8_speed(a, b)
            verdicts.add(verdict)
            if verdict == "slower":
                text = f"INT8 is **{b / a:.2f}× slower** than fp32"
            elif verdict == "faster":
                text = f"INT8 is {a / b:.2f}× faster than fp32"
            else:
                text = f"INT8 and fp32 are within {SAME_SPEED:.0%} of each other"
            lines.append(
                f"- {text} for {who} at {_threads(t)} (p50 {b:.2f} ms vs {a:.2f} ms at "
                f"{int8.timed_px} px)."
            )
        why = _why(fp32, verdicts, vnni)
        if why:
            lines.append(f"  {why}")
    return lines


def _why(fp32: DeployedModel, verdicts: set[str], vnni: bool | None) -> str:
    """The reason behind a family's INT8 verdicts, from its convolution census."""
    n, k = fp32.conv_layers, fp32.depthwise_conv_layers
    if not verdicts or n is None or k is None or n == 0:
        return ""
    census = f"{k} of its {n} convolutions are depthwise"
    gemm = "as integer GEMMs" + (" with VNNI" if vnni else "")
    if "slower" in verdicts:
        if k > 0:
            return (
                f"Why: {census}. ONNX Runtime's CPU INT8 kernels speed up dense convolutions, "
                f"which run {gemm}, but gain nothing on depthwise ones, which have too little "
                "arithmetic per byte, while every quantized layer still pays its "
                "Quantize/DequantizeLinear conversions."
            )
        return (
            f"Why: {census}, so the integer kernels did not make up for the "
            "Quantize/DequantizeLinear conversions on this CPU."
        )
    if "faster" in verdicts:
        return f"Why: {census}; dense convolutions run {gemm}, which is where INT8 gains."
    return ""


def _ci(m: Mapping[str, Any], key: str) -> str:
    return f"{m[key]:.4f} [{m[f'{key}_ci_lo']:.4f}, {m[f'{key}_ci_hi']:.4f}]"


def pareto_section(
    models: Sequence[DeployedModel],
    threads: Sequence[int],
    *,
    deploy_size: int,
    vnni: bool | None = None,
    plot_name: str = "plots/latency_pareto.png",
) -> list[str]:
    """The deployment table (markdown lines) with the Pareto marks and the INT8 findings."""
    marks = {t: pareto_marks(models, t) for t in threads}
    header = [
        "model",
        "arch",
        "holdout ROC-AUC [95 % CI]",
        "holdout pAUC [95 % CI]",
        "file MB",
        "timed px",
        *(f"p{q} ms {t} thr" for t in threads for q in (50, 90)),
        *(f"Pareto {t} thr" for t in threads),
    ]
    aligns = ["---"] * 2 + ["---:"] * (len(header) - 2 - len(threads)) + [":---:"] * len(threads)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    for i, m in enumerate(models):
        cells = [
            f"{m.label} (`{m.name}`)",
            m.arch,
            _ci(m.metrics, "roc_auc"),
            _ci(m.metrics, "pauc"),
            "—" if m.size_mb is None else f"{m.size_mb:.2f}",
            "—" if m.timed_px is None else str(m.timed_px),
        ]
        for t in threads:
            timing = m.latency.get(t)
            cells += ["—", "—"] if timing is None else [f"{timing.p50:.2f}", f"{timing.p90:.2f}"]
        cells += ["**yes**" if marks[t][i] else "no" for t in threads]
        lines.append("| " + " | ".join(cells) + " |")
    front = {t: [m.label for m, ok in zip(models, marks[t], strict=True) if ok] for t in threads}
    lines += [
        "",
        f"ROC-AUC and pAUC (ISIC-2024, above {100 * PAUC_MIN_TPR:g} % TPR) are the "
        "evaluation's holdout numbers, with 95 % CIs from a bootstrap over patients, of each "
        "model at its trained input size; latency is ONNX Runtime on the CPU, batch 1, of the "
        f"same weights exported at `benchmark.deploy_size` = {deploy_size} px (timed px: the "
        "size actually timed). File MB: the trained-size ONNX file that `predict` loads.",
        "",
        "**Pareto-optimal** (holdout ROC-AUC higher, p50 latency lower; a model is dominated "
        "when another is at least as good on both and better on one), marked separately at each "
        "thread count: "
        + "; ".join(f"at {_threads(t)}: {', '.join(front[t]) or 'none timed'}" for t in threads)
        + ". The marks compare point estimates; where the ROC-AUC CIs overlap, the holdout does "
        "not show the dominated model to be less accurate.",
        "",
        "**INT8 vs fp32** (p50 at the deploy size):",
        "",
        *int8_findings(models, threads, vnni),
        "",
        f"Figure: `{plot_name}` (latency vs holdout ROC-AUC with CI bars, Pareto front drawn).",
    ]
    return lines


def plot_pareto(
    models: Sequence[DeployedModel], threads: Sequence[int], path: str | Path, title: str
) -> None:
    """Latency (p50, whisker to p90; log scale) vs holdout ROC-AUC (95 % CI bars), one panel
    per thread count, the Pareto-optimal models filled and joined by the front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"teacher": "tab:blue", "student": "tab:orange"}
    shapes = {"fp32": "o", "int8": "s"}
    fig, axes = plt.subplots(
        1, len(threads), figsize=(5.2 * len(threads), 4.4), dpi=120, squeeze=False, sharey=True
    )
    for ax, t in zip(axes[0], threads, strict=True):
        marks = pareto_marks(models, t)
        front = []
        for m, optimal in zip(models, marks, strict=True):
            timing = m.latency.get(t)
            if timing is None:
                continue
            auc = m.roc_auc
            lo, hi = float(m.metrics["roc_auc_ci_lo"]), float(m.metrics["roc_auc_ci_hi"])
            ax.errorbar(
                timing.p50,
                auc,
                yerr=[[auc - lo], [hi - auc]],
                xerr=[[0.0], [max(timing.p90 - timing.p50, 0.0)]],
                fmt=shapes[m.precision],
                color=colours[m.family],
                mfc=colours[m.family] if optimal else "white",
                mec=colours[m.family],
                ms=8,
                capsize=3,
                lw=1,
            )
            ax.annotate(
                m.label + (" ★" if optimal else ""),
                (timing.p50, auc),
                textcoords="offset points",
                xytext=(6, 5) if m.precision == "fp32" else (6, -13),
                fontsize=8,
            )
            if optimal:
                front.append((timing.p50, auc))
        if len(front) > 1:
            front.sort()
            xs = [p[0] for p in front]
            ys = [p[1] for p in front]
            ax.step(xs, ys, where="post", ls="--", color="grey", lw=1, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        sparse = matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""
        )
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(sparse)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(f"p50 latency, {_threads(t)}, batch 1 (ms, log; whisker: p90)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{_threads(t)}: filled/★ = Pareto-optimal", fontsize=9)
    axes[0][0].set_ylabel("holdout ROC-AUC (95 % CI, bootstrap over patients)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
