"""Reviewing an analysis in a MRML scene: findings table, accept / reject, "Update measurements", saving.

:func:`add_results_to_scene` turns a :class:`~lunglesionai.core.findings.Report` into Slicer data (through
:func:`lunglesionai.mrml.scene.add_report_to_scene`) plus a findings table (``vtkMRMLTableNode``, one row per finding), and
places everything under the input volume's study in the subject hierarchy. The table node is the result's anchor: it
holds the report (JSON, attribute :data:`REPORT_ATTRIBUTE`, saved with the scene) and node references to the volume,
the segmentation, the nodule points and the lesion boxes, so a :class:`SceneResults` can be rebuilt from it
(:meth:`SceneResults.from_table_node`) after a scene is saved and loaded again.

Review actions change exactly what they say:

* :func:`set_review_status`: the finding's ``status`` in the report, the table's status cell, the segment status
  (accepted: "completed", rejected: "flagged", proposed: "inprogress"), and the nodule point / lesion box (locked
  once reviewed, unselected when rejected, description prefixed "[accepted]" / "[rejected]").
* :func:`update_measurements`: reads the (edited) segment back from the segmentation node, measures it again with
  :func:`lunglesionai.stages.measurements.measure_mask` and updates the report, the table row, the point (position,
  description) or box. Malignancy and invasiveness stay those of the original grading (the finding records
  ``mask_source`` = "edited").

Everything here works in 3D Slicer and in ``slicer-core``; no Qt. All positions are LPS mm in the report and RAS mm in
MRML (converted in :mod:`lunglesionai.mrml.scene`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from lunglesionai.core.findings import LUNG_FINDING_KINDS, REVIEW_STATES, Finding, FindingMask, Report
from lunglesionai.core.volume import Volume, ijk_to_lps_matrix
from lunglesionai.mrml import scene as mrml

__all__ = [
    "REPORT_ATTRIBUTE",
    "TABLE_COLUMNS",
    "REVIEW_STATES",
    "SceneResults",
    "add_results_to_scene",
    "read_report",
    "read_outputs",
    "load_outputs_into_scene",
    "set_review_status",
    "update_measurements",
    "finding_position_ras",
    "finding_id_at_row",
    "save_report",
    "scene_rollback",
]

logger = logging.getLogger(__name__)

#: Table-node attribute holding the report (``lunglesionai-report/1`` JSON, without masks).
REPORT_ATTRIBUTE = "LungLesionAI.Report"
#: Marks a table node as a LungLesionAI result.
RESULT_ATTRIBUTE = "LungLesionAI.Result"
#: Node-reference roles on the table node.
VOLUME_ROLE = "LungLesionAI.volume"
SEGMENTATION_ROLE = "LungLesionAI.segmentation"
NODULES_ROLE = "LungLesionAI.nodules"
LESION_ROLE = "LungLesionAI.lesionBox"
#: Findings-table columns: (name, value type, header title, description). Numbers are NaN when not computed.
TABLE_COLUMNS = (
    ("id", "string", "Finding", "Finding id (also the segment id and the point label)"),
    ("kind", "string", "Kind", "nodule (3-30 mm), mass (lung lesion over 30 mm; not graded) or lesion (other lesions)"),
    ("diameter", "double", "Diameter (mm)", "Equivalent-sphere diameter of the outline, mm"),
    ("volume", "double", "Volume (mm³)", "Volume of the outline, mm³"),
    ("mean HU", "double", "Mean HU", "Mean intensity inside the outline, HU"),
    ("texture", "string", "Texture", "CT appearance: solid, part-solid or ground-glass"),
    ("malignancy", "double", "Malignancy", "Malignancy probability from the grader (a size-dominated impression)"),
    ("invasiveness", "string", "Invasiveness surrogate",
     "Most probable invasiveness class from CT appearance, with its probability (not pathology)"),
    ("score", "double", "Score", "Detection score"),
    ("status", "string", "Status", "Review state: proposed, accepted or rejected"),
)
_COLUMN_INDEX = {column[0]: n for n, column in enumerate(TABLE_COLUMNS)}
_DESCRIPTION_PREFIX = {"proposed": "", "accepted": "[accepted] ", "rejected": "[rejected] "}


@dataclass(frozen=True)
class SceneResults:
    """The nodes of one analysis in a scene (MRML node ids).

    Args:
        table_node_id: the findings table (also holds the report and the references below).
        volume_node_id: the analysed volume.
        segmentation_node_id: one segment per finding with a mask (segment id = finding id).
        nodules_markups_node_id: point list, one control point per nodule and mass (label = finding id).
        lesion_roi_node_ids: finding id -> ROI node id, one per lesion.
    """

    table_node_id: str
    volume_node_id: str
    segmentation_node_id: str
    nodules_markups_node_id: str
    lesion_roi_node_ids: dict[str, str] = field(default_factory=dict)

    def node_ids(self) -> list[str]:
        """Every node id of the result (table, segmentation, points, boxes; not the volume)."""
        return [self.table_node_id, self.segmentation_node_id, self.nodules_markups_node_id,
                *self.lesion_roi_node_ids.values()]

    @classmethod
    def from_table_node(cls, table_node) -> "SceneResults":
        """Rebuild from a findings table made by :func:`add_results_to_scene` (e.g. after loading a scene).

        Raises:
            ValueError: the table is not a LungLesionAI result (no report or references).
        """
        if table_node is None or table_node.GetAttribute(RESULT_ATTRIBUTE) != "1":
            raise ValueError("not a LungLesionAI findings table")
        rois = {}
        for n in range(table_node.GetNumberOfNodeReferences(LESION_ROLE)):
            roi = table_node.GetNthNodeReference(LESION_ROLE, n)
            if roi is not None:
                rois[roi.GetAttribute(mrml.FINDING_ID_TAG)] = roi.GetID()
        return cls(
            table_node.GetID(),
            table_node.GetNodeReferenceID(VOLUME_ROLE) or "",
            table_node.GetNodeReferenceID(SEGMENTATION_ROLE) or "",
            table_node.GetNodeReferenceID(NODULES_ROLE) or "",
            rois,
        )


@contextlib.contextmanager
def scene_rollback(scene) -> Iterator[None]:
    """Remove every node added to ``scene`` inside the ``with`` block when the block raises (then re-raise).

    So a failure half-way through adding results leaves the scene as it was (no half-made nodes).
    """
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
        for node in reversed(added):
            if node is not None and node.GetID() not in before and node.GetScene() is scene:
                scene.RemoveNode(node)
        raise


def add_results_to_scene(scene, report: Report, volume_node, name_prefix: Optional[str] = None) -> SceneResults:
    """Add an analysis to a scene: segmentation, nodule points, lesion boxes and the findings table.

    All or nothing: if anything fails, the nodes added so far are removed again.

    Args:
        scene: the vtkMRMLScene (``slicer.mrmlScene`` in Slicer).
        report: the findings; masks on the grid of ``report.input`` (the volume node's grid, LPS).
        volume_node: the analysed volume's node (reference geometry; its study gets the results).
        name_prefix: start of the new nodes' names (default: the volume's name).

    Returns:
        :class:`SceneResults`.

    Raises:
        ValueError: finding ids unusable as segment ids (see :func:`lunglesionai.mrml.scene.segment_styles`).
    """
    mrml.setup_scene_for_lunglesionai(scene)
    prefix = name_prefix or volume_node.GetName()
    with scene_rollback(scene):
        nodes = mrml.add_report_to_scene(scene, report, reference_volume_node=volume_node, name_prefix=prefix)
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{prefix} findings table")
        _create_columns(table)
        for finding in report.findings:
            _write_row(table, table.AddEmptyRow(), finding)
        table.SetAttribute(RESULT_ATTRIBUTE, "1")
        table.SetNodeReferenceID(VOLUME_ROLE, volume_node.GetID())
        table.SetNodeReferenceID(SEGMENTATION_ROLE, nodes.segmentation_node_id)
        table.SetNodeReferenceID(NODULES_ROLE, nodes.nodules_markups_node_id)
        for roi_id in nodes.lesion_roi_node_ids.values():
            table.AddNodeReferenceID(LESION_ROLE, roi_id)
        table.SetLocked(True)  # cells change through the review actions only
        results = SceneResults(table.GetID(), volume_node.GetID(), nodes.segmentation_node_id,
                               nodes.nodules_markups_node_id, dict(nodes.lesion_roi_node_ids))
        _store_report(scene, results, report)
        for finding in report.findings:
            if finding.status != "proposed":
                _show_status(scene, results, finding)
        mrml.place_under_study(scene, volume_node, [scene.GetNodeByID(i) for i in results.node_ids()])
    return results


def _create_columns(table) -> None:
    import vtk

    for name, value_type, title, description in TABLE_COLUMNS:
        array = vtk.vtkStringArray() if value_type == "string" else vtk.vtkDoubleArray()
        array.SetName(name)
        table.AddColumn(array)
        table.SetColumnType(name, array.GetDataType())
        table.SetColumnTitle(name, title)
        table.SetColumnDescription(name, description)
    table.SetUseColumnTitleAsColumnHeader(True)


def _row_values(finding: Finding) -> dict[str, object]:
    invasiveness = "not graded: mass" if finding.kind == "mass" and not finding.invasiveness else ""
    if finding.invasiveness:
        label, probability = max(finding.invasiveness.items(), key=lambda item: item[1])
        invasiveness = f"{label} {probability:.2f}"

    def number(value: Optional[float], digits: int) -> float:
        return float("nan") if value is None else round(float(value), digits)

    return {
        "id": finding.id,
        "kind": finding.kind,
        "diameter": number(finding.diameter_mm, 1),
        "volume": number(finding.volume_mm3, 0),
        "mean HU": number(finding.mean_hu, 0),
        "texture": finding.texture or "",
        "malignancy": number(finding.malignancy_probability, 2),
        "invasiveness": invasiveness,
        "score": number(finding.detection_score, 2),
        "status": finding.status,
    }


def _write_row(table, row: int, finding: Finding) -> None:
    vtk_table = table.GetTable()
    for name, value in _row_values(finding).items():
        vtk_table.GetColumn(_COLUMN_INDEX[name]).SetValue(row, value)
    vtk_table.Modified()
    table.Modified()


def _store_report(scene, results: SceneResults, report: Report) -> None:
    scene.GetNodeByID(results.table_node_id).SetAttribute(REPORT_ATTRIBUTE, report.to_json())


def read_report(scene, results: SceneResults, with_masks: bool = True) -> Report:
    """The result's report as it stands after review (statuses, updated measurements).

    Args:
        scene: the scene holding the result.
        results: the result's nodes.
        with_masks: also read each finding's mask back from its segment (the edited outline; None when the
            segment was deleted or emptied).

    Raises:
        ValueError: the table holds no report.
        jsonschema.ValidationError: the stored report is not ``lunglesionai-report/1``.
    """
    table = scene.GetNodeByID(results.table_node_id)
    text = table.GetAttribute(REPORT_ATTRIBUTE) if table is not None else None
    if not text:
        raise ValueError("the findings table holds no LungLesionAI report")
    report = Report.from_dict(json.loads(text))
    if with_masks:
        segmentation_node = scene.GetNodeByID(results.segmentation_node_id)
        segmentation = segmentation_node.GetSegmentation() if segmentation_node is not None else None
        findings = []
        for finding in report.findings:
            mask = None
            if segmentation is not None and segmentation.GetSegment(finding.id) is not None:
                mask = mrml.segment_mask(segmentation_node, finding.id, report.input)
            findings.append(replace(finding, mask=mask))
        report = replace(report, findings=findings)
    return report


def _find_row(table, finding_id: str) -> int:
    column = table.GetTable().GetColumn(_COLUMN_INDEX["id"])
    for row in range(column.GetNumberOfValues()):
        if column.GetValue(row) == finding_id:
            return row
    raise KeyError(f"finding {finding_id!r} is not in the findings table")


def finding_id_at_row(scene, results: SceneResults, row: int) -> str:
    """The finding id shown in a table row (0-based).

    Raises:
        IndexError: no such row.
    """
    column = scene.GetNodeByID(results.table_node_id).GetTable().GetColumn(_COLUMN_INDEX["id"])
    if not 0 <= row < column.GetNumberOfValues():
        raise IndexError(f"row {row} outside the findings table ({column.GetNumberOfValues()} rows)")
    return column.GetValue(row)


def _point_index(points, finding_id: str) -> int:
    for index in range(points.GetNumberOfControlPoints()):
        if points.GetNthControlPointLabel(index) == finding_id:
            return index
    return -1


def finding_position_ras(scene, results: SceneResults, finding_id: str) -> np.ndarray:
    """Where to centre the views on a finding: its point (as the user may have moved it) else its centre, RAS mm.

    Returns:
        (3,) RAS point in mm (for ``slicer.modules.markups.logic().JumpSlicesToLocation``).

    Raises:
        KeyError: unknown finding id.
    """
    points = scene.GetNodeByID(results.nodules_markups_node_id)
    if points is not None:
        index = _point_index(points, finding_id)
        if index >= 0:
            return np.asarray(points.GetNthControlPointPositionWorld(index), dtype=float)
    finding = _finding(read_report(scene, results, with_masks=False), finding_id)
    return mrml.lps_to_ras(finding.center_lps_mm)[0]


def _finding(report: Report, finding_id: str) -> Finding:
    for finding in report.findings:
        if finding.id == finding_id:
            return finding
    raise KeyError(f"no finding {finding_id!r} in the report")


def _replace_finding(scene, results: SceneResults, report: Report, updated: Finding) -> Report:
    report = replace(report, findings=[updated if f.id == updated.id else f for f in report.findings])
    _store_report(scene, results, report)
    table = scene.GetNodeByID(results.table_node_id)
    _write_row(table, _find_row(table, updated.id), updated)
    return report


def set_review_status(scene, results: SceneResults, finding_id: str, status: str) -> Finding:
    """Accept, reject or reset (``"proposed"``) one finding, everywhere it appears.

    Changes the report's ``status``, the table's status cell, the segment status, and the finding's point or box
    (locked when reviewed, unselected when rejected, description prefixed "[accepted] " / "[rejected] ").

    Returns:
        The updated finding.

    Raises:
        ValueError: unknown status.
        KeyError: unknown finding id.
    """
    if status not in REVIEW_STATES:
        raise ValueError(f"status must be one of {REVIEW_STATES}, got {status!r}")
    report = read_report(scene, results, with_masks=False)
    updated = replace(_finding(report, finding_id), status=status)
    _replace_finding(scene, results, report, updated)
    _show_status(scene, results, updated)
    return updated


def _show_status(scene, results: SceneResults, finding: Finding) -> None:
    """Segment status, point/box lock, selection and description from ``finding.status``."""
    import slicer

    segmentation_node = scene.GetNodeByID(results.segmentation_node_id)
    segment = segmentation_node.GetSegmentation().GetSegment(finding.id) if segmentation_node else None
    if segment is not None:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        style = mrml.segment_styles([finding])[finding.id]
        logic.SetSegmentStatus(segment, logic.GetSegmentStatusFromMachineReadableString(style.status))
    description = _DESCRIPTION_PREFIX[finding.status] + finding.summary()
    reviewed, rejected = finding.status != "proposed", finding.status == "rejected"
    markups, index = None, -1
    if finding.kind in LUNG_FINDING_KINDS:
        markups = scene.GetNodeByID(results.nodules_markups_node_id)
        index = _point_index(markups, finding.id) if markups is not None else -1
    elif finding.id in results.lesion_roi_node_ids:
        markups, index = scene.GetNodeByID(results.lesion_roi_node_ids[finding.id]), 0
        if markups is not None:
            markups.SetLocked(reviewed)
    if markups is None or index < 0:
        return
    markups.SetNthControlPointDescription(index, description)
    markups.SetNthControlPointLocked(index, reviewed)
    markups.SetNthControlPointSelected(index, not rejected)


def update_measurements(scene, results: SceneResults, finding_id: str) -> Finding:
    """Measure a finding again from its (edited) segment and update the report, the table and its point or box.

    The segment's labelmap is read back on the report's grid, the volume and mask are reoriented to LPS axis order
    (as the pipeline measures), and :func:`lunglesionai.stages.measurements.measure_mask` gives centre, box, diameter, axes,
    volume, mean HU and the HU texture. A graded finding keeps the grader's texture, malignancy and invasiveness
    (``texture_hu_rule`` gets the new HU texture); an ungraded one takes the HU texture. ``mask_source`` becomes
    "edited".

    Returns:
        The updated finding (with its new mask).

    Raises:
        KeyError: unknown finding id, or the finding has no segment.
        ValueError: the segment is empty (nothing to measure) or its volume node is missing.
    """
    from lunglesionai.stages.measurements import measure_mask

    report = read_report(scene, results, with_masks=False)
    finding = _finding(report, finding_id)
    segmentation_node = scene.GetNodeByID(results.segmentation_node_id)
    if segmentation_node is None or segmentation_node.GetSegmentation().GetSegment(finding_id) is None:
        raise KeyError(f"finding {finding_id!r} has no segment to measure")
    mask = mrml.segment_mask(segmentation_node, finding_id, report.input)
    if mask is None:
        raise ValueError(f"the segment of finding {finding_id!r} is empty: nothing to measure")
    volume_node = scene.GetNodeByID(results.volume_node_id)
    if volume_node is None:
        raise ValueError("the analysed volume is no longer in the scene")
    volume = mrml.volume_from_volume_node(volume_node)
    if tuple(volume.shape_zyx) != tuple(report.input.shape_zyx):
        raise ValueError(f"the volume's grid {volume.shape_zyx} is not the analysed grid {report.input.shape_zyx}")
    lps_volume, lps_mask = _to_lps_order(volume, mask)
    m = measure_mask(lps_volume, lps_mask)
    extra = dict(finding.extra, mask_source="edited")
    graded = finding.malignancy_probability is not None or "texture_hu_rule" in extra
    if graded:
        extra["texture_hu_rule"] = m.texture
    updated = replace(
        finding,
        **m.finding_fields(),
        texture=finding.texture if graded else m.texture,
        extra=extra,
        mask=mask,
    )
    _replace_finding(scene, results, report, replace(updated, mask=None))
    _move_markup(scene, results, updated)
    _show_status(scene, results, updated)
    logger.info("finding %s measured again: %.1f mm, %.0f mm3", finding_id, m.diameter_mm, m.volume_mm3)
    return updated


def _to_lps_order(volume: Volume, mask: FindingMask) -> tuple[Volume, FindingMask]:
    """Volume and mask with array axes in LPS order (exact permutation/flips, see :mod:`lunglesionai.core.orientation`)."""
    from lunglesionai.core.orientation import reorient_to_lps

    lps_volume, perm = reorient_to_lps(volume)
    return lps_volume, mask.reoriented(perm)


def _move_markup(scene, results: SceneResults, finding: Finding) -> None:
    import vtk

    if finding.kind in LUNG_FINDING_KINDS:
        points = scene.GetNodeByID(results.nodules_markups_node_id)
        index = _point_index(points, finding.id) if points is not None else -1
        if index >= 0:
            points.SetNthControlPointPosition(index, vtk.vtkVector3d(*mrml.lps_to_ras(finding.center_lps_mm)[0]))
    elif finding.id in results.lesion_roi_node_ids:
        roi = scene.GetNodeByID(results.lesion_roi_node_ids[finding.id])
        if roi is not None:
            corners = mrml.lps_to_ras(finding.bbox_lps_mm)
            roi.SetCenter(*corners.mean(axis=0))
            roi.SetSize(*np.abs(corners[1] - corners[0]))


def read_outputs(out_dir: str | os.PathLike) -> Report:
    """The Report of an ``analyze`` output folder, masks included (from ``nodules.seg.nrrd`` / ``lesions.seg.nrrd``).

    Args:
        out_dir: folder with report.json and the segmentation files :func:`lunglesionai.io.outputs.write_outputs` wrote.

    Returns:
        Report whose findings carry masks on the grid of ``report.input`` (None for findings without a segment).

    Raises:
        FileNotFoundError: no report.json.
        ValueError: a segmentation file is not on the report's grid.
        jsonschema.ValidationError: report.json is not ``lunglesionai-report/1``.
    """
    import slicerio

    from lunglesionai.io.outputs import LESIONS_SEGMENTATION, NODULES_SEGMENTATION, REPORT_JSON

    folder = Path(out_dir)
    report = Report.from_dict(json.loads((folder / REPORT_JSON).read_text(encoding="utf-8")))
    masks: dict[str, FindingMask] = {}
    expected = ijk_to_lps_matrix(report.input.spacing_mm, report.input.origin_lps_mm, report.input.direction)
    for name in (NODULES_SEGMENTATION, LESIONS_SEGMENTATION):
        path = folder / name
        if not path.is_file():
            continue
        segmentation = slicerio.read_segmentation(str(path))
        if not np.allclose(np.asarray(segmentation["ijkToLPS"], dtype=float), expected, atol=1e-4):
            raise ValueError(f"{path}: segmentation grid differs from the report's input grid")
        voxels = np.asarray(segmentation["voxels"])
        layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels  # (layer, i, j, k)
        for segment in segmentation["segments"]:
            layer = layers[int(segment.get("layer", 0))]
            in_zyx = (layer == int(segment["labelValue"])).transpose(2, 1, 0)
            first, crop = mrml.mask_crop_in_grid(FindingMask((0, 0, 0), in_zyx), report.input.shape_zyx)
            if crop.size:
                masks[segment["id"]] = FindingMask(tuple(int(v) for v in first), crop)
    findings = [replace(f, mask=masks.get(f.id)) for f in report.findings]
    return replace(report, findings=findings)


def load_outputs_into_scene(scene, out_dir: str | os.PathLike, volume_node, *, keep_masks: bool = True,
                            name_prefix: Optional[str] = None) -> tuple[SceneResults, Report]:
    """Add the results of an ``analyze`` output folder (run on ``volume_node``'s voxels) to the scene.

    Args:
        scene: the vtkMRMLScene.
        out_dir: the output folder.
        volume_node: the analysed volume's node; its grid must be the report's.
        keep_masks: False drops the outlines (points and table only).
        name_prefix: start of the new nodes' names (default: the volume's name).

    Returns:
        ``(results, report)``; the scene is unchanged when this raises.

    Raises:
        ValueError: the volume node's grid is not the report's grid (shape or geometry).
    """
    report = read_outputs(out_dir)
    volume = mrml.volume_from_volume_node(volume_node)
    info = report.input
    if tuple(volume.shape_zyx) != tuple(info.shape_zyx) or not np.allclose(
        volume.ijk_to_lps_matrix, ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction), atol=1e-4
    ):
        raise ValueError(f"{out_dir}: the results are not on the grid of volume {volume_node.GetName()!r}")
    report = replace(report, input=replace(report.input, path=volume.source))
    if not keep_masks:
        report = replace(report, findings=[replace(f, mask=None) for f in report.findings])
    return add_results_to_scene(scene, report, volume_node, name_prefix), report


def save_report(scene, results: SceneResults, out_dir: str | os.PathLike, *, overwrite: bool = False,
                html: bool = True) -> dict[str, Path]:
    """Write the reviewed result (edited outlines, statuses, updated measurements) as an ``analyze`` output folder.

    Args:
        scene: the scene holding the result.
        results: the result's nodes.
        out_dir: the folder (written atomically by :func:`lunglesionai.io.outputs.write_outputs`).
        overwrite: replace an existing folder.
        html: also write report.html (thumbnails from the volume node's voxels).

    Returns:
        Paths written, as :func:`lunglesionai.io.outputs.write_outputs` returns them.
    """
    from lunglesionai.io.outputs import write_outputs

    report = read_report(scene, results, with_masks=True)
    volume = None
    if html:
        volume = mrml.volume_from_volume_node(scene.GetNodeByID(results.volume_node_id))
    return write_outputs(report, out_dir, overwrite=overwrite, volume=volume)
