"""Post-hoc calibration: Platt scaling of a binary classifier, fitted on validation only.

A network trained with class-weighted or focal loss, for a few epochs, outputs scores that rank
well but are not probabilities: its softmax is shifted (the loss re-weights the classes) and
over- or under-confident. Platt scaling maps the logit margin ``d = z_melanoma - z_benign`` to
``a·d + b`` and is fitted by minimising the negative log-likelihood of the validation labels.
Temperature scaling (``b = 0``) fixes confidence only; Platt's intercept also removes the shift
the class weighting introduces, which is the larger error of this project's students. Both are
strictly increasing maps (for ``a > 0``), so ROC-AUC, pAUC and every ranking are unchanged, and
the decision threshold moves with the scores.

The map is folded into the exported ONNX graph (:mod:`melanoma_kd.deploy.export`) as
``logits·a + [0, b]``: softmax of those logits is ``sigmoid(a·d + b)``, so ``predict``, the
evaluation and the benchmarks all see calibrated probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

METHOD = "platt"
#: Scores are clipped to [EPS, 1 - EPS] before the logit (stored scores can be exactly 0 or 1).
EPS = 1e-7


@dataclass(frozen=True)
class Platt:
    """``P(melanoma) = sigmoid(slope · d + intercept)`` on the logit margin ``d``."""

    slope: float
    intercept: float
    method: str = METHOD

    def apply(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Calibrated probabilities from uncalibrated ones (``scores`` = softmax P(melanoma))."""
        return _sigmoid(self.slope * margin(scores) + self.intercept)

    def record(self) -> dict[str, float | str]:
        """What the ONNX metadata and the stage metrics store."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> Platt:
        """The map a :meth:`record` describes."""
        return cls(float(record["slope"]), float(record["intercept"]), str(record["method"]))


def margin(scores: ArrayLike) -> NDArray[np.float64]:
    """The logit margin ``log(p / (1 - p))`` of softmax probabilities."""
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_platt(labels: ArrayLike, scores: ArrayLike) -> Platt:
    """Platt scaling fitted by maximum likelihood (no regularisation) on validation labels and
    uncalibrated scores; ``ValueError`` when the labels are not of both classes.

    A model that ranks validation images backwards (fitted slope <= 0) cannot be calibrated by
    an increasing map; it gets the identity, with ``method`` saying why, rather than a map that
    would flip its decisions or flatten every score to the base rate.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels)
    if y.ndim != 1 or len(np.unique(y)) != 2:
        raise ValueError("calibration needs validation labels of both classes")
    d = margin(scores).reshape(-1, 1)
    lr = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-10, max_iter=10_000)
    lr.fit(d, y)
    slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if not slope > 0:
        return Platt(1.0, 0.0, f"identity (fitted slope {slope:.4g} <= 0: validation inverse)")
    return Platt(slope, intercept)
