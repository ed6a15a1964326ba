"""code_deps: one file per stage script, ``code/<script>.txt``, holding the SHA-256 of the script
and of every package module it can import. Each stage depends on its script's file instead of
listing those modules, so an edit reruns exactly the stages that run the edited code while
``dvc.lock`` stays small (DVC rewrites it after every stage). See melanoma_kd/code_deps.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma_kd.code_deps import write_code_files
from melanoma_kd.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stages", required=True, help="folder of the stage scripts")
    ap.add_argument("--src", required=True, help="folder holding the package (src)")
    ap.add_argument("--out", required=True, help="folder to write <script>.txt into")
    args = ap.parse_args(argv)

    scripts = write_code_files(Path(args.stages), Path(args.src), Path(args.out), Path.cwd())
    print(f"code_deps: {len(scripts)} stage scripts fingerprinted into {args.out}/")


if __name__ == "__main__":
    main()
