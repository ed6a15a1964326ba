"""Do float16 teacher outputs change KD results beyond seed noise?

The ``teacher_outputs`` stage stores the teacher's logits and pooled features as float16
(:data:`melanoma_kd.teacher_outputs.STORED_DTYPE`, half the disk of float32). This script
computes them twice over the existing pipeline data — once kept float32, once stored float16,
both by :func:`~melanoma_kd.teacher_outputs.compute_teacher_outputs` — then trains the
validation-selected KD student (``models/selected_student.json``) on each, at every ``--seeds``
seed, exactly as the ``distill`` / ``replicate`` stages do (:func:`melanoma_kd.runs.train` with
:func:`~melanoma_kd.runs.student_run`; a seed other than ``train.seed`` is a seed replicate).
Within a seed the two runs share init, order and views, so they differ by the teacher targets
alone.

It prints, on the ``--split`` (holdout by default) images: each run's ROC-AUC and pAUC per seed,
the between-seed sd of each arm, and the seed-pooled paired difference fp16 − fp32 with its
two-level (patient, seed) bootstrap 95 % CI and patient-permutation p
(:func:`melanoma_kd.seed_stats.pooled_paired_delta`), judged by
:func:`melanoma_kd.compare.verdict` ("within noise" unless the CI excludes 0 at p < 0.05).

Everything it writes goes to a temporary folder (``--keep DIR`` keeps it); the pipeline's files
are only read.

    nice -n 10 python benchmarks/teacher_outputs_precision.py              # seeds 0 1 2
    python benchmarks/teacher_outputs_precision.py --seeds 0 1 --epochs 6   # quicker, less exact
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from melanoma_kd.catalog import read_selected
from melanoma_kd.compare import verdict
from melanoma_kd.config import Params, load_params
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.inference import score_checkpoint
from melanoma_kd.metrics import pauc_above_tpr, roc_auc
from melanoma_kd.runs import RunPaths, student_run, train
from melanoma_kd.seed_stats import pooled_paired_delta
from melanoma_kd.teacher_outputs import choose_teacher, compute_teacher_outputs
from melanoma_kd.train import set_determinism

ARMS = {"fp32": np.float32, "fp16": np.float16}


def teacher_outputs(params: Params, args: argparse.Namespace, out_dir: Path) -> dict[str, Path]:
    """The selected teacher's outputs as the ``teacher_outputs`` stage computes them, per arm."""
    set_determinism(params.train.seed, params.train.num_threads)
    arch = choose_teacher(params.distill.teacher, params.teachers.archs, args.best_teacher)
    paths = {}
    for name, dtype in ARMS.items():
        paths[name] = out_dir / f"teacher_outputs_{name}.h5"
        start = time.perf_counter()
        compute_teacher_outputs(
            Path(args.teachers_dir) / f"{arch}.pt",
            Path(args.cache_dir) / "train.h5",
            build_augment(params.augment),
            params.train.seed,
            params.student.epochs,
            params.distill.feature.stages,
            paths[name],
            transfer_cache=Path(args.transfer) if params.distill.transfer_images else None,
            dtype=dtype,
        )
        mib = paths[name].stat().st_size / 2**20
        print(
            f"teacher outputs ({arch}, {name}): {mib:.2f} MiB, {time.perf_counter() - start:.0f} s"
        )
    return paths


def rounding_error(paths: dict[str, Path]) -> float:
    """Largest relative difference between the float16 and float32 files (all datasets)."""
    worst = 0.0
    with h5py.File(paths["fp32"], "r") as a, h5py.File(paths["fp16"], "r") as b:
        for key in a:
            x, y = a[key][()], b[key][()].astype(np.float32)
            rel = np.abs(y - x) / np.maximum(np.abs(x), np.finfo(np.float16).tiny)
            worst = max(worst, float(rel.max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache-dir", default="data/cache")
    ap.add_argument("--teachers-dir", default="models/teachers")
    ap.add_argument("--best-teacher", default="models/best_teacher.json")
    ap.add_argument("--transfer", default="data/transfer.h5")
    ap.add_argument("--selected", default="models/selected_student.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, help="student epochs (default: student.epochs)")
    ap.add_argument("--split", choices=["holdout", "val"], default="holdout")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    args = ap.parse_args()

    params = load_params(args.params)
    if args.epochs:
        student = params.student.model_copy(update={"epochs": args.epochs})
        params = params.model_copy(update={"student": student})
    point = read_selected(args.selected)
    print(
        f"KD point {point.key}, {params.student.arch}, {params.student.epochs} epochs, "
        f"seeds {args.seeds} (train.seed {params.train.seed}), scored on {args.split}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="to_precision_"))
    try:
        outputs = teacher_outputs(params, args, tmp)
        print(f"largest relative rounding error, fp16 vs fp32 file: {rounding_error(outputs):.2e}")
        split = Path(args.cache_dir) / f"{args.split}.h5"
        scores: dict[str, list[np.ndarray]] = {name: [] for name in ARMS}
        y = groups = None
        for seed in args.seeds:
            for name in ARMS:
                run = student_run(params, point, seed=seed)
                paths = RunPaths(tmp / name / f"seed{seed}.pt", tmp / name / f"seed{seed}")
                start = time.perf_counter()
                train(
                    params,
                    run,
                    cache_dir=Path(args.cache_dir),
                    paths=paths,
                    teacher_outputs=outputs[name],
                    transfer=Path(args.transfer),
                )
                df = score_checkpoint(paths.checkpoint, split)
                y, groups = df["label"].to_numpy(), df["patient_id"].to_numpy()
                scores[name].append(df["score"].to_numpy())
                print(
                    f"seed {seed} {name}: {args.split} ROC-AUC {roc_auc(y, df['score']):.4f}, "
                    f"pAUC {pauc_above_tpr(y, df['score']):.4f} "
                    f"({time.perf_counter() - start:.0f} s)"
                )
        print()
        print(f"{'seed':>6} {'fp32 ROC-AUC':>13} {'fp16 ROC-AUC':>13} {'fp16-fp32':>10}")
        auc = {n: np.array([roc_auc(y, s) for s in scores[n]]) for n in ARMS}
        for i, seed in enumerate(args.seeds):
            d = auc["fp16"][i] - auc["fp32"][i]
            print(f"{seed:>6} {auc['fp32'][i]:>13.4f} {auc['fp16'][i]:>13.4f} {d:>+10.4f}")
        if len(args.seeds) > 1:
            print(
                f"{'mean':>6} {auc['fp32'].mean():>13.4f} {auc['fp16'].mean():>13.4f}\n"
                f"{'sd':>6} {auc['fp32'].std(ddof=1):>13.4f} {auc['fp16'].std(ddof=1):>13.4f}"
                "   (between seeds: the seed noise)"
            )
        print()
        for metric in ("roc_auc", "pauc"):
            r = pooled_paired_delta(
                y, scores["fp16"], scores["fp32"], groups, metric, n_boot=args.n_boot
            )
            print(
                f"pooled fp16 - fp32 {metric}: {r['delta']:+.4f} "
                f"[95% CI {r['ci_lo']:+.4f}, {r['ci_hi']:+.4f}], p = {r['p']:.3f}, "
                f"MDE {r['mde']:.4f}, {r['n_seeds']} seeds -> "
                f"{verdict(r['ci_lo'], r['ci_hi'], r['p'])}"
            )
    finally:
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
