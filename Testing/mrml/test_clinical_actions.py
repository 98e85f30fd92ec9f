"""Tests of the clinical read in the scene (issue 15, Slicer side) against slicer-core's real MRML scene: axis lines,
axis edits, re-read after review actions, exam summary, reopening a saved folder.

The CT is test_review's oblique grid with 40 HU inside nodule N1 (radius 3 voxels: axial axes 6.3 x 5.6 mm,
Lung-RADS 2 as a solid nodule under 6 mm) and air elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import vtk

import slicer  # slicer-core (requirements-dev.txt)
from lunglesionai.clinical.patient import PatientInfo
from lunglesionai.clinical.read import apply_clinical_read
from lunglesionai.core.orientation import reorient_to_lps
from lunglesionai.io.outputs import write_outputs
from lunglesionai.mrml import axes_markups, clinical_actions, clinical_review, results_folder, review
from lunglesionai.mrml import scene as mrml
from lunglesionai.stages.lung_mask import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from lunglesionai.stages.measurements import measure_mask
from report_fixtures import grid_volume, make_small_report


def _read_ct():
    """The CT and its report with axes measured and a screening read (patient 65, M)."""
    report = make_small_report()
    hu = np.full(grid_volume().shape_zyx, -1000, np.int16)
    report.findings[0].mask.paste_into(hu, 40)
    volume = grid_volume().with_array(hu)
    lps_volume, perm = reorient_to_lps(volume)
    findings = []
    for f in report.findings:
        if f.mask is not None:
            m = measure_mask(lps_volume, f.mask.reoriented(perm))
            f = replace(f, long_axis_mm=m.long_axis_mm, short_axis_mm=m.short_axis_mm,
                        mean_diameter_mm=m.mean_diameter_mm, texture="solid")
        findings.append(f)
    report = replace(report, findings=findings, exam={"nodule_count": 3, "lungs_fully_covered": True})
    return volume, apply_clinical_read(report, PatientInfo(age_years=65.0, sex="M"), "screening")


@pytest.fixture
def loaded():
    scene = slicer.vtkMRMLScene()
    volume, report = _read_ct()
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    results = review.add_results_to_scene(scene, report, volume_node)
    clinical_actions.set_clinical_inputs(scene, results, PatientInfo(age_years=65.0, sex="M"), "screening",
                                         reread=False)
    return scene, results, report, volume


def _row(scene, results, finding_id: str) -> dict:
    table = scene.GetNodeByID(results.table_node_id).GetTable()
    names = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    ids = [table.GetColumn(0).GetValue(r) for r in range(table.GetNumberOfRows())]
    row = ids.index(finding_id)
    return {name: table.GetColumn(c).GetValue(row) for c, name in enumerate(names)}


def _length(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[1] - points[0]))


def _drag(scene, line_id: str, length_mm: float) -> None:
    """Move both end points of a line along it so that it is ``length_mm`` long (same centre and direction)."""
    line = scene.GetNodeByID(line_id)
    ends = np.array([line.GetNthControlPointPositionWorld(n) for n in range(2)])
    centre, direction = ends.mean(axis=0), (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
    for n, sign in enumerate((-1.0, 1.0)):
        line.SetNthControlPointPositionWorld(n, vtk.vtkVector3d(*(centre + sign * length_mm / 2 * direction)))


def test_axis_lines_lie_on_the_measured_axes(loaded):
    scene, results, report, _ = loaded
    assert set(results.axis_line_node_ids) == {"N1", "N2"}  # N3 has no mask, L1 is a lesion (box)
    for finding in report.findings[:2]:
        ends = axes_markups.axis_lines_lps(scene, results.axis_line_node_ids[finding.id])
        assert _length(ends["long"]) == pytest.approx(finding.long_axis_mm, abs=1e-6)
        assert _length(ends["short"]) == pytest.approx(finding.short_axis_mm, abs=1e-6)
        long_dir, short_dir = np.diff(ends["long"], axis=0)[0], np.diff(ends["short"], axis=0)[0]
        assert abs(np.dot(long_dir, short_dir)) < 1e-6  # perpendicular
        assert np.ptp(np.vstack([ends["long"], ends["short"]])[:, 2]) < 1e-6  # one axial slice
        line = scene.GetNodeByID(results.axis_line_node_ids[finding.id][0])
        assert line.IsA("vtkMRMLMarkupsLineNode") and line.GetAttribute(axes_markups.AXIS_TAG) == "long"
    again = review.SceneResults.from_table_node(scene.GetNodeByID(results.table_node_id))
    assert again == results


def test_table_shows_the_clinical_columns(loaded):
    scene, results, report, _ = loaded
    n1 = report.findings[0]
    row = _row(scene, results, "N1")
    assert row["lung_rads"] == n1.lung_rads == "2"
    assert row["mean diameter"] == pytest.approx(round(n1.mean_diameter_mm, 1))
    assert row["brock"] == pytest.approx(round(100 * n1.brock_risk, 1))
    assert math.isnan(row["solid component"]) and row["calcified"] == "" and row["location"] == ""
    assert _row(scene, results, "L1")["lung_rads"] == ""  # lesions get no category


def test_dragging_the_axes_changes_diameters_and_category(loaded, tmp_path):
    scene, results, report, _ = loaded
    long_id, short_id = results.axis_line_node_ids["N1"]
    _drag(scene, long_id, 12.0)
    _drag(scene, short_id, 10.0)
    updated = clinical_actions.apply_axis_edit(scene, results, "N1")
    assert (updated.long_axis_mm, updated.short_axis_mm) == (pytest.approx(12.0), pytest.approx(10.0))
    assert updated.mean_diameter_mm == pytest.approx(11.0)
    assert updated.lung_rads == "4A"  # solid 8-15 mm at baseline (was 2: under 6 mm)
    assert updated.brock_risk > report.findings[0].brock_risk
    assert updated.volume_mm3 == pytest.approx(report.findings[0].volume_mm3)  # the outline's, unchanged
    row = _row(scene, results, "N1")
    assert row["lung_rads"] == "4A" and row["mean diameter"] == pytest.approx(11.0)
    stored = review.read_report(scene, results, with_masks=False)
    assert stored.exam["lung_rads"] == "4A" and stored.exam["highest_risk_finding"] == "N1"
    assert "age" not in stored.exam["assumed"] and "sex" not in stored.exam["assumed"]  # stored inputs used
    # Saved and opened again (volume found by its grid): the reader's lines, categories and decisions come back.
    review.set_review_status(scene, results, "N2", "rejected")
    results_folder.save_report(scene, results, tmp_path / "reviewed", html=False)
    again, reopened = results_folder.load_results(scene, tmp_path / "reviewed")
    assert again.volume_node_id == results.volume_node_id and again.table_node_id != results.table_node_id
    ends = axes_markups.axis_lines_lps(scene, again.axis_line_node_ids["N1"])
    assert (_length(ends["long"]), _length(ends["short"])) == (pytest.approx(12.0, abs=1e-3),
                                                               pytest.approx(10.0, abs=1e-3))
    assert _row(scene, again, "N1")["lung_rads"] == "4A" and _row(scene, again, "N2")["status"] == "rejected"
    assert reopened.exam["lung_rads"] == "4A"


def test_a_zero_length_or_missing_line_is_refused(loaded):
    scene, results, _, _ = loaded
    long_id, _ = results.axis_line_node_ids["N1"]
    line = scene.GetNodeByID(long_id)
    line.SetNthControlPointPositionWorld(1, vtk.vtkVector3d(*line.GetNthControlPointPositionWorld(0)))
    with pytest.raises(ValueError, match="zero length"):
        clinical_actions.apply_axis_edit(scene, results, "N1")
    with pytest.raises(KeyError):
        clinical_actions.apply_axis_edit(scene, results, "N3")


def test_rejecting_the_worst_nodule_lowers_the_exam_category(loaded):
    scene, results, _, _ = loaded
    _drag(scene, results.axis_line_node_ids["N1"][0], 12.0)
    _drag(scene, results.axis_line_node_ids["N1"][1], 10.0)
    clinical_actions.apply_axis_edit(scene, results, "N1")
    before = review.read_report(scene, results, with_masks=False).exam["lung_rads"]
    review.set_review_status(scene, results, "N1", "rejected")
    after = review.read_report(scene, results, with_masks=False)
    assert (before, after.exam["lung_rads"]) == ("4A", "3")  # N2: 8.1 x 7.2 mm solid -> 3
    assert _row(scene, results, "N1")["lung_rads"] == ""


def test_exam_summary_text(loaded):
    scene, results, report, _ = loaded
    text = clinical_actions.exam_summary(scene, results)
    lines = text.splitlines()
    assert lines[0].startswith(f"Lung-RADS {report.exam['lung_rads']} (screening): ")
    assert any(line.startswith("Fleischner 2017: does not apply") for line in lines)
    assert any(line.startswith("Nodules: 3; highest Brock risk: N2") for line in lines)
    assert "family history of lung cancer" in text and report.exam["decision_support_note"] in text
    unread = clinical_review.exam_summary_text(make_small_report())
    assert unread.startswith("Clinical read (Lung-RADS, Fleischner, Brock) not run")


def test_new_indication_reads_again(loaded):
    scene, results, _, _ = loaded
    clinical_actions.set_clinical_inputs(scene, results, PatientInfo(age_years=65.0, sex="M"), "incidental")
    exam = review.read_report(scene, results, with_masks=False).exam
    assert exam["indication"] == "incidental" and exam["fleischner"]["applies"] is True
    with pytest.raises(ValueError):
        clinical_actions.set_clinical_inputs(scene, results, PatientInfo(), "follow-up")


def test_update_measurements_refreshes_location_and_category(loaded):
    scene, results, report, volume = loaded
    lps_volume, perm = reorient_to_lps(volume)
    labels = np.zeros(lps_volume.shape_zyx, np.uint8)
    labels[:, :, : lps_volume.shape_zyx[2] // 2] = RIGHT_LUNG_LABEL
    labels[:, :, lps_volume.shape_zyx[2] // 2:] = LEFT_LUNG_LABEL
    updated = review.update_measurements(scene, results, "N1", lung_labels=labels)
    assert updated.location is not None and updated.location["lobe"] is None
    assert updated.calcified is False and updated.mean_diameter_mm == pytest.approx(report.findings[0].mean_diameter_mm)
    assert _row(scene, results, "N1")["location"] == f"{updated.location['side']}, {updated.location['zone']} zone"
    assert _row(scene, results, "N1")["lung_rads"] == updated.lung_rads == "2"
    with pytest.raises(ValueError, match="grid"):
        review.update_measurements(scene, results, "N1", lung_labels=labels[1:])


def test_load_results_needs_the_analysed_volume(tmp_path):
    scene = slicer.vtkMRMLScene()
    volume, report = _read_ct()
    write_outputs(report, tmp_path / "out")
    mrml.volume_node_from_volume(scene, replace(volume, spacing_mm=(1.0, 1.0, 1.0)), "other grid")
    with pytest.raises(ValueError, match="load the analysed CT"):
        results_folder.load_results(scene, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        results_folder.load_results(scene, tmp_path)
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    results, loaded = results_folder.load_results(scene, tmp_path / "out")
    assert results.volume_node_id == volume_node.GetID()
    assert [f.lung_rads for f in loaded.findings] == [f.lung_rads for f in report.findings]


def test_a_saved_read_is_read_again_with_the_patient_values_it_was_given():
    report = apply_clinical_read(make_small_report(), PatientInfo(age_years=71.0, sex="M"), "incidental")
    patient, indication = clinical_review.clinical_inputs_from_json(None, report)  # no table attribute: a CLI run
    assert indication == "incidental" and patient == PatientInfo(age_years=71.0, sex="M")
