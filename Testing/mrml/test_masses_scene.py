"""A mass (kind "mass", id "M1") in the Slicer scene, against slicer-core's real MRML: segment "Mass 1" with SNOMED CT
4147007, a control point in the findings' point list, a table row of kind "mass", review actions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import vtk

import slicer  # slicer-core (requirements-dev.txt)
from lunglesionai.core.findings import Report
from lunglesionai.core.segments import MASS_COLOR_RGB
from lunglesionai.mrml import review
from lunglesionai.mrml import scene as mrml
from report_fixtures import grid_volume, make_small_report, sphere_finding


def _tag(segment, name: str):
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


@pytest.fixture
def loaded():
    scene = slicer.vtkMRMLScene()
    mrml.setup_scene_for_lunglesionai(scene)
    volume = grid_volume()
    small = make_small_report(with_lesion=False)
    mass = replace(sphere_finding("M1", "mass", (9, 11, 12), 5, volume), extra={"grading": "not graded: mass"})
    report = Report(input=small.input, findings=[mass, *small.findings], version="test")
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    return scene, review.add_results_to_scene(scene, report, volume_node), report


def _point(scene, results, finding_id):
    points = scene.GetNodeByID(results.nodules_markups_node_id)
    labels = [points.GetNthControlPointLabel(n) for n in range(points.GetNumberOfControlPoints())]
    return points, labels.index(finding_id)


def test_mass_has_its_segment_point_and_row(loaded):
    scene, results, report = loaded
    segment = scene.GetNodeByID(results.segmentation_node_id).GetSegmentation().GetSegment("M1")
    assert segment.GetName() == "Mass 1"
    assert "SCT^4147007^Mass" in _tag(segment, "TerminologyEntry")
    assert tuple(round(c, 3) for c in segment.GetColor()) == MASS_COLOR_RGB
    nodule = scene.GetNodeByID(results.segmentation_node_id).GetSegmentation().GetSegment("N1")
    assert nodule.GetName() == "Nodule 1" and "SCT^27925004^Nodule" in _tag(nodule, "TerminologyEntry")
    points, index = _point(scene, results, "M1")
    assert points.GetNumberOfControlPoints() == 4  # M1, N1, N2, N3
    table = scene.GetNodeByID(results.table_node_id).GetTable()
    names = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    rows = [{n: table.GetColumn(c).GetValue(r) for c, n in enumerate(names)} for r in range(table.GetNumberOfRows())]
    assert [(row["id"], row["kind"]) for row in rows] == [("M1", "mass"), ("N1", "nodule"), ("N2", "nodule"),
                                                          ("N3", "nodule")]
    assert rows[0]["invasiveness"] == "not graded: mass"


def test_mass_review_locks_its_point(loaded):
    scene, results, _ = loaded
    review.set_review_status(scene, results, "M1", "rejected")
    points, index = _point(scene, results, "M1")
    assert points.GetNthControlPointDescription(index).startswith("[rejected] ")
    assert points.GetNthControlPointLocked(index)
    statuses = {f.id: f.status for f in review.read_report(scene, results, with_masks=False).findings}
    assert statuses["M1"] == "rejected" and statuses["N1"] == "proposed"
