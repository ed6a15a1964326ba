"""ingest: read the configured data source, check every image decodes, write the manifest."""

from __future__ import annotations

import argparse
import sys

from melanoma_kd.config import load_params
from melanoma_kd.data.sources import build_manifest
from melanoma_kd.errors import cli_entry
from melanoma_kd.io import atomic_path, write_json


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True, help="manifest CSV")
    ap.add_argument("--skipped", required=True, help="CSV of skipped image ids")
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    manifest, report = build_manifest(params.data)
    skipped = report.pop("skipped_ids")
    if skipped:
        print(f"ingest: skipped {len(skipped)} unreadable image(s): {skipped[:5]}", file=sys.stderr)
    with atomic_path(args.out) as tmp:
        manifest.to_csv(tmp, index=False)
    with atomic_path(args.skipped) as tmp:
        tmp.write_text("image_id\n" + "".join(f"{i}\n" for i in skipped))
    write_json(args.metrics, report)
    if "subsample_seed" in report:
        print(
            f"ingest: subsampled to {report['subsample_negatives_after']} of "
            f"{report['subsample_negatives_before']} benign images (whole patients, seed "
            f"{report['subsample_seed']}); every melanoma image kept"
        )
    print(f"ingest: {report['images']} images, {report['positives']} melanoma")


if __name__ == "__main__":
    main()
