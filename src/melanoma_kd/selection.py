"""Choosing on validation: the one rule that picks the best teacher (:func:`select_teacher`, the
``select_teacher`` stage, whose record :func:`read_best_teacher` reads for every stage that
needs that teacher: the one to distil, export, retrain and compare against) and the KD grid point
to export (:func:`selection_record`, the ``select_student`` stage), and the one rule that sets a
deployable model's decision threshold (:func:`operating_thresholds`).

A candidate is a training run's ``summary.json`` (written by :mod:`melanoma_kd.runs`), read for
its validation pAUC and ROC-AUC. Ranking: higher validation pAUC first; a tie is broken by the
higher validation ROC-AUC, then by the order the candidates are given in (``teachers.archs``
order, or the sorted point names), so the order is total and stable. Holdout is never read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_kd.errors import UserError
from melanoma_kd.io import read_json

SUMMARY = "summary.json"
RULE = "validation pAUC (ties: validation ROC-AUC, then listing order)"


@dataclass(frozen=True)
class Ranked:
    """One candidate's validation scores."""

    name: str
    val_pauc: float
    val_roc_auc: float


def read_scores(name: str, summary: Path) -> Ranked:
    """A run's validation pAUC / ROC-AUC; one-line errors for a missing or bad summary."""
    if not summary.is_file():
        raise UserError(f"{summary}: run summary not found (train {name} first)")
    data = read_json(summary)
    try:
        pauc, auc = float(data["val_pauc"]), float(data["val_roc_auc"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{summary}: needs numeric val_pauc and val_roc_auc") from None
    if not (np.isfinite(pauc) and np.isfinite(auc)):
        raise UserError(f"{summary}: val_pauc/val_roc_auc not finite ({pauc}, {auc})")
    return Ranked(name, pauc, auc)


def rank_by_validation(summaries: Mapping[str, Path]) -> list[Ranked]:
    """Candidates (name -> run summary), best first by :data:`RULE`."""
    if not summaries:
        raise UserError("nothing to choose from: no candidate run")
    scored = [read_scores(name, path) for name, path in summaries.items()]
    order = {r.name: i for i, r in enumerate(scored)}
    return sorted(scored, key=lambda r: (-r.val_pauc, -r.val_roc_auc, order[r.name]))


def best_by_validation(summaries: Mapping[str, Path]) -> str:
    """Name of the best candidate by :data:`RULE`."""
    return rank_by_validation(summaries)[0].name


def run_summaries(root: str | Path, names: list[str]) -> dict[str, Path]:
    """``{name: root/name/summary.json}`` in the given order."""
    return {name: Path(root) / name / SUMMARY for name in names}


def select_teacher(teacher_metrics_root: str | Path, archs: Sequence[str]) -> str:
    """The arch of ``archs`` whose teacher run (``<root>/<arch>/summary.json``) is best by
    :data:`RULE`. Only the select_teacher stage calls this; every other stage reads its record
    (:func:`read_best_teacher`), so the choice is made once."""
    return best_by_validation(run_summaries(teacher_metrics_root, list(archs)))


def read_best_teacher(record: str | Path, archs: Sequence[str]) -> str:
    """The arch in the select_teacher stage's record, which must be one of ``archs``
    (``teachers.archs``)."""
    path = Path(record)
    if not path.is_file():
        raise UserError(f"{path}: not found (written by the select_teacher stage)")
    data = read_json(path)
    arch = data.get("arch") if isinstance(data, dict) else None
    if arch not in archs:
        raise UserError(f"{path}: arch {arch!r} is not in teachers.archs {list(archs)}")
    return str(arch)


def rank_students(
    distill_metrics_root: str | Path, points: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """KD points with a ``summary.json``, best first by :data:`RULE` (candidates listed in name
    order, so an exact tie goes to the first name).

    ``points`` restricts the candidates to the current grid (a point removed from params.yaml
    leaves its old outputs behind); each of them must have a summary. Holdout is never read.
    """
    root = Path(distill_metrics_root)
    if not root.is_dir():
        raise UserError(f"{root}: KD metrics directory not found")
    if points is None:
        names = sorted(p.parent.name for p in root.glob(f"*/{SUMMARY}"))
    else:
        names = sorted(points)
        missing = [str(root / n / SUMMARY) for n in names if not (root / n / SUMMARY).is_file()]
        if missing:
            raise UserError(f"{missing[0]}: KD summary not found ({len(missing)} missing)")
    if not names:
        raise UserError(f"{root}: no KD point has a summary.json")
    ranked = rank_by_validation(run_summaries(root, names))
    return [{"point": r.name, "val_pauc": r.val_pauc, "val_roc_auc": r.val_roc_auc} for r in ranked]


def select_student(distill_metrics_root: str | Path, points: Collection[str] | None = None) -> str:
    """Name of the best KD point on validation (:func:`rank_students`)."""
    return rank_students(distill_metrics_root, points)[0]["point"]


def selection_record(
    distill_metrics_root: str | Path, points: Collection[str], checkpoint_dir: str | Path
) -> dict[str, Any]:
    """The ``selected_student.json`` record: the best KD point with its validation scores, its
    checkpoint (``checkpoint_dir/<point>.pt``), the number of candidates and the rule."""
    ranking = rank_students(distill_metrics_root, points)
    best = ranking[0]
    return {
        **best,
        "checkpoint": str(Path(checkpoint_dir) / f"{best['point']}.pt"),
        "candidates": len(ranking),
        "selected_on": RULE,
    }


THRESHOLD_RULE = "highest threshold with sensitivity >= {target:g} on validation"


def operating_thresholds(labels: np.ndarray, scores: np.ndarray, sens_target: float) -> dict:
    """A model's operating points, chosen on its own validation scores (labels 0/1, P(melanoma)).

    ``threshold`` (what ``predict`` and the deployment decide with) is the highest threshold
    whose rule ``score >= threshold`` keeps sensitivity >= ``sens_target``; the max-F1
    threshold is stored beside it for reference. Every deployable model (FP32 and INT8 alike)
    gets its thresholds from this function, at the step that produces it, and carries them in
    its metadata.
    """
    from melanoma_kd.metrics import threshold_at_sensitivity, threshold_max_f1

    return {
        "threshold": threshold_at_sensitivity(labels, scores, sens_target),
        "threshold_rule": THRESHOLD_RULE.format(target=sens_target),
        "threshold_max_f1": threshold_max_f1(labels, scores),
    }
