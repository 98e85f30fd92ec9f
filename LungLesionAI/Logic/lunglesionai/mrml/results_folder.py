"""An ``analyze`` output folder and the scene: open it for review, find its volume, save the reviewed result.

* :func:`read_outputs`: the Report of a folder, masks read back from its ``.seg.nrrd`` files (``slicerio``).
* :func:`load_outputs_into_scene`: that report as review nodes on a given volume node (table, segmentation,
  points, boxes, axis lines), its review decisions (``status``) and clinical categories as saved.
* :func:`find_volume_node` / :func:`load_results`: open a saved folder again without naming the volume: the scene's
  scalar volume whose grid is the report's (shape and IJK-to-LPS geometry) is used.
* :func:`save_report`: the reviewed result written back as an output folder (atomically), with the DICOM SEG and
  SR (:mod:`lunglesionai.io.dicom_results`) when the volume came from DICOM (Slicer's DICOM database, or a DICOM
  folder as ``report.input.path``).

Works in 3D Slicer and in ``slicer-core``; no Qt. Grids are compared in LPS mm to within 1e-4.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from lunglesionai.core.findings import FindingMask, InputInfo, Report
from lunglesionai.core.volume import ijk_to_lps_matrix
from lunglesionai.mrml import review
from lunglesionai.mrml import scene as mrml

__all__ = [
    "read_outputs",
    "segment_masks",
    "load_outputs_into_scene",
    "find_volume_node",
    "load_results",
    "save_report",
]

logger = logging.getLogger(__name__)

#: Largest difference (mm, matrix entries) between two grids taken as the same grid.
GRID_TOLERANCE_MM = 1e-4


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
        masks.update(segment_masks(segmentation, report.input.shape_zyx))
    findings = [replace(f, mask=masks.get(f.id)) for f in report.findings]
    return replace(report, findings=findings)


def segment_masks(segmentation: dict, shape_zyx: tuple[int, int, int]) -> dict[str, FindingMask]:
    """Each segment of a ``slicerio.read_segmentation`` result as a cropped mask.

    Args:
        segmentation: what ``slicerio.read_segmentation`` returned (``voxels`` (i, j, k) or (layer, i, j, k),
            ``segments`` with ``id``, ``labelValue`` and ``layer``).
        shape_zyx: the grid's shape (Z, Y, X).

    Returns:
        segment id → :class:`FindingMask` (offset (k, j, i) and its tight crop); segments without voxels are left
        out.
    """
    voxels = np.asarray(segmentation["voxels"])
    layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels  # (layer, i, j, k)
    masks = {}
    for segment in segmentation["segments"]:
        in_zyx = (layers[int(segment.get("layer", 0))] == int(segment["labelValue"])).transpose(2, 1, 0)
        first, crop = mrml.mask_crop_in_grid(FindingMask((0, 0, 0), in_zyx), shape_zyx)
        if crop.size:
            masks[str(segment["id"])] = FindingMask(tuple(int(v) for v in first), crop)
    return masks


def load_outputs_into_scene(scene, out_dir: str | os.PathLike, volume_node, *, keep_masks: bool = True,
                            name_prefix: Optional[str] = None) -> tuple[review.SceneResults, Report]:
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
        volume.ijk_to_lps_matrix, ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction), atol=GRID_TOLERANCE_MM
    ):
        raise ValueError(f"{out_dir}: the results are not on the grid of volume {volume_node.GetName()!r}")
    report = replace(report, input=replace(report.input, path=volume.source))
    if not keep_masks:
        report = replace(report, findings=[replace(f, mask=None) for f in report.findings])
    return review.add_results_to_scene(scene, report, volume_node, name_prefix), report


def save_report(scene, results: review.SceneResults, out_dir: str | os.PathLike, *, overwrite: bool = False,
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

    report = review.read_report(scene, results, with_masks=True)
    volume_node = scene.GetNodeByID(results.volume_node_id)
    volume = mrml.volume_from_volume_node(volume_node) if html else None
    return write_outputs(report, out_dir, overwrite=overwrite, volume=volume,
                         extra_files=_dicom_writers(report, _dicom_files(volume_node, report)))


def _dicom_files(volume_node, report: Report) -> list[str]:
    """The CT files the volume was loaded from: Slicer's DICOM database (the node's ``DICOM.instanceUIDs``), else
    ``report.input.path`` when it is a DICOM folder; empty when the volume did not come from DICOM."""
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split() if volume_node is not None else []
    if uids:
        try:
            import slicer

            database = slicer.dicomDatabase
        except (ImportError, AttributeError):
            database = None
        if database is not None:
            files = [database.fileForInstance(uid) for uid in uids]
            if all(files):
                return files
    path = Path(report.input.path) if report.input.path else None
    return [str(path)] if path is not None and path.is_dir() else []


def _dicom_writers(report: Report, files: list[str]) -> dict:
    """SEG and SR writers (:func:`lunglesionai.io.dicom_results.dicom_result_writers`) for a volume loaded from
    DICOM; none (with a logged warning) when its series is not the report's grid."""
    if not files:
        return {}
    import pydicom

    from lunglesionai.io.dicom_results import dicom_result_writers, load_source_series

    try:
        source = (load_source_series(files[0]) if len(files) == 1 and Path(files[0]).is_dir()
                  else [pydicom.dcmread(f, stop_before_pixels=True) for f in files])
        return dicom_result_writers(report, source)
    except (OSError, ValueError, pydicom.errors.InvalidDicomError) as error:
        logger.warning("DICOM SEG and SR not written: %s", error)
        return {}


def _same_grid(volume_node, info: InputInfo) -> bool:
    """Shape and world IJK-to-LPS matrix of the node equal the report's grid (no voxels copied)."""
    import vtk

    image = volume_node.GetImageData()
    if image is None or tuple(image.GetDimensions()[::-1]) != tuple(int(n) for n in info.shape_zyx):
        return False
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _numpy(matrix)
    parent = volume_node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            return False
        parent.GetMatrixTransformToWorld(matrix)
        ijk_to_ras = _numpy(matrix) @ ijk_to_ras
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras
    expected = ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction)
    return bool(np.allclose(ijk_to_lps, expected, atol=GRID_TOLERANCE_MM))


def _numpy(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def find_volume_node(scene, info: InputInfo):
    """The scalar volume node of ``scene`` on the grid ``info`` describes (the analysed CT), or None.

    Args:
        scene: the vtkMRMLScene.
        info: ``Report.input`` (shape (Z, Y, X), spacing (x, y, z) mm, LPS origin and direction).

    Returns:
        The first matching ``vtkMRMLScalarVolumeNode`` (label maps and segmentations excluded), else None.
    """
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for n in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(n)
        if not node.IsA("vtkMRMLLabelMapVolumeNode") and _same_grid(node, info):
            return node
    return None


def load_results(scene, out_dir: str | os.PathLike, volume_node=None, *,
                 name_prefix: Optional[str] = None) -> tuple[review.SceneResults, Report]:
    """Open a saved output folder again: its table, clinical categories, review decisions, outlines, axis lines.

    Args:
        scene: the vtkMRMLScene.
        out_dir: a folder written by ``lunglesionai analyze`` or :func:`save_report`.
        volume_node: the analysed CT's node; None: :func:`find_volume_node` looks for it in the scene.
        name_prefix: start of the new nodes' names (default: the volume's name).

    Returns:
        ``(results, report)``; the scene is unchanged when this raises.

    Raises:
        FileNotFoundError: no report.json in ``out_dir``.
        ValueError: no volume on the report's grid in the scene (load the CT first: report.json's ``input.path``
            names it), or ``volume_node`` is on another grid.
        jsonschema.ValidationError: report.json is not ``lunglesionai-report/1``.
    """
    from lunglesionai.io.outputs import REPORT_JSON

    path = Path(out_dir) / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {REPORT_JSON}: not a LungLesionAI output folder")
    if volume_node is None:
        info = Report.from_dict(json.loads(path.read_text(encoding="utf-8"))).input
        volume_node = find_volume_node(scene, info)
        if volume_node is None:
            raise ValueError(f"{out_dir}: no volume in the scene is on the analysed grid {tuple(info.shape_zyx)}; "
                             f"load the analysed CT ({info.path or 'input.path of report.json'}) first")
    return load_outputs_into_scene(scene, out_dir, volume_node, name_prefix=name_prefix)
