"""baselines: hand-crafted features + scikit-learn models, scored on holdout like every model."""

from __future__ import annotations

import argparse

from melanoma_kd.baselines import run_baselines, save_results
from melanoma_kd.config import load_params
from melanoma_kd.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse paths, validate params, fit and score the baselines, write the outputs."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--cache-dir", required=True, help="holds {train,val,holdout}.h5")
    ap.add_argument("--out-metrics", required=True)
    ap.add_argument("--predictions-dir", required=True)
    ap.add_argument("--table", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    results = run_baselines(args.cache_dir, sens_target=params.evaluate.sens_target)
    save_results(
        results,
        metrics_path=args.out_metrics,
        predictions_dir=args.predictions_dir,
        table_path=args.table,
    )
    print(
        f"baselines ({results.n_features} features): "
        + ", ".join(f"{name} AUC {m['roc_auc']:.3f}" for name, m in results.metrics.items())
    )


if __name__ == "__main__":
    main()
