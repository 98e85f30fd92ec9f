"""LUNA16 tables and images: ``annotations.csv``, ``annotations_excluded.csv``, ``seriesuids.csv``, ``subsetN/*.mhd``.

The LUNA16 challenge (Setio et al., "Validation, comparison, and combination of algorithms for automatic detection
of pulmonary nodules in computed tomography images: the LUNA16 challenge", Medical Image Analysis 42:1-13, 2017,
doi:10.1016/j.media.2017.06.015) publishes:

* ``annotations.csv``: ``seriesuid,coordX,coordY,coordZ,diameter_mm``, one row per reference nodule (>= 3 mm,
  accepted by at least 3 of 4 LIDC readers);
* ``annotations_excluded.csv``: the same columns for "irrelevant findings" (non-nodules, nodules < 3 mm, nodules
  marked by only one or two readers); ``diameter_mm`` is -1 where the size is unknown. Detections on them are
  ignored by the evaluation (neither hit nor false positive);
* ``seriesuids.csv``: the evaluated scans, one SeriesInstanceUID per line, no header;
* images as MetaImage pairs ``subset0..9/<seriesuid>.mhd/.raw``;
* submissions (and our predictions): ``seriesuid,coordX,coordY,coordZ,probability``.

Coordinates are world millimetres as ITK reads the ``.mhd`` files, i.e. LPS, the frame of
:class:`lunglesionai.core.volume.Volume` (no conversion is needed). Tables are returned grouped by seriesuid as
``(N, 4)`` float64 arrays ``[x, y, z, diameter_mm]`` (or ``[x, y, z, probability]``), rows in file order.

Example:
    >>> from lunglesionai.datasets.luna16 import read_annotations
    >>> nodules = read_annotations("luna16/annotations.csv")  # doctest: +SKIP
    >>> sum(len(a) for a in nodules.values())  # doctest: +SKIP
    1186
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.datasets.tables import finite_number

__all__ = [
    "ANNOTATION_COLUMNS",
    "IMAGE_SUFFIXES",
    "PREDICTION_COLUMNS",
    "UNKNOWN_DIAMETER_MM",
    "Luna16TableError",
    "find_images",
    "read_annotations",
    "read_predictions",
    "read_seriesuids",
    "write_luna16_csv",
]

logger = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
"""Columns of ``annotations.csv`` and ``annotations_excluded.csv`` (LPS mm; diameter in mm)."""
PREDICTION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")
"""Columns of a LUNA16 submission / prediction table."""
IMAGE_SUFFIXES = (".mhd", ".mha", ".nii.gz", ".nii", ".nrrd")
"""Image file suffixes looked for, in order of preference when a seriesuid has several files."""
UNKNOWN_DIAMETER_MM = -1.0
"""``diameter_mm`` of an excluded finding whose size is unknown (as in ``annotations_excluded.csv``)."""
_SUBSET_PREFIX = "subset"


class Luna16TableError(ValueError):
    """A LUNA16 table that cannot be used; the message names the file, and the row and column where known."""


def read_annotations(path: str | os.PathLike, *, allow_unknown_diameter: bool = False) -> dict[str, np.ndarray]:
    """Read ``annotations.csv`` (or, with ``allow_unknown_diameter``, ``annotations_excluded.csv``).

    Args:
        path: CSV with the columns :data:`ANNOTATION_COLUMNS` (more columns are ignored).
        allow_unknown_diameter: accept ``diameter_mm`` = -1 (:data:`UNKNOWN_DIAMETER_MM`), as the excluded table
            has; otherwise every diameter must be > 0.

    Returns:
        seriesuid -> (N, 4) float64 array of ``[coordX, coordY, coordZ, diameter_mm]`` (LPS mm, mm), rows in file
        order; seriesuids in order of first appearance. A header-only table gives ``{}``.

    Raises:
        Luna16TableError: missing file or column, empty seriesuid, a value that is not a finite number, or a
            diameter that is not > 0 (or -1 when allowed); the message names file, row and column.

    Example:
        >>> excluded = read_annotations("annotations_excluded.csv", allow_unknown_diameter=True)  # doctest: +SKIP
    """

    def check_diameter(value: float, row_number: int) -> None:
        if value > 0 or (allow_unknown_diameter and value == UNKNOWN_DIAMETER_MM):
            return
        allowed = "> 0 or -1 (unknown)" if allow_unknown_diameter else "> 0"
        raise Luna16TableError(f"{path}: row {row_number}, column diameter_mm: must be {allowed}, got {value}")

    return _read_grouped(Path(path), ANNOTATION_COLUMNS, check_diameter)


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a LUNA16 submission table ``seriesuid,coordX,coordY,coordZ,probability``.

    Args:
        path: CSV with the columns :data:`PREDICTION_COLUMNS`.

    Returns:
        seriesuid -> (N, 4) float64 array of ``[coordX, coordY, coordZ, probability]`` (LPS mm; any real score,
        higher = more suspicious), rows in file order.

    Raises:
        Luna16TableError: missing file or column, empty seriesuid, or a value that is not a finite number.
    """
    return _read_grouped(Path(path), PREDICTION_COLUMNS, None)


def read_seriesuids(path: str | os.PathLike) -> list[str]:
    """Read ``seriesuids.csv``: one SeriesInstanceUID per line (first column); a ``seriesuid`` header is allowed.

    Args:
        path: the table.

    Returns:
        The seriesuids in file order.

    Raises:
        Luna16TableError: missing file, an empty line, a duplicate seriesuid (row named), or no seriesuid at all.
    """
    p = Path(path)
    if not p.is_file():
        raise Luna16TableError(f"{p}: no such table")
    uids: list[str] = []
    seen: dict[str, int] = {}
    with open(p, newline="", encoding="utf-8") as handle:
        for row_number, row in enumerate(csv.reader(handle), start=1):
            uid = row[0].strip() if row else ""
            if row_number == 1 and uid.lower() == "seriesuid":
                continue
            if not uid:
                raise Luna16TableError(f"{p}: row {row_number}, column 1 (seriesuid): empty")
            if uid in seen:
                raise Luna16TableError(f"{p}: row {row_number}: seriesuid {uid!r} repeats row {seen[uid]}")
            seen[uid] = row_number
            uids.append(uid)
    if not uids:
        raise Luna16TableError(f"{p}: no seriesuid")
    return uids


def find_images(images_dir: str | os.PathLike, seriesuids: Iterable[str] | None = None) -> dict[str, Path]:
    """Find CT images named by seriesuid: ``DIR/<uid>.<suffix>`` or ``DIR/subsetN/<uid>.<suffix>``.

    Suffixes are :data:`IMAGE_SUFFIXES` (LUNA16's ``subsetN/<uid>.mhd`` layout, or single files such as
    ``<uid>.nii.gz``). Only the folder itself and its ``subset*`` sub-folders are searched. When a seriesuid has
    several files, the first suffix of :data:`IMAGE_SUFFIXES` wins (and a debug message names the others).

    Args:
        images_dir: the folder.
        seriesuids: keep only these (those without an image are simply absent from the result); None: all found.

    Returns:
        seriesuid -> image path (sorted by seriesuid).

    Raises:
        FileNotFoundError: ``images_dir`` does not exist.
        NotADirectoryError: it is not a folder.

    Example:
        >>> find_images("LUNA16", ["1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"])  # doctest: +SKIP
    """
    root = Path(images_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such images folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith(_SUBSET_PREFIX))
    wanted = None if seriesuids is None else set(seriesuids)
    found: dict[str, tuple[int, Path]] = {}
    for folder in folders:
        for path in folder.iterdir():
            parsed = _split_image_name(path.name)
            if parsed is None or not path.is_file():
                continue
            uid, rank = parsed
            if wanted is not None and uid not in wanted:
                continue
            if uid in found:
                logger.debug("%s: several images (%s, %s); using the preferred suffix", uid, found[uid][1], path)
                if found[uid][0] <= rank:
                    continue
            found[uid] = (rank, path)
    return {uid: found[uid][1] for uid in sorted(found)}


def write_luna16_csv(
    path: str | os.PathLike, rows: Iterable[Sequence], columns: Sequence[str] = ANNOTATION_COLUMNS
) -> Path:
    """Write a LUNA16-style table atomically (hidden temporary file in the same folder, then renamed).

    Args:
        path: target CSV.
        rows: ``(seriesuid, coordX, coordY, coordZ, value)`` per row (value = diameter_mm or probability).
        columns: header, :data:`ANNOTATION_COLUMNS` (default) or :data:`PREDICTION_COLUMNS`.

    Returns:
        The path written.

    Raises:
        ValueError: a row does not have ``len(columns)`` fields, or a number is not finite.
        FileNotFoundError: the target folder does not exist.
    """
    p = Path(path)
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{p}: folder {p.parent} does not exist")
    lines = []
    for n, row in enumerate(rows, start=1):
        if len(row) != len(columns):
            raise ValueError(f"row {n} has {len(row)} fields, expected {len(columns)} ({', '.join(columns)})")
        numbers = [float(v) for v in row[1:]]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"row {n}: non-finite value in {row}")
        lines.append([str(row[0])] + [repr(v) for v in numbers])

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(lines)

    write_file_atomic(p, write_csv)
    return p


def _split_image_name(name: str) -> tuple[str, int] | None:
    """(seriesuid, suffix rank) of an image file name, or None when the suffix is not an image suffix."""
    lower = name.lower()
    for rank, suffix in enumerate(IMAGE_SUFFIXES):
        if lower.endswith(suffix) and len(name) > len(suffix) and not name.startswith("."):
            return name[: -len(suffix)], rank
    return None


def _read_grouped(path: Path, columns: Sequence[str], check_last) -> dict[str, np.ndarray]:
    """Read ``columns`` (seriesuid + 4 numbers) of a CSV, grouped by seriesuid; ``check_last(value, row)``."""
    if not path.is_file():
        raise Luna16TableError(f"{path}: no such table")
    groups: dict[str, list[list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        found = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in found]
        if missing:
            raise Luna16TableError(f"{path}: missing column(s) {', '.join(missing)}; found {found}")
        reader.fieldnames = found
        for row_number, row in enumerate(reader, start=2):
            uid = (row.get(columns[0]) or "").strip()
            if not uid:
                raise Luna16TableError(f"{path}: row {row_number}, column {columns[0]}: empty")
            values = [_number(path, row_number, column, row.get(column)) for column in columns[1:]]
            if check_last is not None:
                check_last(values[-1], row_number)
            groups.setdefault(uid, []).append(values)
    return {uid: np.asarray(rows, dtype=np.float64).reshape(-1, 4) for uid, rows in groups.items()}


def _number(path: Path, row_number: int, column: str, text: str | None) -> float:
    return finite_number(path, row_number, column, text, Luna16TableError)
