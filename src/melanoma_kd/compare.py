"""``melanoma-kd compare A B``: paired, noise-aware comparison of two revisions' holdout results.

A and B are git revisions, branches, tags or ``dvc exp`` names; ``workspace`` is the working
tree. Each side's holdout predictions (``metrics/predictions/<model>.csv``, a DVC output) and
patient ids (``data/splits.csv``) are read through DVC, so they come from the DVC cache or, after
``dvc pull``, a remote. For every model present on both sides the scores are paired by image id
and compared with the same statistics the pipeline uses (:mod:`melanoma_kd.metrics`): the
difference A − B in ROC-AUC and pAUC, a 95 % CI from a bootstrap over patients, a paired
permutation p, Holm-adjusted over the models of one metric, and a verdict: "A better" or
"B better" only when the adjusted p is below ``alpha`` *and* the CI excludes 0, else
"within noise".
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma_kd import metrics as M
from melanoma_kd.catalog import EvaluationFiles
from melanoma_kd.errors import UserError

WORKSPACE = "workspace"
PREDICTIONS_DIR = EvaluationFiles().predictions.as_posix()  # the evaluate stage's
SPLITS_FILE = "data/splits.csv"
METRICS = ("roc_auc", "pauc")


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its label, holdout predictions per model and patient ids."""

    rev: str
    predictions: dict[str, pd.DataFrame]
    patients: pd.Series  # image_id -> patient_id


@dataclass(frozen=True)
class Row:
    """One model, one metric: A − B with CI, raw and Holm-adjusted p, and the verdict."""

    model: str
    metric: str
    a: float
    b: float
    delta: float
    ci_lo: float
    ci_hi: float
    p: float
    p_holm: float
    n_images: int
    n_patients: int
    verdict: str


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), input order kept."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m, dtype=np.float64)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(ci_lo: float, ci_hi: float, p_adjusted: float, alpha: float = 0.05) -> str:
    """'A better' / 'B better' when the CI excludes 0 and the adjusted p < alpha."""
    if p_adjusted < alpha and ci_lo > 0:
        return "A better"
    if p_adjusted < alpha and ci_hi < 0:
        return "B better"
    return "within noise"


# --------------------------------------------------------------------------- reading a side


def _filesystem(rev: str) -> Any:
    """A DVC filesystem over ``rev`` (git revision or experiment name) or the workspace."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import RevError, resolve_rev

    try:
        repo = Repo(".")
    except NotDvcRepoError:
        raise UserError("compare: run it inside a DVC repository") from None
    if rev == WORKSPACE:
        return DVCFileSystem(repo=repo)
    try:
        sha = resolve_rev(repo.scm, rev)
    except RevError:
        raise UserError(
            f"compare: unknown revision {rev!r} (not a branch, tag, commit or dvc exp name)"
        ) from None
    return DVCFileSystem(url=repo.root_dir, rev=sha)


def _read_csv(fs: Any, path: str, rev: str) -> pd.DataFrame:
    hint = "get it with `dvc pull` (from a remote) or reproduce it with `dvc repro`" + (
        "" if rev == WORKSPACE else f" on {rev}"
    )
    try:
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise UserError(f"compare: {rev} has no {path}; {hint}") from None
    except Exception as exc:  # DVC raises its own errors for outputs missing from the cache
        raise UserError(
            f"compare: {rev}: {path} cannot be read ({type(exc).__name__}); {hint}"
        ) from None
    return pd.read_csv(io.BytesIO(data), dtype={"image_id": str, "patient_id": str})


def read_side(rev: str) -> Side:
    """Holdout predictions of every model and the patient of every image, at ``rev``."""
    fs = _filesystem(rev)
    if not fs.isdir(PREDICTIONS_DIR):
        raise UserError(
            f"compare: {rev} has no {PREDICTIONS_DIR}/; get it with `dvc pull` or reproduce "
            f"it with `dvc repro`" + ("" if rev == WORKSPACE else f" on {rev}")
        )
    names = sorted(
        Path(str(p)).stem for p in fs.ls(PREDICTIONS_DIR, detail=False) if str(p).endswith(".csv")
    )
    if not names:
        raise UserError(f"compare: {rev}: {PREDICTIONS_DIR}/ holds no <model>.csv file")
    predictions = {}
    for name in names:
        path = f"{PREDICTIONS_DIR}/{name}.csv"
        df = _read_csv(fs, path, rev)
        missing = {"image_id", "label", "score"} - set(df.columns)
        if missing:
            raise UserError(f"compare: {rev}: {path} lacks column(s) {sorted(missing)}")
        predictions[name] = df
    splits = _read_csv(fs, SPLITS_FILE, rev)
    if not {"image_id", "patient_id"} <= set(splits.columns):
        raise UserError(f"compare: {rev}: {SPLITS_FILE} lacks image_id/patient_id")
    return Side(rev, predictions, splits.set_index("image_id")["patient_id"])


# --------------------------------------------------------------------------- comparing


def _paired(a: Side, b: Side, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, A scores, B scores and patient ids on the images both sides scored."""
    da, db = a.predictions[model], b.predictions[model]
    both = da.merge(db, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    if both.empty:
        raise UserError(f"compare: {model}: {a.rev} and {b.rev} share no holdout image")
    clash = both["label_a"] != both["label_b"]
    if clash.any():
        image = both.loc[clash, "image_id"].iloc[0]
        raise UserError(f"compare: {model}: image {image} has different labels on the two sides")
    patients = both["image_id"].map(a.patients)
    if patients.isna().any():
        image = both.loc[patients.isna(), "image_id"].iloc[0]
        raise UserError(f"compare: {a.rev}: image {image} is not in {SPLITS_FILE}")
    return (
        both["label_a"].to_numpy(np.int64),
        both["score_a"].to_numpy(np.float64),
        both["score_b"].to_numpy(np.float64),
        patients.to_numpy(str),
    )


def compare_sides(
    a: Side, b: Side, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> list[Row]:
    """Every model on both sides, every metric in :data:`METRICS`, Holm-adjusted per metric."""
    models = sorted(a.predictions.keys() & b.predictions.keys())
    if not models:
        raise UserError(
            f"compare: {a.rev} and {b.rev} have no model in common "
            f"({a.rev}: {sorted(a.predictions)}; {b.rev}: {sorted(b.predictions)})"
        )
    raw: list[dict[str, Any]] = []
    for model in models:
        y, sa, sb, groups = _paired(a, b, model)
        for metric in METRICS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    d = M.paired_bootstrap_delta(y, sa, sb, groups, metric, n_boot, seed)
                except ValueError as exc:
                    raise UserError(f"compare: {model}: {metric}: {exc}") from None
                p = M.paired_permutation_pvalue(y, sa, sb, metric, n_boot, seed)
            fn = M.roc_auc if metric == "roc_auc" else M.pauc_above_tpr
            raw.append(
                {
                    "model": model,
                    "metric": metric,
                    "a": fn(y, sa),
                    "b": fn(y, sb),
                    "delta": d["delta"],
                    "ci_lo": d["ci_lo"],
                    "ci_hi": d["ci_hi"],
                    "p": p,
                    "n_images": int(y.size),
                    "n_patients": int(np.unique(groups).size),
                }
            )
    rows: list[Row] = []
    for metric in METRICS:
        group = [r for r in raw if r["metric"] == metric]
        for r, padj in zip(group, holm_adjust([r["p"] for r in group]), strict=True):
            rows.append(Row(**r, p_holm=padj, verdict=verdict(r["ci_lo"], r["ci_hi"], padj, alpha)))
    return sorted(rows, key=lambda r: (r.model, METRICS.index(r.metric)))


def format_table(rows: Sequence[Row], rev_a: str, rev_b: str) -> str:
    """A plain-text table, one line per model and metric."""
    head = f"A = {rev_a}, B = {rev_b}; delta = A - B on the holdout images both sides scored"
    lines = [
        head,
        f"{'model':<28} {'metric':<8} {'A':>7} {'B':>7} {'delta':>8} {'95% CI':>19} "
        f"{'p':>6} {'p_holm':>6}  verdict",
    ]
    for r in rows:
        ci = f"[{r.ci_lo:+.4f}, {r.ci_hi:+.4f}]"
        lines.append(
            f"{r.model:<28} {r.metric:<8} {r.a:7.4f} {r.b:7.4f} {r.delta:+8.4f} {ci:>19} "
            f"{r.p:6.3f} {r.p_holm:6.3f}  {r.verdict}"
        )
    return "\n".join(lines)


def rows_as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """JSON-ready rows (``--json``)."""
    return [asdict(r) for r in rows]
