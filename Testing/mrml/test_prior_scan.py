"""Tests of the prior scan in the scene (issue 16, Slicer side: lunglesionai.mrml.prior_scan) against slicer-core's
real MRML scene, with the views Slicer's own layout logic creates (vtkMRMLLayoutLogic): write_outputs writes
prior_nodules.seg.nrrd; the prior outlines load on the prior volume; the side-by-side layout shows current (Red)
and prior (Yellow); a row's finding is centred in both views at its own and its matched prior position; reopening the
folder finds or loads the prior CT.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import slicer  # slicer-core (requirements-dev.txt)
from lunglesionai.io.ct_files import save_volume
from lunglesionai.io.outputs import PRIOR_NODULES_SEGMENTATION, write_outputs
from lunglesionai.mrml import prior_scan, results_folder
from lunglesionai.mrml import scene as mrml
from report_fixtures import grid_volume, make_small_report, sphere_finding


def _views(scene):
    """Slicer's slice views as the application makes them: MRML's layout logic creates the layout node and the
    slice nodes (Red, Yellow, Green), a slice logic per view its slice composite node."""
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    logics = [layout_logic]
    for name in ("Red", "Yellow", "Green"):
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLScene(scene)
        slice_logic.SetSliceNode(scene.GetSingletonNode(name, "vtkMRMLSliceNode"))
        logics.append(slice_logic)
    scene._lunglesionai_test_logics = logics  # kept alive with the scene
    return layout_logic.GetLayoutNode()


def _write_pair(tmp_path):
    """An output folder of a current report whose N1 matches prior P1 (prior shifted by 4 voxels in i); N2 new."""
    current = make_small_report(with_lesion=False)
    volume = grid_volume()
    shifted = tuple(np.add(volume.origin_lps_mm, (7.0, -3.0, 11.0)))  # the prior: another grid (origin)
    prior_grid = replace(volume, origin_lps_mm=shifted)
    p1 = sphere_finding("P1", "nodule", (5, 6, 11), 2, prior_grid)
    prior_hu = np.full(volume.shape_zyx, -850, np.int16)  # aerated lung, a wall of soft tissue, the nodule
    prior_hu[:, :3, :] = 40
    p1.mask.paste_into(prior_hu, 30)
    prior_hu += np.random.default_rng(0).normal(0, 20, prior_hu.shape).astype(np.int16)  # CT-like noise
    prior_volume = replace(prior_grid.with_array(prior_hu), source=str(tmp_path / "prior.nrrd"))
    save_volume(prior_volume, tmp_path / "prior.nrrd")
    followup = {"status": "growing", "prior_id": "P1", "prior_mean_diameter_mm": 4.0, "volume_change_pct": 80.0,
                "vdt_days": 200.0, "prior_center_lps_mm": list(p1.center_lps_mm)}
    new = {"status": "new", "prior_id": None, "prior_mean_diameter_mm": None, "volume_change_pct": None,
           "vdt_days": None, "prior_center_lps_mm": None}
    findings = [replace(current.findings[0], followup=followup), replace(current.findings[1], followup=new),
                current.findings[2]]
    exam = {"prior": {"path": str(tmp_path / "prior.nrrd"), "interval_days": 180.0}, "resolved": []}
    report = replace(current, findings=findings, exam=exam)
    hu = np.full(volume.shape_zyx, -1000, np.int16)
    for f in report.findings:
        if f.mask is not None:
            f.mask.paste_into(hu, 30)
    paths = write_outputs(report, tmp_path / "out", volume=None, prior_volume=prior_volume, prior_findings=[p1])
    return volume.with_array(hu), prior_volume, p1, paths


def _slice_center_ras(slice_node) -> np.ndarray:
    matrix = slice_node.GetSliceToRAS()
    return np.array([matrix.GetElement(r, 3) for r in range(3)])


def test_write_outputs_writes_the_prior_outlines(tmp_path):
    _, _, p1, paths = _write_pair(tmp_path)
    assert paths["prior_segmentation"].name == PRIOR_NODULES_SEGMENTATION
    import slicerio

    segmentation = slicerio.read_segmentation(str(paths["prior_segmentation"]))
    assert [s["id"] for s in segmentation["segments"]] == ["P1"]
    voxels = np.asarray(segmentation["voxels"]).transpose(2, 1, 0)
    assert int((voxels > 0).sum()) == int(p1.mask.array.sum())


def test_prior_beside_current_and_a_row_shown_in_both(tmp_path):
    volume, prior_volume, p1, paths = _write_pair(tmp_path)
    scene = slicer.vtkMRMLScene()
    layout = _views(scene)
    current_node = mrml.volume_node_from_volume(scene, volume, "current")
    prior_node = mrml.volume_node_from_volume(scene, prior_volume, "prior")
    results, report = results_folder.load_outputs_into_scene(scene, tmp_path / "out", current_node)
    prior_findings = prior_scan.prior_findings_of_folder(tmp_path / "out", prior_node)
    assert [f.id for f in prior_findings] == ["P1"]
    np.testing.assert_allclose(prior_findings[0].center_lps_mm, p1.center_lps_mm, atol=1e-6)
    nodes = prior_scan.add_prior_to_scene(scene, prior_node, prior_findings)
    segmentation = scene.GetNodeByID(nodes.segmentation_node_id).GetSegmentation()
    assert segmentation.GetSegment("P1") is not None

    assert prior_scan.show_prior_beside_current(scene, current_node, nodes, results.segmentation_node_id)
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    red, red_composite = prior_scan._view_nodes(scene, "Red")
    yellow, yellow_composite = prior_scan._view_nodes(scene, "Yellow")
    assert red_composite.GetBackgroundVolumeID() == current_node.GetID()
    assert yellow_composite.GetBackgroundVolumeID() == prior_node.GetID()
    prior_display = scene.GetNodeByID(nodes.segmentation_node_id).GetDisplayNode()
    assert prior_display.IsDisplayableInView(yellow.GetID()) and not prior_display.IsDisplayableInView(red.GetID())

    current_ras, prior_ras = prior_scan.jump_to_finding_in_both(scene, results, "N1")
    expected_prior = mrml.lps_to_ras(p1.center_lps_mm)[0]
    np.testing.assert_allclose(prior_ras, expected_prior, atol=1e-6)
    np.testing.assert_allclose(_slice_center_ras(yellow), expected_prior, atol=1e-3)
    np.testing.assert_allclose(_slice_center_ras(red), current_ras, atol=1e-3)
    assert not np.allclose(current_ras, prior_ras)  # the two scans' positions differ: not world-linked
    yellow_before = _slice_center_ras(yellow)
    current_ras, prior_ras = prior_scan.jump_to_finding_in_both(scene, results, "N2")  # new: prior view stays
    assert prior_ras is None
    np.testing.assert_allclose(_slice_center_ras(yellow), yellow_before)
    np.testing.assert_allclose(_slice_center_ras(red), current_ras, atol=1e-3)
    with pytest.raises(KeyError):
        prior_scan.jump_to_finding_in_both(scene, results, "nope")


def test_reopening_the_folder_finds_or_loads_the_prior(tmp_path):
    volume, prior_volume, _, _ = _write_pair(tmp_path)
    scene = slicer.vtkMRMLScene()
    current_node = mrml.volume_node_from_volume(scene, volume, "current")
    prior_node = mrml.volume_node_from_volume(scene, prior_volume, "prior already open")
    results, report = results_folder.load_results(scene, tmp_path / "out", current_node)
    nodes = prior_scan.load_prior_of_folder(scene, tmp_path / "out", report)
    assert nodes.volume_node_id == prior_node.GetID()  # found by the outlines' grid, not loaded twice
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    assert scene.GetNodeByID(nodes.segmentation_node_id).GetSegmentation().GetSegment("P1") is not None

    fresh = slicer.vtkMRMLScene()  # prior not open: the CT named in exam.prior.path is loaded
    nodes = prior_scan.load_prior_of_folder(fresh, tmp_path / "out", report)
    loaded = fresh.GetNodeByID(nodes.volume_node_id)
    np.testing.assert_array_equal(mrml.volume_from_volume_node(loaded).hu, prior_volume.hu)
    assert nodes.segmentation_node_id is not None
    assert prior_scan.load_prior_of_folder(fresh, tmp_path / "out", replace(report, exam={})) is None
    (tmp_path / "prior.nrrd").unlink()  # moved away: nothing loaded, no error
    assert prior_scan.load_prior_of_folder(slicer.vtkMRMLScene(), tmp_path / "out", report) is None
