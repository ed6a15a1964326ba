"""Same CPU kernels on every x86 machine, so CPU training reproduces bit for bit across hosts.

PyTorch picks its vector kernels (ATen), oneDNN convolutions and MKL BLAS by the instruction set
of the CPU it runs on; AVX2 and AVX-512 kernels sum in different orders, so a teacher trained on
one host differs in the last bits from the same run on another, and ten epochs later in its
metrics. :func:`pin_cpu_kernels` caps all three libraries at AVX2, which every x86-64 CPU of the
last decade has. OpenCV's bundled Intel IPP dispatches the same way (its AVX-512 warps and blurs
wrote a different ``synth_positives`` output than its AVX2 ones, bit for bit), so it is capped
at AVX2 too (``OPENCV_IPP``); OpenCV's own vector code gave identical bytes either way. It
only sets environment variables the libraries read when they first compute (OpenCV: when cv2 is
first imported), so it runs on ``import melanoma_kd`` and costs nothing on an AVX2 machine; on
an AVX-512 machine training is somewhat slower. ``MELANOMA_KD_NATIVE_CPU=1`` opts out (fastest
kernels, results reproducible only on the same kind of CPU). GPU kernels are not affected.

:func:`platform_fingerprint` describes what produced a result, for ``make verify``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "OPENCV_IPP": "avx2",  # read when cv2 is imported: import melanoma_kd first
}
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def pin_cpu_kernels() -> None:
    """Cap ATen, oneDNN and MKL at AVX2 unless the user opted out or set them already."""
    if os.environ.get("MELANOMA_KD_NATIVE_CPU", "0") == "1":
        return
    for name, value in PINNED.items():
        os.environ.setdefault(name, value)


def _cpu_info() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine(), [f for f in ISA_FLAGS if f in flags]


def platform_fingerprint() -> dict[str, object]:
    """The facts that decide whether CPU floating-point results can be bitwise equal."""
    import torch  # late: the pinning above must happen before torch computes anything

    model, flags = _cpu_info()
    return {
        "machine": platform.machine(),
        "cpu_model": model,
        "isa_flags": flags,
        "torch": torch.__version__,
        "pinned_kernels": {name: os.environ.get(name, "") for name in PINNED},
    }
