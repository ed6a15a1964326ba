"""Reading the pipeline's CSV tables (metadata, manifest, splits, candidates): one reader, so
every table gets the same id handling and the same one-line errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from melanoma_kd.errors import UserError


def read_table(
    path: str | Path,
    what: str,
    required: Sequence[str],
    *,
    dtype: type | Mapping[str, type] = str,
    empty_is_missing: bool = False,
) -> pd.DataFrame:
    """The CSV at ``path`` with the columns ``required``; a :class:`UserError` naming the file
    when it is absent, not a CSV, or lacks a column.

    Ids stay strings (``dtype``). An empty cell is ``""`` unless ``empty_is_missing``, when it
    is NaN (for metadata whose empty ids are meaningful)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        df = pd.read_csv(
            path,
            dtype=dtype,
            keep_default_na=False,
            na_values=[""] if empty_is_missing else None,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return df
