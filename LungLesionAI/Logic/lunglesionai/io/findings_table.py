"""``findings.csv``: one row per finding, the columns of report.html's findings table, for spreadsheets and scripts.

The columns are :data:`FINDINGS_CSV_COLUMNS`. Numbers are written with fixed decimals (:data:`DECIMALS`), rounded
half up on the decimal value (the rule a reader with a ruler uses and Lung-RADS v2022 applies to the mean diameter:
5.95 mm is 6.0 mm; the rule of :mod:`lunglesionai.core.rounding`, which the guideline rules use too); an empty cell means "not computed" (None in report.json). Lengths are mm, volumes mm³, coordinates
LPS mm (DICOM patient coordinates), probabilities and the Brock risk in [0, 1].

``slice`` is the 1-based index of the finding's centre along the input grid's axis closest to the body's long
(superior-inferior) axis (:func:`axial_slice_number`): for an axial CT the slice number in the analysed volume,
counted from its first slice (for DICOM input the slices are ordered by position along the slice normal, so
slice 1 is usually the lowest table position; a PACS viewer may number them the other way round). The table
position ``center_z_lps_mm`` (the LPS z, as DICOM's ImagePositionPatient z) is unambiguous.

``mask_source`` tells how the outline was made: "classical", "densesharp", "classical mass", "edited", or
"detector box" (the dense part of the learned detector's sphere: an approximate outline whose volume is not a
measurement, :data:`APPROXIMATE_MASK_SOURCE`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lunglesionai.core.findings import Finding, InputInfo, Report
from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.core.rounding import decimal_half_up
from lunglesionai.core.volume import ijk_to_lps_matrix

__all__ = [
    "APPROXIMATE_MASK_SOURCE",
    "DECIMALS",
    "FINDINGS_CSV_COLUMNS",
    "axial_slice_number",
    "finding_row",
    "findings_csv_text",
    "findings_table_rows",
    "fixed",
    "is_approximate_outline",
    "write_findings_csv",
]

APPROXIMATE_MASK_SOURCE = "detector box"
"""``Finding.extra["mask_source"]`` of an outline that is only the learned detector's sphere (see ``pipeline.py``)."""

FINDINGS_CSV_COLUMNS = (
    "id", "kind", "status", "lung_rads", "brock_risk", "mean_diameter_mm", "long_axis_mm", "short_axis_mm",
    "solid_component_mean_diameter_mm", "volume_mm3", "texture", "calcified", "attachment", "side", "lobe", "zone",
    "slice", "center_x_lps_mm", "center_y_lps_mm", "center_z_lps_mm", "malignancy_probability", "detection_score",
    "mask_source", "followup_status", "prior_id", "volume_change_pct", "vdt_days", "volumetry_reliable",
)
"""Columns of ``findings.csv``, in order (the ``followup_*``, ``prior_id``, ``volume_change_pct``, ``vdt_days`` and
``volumetry_reliable`` columns are filled with a prior scan: ``Finding.followup``)."""

DECIMALS = {
    "brock_risk": 4, "mean_diameter_mm": 1, "long_axis_mm": 1, "short_axis_mm": 1,
    "solid_component_mean_diameter_mm": 1, "volume_mm3": 1, "center_x_lps_mm": 2, "center_y_lps_mm": 2,
    "center_z_lps_mm": 2, "malignancy_probability": 4, "detection_score": 4, "volume_change_pct": 1, "vdt_days": 0,
}
"""Decimal places of each numeric column (lengths to 0.1 mm, as Lung-RADS v2022 reports the mean diameter)."""


def fixed(value: Optional[float], decimals: int) -> str:
    """``value`` with exactly ``decimals`` places, rounded half up on its shortest decimal form; "" for None.

    Args:
        value: a finite number, or None.
        decimals: places after the point (0 or more).

    Returns:
        The text, e.g. ``fixed(5.95, 1) == "6.0"`` (Python's ``format`` gives "5.9"), ``fixed(None, 1) == ""``.

    Raises:
        ValueError: ``value`` is not finite (NaN or infinite), or ``decimals`` is negative.

    Example:
        >>> fixed(5.95, 1), fixed(2.675, 2), fixed(None, 1), fixed(3, 0)
        ('6.0', '2.68', '', '3')
    """
    if value is None:
        return ""
    rounded = decimal_half_up(value, decimals)
    return f"{rounded:.{decimals}f}"


def is_approximate_outline(finding: Finding) -> bool:
    """True when the finding's outline is the detector's sphere (``extra["mask_source"] == "detector box"``):
    its volume and mean HU are not measurements, and its axes only approximate."""
    return finding.extra.get("mask_source") == APPROXIMATE_MASK_SOURCE


def axial_slice_number(info: InputInfo, center_lps_mm: Sequence[float]) -> Optional[int]:
    """1-based slice number of an LPS point in the input grid, along the grid axis closest to superior-inferior.

    Args:
        info: the analysed volume's geometry (shape (Z, Y, X); spacing, origin (x, y, z) mm; direction row-major,
            column n = the LPS direction of axis n), i.e. ``Report.input``.
        center_lps_mm: (x, y, z) point in LPS mm.

    Returns:
        ``round(index) + 1`` along the i, j or k axis whose direction has the largest LPS z component (k for an
        axial CT, so ``k + 1``); None when the point lies outside the grid along that axis.

    Raises:
        ValueError: ``center_lps_mm`` is not three finite numbers, or the grid's direction is singular.

    Example:
        >>> info = InputInfo("ct", (10, 4, 4), (1.0, 1.0, 2.5), (0.0, 0.0, -100.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        >>> axial_slice_number(info, (1.0, 1.0, -95.0))
        3
    """
    point = np.asarray(center_lps_mm, dtype=float).reshape(-1)
    if point.size != 3 or not np.all(np.isfinite(point)):
        raise ValueError(f"expected three finite LPS coordinates, got {center_lps_mm!r}")
    matrix = ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction)
    try:
        ijk = np.linalg.solve(matrix[:3, :3], point - matrix[:3, 3])
    except np.linalg.LinAlgError as error:
        raise ValueError(f"input grid direction {info.direction} is singular") from error
    direction = np.asarray(info.direction, dtype=float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2, :])))  # the (i, j, k) axis most along LPS z
    size = int(info.shape_zyx[::-1][axis])
    index = int(math.floor(ijk[axis] + 0.5))
    return index + 1 if 0 <= index < size else None


def _location(finding: Finding) -> tuple[str, str, str]:
    location = finding.location or {}
    return tuple(str(location.get(key) or "") for key in ("side", "lobe", "zone"))  # type: ignore[return-value]


def _flag(value: Optional[bool]) -> str:
    return "" if value is None else ("yes" if value else "no")


def finding_row(finding: Finding, info: InputInfo) -> dict[str, str]:
    """The :data:`FINDINGS_CSV_COLUMNS` of one finding as text ("" for None; booleans "yes"/"no").

    Args:
        finding: any finding (nodule, mass or lesion).
        info: the report's input geometry (for ``slice``).

    Returns:
        ``{column: text}``.

    Raises:
        ValueError: a number is not finite, or the centre is not three finite numbers.
    """
    side, lobe, zone = _location(finding)
    slice_number = axial_slice_number(info, finding.center_lps_mm)
    values: dict[str, Any] = {
        "id": finding.id, "kind": finding.kind, "status": finding.status, "lung_rads": finding.lung_rads or "",
        "texture": finding.texture or "", "calcified": _flag(finding.calcified), "attachment": finding.attachment or "",
        "side": side, "lobe": lobe, "zone": zone, "slice": "" if slice_number is None else str(slice_number),
        "mask_source": str(finding.extra.get("mask_source") or ""),
    }
    followup = finding.followup or {}
    values.update(followup_status=str(followup.get("status") or ""), prior_id=str(followup.get("prior_id") or ""),
                  volumetry_reliable=_flag((followup.get("volumetry") or {}).get("reliable")))
    numbers = {
        "brock_risk": finding.brock_risk, "mean_diameter_mm": finding.mean_diameter_mm,
        "long_axis_mm": finding.long_axis_mm, "short_axis_mm": finding.short_axis_mm,
        "solid_component_mean_diameter_mm": finding.solid_component_mean_diameter_mm,
        "volume_mm3": finding.volume_mm3, "center_x_lps_mm": finding.center_lps_mm[0],
        "center_y_lps_mm": finding.center_lps_mm[1], "center_z_lps_mm": finding.center_lps_mm[2],
        "malignancy_probability": finding.malignancy_probability, "detection_score": finding.detection_score,
        "volume_change_pct": followup.get("volume_change_pct"), "vdt_days": followup.get("vdt_days"),
    }
    values.update({name: fixed(value, DECIMALS[name]) for name, value in numbers.items()})
    return {column: values[column] for column in FINDINGS_CSV_COLUMNS}


def findings_table_rows(report: Report) -> list[dict[str, str]]:
    """:func:`finding_row` of every finding of ``report``, in report order."""
    return [finding_row(finding, report.input) for finding in report.findings]


def findings_csv_text(report: Report) -> str:
    """The text of ``findings.csv``: a header row of :data:`FINDINGS_CSV_COLUMNS`, then one row per finding
    (comma-separated, quoted where needed, "\\n" line ends)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FINDINGS_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(findings_table_rows(report))
    return buffer.getvalue()


def write_findings_csv(report: Report, out_path: str | os.PathLike) -> Path:
    """Write ``findings.csv`` of a report, atomically (:func:`lunglesionai.core.output_folder.write_file_atomic`).

    Args:
        report: the findings (masks not needed).
        out_path: the CSV file to write (its folder must exist).

    Returns:
        ``out_path`` as a Path.

    Raises:
        FileNotFoundError: the folder of ``out_path`` does not exist.
        ValueError: a number of a finding is not finite.
    """
    out = Path(out_path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    text = findings_csv_text(report)  # built first: a bad value leaves no file
    write_file_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))
    return out
