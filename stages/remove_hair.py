"""remove_hair: a hair detector (``preprocess.detector``) + Telea inpainting over the manifest,
in parallel.

Writes the dehaired images (PNG bytes per id, HDF5), quality metrics against the synthetic hair
truth when ``data.source`` is synthetic (the truth file is never opened for other sources), and a
before/after figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.data.hair import dehair_manifest, plot_examples, read_manifest, truth_for
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--manifest", required=True, help="data/manifest.csv from ingest")
    ap.add_argument(
        "--truth",
        default=None,
        help="hair truth (file or folder), read if data.source is synthetic",
    )
    ap.add_argument("--out", required=True, help="dehaired images (HDF5)")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot", required=True, help="before/after figure (PNG)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    manifest = read_manifest(Path(args.manifest))
    truth = truth_for(params.data.source, args.truth)
    metrics, examples = dehair_manifest(manifest, params.preprocess, Path(args.out), truth)
    write_json(args.metrics, metrics)
    plot_examples(examples, Path(args.plot))
    print(f"remove_hair: {json.dumps(metrics)}")


if __name__ == "__main__":
    main()
