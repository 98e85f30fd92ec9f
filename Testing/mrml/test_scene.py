"""Tests of lunglesionai.mrml.scene against slicer-core's real MRML scene (no fake ``slicer``).

The report's grid is oblique and left-handed with a non-zero origin (see test_export), so LPS/RAS and axis-order
mistakes move segment centroids, control points and volume geometry.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import vtk

import slicer  # slicer-core, the Qt-free MRML build (requirements-dev.txt): a hard requirement of the suite
from lunglesionai.core.findings import InputInfo, Report
from lunglesionai.core.volume import Volume
from lunglesionai.mrml import scene as mrml
from report_fixtures import (
    DIRECTION,
    LESION_TERMINOLOGY,
    NODULE_TERMINOLOGY,
    ORIGIN_LPS_MM,
    SPACING_MM,
    make_small_report,
)


def _ras(lps) -> np.ndarray:
    """LPS -> RAS written out here, independently of lunglesionai.mrml.scene."""
    x, y, z = lps
    return np.array([-x, -y, z])


def _tag(segment, name: str):
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def _ct_volume() -> Volume:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, size=(18, 22, 26)).astype(np.int16)
    return Volume(hu, SPACING_MM, ORIGIN_LPS_MM, DIRECTION, "random CT")


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    mrml.setup_scene_for_lunglesionai(scene)
    return scene


def test_setup_is_idempotent():
    scene = slicer.vtkMRMLScene()
    for _ in range(2):
        mrml.setup_scene_for_lunglesionai(scene)
    assert scene.GetNodesByClass("vtkMRMLSelectionNode").GetNumberOfItems() == 1
    rules = [r.GetClassName() for r in slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules()]
    for name in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        assert rules.count(name) == 1
    with pytest.raises(TypeError):
        mrml.setup_scene_for_lunglesionai(None)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_volume_round_trip_keeps_array_and_geometry(scene, dtype):
    volume = _ct_volume()
    volume = volume.with_array(volume.hu.astype(dtype))
    node = mrml.volume_node_from_volume(scene, volume, "CT")
    back = mrml.volume_from_volume_node(node)
    assert back.hu.dtype == dtype
    np.testing.assert_array_equal(back.hu, volume.hu)
    np.testing.assert_allclose(back.spacing_mm, volume.spacing_mm, atol=1e-9)
    np.testing.assert_allclose(back.origin_lps_mm, volume.origin_lps_mm, atol=1e-9)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-9)
    assert back.source == "CT"


def test_volume_node_places_voxels_in_ras(scene):
    volume = _ct_volume()
    node = mrml.volume_node_from_volume(scene, volume, "CT")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk = (3, 7, 11)
    ras = matrix.MultiplyPoint((*ijk, 1.0))[:3]
    np.testing.assert_allclose(ras, _ras(volume.ijk_to_lps([ijk])[0]), atol=1e-9)
    assert node.GetImageData().GetDimensions() == (26, 22, 18)
    # voxel (i, j, k) of the node's image is hu[k, j, i]
    assert node.GetImageData().GetScalarComponentAsDouble(*ijk, 0) == volume.hu[11, 7, 3]


def test_volume_under_linear_transform_is_in_world_lps(scene):
    volume = _ct_volume()
    node = mrml.volume_node_from_volume(scene, volume, "CT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # 10 mm towards R, i.e. -10 in LPS x
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    back = mrml.volume_from_volume_node(node)
    np.testing.assert_allclose(back.origin_lps_mm, np.add(ORIGIN_LPS_MM, (-10.0, 0.0, 0.0)), atol=1e-9)


def test_ijk_to_lps_agrees_for_volume_input_info_seg_nrrd_and_mrml_on_an_oblique_grid(scene, tmp_path):
    import slicerio

    from lunglesionai.core.volume import ijk_to_lps_matrix
    from lunglesionai.io.outputs import NODULES_SEGMENTATION, write_outputs

    a, b = np.deg2rad(30.0), np.deg2rad(20.0)
    about_s = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    about_l = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    direction = tuple((about_s @ about_l @ np.diag([1.0, 1.0, -1.0])).ravel())  # oblique, left-handed
    volume = replace(_ct_volume(), direction=direction)
    info = InputInfo.from_volume(volume)
    # written out here: voxel (i, j, k) lies at origin + direction @ (spacing * ijk)
    expected = np.eye(4)
    expected[:3, :3] = np.reshape(direction, (3, 3)) @ np.diag(SPACING_MM)
    expected[:3, 3] = ORIGIN_LPS_MM

    np.testing.assert_allclose(volume.ijk_to_lps_matrix, expected, atol=1e-12)
    np.testing.assert_allclose(ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction), expected,
                               atol=1e-12)
    paths = write_outputs(Report(info), tmp_path / "out")
    seg = slicerio.read_segmentation(str(tmp_path / "out" / NODULES_SEGMENTATION))
    assert paths and seg["voxels"].shape == volume.shape_zyx[::-1]
    np.testing.assert_allclose(seg["ijkToLPS"], expected, atol=1e-9)
    node = mrml.volume_node_from_volume(scene, volume, "CT")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    from_node = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(from_node, np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected, atol=1e-9)
    np.testing.assert_allclose(mrml.ijk_to_ras_matrix(info), from_node, atol=1e-12)
    np.testing.assert_allclose(mrml.volume_from_volume_node(node).ijk_to_lps_matrix, expected, atol=1e-9)


def test_volume_from_volume_node_rejects_bad_nodes(scene):
    with pytest.raises(ValueError):
        mrml.volume_from_volume_node(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="no image data"):
        mrml.volume_from_volume_node(empty)


@pytest.fixture
def added(scene):
    report = make_small_report()
    volume_node = mrml.volume_node_from_volume(scene, _ct_volume(), "CT")
    return report, mrml.add_report_to_scene(scene, report, reference_volume_node=volume_node), scene


def test_add_report_creates_segments(added):
    report, nodes, scene = added
    seg_node = scene.GetNodeByID(nodes.segmentation_node_id)
    assert seg_node.IsA("vtkMRMLSegmentationNode")
    assert nodes.segment_ids == {"N1": "N1", "N2": "N2", "L1": "L1"}  # N3 has no mask
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    segments = {sid: segmentation.GetSegment(sid) for sid in nodes.segment_ids.values()}
    assert {sid: s.GetName() for sid, s in segments.items()} == {"N1": "Nodule 1", "N2": "Nodule 2", "L1": "Lesion 1"}
    assert _tag(segments["N1"], "TerminologyEntry") == NODULE_TERMINOLOGY
    assert _tag(segments["L1"], "TerminologyEntry") == LESION_TERMINOLOGY
    assert _tag(segments["N2"], "LungLesionAI.FindingID") == "N2"
    assert len({tuple(s.GetColor()) for s in segments.values()}) == 3
    for segment in segments.values():
        surface = segment.GetRepresentation("Closed surface")
        assert surface is not None and surface.GetNumberOfPoints() > 0
    centroids = mrml.segment_centroids_lps(seg_node)
    for finding in report.findings:
        if finding.mask is not None:
            np.testing.assert_allclose(centroids[finding.id], finding.center_lps_mm, atol=0.1)


def test_add_report_creates_points_and_boxes_in_ras(added):
    report, nodes, scene = added
    points = scene.GetNodeByID(nodes.nodules_markups_node_id)
    assert points.IsA("vtkMRMLMarkupsFiducialNode")
    assert points.GetNumberOfControlPoints() == 3
    for n, finding in enumerate(report.nodules()):
        assert points.GetNthControlPointLabel(n) == finding.id
        assert points.GetNthControlPointDescription(n) == finding.summary()
        np.testing.assert_allclose(points.GetNthControlPointPosition(n), _ras(finding.center_lps_mm), atol=1e-6)
    assert list(nodes.lesion_roi_node_ids) == ["L1"]
    roi = scene.GetNodeByID(nodes.lesion_roi_node_ids["L1"])
    lo, hi = np.array(report.lesions()[0].bbox_lps_mm)
    np.testing.assert_allclose(roi.GetCenter(), _ras((lo + hi) / 2), atol=1e-6)
    np.testing.assert_allclose(roi.GetSize(), hi - lo, atol=1e-6)
    assert roi.GetNthControlPointLabel(0) == "L1" and roi.GetAttribute("LungLesionAI.FindingID") == "L1"


def test_reference_geometry_without_volume_matches_slicer(scene):
    report = make_small_report()
    volume_node = mrml.volume_node_from_volume(scene, _ct_volume(), "CT")
    from_slicer = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    from_slicer.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    expected = from_slicer.GetSegmentation().GetConversionParameter(name)
    nodes = mrml.add_report_to_scene(scene, report)
    ours = scene.GetNodeByID(nodes.segmentation_node_id).GetSegmentation().GetConversionParameter(name)
    numbers = [[float(v) for v in text.strip(";").split(";")] for text in (expected, ours)]
    np.testing.assert_allclose(numbers[1], numbers[0], atol=1e-9)
    centroids = mrml.segment_centroids_lps(scene.GetNodeByID(nodes.segmentation_node_id))
    np.testing.assert_allclose(centroids["N2"], report.findings[1].center_lps_mm, atol=0.1)


def test_empty_report_gives_empty_nodes(scene):
    report = Report(InputInfo.from_volume(_ct_volume()))
    nodes = mrml.add_report_to_scene(scene, report)
    assert scene.GetNodeByID(nodes.segmentation_node_id).GetSegmentation().GetNumberOfSegments() == 0
    assert scene.GetNodeByID(nodes.nodules_markups_node_id).GetNumberOfControlPoints() == 0
    assert nodes.lesion_roi_node_ids == {} and nodes.segment_ids == {}


def test_segment_status_follows_review_state(scene):
    report = make_small_report(with_lesion=False)
    report.findings[0] = replace(report.findings[0], status="accepted")
    report.findings[1] = replace(report.findings[1], status="rejected")
    seg = scene.GetNodeByID(mrml.add_report_to_scene(scene, report).segmentation_node_id).GetSegmentation()
    assert _tag(seg.GetSegment("N1"), "Segmentation.Status") == "completed"
    assert _tag(seg.GetSegment("N2"), "Segmentation.Status") == "flagged"


@pytest.mark.parametrize("bad_id", ["", "N|1", "N:1"])
def test_unusable_finding_ids_are_rejected(bad_id):
    report = make_small_report()
    with pytest.raises(ValueError):
        mrml.segment_styles([replace(report.findings[0], id=bad_id)])


def test_lps_ras_conversion():
    points = np.array([[1.0, -2.0, 3.0], [0.5, 0.25, -7.0]])
    np.testing.assert_array_equal(mrml.lps_to_ras(points), [[-1.0, 2.0, 3.0], [-0.5, -0.25, -7.0]])
    np.testing.assert_array_equal(mrml.ras_to_lps(mrml.lps_to_ras(points)), points)



def test_mask_crop_in_grid_clips_and_trims():
    from lunglesionai.core.findings import FindingMask

    array = np.zeros((4, 5, 6), bool)
    array[1:3, 0:2, 2:6] = True  # with offset (-1, 2, 7): k 0..1, j 2..3, i 9..12 -> i 10..12 outside
    mask = FindingMask((-1, 2, 7), array)
    first, crop = mrml.mask_crop_in_grid(mask, (10, 10, 10))
    assert first.tolist() == [0, 2, 9] and crop.shape == (2, 2, 1) and crop.all()
    expected = np.zeros((10, 10, 10), bool)
    mask.paste_into(expected, True)
    rebuilt = np.zeros_like(expected)
    rebuilt[tuple(slice(f, f + n) for f, n in zip(first, crop.shape))] = crop
    np.testing.assert_array_equal(rebuilt, expected)
    assert mrml.mask_crop_in_grid(FindingMask((20, 0, 0), array), (10, 10, 10))[1].size == 0


def test_mask_partly_outside_the_grid_is_clipped(scene):
    from lunglesionai.core.findings import FindingMask

    report = make_small_report(with_lesion=False)
    ball = report.findings[0].mask.array
    report.findings[0] = replace(report.findings[0], mask=FindingMask((-2, -2, -2), ball))
    nodes = mrml.add_report_to_scene(scene, report)
    image = slicer.vtkOrientedImageData()
    scene.GetNodeByID(nodes.segmentation_node_id).GetBinaryLabelmapRepresentation("N1", image)
    from vtk.util import numpy_support

    count = int(np.count_nonzero(numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())))
    assert count == int(ball[2:, 2:, 2:].sum())


@pytest.mark.slow
def test_slicer_logic_flow_on_a_phantom(scene):
    """What LungLesionAILogic.process does in Slicer: node -> Volume -> pipeline -> nodes (checked against truth)."""
    from lunglesionai import pipeline
    from lunglesionai.synth import PhantomConfig, make_phantom

    phantom = make_phantom(PhantomConfig.small())
    volume_node = mrml.volume_node_from_volume(scene, phantom.volume, "PhantomCT")
    report = pipeline.analyze_volume(mrml.volume_from_volume_node(volume_node))
    nodes = mrml.add_report_to_scene(scene, report, reference_volume_node=volume_node)
    points = scene.GetNodeByID(nodes.nodules_markups_node_id)
    count = points.GetNumberOfControlPoints()
    points_lps = np.array([_ras(points.GetNthControlPointPosition(n)) for n in range(count)]).reshape(-1, 3)
    hits = [
        n.id for n in phantom.nodules
        if len(points_lps) and np.linalg.norm(points_lps - n.center_lps_mm, axis=1).min() <= n.diameter_mm / 2
    ]
    assert hits, "no phantom nodule has a control point within its radius"
    centroids = mrml.segment_centroids_lps(scene.GetNodeByID(nodes.segmentation_node_id))
    for finding in report.findings:
        if finding.mask is not None:
            voxel_mm = max(phantom.volume.spacing_mm)
            np.testing.assert_allclose(centroids[finding.id], finding.center_lps_mm, atol=voxel_mm)
