"""The MRML adapter: a :class:`~lunglesionai.core.findings.Report` and a :class:`~lunglesionai.core.volume.Volume` as nodes.

This module and :mod:`lunglesionai.mrml.review` (which builds on it) are the only ones of :mod:`lunglesionai` that
import ``slicer``, and they do so inside functions, so the package imports without Slicer. It works in 3D Slicer and in ``slicer-core`` (the Slicer team's Qt-free MRML build),
where :func:`setup_scene_for_lunglesionai` supplies what the application normally sets up.

Coordinates: the package works in LPS millimetres; MRML stores world points in RAS (x and y negated). The
conversion and the segment naming, colours and DICOM terminology shared with the ``.seg.nrrd`` writer live in
:mod:`lunglesionai.core.segments` (no Slicer there) and are re-exported here.

Example (slicer-core, or Slicer's Python console with ``slicer.mrmlScene``)::

    scene = slicer.vtkMRMLScene()
    nodes = add_report_to_scene(scene, report, volume_node_from_volume(scene, volume, "CT"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lunglesionai.core.findings import Finding, FindingMask, InputInfo, Report
from lunglesionai.core.hu_windows import LUNG_DISPLAY_LEVEL_HU, LUNG_DISPLAY_WIDTH_HU
from lunglesionai.core.segments import (  # noqa: F401  (re-exported: the adapter's public names)
    _LPS_TO_RAS,
    _LPS_TO_RAS_4,
    _SEGMENT_STATUS,
    FINDING_ID_TAG,
    SEGMENT_COLORS_RGB,
    TERMINOLOGY_TAG,
    SegmentStyle,
    ijk_to_ras_matrix,
    lps_to_ras,
    mask_crop_in_grid,
    ras_to_lps,
    reference_image_geometry_string,
    segment_styles,
    terminology_string,
)
from lunglesionai.core.volume import Volume

__all__ = [
    "TERMINOLOGY_TAG",
    "FINDING_ID_TAG",
    "SEGMENT_COLORS_RGB",
    "SegmentStyle",
    "terminology_string",
    "segment_styles",
    "LUNG_WINDOW_HU",
    "LUNG_LEVEL_HU",
    "ResultNodes",
    "lps_to_ras",
    "ras_to_lps",
    "ijk_to_ras_matrix",
    "reference_image_geometry_string",
    "setup_scene_for_lunglesionai",
    "volume_node_from_volume",
    "volume_from_volume_node",
    "add_report_to_scene",
    "mask_crop_in_grid",
    "segment_centroids_lps",
    "segment_mask",
    "place_under_study",
]

logger = logging.getLogger(__name__)

#: Lung window (width, level) in HU set on volume nodes this module creates.
LUNG_WINDOW_HU = LUNG_DISPLAY_WIDTH_HU
LUNG_LEVEL_HU = LUNG_DISPLAY_LEVEL_HU


#: Converter rules the segmentations need (binary labelmap <-> closed surface), by class name.
_CONVERTER_RULE_CLASSES = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
)
_SELECTION_NODE_SINGLETON_TAG = "Singleton"
_MARKUPS_LOGIC_ATTRIBUTE = "_lunglesionai_markups_logic"









@dataclass(frozen=True)
class ResultNodes:
    """The nodes :func:`add_report_to_scene` created (MRML node ids; look them up with ``scene.GetNodeByID``).

    Args:
        segmentation_node_id: the vtkMRMLSegmentationNode with one segment per finding that has a mask.
        nodules_markups_node_id: the vtkMRMLMarkupsFiducialNode with one control point per nodule and mass.
        lesion_roi_node_ids: finding id -> vtkMRMLMarkupsROINode id, one ROI per lesion (an MRML ROI node holds
            exactly one box, so lesions get one node each); empty when the report has no lesions.
        segment_ids: finding id -> segment id in the segmentation node (findings without masks are absent).
    """

    segmentation_node_id: str
    nodules_markups_node_id: str
    lesion_roi_node_ids: dict[str, str] = field(default_factory=dict)
    segment_ids: dict[str, str] = field(default_factory=dict)












def setup_scene_for_lunglesionai(scene) -> None:
    """Give a scene what the adapter needs, adding only what is missing (idempotent).

    Registers the binary labelmap <-> closed surface converter rules, adds the selection node singleton and, outside
    the application's own scene, a ``vtkSlicerMarkupsLogic`` kept alive on the scene object. In 3D Slicer's main
    scene all of these exist already and nothing is added.

    Args:
        scene: a ``vtkMRMLScene``.

    Raises:
        TypeError: ``scene`` is not a vtkMRMLScene.
    """
    import slicer

    if scene is None or not scene.IsA("vtkMRMLScene"):
        raise TypeError(f"expected a vtkMRMLScene, got {type(scene).__name__}")
    _register_converter_rules()
    if scene.GetSingletonNode(_SELECTION_NODE_SINGLETON_TAG, "vtkMRMLSelectionNode") is None:
        selection = slicer.vtkMRMLSelectionNode()
        selection.SetSingletonTag(_SELECTION_NODE_SINGLETON_TAG)
        scene.AddNode(selection)
    app_scene = getattr(slicer, "mrmlScene", None)
    if scene is not app_scene and getattr(scene, _MARKUPS_LOGIC_ATTRIBUTE, None) is None:
        logic = slicer.vtkSlicerMarkupsLogic()
        logic.SetMRMLScene(scene)
        setattr(scene, _MARKUPS_LOGIC_ATTRIBUTE, logic)


def _register_converter_rules() -> None:
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for class_name in _CONVERTER_RULE_CLASSES:
        if class_name not in present:
            factory.RegisterConverterRule(getattr(slicer, class_name)())


def volume_node_from_volume(scene, volume: Volume, name: str):
    """Add a ``vtkMRMLScalarVolumeNode`` holding a Volume (voxels copied, LPS geometry turned into IJK-to-RAS).

    Args:
        scene: the vtkMRMLScene to add to.
        volume: the CT; ``hu`` (Z, Y, X) of any numeric dtype (bool becomes uint8).
        name: node name.

    Returns:
        The new node, with a display node set to a lung window (:data:`LUNG_WINDOW_HU`, :data:`LUNG_LEVEL_HU`).
    """
    import vtk
    from vtk.util import numpy_support

    hu = np.asarray(volume.hu)
    hu = hu.astype(np.uint8) if hu.dtype == bool else hu
    image = vtk.vtkImageData()
    nz, ny, nx = hu.shape
    image.SetDimensions(nx, ny, nz)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(hu).ravel(), deep=True))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras_matrix(InputInfo.from_volume(volume))))
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(LUNG_WINDOW_HU, LUNG_LEVEL_HU)
    return node


def volume_from_volume_node(node) -> Volume:
    """The Volume of a scalar volume node: voxels copied to a (Z, Y, X) array, geometry converted to LPS.

    A linear parent transform is applied to the geometry (the result is in world LPS).

    Args:
        node: a ``vtkMRMLScalarVolumeNode`` (or subclass) with single-component image data.

    Returns:
        Volume with ``source`` = the node's file name when it has one, else its name.

    Raises:
        ValueError: no node, no image data, several components, or a non-linear parent transform.
    """
    import vtk
    from vtk.util import numpy_support

    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError(f"expected a vtkMRMLScalarVolumeNode, got {node!r}")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume node {node.GetName()!r} has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume node {node.GetName()!r} has {image.GetNumberOfScalarComponents()} components")
    nx, ny, nz = image.GetDimensions()
    hu = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(nz, ny, nx).copy()
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ijk_to_lps = _LPS_TO_RAS_4 @ _parent_to_world(node) @ _numpy_matrix(ijk_to_ras)
    columns = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    storage = node.GetStorageNode()
    source = storage.GetFileName() if storage is not None and storage.GetFileName() else node.GetName()
    return Volume(hu, tuple(spacing), tuple(ijk_to_lps[:3, 3]), tuple((columns / spacing).ravel()), source or "")


def _parent_to_world(node) -> np.ndarray:
    import vtk

    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise ValueError(f"volume node {node.GetName()!r} is under a non-linear transform; harden it first")
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return _numpy_matrix(matrix)


def add_report_to_scene(
    scene, report: Report, reference_volume_node=None, name_prefix: str = "LungLesionAI"
) -> ResultNodes:
    """Show a Report in a scene: a segmentation (one segment per finding with a mask), nodule points, lesion boxes.

    Segments are named "Nodule 1…" / "Lesion 1…" (by report order within their kind), have the finding id as
    segment id and in the ``LungLesionAI.FindingID`` tag, a distinct colour, the DICOM terminology tag (category
    SCT 49755003 Morphologically Altered Structure, type SCT 27925004 Nodule or SCT 52988006 Lesion) and a status
    from the finding's review state; the closed-surface representation is created for the 3D view. Nodules get a
    control point each (label = finding id, description = :meth:`Finding.summary`); lesions an ROI box each.

    Args:
        scene: a vtkMRMLScene (``slicer.mrmlScene`` in Slicer); it is set up with
            :func:`setup_scene_for_lunglesionai` first.
        report: the findings; masks lie on the grid of ``report.input`` (LPS geometry).
        reference_volume_node: the analysed volume's node; it becomes the segmentation's reference geometry
            (else the geometry comes from ``report.input``).
        name_prefix: start of the new nodes' names.

    Returns:
        :class:`ResultNodes` with the new node ids and the segment id of each finding.

    Raises:
        ValueError: finding ids are empty, repeated or contain "|" or ":" (they become segment ids and tags).
    """
    import slicer

    setup_scene_for_lunglesionai(scene)
    styles = segment_styles(report.findings)
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name_prefix} findings")
    seg_node.CreateDefaultDisplayNodes()
    seg_node.SetSourceRepresentationToBinaryLabelmap()
    geometry_name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if reference_volume_node is not None:
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    else:
        seg_node.GetSegmentation().SetConversionParameter(geometry_name, reference_image_geometry_string(report.input))
    segment_ids = {}
    for finding in report.findings:
        if finding.mask is not None:
            segment_ids[finding.id] = _add_segment(seg_node, finding, styles[finding.id], report.input)
    if segment_ids:
        seg_node.CreateClosedSurfaceRepresentation()
    nodules_id = _add_nodule_points(scene, report.lung_findings(), f"{name_prefix} nodules")
    rois = {f.id: _add_lesion_roi(scene, f, f"{name_prefix} {styles[f.id].name}") for f in report.lesions()}
    logger.info("added %d segment(s), %d nodule/mass point(s), %d lesion box(es)", len(segment_ids),
                len(report.lung_findings()), len(rois))
    return ResultNodes(seg_node.GetID(), nodules_id, rois, segment_ids)


def _add_segment(seg_node, finding: Finding, style: SegmentStyle, info: InputInfo) -> str:
    """One segment holding the finding's mask (its crop only, as a vtkOrientedImageData on the report's grid)."""
    import slicer

    segmentation = seg_node.GetSegmentation()
    segment_id = segmentation.AddEmptySegment(finding.id, style.name, list(style.color_rgb))
    segment = segmentation.GetSegment(segment_id)
    segment.SetTag(TERMINOLOGY_TAG, style.terminology)
    segment.SetTag(FINDING_ID_TAG, finding.id)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetSegmentStatus(segment, logic.GetSegmentStatusFromMachineReadableString(style.status))
    labelmap = _oriented_image_from_mask(finding.mask, info)
    if labelmap is None:
        logger.warning("finding %s: mask is empty or outside the grid; its segment stays empty", finding.id)
    elif not logic.SetBinaryLabelmapToSegment(labelmap, seg_node, segment_id, logic.MODE_REPLACE):
        raise RuntimeError(f"Slicer could not set the labelmap of segment {segment_id!r}")
    return segment_id




def _oriented_image_from_mask(mask: FindingMask, info: InputInfo):
    """The mask as a uint8 vtkOrientedImageData whose extent is its place in the report's grid; None if empty."""
    import vtk
    from vtk.util import numpy_support

    import slicer

    first_kji, crop = mask_crop_in_grid(mask, info.shape_zyx)
    if crop.size == 0:
        return None
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*[int(v) for axis in (2, 1, 0) for v in (first_kji[axis], first_kji[axis] + crop.shape[axis] - 1)])
    scalars = numpy_support.numpy_to_vtk(crop.astype(np.uint8).ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras_matrix(info)))
    return image


def _add_nodule_points(scene, nodules: list[Finding], name: str) -> str:
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    for finding, ras in zip(nodules, lps_to_ras(np.reshape([f.center_lps_mm for f in nodules], (-1, 3)))):
        index = node.AddControlPoint(vtk.vtkVector3d(*ras), finding.id)
        node.SetNthControlPointDescription(index, finding.summary())
    return node.GetID()


def _add_lesion_roi(scene, finding: Finding, name: str) -> str:
    corners_ras = lps_to_ras(finding.bbox_lps_mm)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    node.CreateDefaultDisplayNodes()
    node.SetCenter(*corners_ras.mean(axis=0))
    node.SetSize(*np.abs(corners_ras[1] - corners_ras[0]))
    node.SetNthControlPointLabel(0, finding.id)
    node.SetNthControlPointDescription(0, finding.summary())
    node.SetAttribute(FINDING_ID_TAG, finding.id)
    return node.GetID()


def segment_centroids_lps(segmentation_node) -> dict[str, np.ndarray]:
    """Centre of mass of each segment's binary labelmap, in LPS mm (for checks and tables).

    Args:
        segmentation_node: a vtkMRMLSegmentationNode whose segments have a binary labelmap.

    Returns:
        segment id -> (3,) LPS point (x, y, z) mm; NaN for an empty segment.
    """
    import vtk
    from vtk.util import numpy_support

    import slicer

    segmentation = segmentation_node.GetSegmentation()
    centroids = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        image = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
        scalars = image.GetPointData().GetScalars()
        if scalars is None:
            centroids[segment_id] = np.full(3, np.nan)
            continue
        x0, _, y0, _, z0, _ = image.GetExtent()
        nx, ny, nz = image.GetDimensions()
        kji = np.argwhere(numpy_support.vtk_to_numpy(scalars).reshape(nz, ny, nx) != 0)
        if kji.size == 0:
            centroids[segment_id] = np.full(3, np.nan)
            continue
        ijk = kji[:, ::-1].mean(axis=0) + (x0, y0, z0)
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        ras = _numpy_matrix(matrix) @ np.append(ijk, 1.0)
        centroids[segment_id] = ras_to_lps(ras[:3])[0]
    return centroids


def _vtk_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy([float(v) for v in np.asarray(array).ravel()])
    return matrix


def _numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def segment_mask(segmentation_node, segment_id: str, info: InputInfo) -> Optional[FindingMask]:
    """A segment's binary labelmap as a :class:`FindingMask` on a report's grid (e.g. after Segment Editor edits).

    The labelmap is resampled (nearest neighbour) onto the grid of ``info`` when its geometry differs (another
    reference geometry, or a parent transform); otherwise its voxels are taken as they are. Voxels outside the grid
    are dropped. A segment sharing a labelmap layer with others gives only its own voxels.

    Args:
        segmentation_node: a vtkMRMLSegmentationNode.
        segment_id: the segment's id.
        info: the grid (shape (Z, Y, X), spacing (x, y, z) mm, LPS origin and direction) of the report.

    Returns:
        The mask, cropped to its set voxels with its (k, j, i) offset on the grid; None when the segment is empty
        (or lies outside the grid).

    Raises:
        KeyError: no segment with that id.
    """
    import vtk
    from vtk.util import numpy_support

    import slicer

    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise KeyError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    if labelmap.GetPointData().GetScalars() is None or labelmap.IsEmpty():
        return None
    nz, ny, nx = (int(n) for n in info.shape_zyx)
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(0, nx - 1, 0, ny - 1, 0, nz - 1)
    reference.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras_matrix(info)))
    world_matrix = _numpy_matrix(_parent_to_world_matrix(segmentation_node))
    resample = slicer.vtkOrientedImageDataResample
    if not np.allclose(world_matrix, np.eye(4)):
        moved = slicer.vtkOrientedImageData()
        moved.DeepCopy(labelmap)
        transform = vtk.vtkTransform()
        transform.SetMatrix(_vtk_matrix(world_matrix))
        moved.ApplyTransform(transform)
        labelmap = moved
    if not resample.DoGeometriesMatch(reference, labelmap):
        resampled = slicer.vtkOrientedImageData()
        resample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference, resampled, False, False)
        labelmap = resampled
    x0, _, y0, _, z0, _ = labelmap.GetExtent()
    dims = labelmap.GetDimensions()
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    mask = FindingMask((int(z0), int(y0), int(x0)), voxels != 0)
    first, crop = mask_crop_in_grid(mask, info.shape_zyx)
    if crop.size == 0:
        return None
    return FindingMask(tuple(int(v) for v in first), crop)


def _parent_to_world_matrix(node):
    """The node's parent transform to world as a vtkMatrix4x4 (identity without one).

    Raises:
        ValueError: the transform is not linear.
    """
    import vtk

    matrix = vtk.vtkMatrix4x4()
    parent = node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ValueError(f"node {node.GetName()!r} is under a non-linear transform; harden it first")
        parent.GetMatrixTransformToWorld(matrix)
    return matrix


def place_under_study(scene, volume_node, nodes) -> int:
    """Put nodes in the subject hierarchy beside the volume: under its study, else under its parent (the scene).

    In 3D Slicer every data node already has a subject-hierarchy item, which is moved; in ``slicer-core`` (no
    subject-hierarchy plugins) items are created.

    Args:
        scene: the vtkMRMLScene.
        volume_node: the analysed volume's node.
        nodes: data nodes to place (e.g. the segmentation, markups and table of a result).

    Returns:
        The subject-hierarchy item id of the parent (the study, or the volume's parent).
    """
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volume_item = sh.GetItemByDataNode(volume_node) or sh.CreateItem(sh.GetSceneItemID(), volume_node)
    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    parent = sh.GetItemAncestorAtLevel(volume_item, study_level) or sh.GetItemParent(volume_item)
    parent = parent or sh.GetSceneItemID()
    for node in nodes:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:
            sh.CreateItem(parent, node)
    return parent
