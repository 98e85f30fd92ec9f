"""Tests of lunglesionai.mrml.review against slicer-core's real MRML scene: table, review actions, subject hierarchy.

The grid is the oblique, left-handed one of test_export (k runs inferior, so measuring goes through an exact axis
flip to LPS order); the CT has 40 HU inside nodule N1 and -1000 HU elsewhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import vtk

import slicer  # slicer-core (requirements-dev.txt)
from lunglesionai.core.findings import FindingMask
from lunglesionai.core.orientation import reorient_to_lps
from lunglesionai.io.outputs import write_outputs
from lunglesionai.mrml import results_folder, review
from lunglesionai.mrml import scene as mrml
from lunglesionai.stages.measurements import measure_mask
from report_fixtures import grid_volume, make_small_report


def _tag(segment, name: str):
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def _ras(lps) -> np.ndarray:
    x, y, z = lps
    return np.array([-x, -y, z])


def _ct():
    """The test grid's CT: 40 HU inside N1's ball, air elsewhere."""
    report = make_small_report()
    hu = np.full(grid_volume().shape_zyx, -1000, np.int16)
    report.findings[0].mask.paste_into(hu, 40)
    return grid_volume().with_array(hu), report


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    mrml.setup_scene_for_lunglesionai(scene)
    return scene


@pytest.fixture
def loaded(scene):
    volume, report = _ct()
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    results = review.add_results_to_scene(scene, report, volume_node)
    return scene, results, report, volume_node


def _table_rows(scene, results) -> list[dict]:
    table = scene.GetNodeByID(results.table_node_id).GetTable()
    names = [table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    return [{name: table.GetColumn(c).GetValue(r) for c, name in enumerate(names)} for r in range(table.GetNumberOfRows())]


def _same_row(a: dict, b: dict) -> bool:
    """Rows equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def _point(scene, results, finding_id):
    points = scene.GetNodeByID(results.nodules_markups_node_id)
    index = next(n for n in range(points.GetNumberOfControlPoints()) if points.GetNthControlPointLabel(n) == finding_id)
    return points, index


def test_table_has_one_row_per_finding_with_the_report_values(loaded):
    scene, results, report, _ = loaded
    table_node = scene.GetNodeByID(results.table_node_id)
    assert table_node.IsA("vtkMRMLTableNode")
    assert [table_node.GetColumnName(c) for c in range(table_node.GetNumberOfColumns())] == [
        "id", "kind", "lung_rads", "brock", "mean diameter", "diameter", "volume", "mean HU", "texture",
        "solid component", "calcified", "location", "malignancy", "invasiveness", "score", "status"]
    assert table_node.GetColumnTitle("diameter") == "Diameter (mm)" and table_node.GetUseColumnTitleAsColumnHeader()
    rows = _table_rows(scene, results)
    assert [row["id"] for row in rows] == [f.id for f in report.findings] == ["N1", "N2", "N3", "L1"]
    for row, finding in zip(rows, report.findings):
        assert row["diameter"] == pytest.approx(finding.diameter_mm, abs=0.05)
        assert row["volume"] == pytest.approx(finding.volume_mm3, abs=0.5)
        assert row["score"] == pytest.approx(0.9)
        assert math.isnan(row["malignancy"]) and row["invasiveness"] == ""  # not computed: not invented
        assert row["status"] == "proposed"


def test_results_sit_under_the_volumes_study_and_are_found_again(scene):
    volume, report = _ct()
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient"), "Chest CT study")
    sh.CreateItem(study, volume_node)
    results = review.add_results_to_scene(scene, report, volume_node)
    for node_id in results.node_ids():
        item = sh.GetItemByDataNode(scene.GetNodeByID(node_id))
        assert item and sh.GetItemParent(item) == study, scene.GetNodeByID(node_id).GetName()
    assert set(results.lesion_roi_node_ids) == {"L1"}
    again = review.SceneResults.from_table_node(scene.GetNodeByID(results.table_node_id))
    assert again == results
    with pytest.raises(ValueError):
        review.SceneResults.from_table_node(scene.AddNewNodeByClass("vtkMRMLTableNode"))


def test_without_a_study_results_go_beside_the_volume(loaded):
    scene, results, _, volume_node = loaded
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = sh.GetItemParent(sh.GetItemByDataNode(volume_node))
    table_item = sh.GetItemByDataNode(scene.GetNodeByID(results.table_node_id))
    assert sh.GetItemParent(table_item) == parent == sh.GetSceneItemID()


def test_a_failure_half_way_leaves_the_scene_as_it_was(scene, monkeypatch):
    volume, report = _ct()
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    before = scene.GetNumberOfNodes()

    def broken(*args, **kwargs):
        raise RuntimeError("subject hierarchy unavailable")

    monkeypatch.setattr(mrml, "place_under_study", broken)
    with pytest.raises(RuntimeError):
        review.add_results_to_scene(scene, report, volume_node)
    assert scene.GetNumberOfNodes() == before
    for class_name in ("vtkMRMLSegmentationNode", "vtkMRMLMarkupsFiducialNode", "vtkMRMLTableNode"):
        assert scene.GetNodesByClass(class_name).GetNumberOfItems() == 0, class_name


def test_reject_changes_the_row_segment_point_and_report_of_that_finding_only(loaded):
    scene, results, _, _ = loaded
    segmentation = scene.GetNodeByID(results.segmentation_node_id).GetSegmentation()
    points, n1 = _point(scene, results, "N1")
    n1_before = (points.GetNthControlPointDescription(n1), points.GetNthControlPointLocked(n1))
    updated = review.set_review_status(scene, results, "N2", "rejected")
    assert updated.status == "rejected"
    rows = {row["id"]: row for row in _table_rows(scene, results)}
    assert rows["N2"]["status"] == "rejected" and rows["N1"]["status"] == "proposed"
    assert _tag(segmentation.GetSegment("N2"), "Segmentation.Status") == "flagged"
    assert _tag(segmentation.GetSegment("N1"), "Segmentation.Status") == "inprogress"
    _, n2 = _point(scene, results, "N2")
    assert points.GetNthControlPointDescription(n2).startswith("[rejected] ")
    assert points.GetNthControlPointLocked(n2) and not points.GetNthControlPointSelected(n2)
    assert (points.GetNthControlPointDescription(n1), points.GetNthControlPointLocked(n1)) == n1_before
    statuses = {f.id: f.status for f in review.read_report(scene, results, with_masks=False).findings}
    assert statuses == {"N1": "proposed", "N2": "rejected", "N3": "proposed", "L1": "proposed"}


def test_accept_and_reset(loaded):
    scene, results, _, _ = loaded
    review.set_review_status(scene, results, "L1", "accepted")
    roi = scene.GetNodeByID(results.lesion_roi_node_ids["L1"])
    assert roi.GetNthControlPointDescription(0).startswith("[accepted] ") and roi.GetLocked()
    segment = scene.GetNodeByID(results.segmentation_node_id).GetSegmentation().GetSegment("L1")
    assert _tag(segment, "Segmentation.Status") == "completed"
    review.set_review_status(scene, results, "N3", "accepted")  # a nodule without a segment
    points, n3 = _point(scene, results, "N3")
    assert points.GetNthControlPointDescription(n3).startswith("[accepted] ")
    review.set_review_status(scene, results, "L1", "proposed")
    assert not roi.GetLocked() and not roi.GetNthControlPointDescription(0).startswith("[")
    assert {row["id"]: row["status"] for row in _table_rows(scene, results)}["L1"] == "proposed"
    with pytest.raises(ValueError):
        review.set_review_status(scene, results, "N1", "unreviewed")
    with pytest.raises(KeyError):
        review.set_review_status(scene, results, "N9", "accepted")


def _replace_segment(scene, results, finding_id, mask: FindingMask, info) -> None:
    node = scene.GetNodeByID(results.segmentation_node_id)
    image = mrml._oriented_image_from_mask(mask, info)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, node, finding_id, logic.MODE_REPLACE)


def test_update_measurements_remeasures_the_edited_segment(loaded):
    scene, results, report, _ = loaded
    volume, _ = _ct()
    # The "edit": N1 grows from a radius-3 to a radius-4 ball, one voxel further along k.
    r = 4
    k, j, i = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    ball = k**2 + j**2 + i**2 <= r * r
    edited = FindingMask((6 - r, 6 - r, 7 - r), ball)
    _replace_segment(scene, results, "N1", edited, report.input)
    rows_before = {row["id"]: row for row in _table_rows(scene, results)}
    updated = review.update_measurements(scene, results, "N1")

    lps_volume, perm = reorient_to_lps(volume)
    expected = measure_mask(lps_volume, edited.reoriented(perm))
    assert updated.volume_mm3 == pytest.approx(ball.sum() * volume.voxel_volume_mm3)
    assert updated.volume_mm3 == pytest.approx(expected.volume_mm3)
    assert updated.diameter_mm == pytest.approx(expected.diameter_mm)
    assert updated.long_axis_mm == pytest.approx(expected.long_axis_mm)
    np.testing.assert_allclose(updated.center_lps_mm, volume.kji_to_lps([(6, 6, 7)])[0], atol=1e-6)
    assert updated.extra["mask_source"] == "edited" and updated.texture == expected.texture
    rows = {row["id"]: row for row in _table_rows(scene, results)}
    assert rows["N1"]["volume"] == pytest.approx(round(expected.volume_mm3))
    assert rows["N1"]["diameter"] == pytest.approx(round(expected.diameter_mm, 1))
    for other in ("N2", "N3", "L1"):
        assert _same_row(rows[other], rows_before[other]), other
    points, n1 = _point(scene, results, "N1")
    np.testing.assert_allclose(points.GetNthControlPointPosition(n1), _ras(updated.center_lps_mm), atol=1e-6)
    assert points.GetNthControlPointDescription(n1) == updated.summary()
    stored = review.read_report(scene, results)
    assert stored.findings[0].volume_mm3 == pytest.approx(updated.volume_mm3)
    np.testing.assert_array_equal(_paste(stored.findings[0].mask, volume), _paste(edited, volume))


def _paste(mask: FindingMask, volume) -> np.ndarray:
    full = np.zeros(volume.shape_zyx, bool)
    mask.paste_into(full, True)
    return full


def test_update_measurements_of_a_graded_finding_keeps_the_grader_texture(scene):
    volume, report = _ct()
    report.findings[0] = replace(report.findings[0], texture="ground-glass", malignancy_probability=0.3,
                                 extra={"texture_hu_rule": "ground-glass"})
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    results = review.add_results_to_scene(scene, report, volume_node)
    updated = review.update_measurements(scene, results, "N1")
    assert updated.texture == "ground-glass" and updated.malignancy_probability == 0.3
    assert updated.extra["texture_hu_rule"] == "solid"  # 40 HU inside: solid by the HU rule


def test_update_measurements_refuses_empty_or_missing_segments(loaded):
    scene, results, _, _ = loaded
    with pytest.raises(KeyError):
        review.update_measurements(scene, results, "N3")  # no mask, no segment
    segmentation_node = scene.GetNodeByID(results.segmentation_node_id)
    empty = slicer.vtkOrientedImageData()
    empty.SetExtent(0, 1, 0, 1, 0, 1)
    empty.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    empty.GetPointData().GetScalars().Fill(0)
    reference = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation("N2", reference)
    matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(matrix)
    empty.SetImageToWorldMatrix(matrix)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetBinaryLabelmapToSegment(empty, segmentation_node, "N2", logic.MODE_REPLACE)
    with pytest.raises(ValueError, match="empty"):
        review.update_measurements(scene, results, "N2")


def test_read_report_gives_back_the_masks(loaded):
    scene, results, report, _ = loaded
    volume = grid_volume()
    back = review.read_report(scene, results)
    for original, read in zip(report.findings, back.findings):
        if original.mask is None:
            assert read.mask is None
        else:
            np.testing.assert_array_equal(_paste(read.mask, volume), _paste(original.mask, volume))


def test_row_and_position_lookups(loaded):
    scene, results, report, _ = loaded
    assert review.finding_id_at_row(scene, results, 1) == "N2"
    with pytest.raises(IndexError):
        review.finding_id_at_row(scene, results, 4)
    np.testing.assert_allclose(review.finding_position_ras(scene, results, "N2"),
                               _ras(report.findings[1].center_lps_mm), atol=1e-6)
    np.testing.assert_allclose(review.finding_position_ras(scene, results, "L1"),  # a lesion: its centre
                               _ras(report.findings[3].center_lps_mm), atol=1e-6)


def test_output_folder_round_trip_into_the_scene(scene, tmp_path):
    volume, report = _ct()
    write_outputs(report, tmp_path / "out")
    back = results_folder.read_outputs(tmp_path / "out")
    assert [f.id for f in back.findings] == ["N1", "N2", "N3", "L1"]
    for original, read in zip(report.findings, back.findings):
        if original.mask is None:
            assert read.mask is None
        else:
            np.testing.assert_array_equal(_paste(read.mask, volume), _paste(original.mask, volume))
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    results, loaded_report = results_folder.load_outputs_into_scene(scene, tmp_path / "out", volume_node)
    segmentation = scene.GetNodeByID(results.segmentation_node_id).GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    assert loaded_report.input.path == "CT"
    # A volume on another grid is refused before anything is added.
    other = mrml.volume_node_from_volume(scene, replace(volume, spacing_mm=(1.0, 1.0, 1.0)), "other")
    count = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="grid"):
        results_folder.load_outputs_into_scene(scene, tmp_path / "out", other)
    assert scene.GetNumberOfNodes() == count
    points_only, _ = results_folder.load_outputs_into_scene(scene, tmp_path / "out", volume_node, keep_masks=False)
    assert scene.GetNodeByID(points_only.segmentation_node_id).GetSegmentation().GetNumberOfSegments() == 0
    assert scene.GetNodeByID(points_only.nodules_markups_node_id).GetNumberOfControlPoints() == 3


def test_save_report_writes_the_reviewed_result(loaded, tmp_path):
    scene, results, _, _ = loaded
    review.set_review_status(scene, results, "N2", "rejected")
    review.update_measurements(scene, results, "N1")
    paths = results_folder.save_report(scene, results, tmp_path / "reviewed")
    saved = json.loads(paths["report"].read_text())
    assert {f["id"]: f["status"] for f in saved["findings"]}["N2"] == "rejected"
    assert saved["findings"][0]["mask_source"] == "edited"
    assert paths["report_html"].is_file()
    assert len(results_folder.read_outputs(tmp_path / "reviewed").findings) == 4


def test_an_empty_result_loads_as_empty_nodes(scene, tmp_path):
    from lunglesionai.core.findings import InputInfo, Report

    volume, _ = _ct()
    write_outputs(Report(InputInfo.from_volume(volume)), tmp_path / "out")
    volume_node = mrml.volume_node_from_volume(scene, volume, "CT")
    results, report = results_folder.load_outputs_into_scene(scene, tmp_path / "out", volume_node)
    assert report.findings == []
    assert scene.GetNodeByID(results.table_node_id).GetNumberOfRows() == 0
    assert scene.GetNodeByID(results.segmentation_node_id).GetSegmentation().GetNumberOfSegments() == 0
