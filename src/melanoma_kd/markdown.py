"""Markdown building blocks of the reports: number formats and tables.

Numbers show 4 decimals (a dash when absent or not finite), signed deltas use the typographic
minus, and permutation p-values at their floor say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DASH = "—"


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


def ci(m: Mapping[str, Any], key: str) -> str:
    """``0.8123 [0.7900, 0.8400]`` from ``key``, ``key_ci_lo`` and ``key_ci_hi`` of ``m``."""
    return f"{f4(m.get(key))} [{f4(m.get(key + '_ci_lo'))}, {f4(m.get(key + '_ci_hi'))}]"


def mean_sd(mean: Any, sd: Any, sign: bool = False) -> str:
    """``0.8123 ± 0.0123`` (``+0.0123 ± …`` with ``sign``; sd a dash when undefined)."""
    shown = signed(float(mean)) if sign and f4(mean) != DASH else f4(mean)
    return f"{shown} ± {f4(sd)}"
