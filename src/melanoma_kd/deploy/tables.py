"""The deployment table, latency ratios and the latency-vs-pAUC plot, from a benchmark result.

Pure functions of :func:`melanoma_kd.deploy.benchmark.benchmark`'s nested dict: no torch and no
ONNX Runtime, so rendering never loads a runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melanoma_kd.io import atomic_path


def timed_models(result: dict[str, Any]) -> dict[str, Any]:
    """What a benchmark result timed, without any timing or machine detail.

    This is the benchmark stage's one declared DVC output: it is the same on every machine, so
    the committed ``dvc.lock`` stays reproducible while the timings themselves (which are not)
    live in untracked files.
    """
    settings = result["settings"]
    return {
        "batch": settings["batch"],
        "warmup": settings["warmup"],
        "runs": settings["runs"],
        "deploy_size": settings["deploy_size"],
        "models": {
            name: {
                "image_size": entry["image_size"],
                "runtimes": sorted(k for k, v in entry.items() if isinstance(v, dict)),
            }
            for name, entry in sorted(result["models"].items())
        },
    }


def _p50(entry: dict[str, Any], runtime: str, threads: str = "threads_1") -> float | None:
    row = entry.get(runtime)
    return row[threads]["p50_ms"] if row else None


def latency_ratios(models: dict[str, Any], teachers: list[str], deploy_size: int) -> dict[str, Any]:
    """Best teacher (highest validation pAUC) vs student latency, INT8 vs fp32 size/latency."""
    out: dict[str, Any] = {}
    scored = [a for a in teachers if "val_pauc" in models.get(f"teacher_{a}", {})]
    best = max(scored, key=lambda a: models[f"teacher_{a}"]["val_pauc"]) if scored else teachers[0]
    out["teacher_best"] = best
    for suffix in ("", f"_{deploy_size}"):
        t, s = models.get(f"teacher_{best}{suffix}"), models.get(f"student_kd{suffix}")
        if not (t and s):
            continue
        if t["image_size"] != s["image_size"]:  # trained sizes differ, or a fixed-size model
            out[f"input_px{suffix}"] = f"teacher {t['image_size']}, student {s['image_size']}"
        for runtime in ("ort_fp32", "torch_fp32"):
            tp, sp = _p50(t, runtime), _p50(s, runtime)
            if tp and sp:
                out[f"teacher_best_over_student_{runtime}_p50_t1{suffix}"] = round(tp / sp, 3)
        int8 = s.get("ort_int8")
        if int8:
            fp = s["ort_fp32"]
            out[f"student_int8_over_fp32_p50_t1{suffix}"] = round(
                int8["threads_1"]["p50_ms"] / fp["threads_1"]["p50_ms"], 3
            )
            out[f"student_fp32_over_int8_size{suffix}"] = round(fp["size_mb"] / int8["size_mb"], 3)
    return out


# --------------------------------------------------------------------------- report and plot

RUNTIME_LABELS = {
    "torch_fp32": "PyTorch eager fp32",
    "ort_fp32": "ORT fp32",
    "ort_int8": "ORT INT8 static QDQ",
    "ort_int8_dynamic": "ORT INT8 dynamic",
}


def _row_pauc(entry: dict[str, Any], runtime: str) -> float | None:
    """Validation pAUC of one model × runtime: INT8 rows carry their own, fp32 rows the model's."""
    row = entry.get(runtime)
    if not row:
        return None
    if runtime.startswith("ort_int8"):
        return row.get("val_pauc")
    return entry.get("val_pauc")


def deployment_table(bench: dict[str, Any], quantize_metrics: dict[str, Any] | None = None) -> str:
    """The deployment table (markdown) from a benchmark result."""
    cpu, st = bench["cpu"], bench["settings"]
    lines = [
        "# Deployment: size and CPU latency",
        "",
        f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores available; VNNI: "
        f"{'yes' if cpu['vnni'] else 'no'}; ISA: {cpu['isa_flags'] or 'n/a'}.",
        f"Batch {st['batch']}, {st['warmup']} warm-up + {st['runs']} timed runs per cell; "
        f"torch {st['torch']}, onnxruntime {st['onnxruntime']}. Latency in ms; "
        f'"all" = {st["threads_all"]} threads. Validation pAUC (TPR ≥ 0.8, max 0.2) — holdout '
        "numbers are in the evaluation report.",
        "",
        "| model | runtime | input px | params (M) | file (MB) | p50 1 thr | p90 1 thr "
        "| mean 1 thr | p50 all | p90 all | val pAUC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for name, entry in bench["models"].items():
        px = str(entry["image_size"])
        if "requested_image_size" in entry:
            px += " *"
            notes.append(f"- \\* {name}: {entry.get('input_size_note') or 'fixed input size'}.")
        for runtime, label in RUNTIME_LABELS.items():
            row = entry.get(runtime)
            if not row:
                continue
            t1, ta = row["threads_1"], row["threads_all"]
            pauc = _row_pauc(entry, runtime)
            pauc_s = "—" if pauc is None or entry["latency_only"] else f"{pauc:.4f}"
            lines.append(
                f"| {name} | {label} | {px} | {entry['params'] / 1e6:.2f} "
                f"| {row['size_mb']:.2f} | {t1['p50_ms']:.3f} | {t1['p90_ms']:.3f} "
                f"| {t1['mean_ms']:.3f} | {ta['p50_ms']:.3f} | {ta['p90_ms']:.3f} | {pauc_s} |"
            )
    if notes:
        lines += [
            "",
            f"Input px is the size each row was timed at. \\* A model with a fixed input size "
            f"that rejects benchmark.deploy_size ({st['deploy_size']} px) is timed at its trained "
            "size; its `_<deploy_size>` file name still carries the requested size.",
            *notes,
        ]
    lines += ["", "## Ratios", ""]
    lines += [f"- {k}: {v}" for k, v in bench["ratios"].items()]
    if quantize_metrics:
        q = quantize_metrics
        lines += [
            "",
            "## INT8 (validation set)",
            "",
            f"- static QDQ ({q['method']}, per-channel {q['per_channel']}, "
            f"{q['calibration_images']} train images, activations {q['activation_type']}): "
            f"{q['fp32_size_mb']:.2f} MB → {q['int8_size_mb']:.2f} MB "
            f"({q['int8_size_ratio']:.2f}× smaller); val ROC-AUC {q['fp32_val_roc_auc']:.4f} → "
            f"{q['int8_val_roc_auc']:.4f} (drop {q['int8_val_roc_auc_drop']:+.4f}); "
            f"Spearman vs fp32 {q['int8_spearman_vs_fp32']:.4f}",
            f"- dynamic (comparison only): {q['int8_dynamic_size_mb']:.2f} MB; val ROC-AUC "
            f"{q['int8_dynamic_val_roc_auc']:.4f}; Spearman vs fp32 "
            f"{q['int8_dynamic_spearman_vs_fp32']:.4f}",
        ]
    return "\n".join(lines) + "\n"


def pareto_points(bench: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(label, ORT p50 ms at 1 thread, validation pAUC) for every scored model at its own size."""
    points = []
    for name, entry in bench["models"].items():
        if entry["latency_only"]:
            continue
        for runtime in ("ort_fp32", "ort_int8", "ort_int8_dynamic"):
            row = entry.get(runtime)
            pauc = _row_pauc(entry, runtime)
            if row and pauc is not None:
                label = name if runtime == "ort_fp32" else f"{name} ({RUNTIME_LABELS[runtime]})"
                points.append((label, row["threads_1"]["p50_ms"], float(pauc)))
    return points


def pareto_front(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points no other point beats on both latency (lower) and pAUC (higher)."""
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (p[1], -p[2])):
        if p[2] > best:
            front.append(p)
            best = p[2]
    return front


def plot_latency_pareto(bench: dict[str, Any], path: str | Path) -> None:
    """Latency at 1 thread (ORT, batch 1, log scale) vs validation pAUC, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = pareto_points(bench)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, ms, pauc in points:
        ax.scatter(ms, pauc, s=40, color="tab:orange" if "student" in label else "tab:blue")
        ax.annotate(label, (ms, pauc), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(
            [p[1] for p in front],
            [p[2] for p in front],
            "--",
            color="grey",
            lw=1,
            label="Pareto front",
        )
        ax.legend(loc="center right", fontsize=8)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("ONNX Runtime p50 latency, batch 1, 1 thread, trained input size (ms, log)")
    ax.set_ylabel("validation pAUC (TPR ≥ 0.8; max 0.2)")
    ax.set_title(f"Latency vs validation pAUC — {bench['cpu']['model']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
