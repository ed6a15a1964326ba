"""evaluate: every model on holdout (thresholds chosen on validation), plot data and figures."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from melanoma_kd.catalog import model_specs, read_raw_params, selected_point
from melanoma_kd.config import load_params
from melanoma_kd.data.dataset import CacheDataset
from melanoma_kd.errors import cli_entry
from melanoma_kd.evaluate import best_teacher, evaluate_all, save_evaluation, score_model
from melanoma_kd.plots import render_pngs, write_plot_data


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse paths, score every model, compute metrics, write metrics/plots."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache-dir", default="data/cache", help="holds val.h5 and holdout.h5")
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--runs-dir", default="metrics", help="metrics/<group>/<name> of each run")
    ap.add_argument("--selected", default="models/selected_student.json")
    ap.add_argument("--predictions-dir", default="metrics/predictions")
    ap.add_argument("--metrics-dir", default="metrics/evaluate")
    ap.add_argument("--error-analysis", default="metrics/error_analysis.json")
    ap.add_argument("--kd-gain", default="metrics/kd_gain.json")
    ap.add_argument("--student-vs-teacher", default="metrics/student_vs_teacher.json")
    ap.add_argument("--seeds", default="metrics/seed_replicates.json")
    ap.add_argument("--transfer-ablation", default="metrics/transfer_ablation.json")
    ap.add_argument("--plots-dir", default="plots")
    args = ap.parse_args(argv)

    params = load_params(args.params)  # validates the whole file; names come from the raw YAML
    specs = model_specs(read_raw_params(args.params), args.models_dir, args.runs_dir)
    selected = selected_point(args.selected, specs)
    predictions = {
        spec.name: score_model(spec, args.cache_dir)
        for spec in tqdm(specs, desc="evaluate: scoring", unit="model", disable=None)
    }
    teacher = best_teacher(specs)  # chosen on validation, like the distilled teacher
    ev = evaluate_all(specs, predictions, selected, params.evaluate, teacher=teacher)
    ev.transfer["transfer_images"] = params.distill.transfer_images
    save_evaluation(
        ev,
        predictions_dir=args.predictions_dir,
        metrics_dir=args.metrics_dir,
        error_analysis_path=args.error_analysis,
        kd_gain_path=args.kd_gain,
        student_vs_teacher_path=args.student_vs_teacher,
        seeds_path=args.seeds,
        transfer_path=args.transfer_ablation,
    )
    write_plot_data(ev, args.plots_dir)

    holdout = CacheDataset(Path(args.cache_dir) / "holdout.h5")
    index = {image_id: i for i, image_id in enumerate(holdout.ids)}

    def load_image(image_id: str) -> np.ndarray:
        return holdout.read(index[image_id]).permute(1, 2, 0).numpy()

    render_pngs(ev, args.plots_dir, load_image)
    for name, m in ev.metrics.items():
        print(
            f"evaluate: {name:28s} holdout ROC-AUC {m['roc_auc']:.4f} "
            f"[{m['roc_auc_ci_lo']:.4f}, {m['roc_auc_ci_hi']:.4f}]  pAUC {m['pauc']:.4f}"
        )
    for what, g, a, b in (
        ("KD gain", ev.kd_gain, "kd_model", "scratch_model"),
        ("student vs teacher", ev.student_vs_teacher, "student_model", "teacher_model"),
    ):
        print(
            f"evaluate: {what} ({g[a]} - {g[b]}) ΔROC-AUC "
            f"{g['roc_auc_delta']:+.4f} [{g['roc_auc_delta_ci_lo']:+.4f}, "
            f"{g['roc_auc_delta_ci_hi']:+.4f}] p = {g['roc_auc_p']:.4g}"
        )
    if "effect_roc_auc_delta" in (tr := ev.transfer):
        print(
            f"evaluate: transfer set ({tr['kd_model']} - {tr['no_transfer_model']}) ΔROC-AUC "
            f"{tr['effect_roc_auc_delta']:+.4f} [{tr['effect_roc_auc_delta_ci_lo']:+.4f}, "
            f"{tr['effect_roc_auc_delta_ci_hi']:+.4f}] p = {tr['effect_roc_auc_p']:.4g}"
        )
    sd = ev.seeds
    for base in ("scratch", "kd"):
        print(
            f"evaluate: {base} over {sd['n_seeds']} seeds: holdout ROC-AUC "
            f"{sd[f'{base}_roc_auc_mean']:.4f} ± {sd[f'{base}_roc_auc_sd'] or 0.0:.4f}, pAUC "
            f"{sd[f'{base}_pauc_mean']:.4f} ± {sd[f'{base}_pauc_sd'] or 0.0:.4f}"
        )


if __name__ == "__main__":
    main()
