"""Reader actions on the clinical read of a result in a scene: drag an axis, give patient values, show the summary.

* :func:`apply_axis_edit`: a reader dragged the end points of a nodule's long- or short-axis line
  (:mod:`lunglesionai.mrml.axes_markups`); the lines' lengths become the finding's ``long_axis_mm`` and
  ``short_axis_mm`` (the longer line is the long axis), ``mean_diameter_mm`` their mean, and the clinical read runs
  again so the row's Lung-RADS category and Brock risk (which uses the long axis) follow. The end points are kept
  in ``extra["axis_lines_lps_mm"]`` and ``extra["axes_source"] = "reader"``, so a saved and reopened result shows
  the reader's lines. Volume, equivalent diameter and solid component stay those of the outline (edit the
  segment and press "Update measurements" to change them).
* :func:`set_clinical_inputs`: the indication and patient values of the read (panel fields), stored on the table
  and, when asked, applied at once.
* :func:`exam_summary`: the text shown at the top of the Slicer results
  (:func:`lunglesionai.mrml.clinical_review.exam_summary_text`).

Works in 3D Slicer and in ``slicer-core`` (the MRML calls go through :mod:`lunglesionai.mrml.review`).
Sources: Bankier et al., Radiology 2017;285(2):584-600 (axes, doi:10.1148/radiol.2017162894); ACR Lung-RADS v2022.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from lunglesionai.clinical.patient import PatientInfo
from lunglesionai.core.findings import Finding
from lunglesionai.mrml import axes_markups, clinical_review, review
from lunglesionai.stages.measurements import mean_diameter_mm

__all__ = ["AXES_SOURCE_READER", "apply_axis_edit", "set_clinical_inputs", "exam_summary"]

logger = logging.getLogger(__name__)

#: ``Finding.extra["axes_source"]`` after a reader's axis edit.
AXES_SOURCE_READER = "reader"


def apply_axis_edit(scene, results: review.SceneResults, finding_id: str) -> Finding:
    """Take a nodule's (dragged) axis lines as its diameters and read the report again.

    Args:
        scene: the scene holding the result.
        results: the result's nodes (``results.axis_line_node_ids`` has the finding's two lines).
        finding_id: the nodule or mass whose lines were edited.

    Returns:
        The updated finding: ``long_axis_mm`` / ``short_axis_mm`` = the longer / shorter line's length (mm, world
        LPS), ``mean_diameter_mm`` their mean, new ``lung_rads``, ``lung_rads_reason`` and ``brock_risk``.

    Raises:
        KeyError: unknown finding, or it has no axis lines (or a line lost a point).
        ValueError: a line has zero length.

    Example:
        >>> updated = apply_axis_edit(scene, results, "N1")             # doctest: +SKIP
        >>> updated.mean_diameter_mm, updated.lung_rads                  # doctest: +SKIP
    """
    if finding_id not in results.axis_line_node_ids:
        raise KeyError(f"finding {finding_id!r} has no axis lines")
    ends = axes_markups.axis_lines_lps(scene, results.axis_line_node_ids[finding_id])
    lengths = {axis: float(np.linalg.norm(points[1] - points[0])) for axis, points in ends.items()}
    if min(lengths.values()) <= 0.0:
        raise ValueError(f"an axis line of finding {finding_id!r} has zero length: {lengths}")
    long_axis, short_axis = max(lengths.values()), min(lengths.values())
    report = review.read_report(scene, results, with_masks=False)
    finding = review.find_finding(report, finding_id)
    order = ("long", "short") if lengths["long"] >= lengths["short"] else ("short", "long")
    extra = dict(finding.extra, axes_source=AXES_SOURCE_READER)
    extra[axes_markups.EDITED_AXES_KEY] = {name: np.round(ends[axis], 4).tolist()
                                           for name, axis in zip(axes_markups.AXES, order)}
    updated = replace(finding, long_axis_mm=long_axis, short_axis_mm=short_axis,
                      mean_diameter_mm=mean_diameter_mm(long_axis, short_axis), extra=extra)
    report = review.commit_report(scene, results, replace(report, findings=[
        updated if f.id == finding_id else f for f in report.findings]))
    updated = review.find_finding(report, finding_id)
    logger.info("finding %s axes from the lines: %.1f x %.1f mm, Lung-RADS %s", finding_id, long_axis, short_axis,
                updated.lung_rads)
    return updated


def set_clinical_inputs(scene, results: review.SceneResults, patient: PatientInfo, indication: str, *,
                        reread: bool = True) -> None:
    """Store the indication and the patient values given (None fields: from the DICOM header or defaulted) on the
    result's table; with ``reread`` also read the report again with them at once.

    Raises:
        ValueError: an unknown indication.
    """
    table = scene.GetNodeByID(results.table_node_id)
    table.SetAttribute(clinical_review.CLINICAL_INPUTS_ATTRIBUTE, clinical_review.clinical_inputs_json(
        patient, indication))
    if reread:
        review.commit_report(scene, results, review.read_report(scene, results, with_masks=False))


def exam_summary(scene, results: review.SceneResults) -> str:
    """The exam summary of the result as it stands after review (plain text, one fact per line).

    Raises:
        ValueError: the table holds no report.
    """
    return clinical_review.exam_summary_text(review.read_report(scene, results, with_masks=False))
