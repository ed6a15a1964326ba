"""teacher_outputs: the chosen teacher's logits/features per augmented view, computed once."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.data.transforms import build_augment
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json
from melanoma_kd.teacher_outputs import choose_teacher, compute_teacher_outputs
from melanoma_kd.train import set_determinism


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--teachers-dir", required=True, help="models/teachers (<arch>.pt)")
    ap.add_argument(
        "--best-teacher",
        required=True,
        help="select_teacher's record (models/best_teacher.json); read for distill.teacher: best",
    )
    ap.add_argument("--transfer", required=True, help="transfer-set cache (transfer_set stage)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    set_determinism(params.train.seed, params.train.num_threads)
    arch = choose_teacher(params.distill.teacher, params.teachers.archs, args.best_teacher)
    info = compute_teacher_outputs(
        Path(args.teachers_dir) / f"{arch}.pt",
        Path(args.cache_dir) / "train.h5",
        build_augment(params.augment),
        params.train.seed,
        params.student.epochs,
        params.distill.feature.stages,
        args.out,
        transfer_cache=Path(args.transfer) if params.distill.transfer_images else None,
    )
    write_json(args.metrics, info)
    print(
        f"teacher_outputs: {info['teacher']} over {info['epochs']} epochs x {info['images']} views"
        f" ({info['transfer_images']} of them transfer-set images)"
    )


if __name__ == "__main__":
    main()
