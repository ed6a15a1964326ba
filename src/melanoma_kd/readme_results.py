"""Copy the generated results into README.md, so the README never carries a typed number.

``make repro`` runs this after ``dvc repro``: the block between the ``results:start`` and
``results:end`` markers in README.md is replaced by the holdout table, the KD-gain lines and
(when present) the seed-replicate table and the transfer-set lines of ``reports/summary.md`` (the
``report`` stage's).
``make verify`` then checks that README.md, like every committed result, is what the code
produces.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from melanoma_kd.errors import UserError, cli_entry
from melanoma_kd.io import atomic_path

START, END = "<!-- results:start -->", "<!-- results:end -->"
SECTIONS = ("## Every model on holdout", "## KD gain over the scratch student")
OPTIONAL = (
    "## Seed replicates (holdout)",
    "## Comparisons pooled over seeds (headline)",
    "## Transfer set",
    "## Hair removal: effect on the classifier",
)


def _section(summary: str, heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", summary, re.S | re.M)
    if match is None:
        raise UserError(f"reports/summary.md: section {heading!r} not found")
    return match.group(1).strip()


def results_block(summary: str) -> str:
    """The README block built from the summary's holdout table and KD-gain lines."""
    present = [h for h in OPTIONAL if re.search(rf"^{re.escape(h)}$", summary, re.M)]
    headings = sorted([*SECTIONS, *present], key=lambda h: summary.find(f"{h}\n"))  # as shown
    parts = [f"#{heading}\n\n{_section(summary, heading)}" for heading in headings]
    note = "_Generated from `reports/summary.md` by `make repro`; do not edit by hand._"
    return "\n\n".join([START, note, *parts, END])


def update_readme(readme: str, summary: str) -> str:
    """``readme`` with its results block replaced (markers must appear once each, in order)."""
    i, j = readme.find(START), readme.find(END)
    if i < 0 or j < i or readme.count(START) != 1 or readme.count(END) != 1:
        raise UserError(f"README.md: needs one {START} … {END} block")
    return readme[:i] + results_block(summary) + readme[j + len(END) :]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, default=Path("reports/summary.md"))
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args(argv)
    if not args.summary.is_file():
        raise UserError(f"{args.summary}: not found (run `dvc repro` first)")
    text = update_readme(args.readme.read_text(), args.summary.read_text())
    if text != args.readme.read_text():
        with atomic_path(args.readme) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
