"""CPU latency (batch 1; at each of ``benchmark.threads`` intra-op thread counts) of every
exported model × runtime: PyTorch eager fp32, ONNX Runtime fp32 and INT8, with file sizes,
parameter counts, how many of each model's convolutions are depthwise, and the CPU's ISA flags.

The models are found by the export/quantize naming convention in the ONNX folder
(:data:`melanoma_kd.catalog.STUDENT_STEM`, :data:`~melanoma_kd.catalog.TEACHER_STEM`); the
PyTorch model is rebuilt from the checkpoint each ONNX file's metadata names.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from melanoma_kd.catalog import SCRATCH, STUDENT_STEM, TEACHER_STEM
from melanoma_kd.deploy.onnx_model import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxClassifier,
    file_mb,
    read_metadata,
    same_network,
)
from melanoma_kd.deploy.pareto import threads_key
from melanoma_kd.deploy.tables import latency_ratios
from melanoma_kd.errors import UserError
from melanoma_kd.models.build import load_checkpoint

ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model name, logical cores and the ISA flags that matter for fp32/int8 kernels."""
    text = Path(cpuinfo).read_text() if Path(cpuinfo).is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    info: dict[str, Any] = {
        "model": model.group(1).strip() if model else platform.processor() or "unknown",
        "logical_cores": all_cores(),
        "vnni": any("vnni" in f for f in flags),
    }
    info |= {f"isa_{f}": f in flags for f in ISA_FLAGS}
    info["isa_flags"] = " ".join(sorted(f for f in flags if re.match(r"(avx|amx|fma|sse4)", f)))
    return info


def all_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def time_runs(fn: Callable[[], object], warmup: int, runs: int) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` timed calls: p50/p90/mean in ms.

    CPU only, so each call has finished when it returns (no device synchronisation needed).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    arr = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "mean_ms": float(statistics.fmean(times)),
        "runs": runs,
    }


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set PyTorch's intra-op thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_input(image_size: int, seed: int = 0) -> np.ndarray:
    """A fixed batch-1 float32 input."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, image_size, image_size), dtype=np.float32)


def torch_latency(
    model: nn.Module, image_size: int, threads: int, warmup: int, runs: int
) -> dict[str, float]:
    """PyTorch eager fp32, batch 1, under ``inference_mode``."""
    x = torch.from_numpy(bench_input(image_size))
    model = model.eval()
    with torch_threads(threads), torch.inference_mode():
        return time_runs(lambda: model(x), warmup, runs)


def ort_latency(path: str | Path, threads: int, warmup: int, runs: int) -> dict[str, float]:
    """ONNX Runtime CPU, batch 1, ``threads`` intra-op threads."""
    clf = OnnxClassifier(path, threads)
    x = bench_input(clf.image_size)
    feed = {INPUT_NAME: x}
    run = clf.session.run
    return time_runs(lambda: run([OUTPUT_NAME], feed), warmup, runs)


def conv_census(path: str | Path) -> dict[str, int]:
    """How many ``Conv`` nodes an ONNX graph has and how many of them are depthwise (``group``
    > 1 with one input channel per group: each filter sees a single channel)."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    convs = depthwise = 0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        convs += 1
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = weights.get(node.input[1]) if len(node.input) > 1 else None
        if group > 1 and dims is not None and len(dims) > 1 and dims[1] == 1:
            depthwise += 1
    return {"conv_layers": convs, "depthwise_conv_layers": depthwise}


def discover_models(onnx_dir: str | Path, deploy_size: int) -> dict[str, Any]:
    """The benchmark's model list from the export/quantize naming convention.

    ``{model: {"onnx": fp32 path, "int8": {runtime: path}, "deploy": bool}}`` (a deploy-size
    copy also names its ``"native"`` model) for the KD
    student, the scratch student and the best teacher, at the trained size and (when exported)
    at ``deploy_size``. A missing fp32 model is a :class:`UserError`; INT8 files are timed when
    present.
    """
    d = Path(onnx_dir)
    models: dict[str, Any] = {}
    for name in (STUDENT_STEM, SCRATCH, TEACHER_STEM):
        path = d / f"{name}.onnx"
        if not path.is_file():
            raise UserError(f"{path}: exported model not found (run the export stages)")
        models[name] = {"onnx": path, "int8": {}, "deploy": False}
        deploy = d / f"{name}_{deploy_size}.onnx"
        if deploy.is_file():
            models[f"{name}_{deploy_size}"] = {
                "onnx": deploy,
                "int8": {},
                "deploy": True,
                "native": name,
            }
    int8_files = [(STUDENT_STEM, "ort_int8_dynamic", f"{STUDENT_STEM}_int8_dynamic.onnx")]
    for stem in (STUDENT_STEM, TEACHER_STEM):
        int8_files += [
            (stem, "ort_int8", f"{stem}_int8.onnx"),
            (f"{stem}_{deploy_size}", "ort_int8", f"{stem}_{deploy_size}_int8.onnx"),
        ]
    for key, runtime, fname in int8_files:
        if key in models and (d / fname).is_file():
            models[key]["int8"][runtime] = d / fname
    return models


def _timed_already(
    spec: dict[str, Any],
    models: dict[str, Any],
    runners: dict[str, tuple[Path, Callable[[int], dict[str, float]]]],
    measured: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """The rows of a deploy-size copy that its native model has timed already: those whose file
    holds the same network (the copy at the trained size: the same graph with other metadata,
    and its INT8 model the native INT8 output), by runtime. The same network is not timed twice.
    """
    native = spec.get("native")
    if native not in measured:
        return {}
    files = {"ort_fp32": models[native]["onnx"], **models[native]["int8"]}
    same = {
        runtime: measured[native][runtime]
        for runtime, (path, _) in runners.items()
        if runtime in files and runtime in measured[native] and same_network(path, files[runtime])
    }
    if "ort_fp32" in same and "torch_fp32" in runners and "torch_fp32" in measured[native]:
        same["torch_fp32"] = measured[native]["torch_fp32"]  # the same checkpoint at that size
    return same


def benchmark(
    onnx_dir: str | Path,
    *,
    warmup: int,
    runs: int,
    deploy_size: int,
    threads: list[int],
    quantize_metrics: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Latency of every model × runtime at each thread count, plus sizes, params and each
    model's convolution census (:func:`conv_census`).

    PyTorch eager runs from the checkpoint named in each ONNX file's metadata.
    ``quantize_metrics``: the quantize stages' reports by file stem (their validation pAUC goes
    into the INT8 rows). The result is a nested dict of scalars (no lists),
    ``metrics/benchmark.json``.
    """
    thread_settings = {threads_key(n): n for n in threads}
    result: dict[str, Any] = {
        "cpu": cpu_info(),
        "settings": {
            "batch": 1,
            "warmup": warmup,
            "runs": runs,
            "threads": ",".join(str(n) for n in threads),
            "deploy_size": deploy_size,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
        "models": {},
    }
    models = discover_models(onnx_dir, deploy_size)
    for name, spec in models.items():
        meta = read_metadata(spec["onnx"])
        size = int(meta["image_size"])
        entry: dict[str, Any] = {
            "arch": meta["arch"],
            "image_size": size,
            "params": int(meta["num_params"]),
            "latency_only": bool(meta.get("latency_only", False)),
            **conv_census(spec["onnx"]),
        }
        if "val_pauc" in meta:
            entry["val_pauc"] = float(meta["val_pauc"])
        if "requested_image_size" in meta:  # a fixed-size model: timed at the size it accepts
            entry["requested_image_size"] = int(meta["requested_image_size"])
            entry["input_size_note"] = str(meta.get("input_size_note", ""))
        ckpt = Path(str(meta.get("source_checkpoint", "")))
        runners: dict[str, tuple[Path, Callable[[int], dict[str, float]]]] = {}
        if ckpt.is_file():
            model, _ = load_checkpoint(ckpt)
            runners["torch_fp32"] = (
                ckpt,
                lambda t, m=model, s=size: torch_latency(m, s, t, warmup, runs),
            )
        runners["ort_fp32"] = (
            spec["onnx"],
            lambda t, p=spec["onnx"]: ort_latency(p, t, warmup, runs),
        )
        for runtime, path in spec["int8"].items():
            runners[runtime] = (path, lambda t, p=path: ort_latency(p, t, warmup, runs))
        timed = _timed_already(spec, models, runners, result["models"])
        if timed:
            entry["timed_as"] = spec["native"]
        for runtime, (path, run) in runners.items():
            row: dict[str, Any] = {"size_mb": round(file_mb(path), 4)}
            if runtime in timed:
                row |= {key: timed[runtime][key] for key in thread_settings}  # timings only
            else:
                if progress:
                    progress(f"{name} {runtime} @ {size}px")
                for key, n in thread_settings.items():
                    row[key] = {k: round(v, 4) for k, v in run(n).items()}
            entry[runtime] = row
        q = (quantize_metrics or {}).get(name, {})
        for runtime, tag in (("ort_int8", "int8"), ("ort_int8_dynamic", "int8_dynamic")):
            if runtime in entry and f"{tag}_val_pauc" in q:
                entry[runtime]["val_pauc"] = q[f"{tag}_val_pauc"]
        result["models"][name] = entry
    result["ratios"] = latency_ratios(result["models"], deploy_size)
    return result
