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
  :func:`lunglesionai.stages.measurements.measure_mask`, refreshes the guideline measurements
  (:func:`lunglesionai.stages.measurements.with_guideline_measurements`: mean diameter, solid component,
  calcification) and the location (:func:`lunglesionai.stages.nodule_location.with_location`), and updates the
  report, the table row, the point (position, description) or box and the axis lines. Malignancy and invasiveness
  stay those of the original grading (the finding records ``mask_source`` = "edited").
* After each of these the clinical read is run again (:func:`commit_report`, :mod:`lunglesionai.mrml.clinical_review`):
  a rejected nodule leaves the exam category, an edited outline moves its row's Lung-RADS category and Brock risk.

Nodules and masses also get their axial long and short axes as line markups
(:mod:`lunglesionai.mrml.axes_markups`); :func:`lunglesionai.mrml.clinical_actions.apply_axis_edit` turns a drag
into new diameters. Output folders are opened and saved by :mod:`lunglesionai.mrml.results_folder`.

Everything here works in 3D Slicer and in ``slicer-core``; no Qt. All positions are LPS mm in the report and RAS mm in
MRML (converted in :mod:`lunglesionai.mrml.scene`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import numpy as np

from lunglesionai.core.findings import LUNG_FINDING_KINDS, REVIEW_STATES, Finding, FindingMask, Report
from lunglesionai.core.volume import Volume
from lunglesionai.mrml import axes_markups, clinical_review
from lunglesionai.mrml import scene as mrml

__all__ = [
    "REPORT_ATTRIBUTE",
    "TABLE_COLUMNS",
    "REVIEW_STATES",
    "SceneResults",
    "add_results_to_scene",
    "read_report",
    "commit_report",
    "set_review_status",
    "update_measurements",
    "finding_position_ras",
    "finding_id_at_row",
    "find_finding",
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
AXIS_ROLES = {"long": "LungLesionAI.longAxis", "short": "LungLesionAI.shortAxis"}
#: Findings-table columns: (name, value type, header title, description). Numbers are NaN when not computed.
TABLE_COLUMNS = (
    ("id", "string", "Finding", "Finding id (also the segment id and the point label)"),
    ("kind", "string", "Kind", "nodule (3-30 mm), mass (lung lesion over 30 mm; not graded) or lesion (other lesions)"),
    ("lung_rads", "string", "Lung-RADS",
     "Lung-RADS v2022 category of the finding (decision support, not a diagnosis); empty: not read"),
    ("brock", "double", "Brock risk (%)", "Brock/PanCan malignancy risk, % (McWilliams et al., NEJM 2013)"),
    ("mean diameter", "double", "Mean diameter (mm)",
     "(long + short axial axis) / 2, mm, to 0.1 mm (the size Lung-RADS and Fleischner use)"),
    ("diameter", "double", "Diameter (mm)", "Equivalent-sphere diameter of the outline, mm"),
    ("volume", "double", "Volume (mm³)", "Volume of the outline, mm³"),
    ("mean HU", "double", "Mean HU", "Mean intensity inside the outline, HU"),
    ("texture", "string", "Texture", "CT appearance: solid, part-solid or ground-glass"),
    ("solid component", "double", "Solid component (mm)",
     "Mean axial diameter of a part-solid nodule's solid component (voxels ≥ -400 HU), mm"),
    ("calcified", "string", "Calcified", "Benign-pattern calcification by an HU rule: yes / no; empty: not determined"),
    ("location", "string", "Location", "Side and craniocaudal zone (a third of that lung's extent: a zone, not a lobe)"),
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
        axis_line_node_ids: finding id -> (long-axis, short-axis) line node ids, per nodule or mass with a mask.
    """

    table_node_id: str
    volume_node_id: str
    segmentation_node_id: str
    nodules_markups_node_id: str
    lesion_roi_node_ids: dict[str, str] = field(default_factory=dict)
    axis_line_node_ids: dict[str, tuple[str, str]] = field(default_factory=dict)

    def node_ids(self) -> list[str]:
        """Every node id of the result (table, segmentation, points, boxes, axis lines; not the volume)."""
        return [self.table_node_id, self.segmentation_node_id, self.nodules_markups_node_id,
                *self.lesion_roi_node_ids.values(), *(i for pair in self.axis_line_node_ids.values() for i in pair)]

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
        lines: dict[str, dict[str, str]] = {}
        for axis, role in AXIS_ROLES.items():
            for n in range(table_node.GetNumberOfNodeReferences(role)):
                line = table_node.GetNthNodeReference(role, n)
                if line is not None:
                    lines.setdefault(line.GetAttribute(mrml.FINDING_ID_TAG), {})[axis] = line.GetID()
        return cls(
            table_node.GetID(),
            table_node.GetNodeReferenceID(VOLUME_ROLE) or "",
            table_node.GetNodeReferenceID(SEGMENTATION_ROLE) or "",
            table_node.GetNodeReferenceID(NODULES_ROLE) or "",
            rois,
            {fid: (ids["long"], ids["short"]) for fid, ids in lines.items() if set(ids) == set(AXIS_ROLES)},
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
        lines = axes_markups.add_axis_lines(scene, report.findings, report.input, prefix)
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
        for pair in lines.values():
            for axis, line_id in zip(axes_markups.AXES, pair):
                table.AddNodeReferenceID(AXIS_ROLES[axis], line_id)
        table.SetLocked(True)  # cells change through the review actions only
        results = SceneResults(table.GetID(), volume_node.GetID(), nodes.segmentation_node_id,
                               nodes.nodules_markups_node_id, dict(nodes.lesion_roi_node_ids), lines)
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
        "lung_rads": finding.lung_rads or "",
        "brock": clinical_review.brock_percent(finding.brock_risk),
        "mean diameter": number(finding.mean_diameter_mm, 1),
        "diameter": number(finding.diameter_mm, 1),
        "volume": number(finding.volume_mm3, 0),
        "mean HU": number(finding.mean_hu, 0),
        "texture": finding.texture or "",
        "solid component": number(finding.solid_component_mean_diameter_mm, 1),
        "calcified": "" if finding.calcified is None else ("yes" if finding.calcified else "no"),
        "location": clinical_review.location_text(finding.location),
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


def find_finding(report: Report, finding_id: str) -> Finding:
    """The finding with that id.

    Raises:
        KeyError: no such finding.
    """
    for finding in report.findings:
        if finding.id == finding_id:
            return finding
    raise KeyError(f"no finding {finding_id!r} in the report")


_finding = find_finding


def commit_report(scene, results: SceneResults, report: Report) -> Report:
    """Read ``report`` again clinically (:func:`lunglesionai.mrml.clinical_review.reread`, with the inputs stored on
    the table), store it on the table node and rewrite every row (one edit can change other rows' Brock risk and
    the exam category).

    Args:
        scene: the scene holding the result.
        results: the result's nodes.
        report: the report after an edit (masks are not stored).

    Returns:
        The stored report (with the new read; masks dropped).

    Raises:
        ValueError: the stored clinical inputs are unusable (see :class:`lunglesionai.clinical.patient.PatientInfo`).
    """
    table = scene.GetNodeByID(results.table_node_id)
    patient, indication = clinical_review.clinical_inputs_from_json(
        table.GetAttribute(clinical_review.CLINICAL_INPUTS_ATTRIBUTE), report)
    report = clinical_review.reread(replace(report, findings=[replace(f, mask=None) for f in report.findings]),
                                    patient, indication)
    _store_report(scene, results, report)
    for finding in report.findings:
        _write_row(table, _find_row(table, finding.id), finding)
    return report


def _replace_finding(scene, results: SceneResults, report: Report, updated: Finding) -> Report:
    report = replace(report, findings=[updated if f.id == updated.id else f for f in report.findings])
    return commit_report(scene, results, report)


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
    updated = _finding(_replace_finding(scene, results, report, updated), finding_id)
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


def update_measurements(scene, results: SceneResults, finding_id: str, *,
                        lung_labels: Optional[np.ndarray] = None) -> Finding:
    """Measure a finding again from its (edited) segment and update the report, the table, its point or box, its
    axis lines and the clinical read.

    The segment's labelmap is read back on the report's grid, the volume and mask are reoriented to LPS axis order
    (as the pipeline measures), and :func:`lunglesionai.stages.measurements.measure_mask` gives centre, box, diameter, axes,
    volume, mean HU and the HU texture. A graded finding keeps the grader's texture, malignancy and invasiveness
    (``texture_hu_rule`` gets the new HU texture); an ungraded one takes the HU texture. ``mask_source`` becomes
    "edited". For nodules and masses the guideline measurements (mean diameter, solid component, calcification)
    and the location (side, zone, pleural attachment) are refreshed, axes a reader had drawn are replaced by the
    new outline's, and the clinical read runs again (:func:`commit_report`).

    Args:
        scene, results: the result.
        finding_id: the finding to measure.
        lung_labels: (Z, Y, X) lung labels (1 right, 2 left) on the LPS-ordered analysed grid; None: segmented
            from the volume with :func:`lunglesionai.stages.lung_mask.segment_lungs` (a few seconds on a full CT;
            kept on the scene object until the volume's voxels change).

    Returns:
        The updated finding (with its new mask).

    Raises:
        KeyError: unknown finding id, or the finding has no segment.
        ValueError: the segment is empty (nothing to measure), its volume node is missing, or ``lung_labels`` is
            not on the grid.
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
    extra.pop(axes_markups.EDITED_AXES_KEY, None)
    extra.pop("axes_source", None)
    graded = finding.malignancy_probability is not None or "texture_hu_rule" in extra
    if graded:
        extra["texture_hu_rule"] = m.texture
    updated = replace(finding, **m.finding_fields(), texture=finding.texture if graded else m.texture, extra=extra,
                      mask=lps_mask)
    if finding.kind in LUNG_FINDING_KINDS:
        updated = _guideline_and_location(scene, volume_node, lps_volume, updated, lung_labels)
    updated = replace(updated, mask=mask)
    updated = replace(_finding(_replace_finding(scene, results, report, updated), finding_id), mask=mask)
    _move_markup(scene, results, updated)
    if finding_id in results.axis_line_node_ids:
        axes_markups.move_axis_lines(scene, results.axis_line_node_ids[finding_id],
                                     axes_markups.axial_axis_endpoints_lps(mask, report.input))
    _show_status(scene, results, updated)
    logger.info("finding %s measured again: %.1f mm, %.0f mm3", finding_id, m.diameter_mm, m.volume_mm3)
    return updated


_LUNG_LABELS_CACHE = "_lunglesionai_lung_labels"


def _guideline_and_location(scene, volume_node, lps_volume: Volume, finding: Finding,
                            lung_labels: Optional[np.ndarray]) -> Finding:
    """Guideline measurements and location of a finding whose mask lies on ``lps_volume``'s grid."""
    from lunglesionai.stages.lung_mask import segment_lungs
    from lunglesionai.stages.measurements import with_guideline_measurements
    from lunglesionai.stages.nodule_location import with_location

    if lung_labels is None:
        key = (volume_node.GetID(), volume_node.GetImageData().GetMTime(), tuple(lps_volume.shape_zyx))
        cached = getattr(scene, _LUNG_LABELS_CACHE, None)
        if cached is None or cached[0] != key:
            cached = (key, segment_lungs(lps_volume))
            setattr(scene, _LUNG_LABELS_CACHE, cached)
        lung_labels = cached[1]
    measured = with_guideline_measurements(lps_volume, finding)
    return with_location(lps_volume, np.asarray(lung_labels), [measured])[0]


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
