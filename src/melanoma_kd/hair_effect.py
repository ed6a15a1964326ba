"""What hair removal does to the classifier: the hair-removal ablation's runs
(:func:`melanoma_kd.hair_ablation.arm_runs`) scored on holdout and every pair of arms compared
per role (scratch student, best teacher), paired on the same holdout images and pooled over
seeds (:func:`melanoma_kd.seed_stats.pooled_paired_delta`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from melanoma_kd import metrics as M
from melanoma_kd.config import Params
from melanoma_kd.errors import UserError
from melanoma_kd.hair_ablation import ROLES, ArmRun, main_arm
from melanoma_kd.results import rounded
from melanoma_kd.seed_stats import pooled_paired_delta

METRICS: tuple[str, ...] = ("roc_auc", "pauc")


def arm_pairs(main: str, arms: list[str]) -> list[tuple[str, str]]:
    """Every pair of arms, as ``(a, b)`` for the difference a − b: the main arm first, and
    ``none`` (no hair removal) always as ``b``, so a positive Δ means "a is better"."""
    order = [main, *arms]
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            pairs.append((b, a) if a == "none" else (a, b))
    return pairs


Scorer = Callable[[ArmRun], pd.DataFrame]


def compare_arms(
    params: Params, runs: list[ArmRun], score: Scorer, n_boot: int, seed: int
) -> dict[str, Any]:
    """Holdout ROC-AUC / pAUC of every run, their mean and sd per (role, arm) over seeds, and
    every pair of arms per role pooled over seeds (Δ, two-level bootstrap CI, patient-level
    permutation p, MDE). ``score(run)`` returns the run's holdout predictions
    (``image_id, label, score, patient_id``); all runs must cover the same images in the same
    order."""
    holdout = {run.name: score(run) for run in runs}
    first = next(iter(holdout.values()))
    for name, df in holdout.items():
        if not (df["image_id"].equals(first["image_id"]) and df["label"].equals(first["label"])):
            raise UserError(f"hair ablation: {name}'s holdout images/labels differ from the others")
    y = first["label"].to_numpy(np.int64)
    groups = first["patient_id"].astype(str).to_numpy()
    scores = {n: df["score"].to_numpy(np.float64) for n, df in holdout.items()}
    per_run = {
        run.name: {
            "roc_auc": M.roc_auc(y, scores[run.name]),
            "pauc": M.pauc_above_tpr(y, scores[run.name]),
        }
        for run in runs
    }
    main = main_arm(params)
    arms = [main, *params.hair_ablation.arms]
    seeds = params.hair_ablation.seeds
    by = {(r.role, r.arm, r.seed): r.name for r in runs}
    out: dict[str, Any] = {
        "main_arm": main,
        "arms": ",".join(arms),
        "seeds": ",".join(str(s) for s in seeds),
        "n_seeds": len(seeds),
        "n_boot": n_boot,
        "n_holdout": int(y.size),
        "n_holdout_melanoma": int(y.sum()),
        "runs": {name: rounded(m) for name, m in per_run.items()},
    }
    for role in ROLES:
        summary: dict[str, Any] = {}
        for arm in arms:
            values = {m: np.array([per_run[by[role, arm, s]][m] for s in seeds]) for m in METRICS}
            summary[arm] = rounded(
                {
                    **{f"{m}_mean": float(v.mean()) for m, v in values.items()},
                    **{
                        f"{m}_sd": float(v.std(ddof=1)) if v.size > 1 else None
                        for m, v in values.items()
                    },
                }
            )
        compared: dict[str, Any] = {}
        for a, b in arm_pairs(main, params.hair_ablation.arms):
            a_scores = np.vstack([scores[by[role, a, s]] for s in seeds])
            b_scores = np.vstack([scores[by[role, b, s]] for s in seeds])
            entry: dict[str, Any] = {"a": a, "b": b}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for metric in METRICS:
                    d = pooled_paired_delta(y, a_scores, b_scores, groups, metric, n_boot, seed)
                    d.pop("n_seeds")
                    entry |= {f"{metric}_{k}": v for k, v in d.items()}
            compared[f"{a}_vs_{b}"] = rounded(entry)
        out[role] = {"arms": summary, "comparisons": compared}
    return out


def arm_summary(result: Mapping[str, Any]) -> list[str]:
    """What the hair_evaluate stage prints: one line per comparison."""
    lines = []
    for role in ROLES:
        for key, c in result.get(role, {}).get("comparisons", {}).items():
            lines.append(
                f"{role} {key}: ΔROC-AUC {c['roc_auc_delta']:+.4f} "
                f"[{c['roc_auc_ci_lo']:+.4f}, {c['roc_auc_ci_hi']:+.4f}] p {c['roc_auc_p']:.3g}; "
                f"ΔpAUC {c['pauc_delta']:+.4f} [{c['pauc_ci_lo']:+.4f}, {c['pauc_ci_hi']:+.4f}]"
            )
    return lines
