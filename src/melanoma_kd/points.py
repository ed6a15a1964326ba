"""A KD grid point as values: method, alpha, temperature (response KD only), and its name.

Torch-free and tiny, so both sides can share it without coupling: :mod:`melanoma_kd.catalog`
names and parses points (``T-alpha-response``, ``alpha-feature``) for the
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
    """One KD grid point: ``key`` is its name, ``<T>-<alpha>-response`` or ``<alpha>-feature``
    (feature KD has no temperature: ``temperature`` is ``None``)."""

    key: str
    temperature: float | None
    alpha: float
    method: str

    def as_meta(self) -> dict[str, Any]:
        """The point as a KD run records it (and hashes it)."""
        meta: dict[str, Any] = {"alpha": self.alpha, "method": self.method}
        if self.temperature is not None:
            meta["temperature"] = self.temperature
        return meta

    @property
    def label(self) -> str:
        """How the report names it: ``KD response, T=4, α=0.5`` / ``KD feature, α=0.5``."""
        t = f", T={self.temperature:g}" if self.temperature is not None else ""
        return f"KD {self.method}{t}, α={self.alpha:g}"


def kd_point(temperature: float | None, alpha: float, method: str) -> KDPoint:
    """A checked KD grid point from its values, named ``<T>-<alpha>-response`` or
    ``<alpha>-feature`` with the numbers in shortest form (as DVC spells params.yaml's values)."""
    if method not in KD_METHODS:
        raise UserError(f"distill: unknown KD method {method!r} (known: {sorted(KD_METHODS)})")
    if (temperature is None) != (method == "feature"):
        raise UserError(
            f"distill: {method} KD {'takes no' if method == 'feature' else 'needs a'} temperature"
        )
    if not 0.0 <= alpha <= 1.0 or (temperature is not None and not 0.0 < temperature < math.inf):
        raise UserError(
            f"distill: need 0 <= alpha <= 1 and temperature > 0 (got {alpha}, {temperature})"
        )
    if temperature is None:
        return KDPoint(f"{alpha:g}-{method}", None, float(alpha), method)
    return KDPoint(f"{temperature:g}-{alpha:g}-{method}", float(temperature), float(alpha), method)
