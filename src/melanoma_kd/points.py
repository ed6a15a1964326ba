"""A KD grid point as values: temperature, alpha, method, and the name DVC gives it.

Torch-free and tiny, so both sides can share it without coupling: :mod:`melanoma_kd.catalog`
names and parses points (``T-alpha-method``, :func:`melanoma_kd.catalog.parse_point`) for the
stages and the evaluation, and :mod:`melanoma_kd.runs` turns a point into a training run's
identity, without the training stages depending on the catalogue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from melanoma_kd.errors import UserError

KD_METHODS: tuple[str, ...] = ("response", "feature")  # keys of melanoma_kd.distill.METHODS


@dataclass(frozen=True)
class KDPoint:
    """One KD grid point: ``key`` is DVC's ``${key}`` (``T-alpha-method``)."""

    key: str
    temperature: float
    alpha: float
    method: str

    def as_meta(self) -> dict[str, Any]:
        """The point as a KD run records it (and hashes it)."""
        return {"temperature": self.temperature, "alpha": self.alpha, "method": self.method}


def kd_point(temperature: float, alpha: float, method: str, key: str | None = None) -> KDPoint:
    """A checked KD grid point from its values; ``key`` defaults to ``T-alpha-method`` with the
    numbers in shortest form (DVC's own ``${key}`` spells them as params.yaml does)."""
    if method not in KD_METHODS:
        raise UserError(f"distill.method: unknown method {method!r} (known: {sorted(KD_METHODS)})")
    if not 0.0 <= alpha <= 1.0 or not 0.0 < temperature < math.inf:
        raise UserError(
            f"distill: need 0 <= alpha <= 1 and temperature > 0 (got {alpha}, {temperature})"
        )
    name = key if key is not None else f"{temperature:g}-{alpha:g}-{method}"
    return KDPoint(name, float(temperature), float(alpha), method)
