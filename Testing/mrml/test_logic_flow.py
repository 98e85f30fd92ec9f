"""What LungLesionAILogic.process does in Slicer, step by step, with slicer-core's real scene and the real CLI.

volume node -> temporary NRRD -> ``python -m lunglesionai analyze`` in a background process (progress polled) ->
output folder -> nodes (segmentation, points, table) under the volume's study -> checked against the phantom's
ground truth. The module file itself needs Slicer's Qt and cannot be imported here; it calls exactly these
functions (startAnalysis: volume_from_volume_node + save_volume + BackgroundAnalysis.start; finishAnalysis:
load_outputs_into_scene).
"""

from __future__ import annotations

import numpy as np
import pytest
import vtk

import slicer  # slicer-core
from lunglesionai.app.background import AnalysisState, BackgroundAnalysis
from lunglesionai.io.ct_files import save_volume
from lunglesionai.mrml import results_folder
from lunglesionai.mrml import scene as mrml
from lunglesionai.synth import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    phantom = make_phantom(PhantomConfig.small())
    scene = slicer.vtkMRMLScene()
    mrml.setup_scene_for_lunglesionai(scene)
    volume_node = mrml.volume_node_from_volume(scene, phantom.volume, "PhantomCT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Phantom patient"), "Phantom study")
    sh.CreateItem(study, volume_node)
    folder = tmp_path_factory.mktemp("run")
    save_volume(mrml.volume_from_volume_node(volume_node), folder / "input.nrrd", compress=False)
    # a sensitive operating point: this tests the volume -> process -> scene round trip and its geometry; the
    # default (0.7, chosen for real scans) keeps 2 of the small phantom's 6 procedural nodules with these candidates
    job = BackgroundAnalysis.start(folder / "input.nrrd", folder / "out", detector="classical", min_score=0.3,
                                   env={"OMP_NUM_THREADS": "1"})
    status = job.wait(timeout=180)
    assert status.state is AnalysisState.DONE, status.error
    nodes_before = scene.GetNumberOfNodes()
    results, report = results_folder.load_outputs_into_scene(scene, status.output_dir, volume_node)
    return phantom, scene, results, report, study, nodes_before, job


def test_progress_arrived_before_the_results(analysed):
    *_, job = analysed
    assert len(job.progress_log) >= 4 and job.progress_log[-1][1] == 1.0


def test_nodes_agree_with_the_report_and_the_phantom(analysed):
    phantom, scene, results, report, study, nodes_before, _ = analysed
    assert scene.GetNumberOfNodes() > nodes_before
    segmentation = scene.GetNodeByID(results.segmentation_node_id).GetSegmentation()
    masked = [f for f in report.findings if f.mask is not None]
    assert masked and segmentation.GetNumberOfSegments() == len(masked)
    styles = mrml.segment_styles(report.findings)
    for finding in masked:
        segment = segmentation.GetSegment(finding.id)
        assert segment.GetName() == styles[finding.id].name and segment.GetName().startswith("Nodule ")
        tag = vtk.reference("")
        assert segment.GetTag("TerminologyEntry", tag) and "SCT^27925004^Nodule" in str(tag)
        assert segment.GetRepresentation("Closed surface") is not None
    points = scene.GetNodeByID(results.nodules_markups_node_id)
    assert points.GetNumberOfControlPoints() == len(report.nodules())
    points_lps = np.array([mrml.ras_to_lps(points.GetNthControlPointPosition(n))[0]
                           for n in range(points.GetNumberOfControlPoints())])
    np.testing.assert_allclose(points_lps, [f.center_lps_mm for f in report.nodules()], atol=1e-3)
    table = scene.GetNodeByID(results.table_node_id)
    assert table.GetNumberOfRows() == len(report.findings)
    assert [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())] == [f.id for f in report.findings]
    hits = sum(
        int(np.linalg.norm(points_lps - np.asarray(n.center_lps_mm), axis=1).min() <= n.diameter_mm / 2)
        for n in phantom.nodules
    )
    assert hits >= len(phantom.nodules) // 2, f"only {hits} of {len(phantom.nodules)} phantom nodules found"
    centroids = mrml.segment_centroids_lps(scene.GetNodeByID(results.segmentation_node_id))
    for finding in masked:
        np.testing.assert_allclose(centroids[finding.id], finding.center_lps_mm, atol=max(phantom.volume.spacing_mm))


def test_results_are_under_the_volumes_study(analysed):
    _, scene, results, _, study, _, _ = analysed
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node_id in results.node_ids():
        assert sh.GetItemParent(sh.GetItemByDataNode(scene.GetNodeByID(node_id))) == study
