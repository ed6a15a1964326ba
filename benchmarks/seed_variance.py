"""Between-seed spread of the scratch student under training recipes, side by side.

Trains the scratch student once per (recipe, seed) on the pipeline's cache (``data/cache``; run
``dvc repro cache`` first), exactly as a seed replicate does (only the init/shuffle seed
changes), and prints validation and holdout ROC-AUC / pAUC as mean ± sd over seeds plus the
seconds per run. Recipes are params overrides; the choice between them is made on the
validation columns, the holdout ones are what the issue's target is stated on.

    python benchmarks/seed_variance.py --seeds 0 1 2 3 4 \
        --recipe plateau:train.schedule=plateau,student.epochs=5 \
        --recipe cosine12:train.schedule=cosine,student.epochs=12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from melanoma_kd.config import Params, load_params
from melanoma_kd.inference import score_checkpoint
from melanoma_kd.metrics import pauc_above_tpr, roc_auc
from melanoma_kd.runs import RunPaths, student_run, train


def _override(params: Params, assignments: str) -> Params:
    """``params`` with ``section.key=value`` assignments (comma-separated, YAML values)."""
    raw = params.model_dump()
    for item in filter(None, assignments.split(",")):
        dotted, value = item.split("=", 1)
        *path, leaf = dotted.split(".")
        node = raw
        for key in path:
            node = node[key]
        node[leaf] = yaml.safe_load(value)
    return Params.model_validate(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache-dir", default="data/cache")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--recipe", action="append", required=True, help="name:key=value,...")
    args = ap.parse_args()
    base = load_params(args.params)
    cache = Path(args.cache_dir)
    rows = []
    for spec in args.recipe:
        name, _, assignments = spec.partition(":")
        params = _override(base, assignments)
        scores: dict[str, list[float]] = {
            "val_roc": [],
            "val_pauc": [],
            "ho_roc": [],
            "ho_pauc": [],
        }
        seconds = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                paths = RunPaths(Path(tmp) / "s.pt", Path(tmp) / "m")
                start = time.perf_counter()
                summary = train(
                    params, student_run(params, seed=seed), cache_dir=cache, paths=paths
                )
                seconds.append(time.perf_counter() - start)
                ho = score_checkpoint(paths.checkpoint, cache / "holdout.h5")
            scores["val_roc"].append(summary["val_roc_auc"])
            scores["val_pauc"].append(summary["val_pauc"])
            scores["ho_roc"].append(roc_auc(ho["label"], ho["score"]))
            scores["ho_pauc"].append(pauc_above_tpr(ho["label"], ho["score"]))
            print(f"{name} seed {seed}: " + " ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()))
            sys.stdout.flush()
        rows.append((name, scores, float(np.mean(seconds))))
    print(f"\n{len(args.seeds)} seeds {args.seeds}; mean ± sd (sample sd, n-1)")
    print(
        f"{'recipe':<12} {'val ROC-AUC':>16} {'val pAUC':>16} {'holdout ROC-AUC':>16} "
        f"{'holdout pAUC':>16} {'s/run':>6}"
    )
    for name, sc, sec in rows:
        cells = [f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" for v in sc.values()]
        print(f"{name:<12} " + " ".join(f"{c:>16}" for c in cells) + f" {sec:6.1f}")


if __name__ == "__main__":
    main()
