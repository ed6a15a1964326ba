"""``reports/deployment.md`` and the latency ratios, from a benchmark result (the deployment
Pareto table and figure come from :mod:`melanoma_kd.deploy.pareto`).

Pure functions of :func:`melanoma_kd.deploy.benchmark.benchmark`'s nested dict: no torch and no
ONNX Runtime, so rendering never loads a runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from melanoma_kd.catalog import STUDENT_STEM, TEACHER_STEM
from melanoma_kd.deploy.pareto import (
    DeployedModel,
    pareto_section,
    plot_pareto,
    thread_counts,
    threads_key,
)
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
        "threads": settings["threads"],
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
    return row[threads]["p50_ms"] if row and threads in row else None


def latency_ratios(models: dict[str, Any], deploy_size: int) -> dict[str, Any]:
    """Best teacher vs KD student latency and INT8 vs fp32 size/latency of each, at 1 thread,
    at the trained size and at the deploy size."""
    out: dict[str, Any] = {}
    for suffix in ("", f"_{deploy_size}"):
        t, s = models.get(f"{TEACHER_STEM}{suffix}"), models.get(f"{STUDENT_STEM}{suffix}")
        if not (t and s):
            continue
        if t["image_size"] != s["image_size"]:  # trained sizes differ, or a fixed-size model
            out[f"input_px{suffix}"] = f"teacher {t['image_size']}, student {s['image_size']}"
        for runtime in ("ort_fp32", "ort_int8", "torch_fp32"):
            tp, sp = _p50(t, runtime), _p50(s, runtime)
            if tp and sp:
                out[f"teacher_best_over_student_{runtime}_p50_t1{suffix}"] = round(tp / sp, 3)
        for who, entry in (("student", s), ("teacher_best", t)):
            int8, fp = _p50(entry, "ort_int8"), _p50(entry, "ort_fp32")
            if int8 and fp:
                out[f"{who}_int8_over_fp32_p50_t1{suffix}"] = round(int8 / fp, 3)
                out[f"{who}_fp32_over_int8_size{suffix}"] = round(
                    entry["ort_fp32"]["size_mb"] / entry["ort_int8"]["size_mb"], 3
                )
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


def _int8_lines(stem: str, q: dict[str, Any]) -> list[str]:
    """The validation comparison of one quantize stage's report."""
    who = f"{stem} ({q['arch']})" if "arch" in q else stem
    lines = [
        f"- {who}, static QDQ ({q['method']}, per-channel "
        f"{q['per_channel']}, reduce_range {q.get('reduce_range', '?')}, "
        f"{q['calibration_images']} train images, activations {q['activation_type']}): "
        f"{q['fp32_size_mb']:.2f} MB → {q['int8_size_mb']:.2f} MB "
        f"({q['int8_size_ratio']:.2f}× smaller); val ROC-AUC {q['fp32_val_roc_auc']:.4f} → "
        f"{q['int8_val_roc_auc']:.4f} (drop {q['int8_val_roc_auc_drop']:+.4f}); "
        f"Spearman vs fp32 {q['int8_spearman_vs_fp32']:.4f}"
    ]
    if "int8_dynamic_size_mb" in q:
        lines.append(
            f"- {stem}, dynamic (comparison only): {q['int8_dynamic_size_mb']:.2f} MB; val "
            f"ROC-AUC {q['int8_dynamic_val_roc_auc']:.4f}; Spearman vs fp32 "
            f"{q['int8_dynamic_spearman_vs_fp32']:.4f}"
        )
    return lines


def deployment_table(
    bench: dict[str, Any],
    quantize_metrics: dict[str, dict[str, Any]] | None = None,
    deployed: list[DeployedModel] | None = None,
    plot_name: str = "plots/latency_pareto.png",
) -> str:
    """``reports/deployment.md`` from a benchmark result: the deployment table (when
    ``deployed``, :mod:`melanoma_kd.deploy.pareto`), then every timing, the ratios and the INT8
    validation comparison (``quantize_metrics``: each quantize stage's report by file stem)."""
    cpu, st = bench["cpu"], bench["settings"]
    threads = thread_counts(bench)
    lines = [
        "# Deployment: holdout accuracy, size and CPU latency",
        "",
        f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores available; VNNI: "
        f"{'yes' if cpu['vnni'] else 'no'}; ISA: {cpu['isa_flags'] or 'n/a'}.",
        f"Batch {st['batch']}, {st['warmup']} warm-up + {st['runs']} timed runs per cell; "
        f"torch {st['torch']}, onnxruntime {st['onnxruntime']}. Latency in ms, at "
        f"{', '.join(str(t) for t in threads)} intra-op threads. These timings are measured on "
        "this machine and are not part of `dvc.lock` or `make verify`.",
        "",
    ]
    if deployed is not None:
        lines += [
            "## Teacher and student, fp32 and INT8",
            "",
            *pareto_section(
                deployed,
                threads,
                deploy_size=int(st["deploy_size"]),
                vnni=bool(cpu.get("vnni")),
                plot_name=plot_name,
            ),
            "",
        ]
    header = ["model", "runtime", "input px", "params (M)", "depthwise / conv", "file (MB)"]
    header += [f"p{q} {t} thr" for t in threads for q in (50, 90)] + ["val pAUC"]
    lines += [
        "## Every timing",
        "",
        "Validation pAUC (TPR ≥ 0.8, max 0.2); holdout numbers are in the table above and the "
        "evaluation report.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    notes, shared = [], []
    for name, entry in bench["models"].items():
        if "timed_as" in entry:
            shared.append(
                f"- {name} holds {entry['timed_as']}'s network at the same size: its rows repeat "
                f"{entry['timed_as']}'s timings (the same graph is not timed twice)."
            )
        px = str(entry["image_size"])
        if "requested_image_size" in entry:
            px += " *"
            notes.append(f"- \\* {name}: {entry.get('input_size_note') or 'fixed input size'}.")
        census = (
            f"{entry['depthwise_conv_layers']} / {entry['conv_layers']}"
            if "conv_layers" in entry
            else "—"
        )
        for runtime, label in RUNTIME_LABELS.items():
            row = entry.get(runtime)
            if not row:
                continue
            pauc = _row_pauc(entry, runtime)
            pauc_s = "—" if pauc is None or entry["latency_only"] else f"{pauc:.4f}"
            cells = [name, label, px, f"{entry['params'] / 1e6:.2f}", census]
            cells.append(f"{row['size_mb']:.2f}")
            for t in threads:
                cell = row.get(threads_key(t), {})
                cells += [f"{cell[k]:.3f}" if k in cell else "—" for k in ("p50_ms", "p90_ms")]
            cells.append(pauc_s)
            lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [
            "",
            f"Input px is the size each row was timed at. \\* A model with a fixed input size "
            f"that rejects benchmark.deploy_size ({st['deploy_size']} px) is timed at its trained "
            "size; its `_<deploy_size>` file name still carries the requested size.",
            *notes,
        ]
    if shared:
        lines += ["", *shared]
    lines += ["", "## Ratios (p50, 1 thread)", ""]
    lines += [f"- {k}: {v}" for k, v in bench["ratios"].items()]
    if quantize_metrics:
        lines += ["", "## INT8 (validation set)", ""]
        for stem, q in quantize_metrics.items():
            lines += _int8_lines(stem, q)
    return "\n".join(lines) + "\n"


def write_deployment(
    bench: dict[str, Any],
    report: str | Path,
    plot: str | Path,
    quantize_metrics: dict[str, dict[str, Any]] | None = None,
    deployed: list[DeployedModel] | None = None,
) -> str:
    """Write ``reports/deployment.md`` and (with ``deployed``) the Pareto figure; returns the
    markdown."""
    text = deployment_table(bench, quantize_metrics, deployed, plot_name=Path(plot).as_posix())
    with atomic_path(report) as tmp:
        tmp.write_text(text)
    if deployed is not None:
        plot_pareto(
            deployed,
            thread_counts(bench),
            plot,
            f"Deployment Pareto at {bench['settings']['deploy_size']} px — {bench['cpu']['model']}",
        )
    return text
