"""Cell parsing shared by the CSV table readers (LIDC nodule table, LUNA16 tables)."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["finite_number"]


def finite_number(
    path: Path, row_number: int, column: str, text: str | None, error: type[ValueError] = ValueError
) -> float:
    """Parse one CSV cell as a finite float.

    Args:
        path: the table file (named in the message).
        row_number: 1-based data row (named in the message).
        column: column name (named in the message).
        text: the cell's text (None or blank is "not a number").
        error: the ValueError subclass to raise (each reader has its own).

    Raises:
        error: the cell is not a number, or is NaN / infinite; the message names file, row and column.
    """
    text = (text or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise error(f"{path}: row {row_number}, column {column}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise error(f"{path}: row {row_number}, column {column}: not finite: {text!r}")
    return value
