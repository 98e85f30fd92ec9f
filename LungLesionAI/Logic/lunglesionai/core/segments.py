"""Findings as segments, without Slicer: segment names, colours and DICOM terminology, the finding-id tag, LPS↔RAS,
the reference image geometry string and mask crops on a volume's grid.

Shared by the ``.seg.nrrd`` writer (:mod:`lunglesionai.io.outputs`), report.html and the MRML adapter
(:mod:`lunglesionai.mrml.scene`), so that a file and a scene name and colour a finding alike. Coordinates: the
package works in LPS millimetres; Slicer's scene stores RAS (x and y negated; see Slicer's
``Docs/user_guide/coordinate_systems.md``). Terminology: SNOMED CT codes as in Slicer's "3D Slicer General Anatomy
list" (category SCT 49755003 Morphologically Altered Structure; type SCT 27925004 Nodule, SCT 4147007 Mass or
SCT 52988006 Lesion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lunglesionai.core.findings import Finding, FindingMask, InputInfo
from lunglesionai.core.volume import ijk_to_lps_matrix

__all__ = [
    "FINDING_ID_TAG",
    "MASS_COLOR_RGB",
    "SEGMENT_COLORS_RGB",
    "TERMINOLOGY_TAG",
    "SegmentStyle",
    "ijk_to_ras_matrix",
    "lps_to_ras",
    "mask_crop_in_grid",
    "ras_to_lps",
    "reference_image_geometry_string",
    "segment_styles",
    "terminology_string",
]

#: LPS <-> RAS: negate x and y (the same matrix both ways).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_LPS_TO_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Segment tag holding the DICOM terminology (Slicer's ``vtkSegment::GetTerminologyEntryTagName()``).
TERMINOLOGY_TAG = "TerminologyEntry"
#: Segment tag (and ROI node attribute) holding the finding id.
FINDING_ID_TAG = "LungLesionAI.FindingID"
_TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_CATEGORY_ALTERED_STRUCTURE = ("SCT", "49755003", "Morphologically Altered Structure")
#: DICOM (SNOMED CT) type code per finding kind.
_TYPE_CODES = {"nodule": ("SCT", "27925004", "Nodule"), "mass": ("SCT", "4147007", "Mass"),
               "lesion": ("SCT", "52988006", "Lesion")}
_SEGMENT_BASE_NAMES = {"nodule": "Nodule", "mass": "Mass", "lesion": "Lesion"}
#: Masses have one colour of their own (magenta), not in :data:`SEGMENT_COLORS_RGB`, so a mass stands out.
MASS_COLOR_RGB = (1.0, 0.0, 1.0)
#: Slicer segment status (machine-readable) per finding review state.
_SEGMENT_STATUS = {"proposed": "inprogress", "accepted": "completed", "rejected": "flagged"}
#: Distinct segment colours (RGB in [0, 1]), used in turn by report order.
SEGMENT_COLORS_RGB = (
    (0.90, 0.30, 0.24), (0.20, 0.60, 0.86), (0.18, 0.80, 0.44), (0.95, 0.77, 0.06),
    (0.61, 0.35, 0.71), (0.90, 0.49, 0.13), (0.10, 0.74, 0.61), (0.93, 0.44, 0.70),
    (0.55, 0.71, 0.29), (0.40, 0.50, 0.95), (0.80, 0.60, 0.40), (0.50, 0.85, 0.95),
)  # fmt: skip


@dataclass(frozen=True)
class SegmentStyle:
    """How one finding appears as a Slicer segment.

    Args:
        finding_id: the finding's id (also the segment id).
        name: "Nodule k" / "Mass k" / "Lesion k", k counting findings of that kind in report order from 1.
        color_rgb: RGB in [0, 1] (:data:`MASS_COLOR_RGB` for every mass).
        terminology: Slicer terminology entry string (``TerminologyEntry`` tag).
        status: Slicer segment status ("inprogress", "completed" or "flagged").
    """

    finding_id: str
    name: str
    color_rgb: tuple[float, float, float]
    terminology: str
    status: str


def terminology_string(kind: str) -> str:
    """Slicer terminology entry of a finding kind, e.g. for "nodule"::

        Segmentation category and type - 3D Slicer General Anatomy list~SCT^49755003^Morphologically Altered
        Structure~SCT^27925004^Nodule~^^~Anatomic codes - DICOM master list~^^~^^

    Raises:
        ValueError: unknown kind.
    """
    if kind not in _TYPE_CODES:
        raise ValueError(f"unknown finding kind {kind!r}; expected one of {sorted(_TYPE_CODES)}")
    category, type_ = ("^".join(_CATEGORY_ALTERED_STRUCTURE), "^".join(_TYPE_CODES[kind]))
    return f"{_TERMINOLOGY_CONTEXT}~{category}~{type_}~^^~{_ANATOMIC_CONTEXT}~^^~^^"


def segment_styles(findings: list[Finding]) -> dict[str, SegmentStyle]:
    """Name, colour, terminology and status of every finding (with or without mask), keyed by finding id.

    Raises:
        ValueError: an id is empty, repeated, or contains "|" or ":" (separators of Slicer's segment tags).
    """
    styles: dict[str, SegmentStyle] = {}
    counts = {kind: 0 for kind in _TYPE_CODES}
    for index, finding in enumerate(findings):
        if not finding.id or "|" in finding.id or ":" in finding.id:
            raise ValueError(f"finding id {finding.id!r} cannot be a segment id (empty, or has '|' or ':')")
        if finding.id in styles:
            raise ValueError(f"finding id {finding.id!r} is repeated")
        counts[finding.kind] += 1
        styles[finding.id] = SegmentStyle(
            finding.id,
            f"{_SEGMENT_BASE_NAMES[finding.kind]} {counts[finding.kind]}",
            MASS_COLOR_RGB if finding.kind == "mass" else SEGMENT_COLORS_RGB[index % len(SEGMENT_COLORS_RGB)],
            terminology_string(finding.kind),
            _SEGMENT_STATUS[finding.status],
        )
    return styles


def lps_to_ras(points_lps: Any) -> np.ndarray:
    """(N, 3) LPS points in mm -> (N, 3) RAS points in mm (x and y negated)."""
    return np.atleast_2d(np.asarray(points_lps, dtype=float)) @ _LPS_TO_RAS


def ras_to_lps(points_ras: Any) -> np.ndarray:
    """(N, 3) RAS points in mm -> (N, 3) LPS points in mm (x and y negated)."""
    return np.atleast_2d(np.asarray(points_ras, dtype=float)) @ _LPS_TO_RAS


def ijk_to_ras_matrix(info: InputInfo) -> np.ndarray:
    """4×4 matrix from voxel index (i, j, k, 1) to RAS mm for the grid of a report's input.

    Args:
        info: the analysed volume's geometry (spacing (x, y, z) mm, origin LPS mm, direction row-major).

    Returns:
        (4, 4) float array, Slicer's IJKToRAS convention: ``diag(-1, -1, 1, 1) @`` the IJK→LPS matrix of
        :func:`lunglesionai.core.volume.ijk_to_lps_matrix`.
    """
    return _LPS_TO_RAS_4 @ ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction)


def reference_image_geometry_string(info: InputInfo) -> str:
    """Slicer's "Reference image geometry" conversion parameter for a report's grid (no ``slicer`` needed).

    The format is the 16 IJK-to-RAS matrix entries (row-major) then the extent ``0;nx-1;0;ny-1;0;nz-1``, each
    followed by ``;`` (what ``vtkSegmentationConverter::SerializeImageGeometry`` writes).
    """
    matrix = ijk_to_ras_matrix(info)
    nz, ny, nx = (int(n) for n in info.shape_zyx)
    values = [_format_number(v) for v in matrix.ravel()] + ["0", str(nx - 1), "0", str(ny - 1), "0", str(nz - 1)]
    return "".join(f"{v};" for v in values)


def _format_number(value: float) -> str:
    value = float(value) + 0.0  # no "-0"
    return str(int(value)) if value.is_integer() else repr(value)


def mask_crop_in_grid(mask: FindingMask, shape_zyx: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The part of a mask inside a (Z, Y, X) grid, trimmed to its set voxels.

    Returns:
        ``(first_kji, crop)``: (3,) int index of ``crop[0, 0, 0]`` in the grid and a bool (dz, dy, dx) array;
        ``crop`` is empty (size 0) when no set voxel lies inside the grid.
    """
    lo = np.maximum(mask.offset_kji, 0)
    hi = np.minimum(np.add(mask.offset_kji, np.shape(mask.array)), shape_zyx)
    inside = np.asarray(mask.array, dtype=bool)[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, mask.offset_kji))]
    nonzero = np.argwhere(inside) if inside.size else np.empty((0, 3), int)
    if len(nonzero) == 0:
        return lo.astype(int), np.zeros((0, 0, 0), bool)
    first, last = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    return (lo + first).astype(int), inside[tuple(slice(a, b) for a, b in zip(first, last))]
