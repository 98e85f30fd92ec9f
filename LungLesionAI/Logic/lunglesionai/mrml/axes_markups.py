"""A nodule's axial long and short axes as line markups a reader can drag.

:func:`axial_axis_endpoints_lps` finds, from a finding's mask, the two diameters the guidelines measure (Fleischner
Society: Bankier et al., Radiology 285(2):584-600, 2017, doi:10.1148/radiol.2017162894; RECIST 1.1): on the axial
slice where the nodule is largest, the long axis joins the two boundary-contour points farthest apart, and the
short axis is the longest chord of the contour perpendicular to it. The end points come from
:func:`lunglesionai.stages.measurements.slice_axes_endpoints`, the same function
:func:`lunglesionai.stages.measurements.axial_axes_mm` measures the lengths with, so the lines lie exactly where the
lengths were measured.

:func:`add_axis_lines` adds two ``vtkMRMLMarkupsLineNode`` per nodule or mass with a mask (2 control points each,
RAS mm in MRML), tagged with the finding id and the axis; :func:`axis_lines_lps` reads them back (LPS mm), so a
reader's drag can be turned into new diameters (:func:`lunglesionai.mrml.review.apply_axis_edit`). A finding whose
axes a reader already edited keeps them: its ``extra["axis_lines_lps_mm"]`` (written by ``apply_axis_edit`` and
saved in report.json) gives the end points instead of the mask.

Slicer is imported inside functions (3D Slicer or ``slicer-core``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lunglesionai.core.findings import LUNG_FINDING_KINDS, Finding, FindingMask, InputInfo
from lunglesionai.core.segments import FINDING_ID_TAG, lps_to_ras, ras_to_lps
from lunglesionai.core.volume import Volume
from lunglesionai.stages.measurements import slice_axes_endpoints

__all__ = [
    "AXES",
    "AXIS_TAG",
    "EDITED_AXES_KEY",
    "axial_axis_endpoints_lps",
    "finding_axis_endpoints_lps",
    "add_axis_lines",
    "axis_lines_lps",
    "move_axis_lines",
]

#: The two axes, in the order their line nodes are stored.
AXES = ("long", "short")
#: Line-node attribute naming the axis ("long" or "short"); the finding id is in :data:`FINDING_ID_TAG`.
AXIS_TAG = "LungLesionAI.Axis"
#: ``Finding.extra`` key of reader-edited axes: {"long": [[x, y, z], [x, y, z]], "short": [...]}, LPS mm.
EDITED_AXES_KEY = "axis_lines_lps_mm"
#: Line colours (RGB 0-1): long axis yellow, short axis cyan.
_AXIS_COLORS = {"long": (1.0, 0.85, 0.1), "short": (0.1, 0.85, 1.0)}


def axial_axis_endpoints_lps(mask: FindingMask, info: InputInfo) -> Optional[dict[str, np.ndarray]]:
    """End points of a mask's axial long and short axes, LPS mm.

    The mask's crop is put in LPS axis order on its own (exactly, :func:`lunglesionai.core.orientation.reorient_to_lps`
    of a crop-sized volume, so no full-size array is made); "axial" is then the (j, i) plane, as for
    :func:`lunglesionai.stages.measurements.measure_mask`.

    Args:
        mask: boolean crop and (k, j, i) offset on the grid of ``info``.
        info: the grid (shape (Z, Y, X), spacing (x, y, z) mm, LPS origin and direction), i.e. ``Report.input``.

    Returns:
        {"long": (2, 3), "short": (2, 3)} LPS points (x, y, z) mm, both on the axial slice where the mask is
        largest; None for an empty mask.

    Example:
        >>> ends = axial_axis_endpoints_lps(finding.mask, report.input)              # doctest: +SKIP
        >>> np.linalg.norm(np.diff(ends["long"], axis=0))                            # doctest: +SKIP
    """
    from lunglesionai.core.orientation import reorient_to_lps

    array = np.asarray(mask.array, dtype=bool)
    if not array.any():
        return None
    grid = Volume(np.zeros((1, 1, 1), np.uint8), info.spacing_mm, info.origin_lps_mm, info.direction)
    origin = grid.kji_to_lps([mask.offset_kji])[0]
    crop = Volume(array.astype(np.uint8), info.spacing_mm, tuple(origin), info.direction)
    lps_crop, _ = reorient_to_lps(crop)
    voxels = np.asarray(lps_crop.hu, dtype=bool)
    k = int(np.argmax(voxels.sum(axis=(1, 2))))
    spacing_yx = np.array([lps_crop.spacing_mm[1], lps_crop.spacing_mm[0]])
    long_yx, short_yx = slice_axes_endpoints(voxels[k], spacing_yx)
    ends = {}
    for name, points_mm in (("long", long_yx), ("short", short_yx)):
        ji = points_mm / spacing_yx
        ends[name] = lps_crop.kji_to_lps(np.column_stack([np.full(2, k, float), ji]))
    return ends


def finding_axis_endpoints_lps(finding: Finding, info: InputInfo) -> Optional[dict[str, np.ndarray]]:
    """The axes to draw for a finding: a reader's edited ones (``extra["axis_lines_lps_mm"]``), else the mask's.

    Returns:
        {"long": (2, 3), "short": (2, 3)} LPS mm, or None (no mask and no edited axes).
    """
    edited = finding.extra.get(EDITED_AXES_KEY)
    if isinstance(edited, dict) and set(AXES) <= set(edited):
        return {name: np.asarray(edited[name], dtype=float).reshape(2, 3) for name in AXES}
    return None if finding.mask is None else axial_axis_endpoints_lps(finding.mask, info)


def add_axis_lines(scene, findings: list[Finding], info: InputInfo, name_prefix: str) -> dict[str, tuple[str, str]]:
    """Two line markups (long, short axis) per nodule or mass that has a mask or edited axes.

    Args:
        scene: the vtkMRMLScene.
        findings: the report's findings (lesions are skipped: they get boxes).
        info: the grid of the findings' masks (``Report.input``).
        name_prefix: start of the node names ("<prefix> N1 long axis").

    Returns:
        finding id -> (long-axis line node id, short-axis line node id).
    """
    lines = {}
    for finding in findings:
        if finding.kind not in LUNG_FINDING_KINDS:
            continue
        ends = finding_axis_endpoints_lps(finding, info)
        if ends is None:
            continue
        lines[finding.id] = tuple(_add_line(scene, finding.id, name, ends[name], name_prefix) for name in AXES)
    return lines


def _add_line(scene, finding_id: str, axis: str, ends_lps: np.ndarray, name_prefix: str) -> str:
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{name_prefix} {finding_id} {axis} axis")
    node.CreateDefaultDisplayNodes()
    for n, ras in enumerate(lps_to_ras(ends_lps)):
        node.AddControlPoint(vtk.vtkVector3d(*ras), f"{finding_id} {axis}" if n == 0 else "")
    node.SetAttribute(FINDING_ID_TAG, finding_id)
    node.SetAttribute(AXIS_TAG, axis)
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*_AXIS_COLORS[axis])
    return node.GetID()


def axis_lines_lps(scene, line_node_ids: tuple[str, str]) -> dict[str, np.ndarray]:
    """The end points of a finding's two axis lines as they stand now (after any drag), LPS mm.

    Args:
        scene: the vtkMRMLScene.
        line_node_ids: (long-axis line id, short-axis line id), as :func:`add_axis_lines` returned them.

    Returns:
        {"long": (2, 3), "short": (2, 3)} world LPS points (a parent transform is applied).

    Raises:
        KeyError: a line node is missing or no longer has 2 control points.
    """
    ends = {}
    for axis, node_id in zip(AXES, line_node_ids):
        node = scene.GetNodeByID(node_id)
        if node is None or node.GetNumberOfControlPoints() != 2:
            raise KeyError(f"the {axis}-axis line {node_id!r} is missing or does not have 2 points")
        ras = np.array([node.GetNthControlPointPositionWorld(n) for n in range(2)], dtype=float)
        ends[axis] = ras_to_lps(ras)
    return ends


def move_axis_lines(scene, line_node_ids: tuple[str, str], ends_lps: dict[str, np.ndarray]) -> None:
    """Put a finding's two lines on new end points (LPS mm), e.g. after its outline was measured again."""
    import vtk

    for axis, node_id in zip(AXES, line_node_ids):
        node = scene.GetNodeByID(node_id)
        if node is None:
            continue
        for n, ras in enumerate(lps_to_ras(np.asarray(ends_lps[axis], dtype=float).reshape(2, 3))):
            node.SetNthControlPointPosition(n, vtk.vtkVector3d(*ras))
