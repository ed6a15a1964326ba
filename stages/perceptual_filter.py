"""perceptual_filter: keep generated positives whose VGG16 distance to real ones is in the band."""

from __future__ import annotations

import argparse
import sys

from melanoma_kd.data.perceptual import (
    LazyImages,
    build_vgg,
    distance_table,
    perceptual_filter,
    plot_distances,
    plot_examples,
)
from melanoma_kd.data.preprocessed import open_preprocessed
from melanoma_kd.data.synth_positives import (
    CANDIDATE_COLUMNS,
    SYNTH_SOURCE,
    check_provenance,
    load_synth_params,
    read_candidates,
    read_png_bytes,
    read_splits,
    write_png_store,
    write_table,
)
from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.io import write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--splits", required=True)
    ap.add_argument("--images", required=True, help="preprocessed real images")
    ap.add_argument("--candidates-h5", required=True)
    ap.add_argument("--candidates-csv", required=True)
    ap.add_argument("--out-h5", required=True, help="kept images (PNG store)")
    ap.add_argument("--out-csv", required=True, help="kept-sample table")
    ap.add_argument("--distances", required=True, help="per-image distances and decisions (CSV)")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot-hist", required=True)
    ap.add_argument("--plot-examples", required=True)
    args = ap.parse_args(argv)

    params, synth = load_synth_params(args.params)
    splits = read_splits(args.splits)
    candidates = read_candidates(args.candidates_csv)
    check_provenance(candidates, splits)
    positives = splits[(splits["split"] == "train") & (splits["label"] == 1)]
    real_ids = sorted(positives["image_id"])
    model, pretrained = build_vgg(params.models.weights_dir, synth.seed, synth.num_threads)
    if not pretrained:
        print(
            f"warning: perceptual_filter: no {params.models.weights_dir}/vgg16.pth; using a seeded "
            "random-init VGG16 (a weaker perceptual measure; pretrained_vgg: 0)",
            file=sys.stderr,
        )
    with (
        open_preprocessed(args.images) as real_store,
        open_preprocessed(args.candidates_h5) as cand_store,
    ):
        ids = candidates["image_id"].tolist()
        if sorted(ids) != sorted(cand_store.index):
            raise UserError(f"{args.candidates_h5}: image ids differ from {args.candidates_csv}")
        result = perceptual_filter(
            candidates,
            LazyImages(cand_store.get, ids),
            real_ids,
            LazyImages(real_store.get, real_ids),
            model,
            pretrained,
            image_size=synth.image_size,
            batch_size=synth.batch_size,
            low_quantile=synth.low_quantile,
            low_factor=synth.low_factor,
            high_quantile=synth.high_quantile,
            high_factor=synth.high_factor,
        )
        plot_examples(result, cand_store.get, args.plot_examples)
    kept = result.candidates[result.candidates["decision"] == "kept"]
    kept_ids = kept["image_id"].tolist()
    write_png_store(
        args.out_h5,
        kept_ids,
        read_png_bytes(args.candidates_h5, kept_ids),
        attrs={"kind": SYNTH_SOURCE},
    )
    write_table(args.out_csv, kept[CANDIDATE_COLUMNS])
    write_table(args.distances, distance_table(result))
    # Throughput varies run to run: print it, keep it out of the (committed) metrics.
    m = dict(result.metrics)
    images_per_s = m.pop("images_per_s")
    write_json(args.metrics, m)
    plot_distances(result, args.plot_hist)
    print(
        f"perceptual_filter: kept {m['kept']}/{m['candidates']} "
        f"(too close {m['rejected_too_close']}, too far {m['rejected_too_far']}); band "
        f"[{m['band_low']:.4f}, {m['band_high']:.4f}]; VGG16 {images_per_s} img/s "
        f"at {m['image_size']} px; pretrained_vgg {m['pretrained_vgg']}"
    )


if __name__ == "__main__":
    main()
