"""generate: write the synthetic dermoscopy data set (ISIC-2024 layout) and a sample grid.

With a ``data.source`` other than synthetic nothing is generated: the output folder holds only
a marker file and the figure says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melanoma_kd.config import load_params
from melanoma_kd.data.synthetic import (
    SOURCE,
    generate_dataset,
    plot_not_generated,
    plot_samples,
    write_not_generated,
)
from melanoma_kd.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--plot", required=True, help="sample grid PNG")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    out, plot = Path(args.out), Path(args.plot)
    if params.data.source != SOURCE:
        summary = write_not_generated(out, params.data.source)
        plot_not_generated(plot, params.data.source)
    else:
        summary = generate_dataset(params.generate, out)
        plot_samples(out, plot, seed=params.generate.seed)
    print(f"generate: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
