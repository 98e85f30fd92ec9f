"""The prior scan in the scene (issue 16): both CTs side by side with their outlines, and a finding shown in both.

After ``analyze CURRENT --prior PRIOR`` the output folder holds ``prior_nodules.seg.nrrd`` (the prior's nodule and
mass outlines on the prior CT's grid; segment id = prior finding id) and report.json's ``Finding.followup`` holds
each current finding's ``prior_id`` and ``prior_center_lps_mm``. Here:

* :func:`add_prior_to_scene`: the prior outlines as a segmentation (and points) on the prior volume node;
* :func:`show_prior_beside_current`: Slicer's side-by-side layout (two axial views, "Red" and "Yellow"): the
  current CT with its outlines in Red, the prior with its outlines in Yellow;
* :func:`jump_to_finding_in_both`: a finding centred in Red (current position) and its matched prior centre in
  Yellow, so a table row click shows the nodule in both scans ("linked" by the registration's match, not by
  world coordinates: the two scans are not aligned in world space);
* :func:`load_prior_of_folder`: re-opening an output folder: the prior CT named in ``exam.prior.path`` is loaded
  (when it still exists) with its outlines.

Works in 3D Slicer and in ``slicer-core`` (MRML only, no Qt): views are addressed through their slice and slice
composite nodes, found by layout name, as the application's layout manager creates them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lunglesionai.core.findings import Finding, InputInfo, Report
from lunglesionai.core.volume import ijk_to_lps_matrix
from lunglesionai.mrml import review
from lunglesionai.mrml import scene as mrml

__all__ = ["CURRENT_VIEW", "PRIOR_VIEW", "PriorNodes", "add_prior_to_scene", "jump_to_finding_in_both",
           "load_prior_of_folder", "prior_findings_of_folder", "show_prior_beside_current"]

logger = logging.getLogger(__name__)

CURRENT_VIEW = "Red"
"""Layout name of the slice view that shows the current scan."""
PRIOR_VIEW = "Yellow"
"""Layout name of the slice view that shows the prior scan (the right one of Slicer's side-by-side layout)."""


@dataclass(frozen=True)
class PriorNodes:
    """The prior scan's nodes in the scene (MRML node ids).

    Args:
        volume_node_id: the prior CT's vtkMRMLScalarVolumeNode.
        segmentation_node_id: its outlines (None when the folder has no prior outlines).
        points_node_id: its nodule points (None likewise).
    """

    volume_node_id: str
    segmentation_node_id: Optional[str] = None
    points_node_id: Optional[str] = None


def prior_findings_of_folder(out_dir: str | os.PathLike, prior_volume_node) -> list[Finding]:
    """The prior's outlined findings from ``prior_nodules.seg.nrrd`` of an output folder ([] when absent).

    Args:
        out_dir: an ``analyze --prior`` output folder.
        prior_volume_node: the prior CT's node; the segmentation must lie on its grid.

    Returns:
        One nodule :class:`Finding` per segment: id = segment id (the prior finding id), centre = the mask's
        centroid (LPS mm), mask on the prior grid.

    Raises:
        ValueError: the segmentation is not on the prior volume's grid.
    """
    import slicerio

    from lunglesionai.io.outputs import PRIOR_NODULES_SEGMENTATION
    from lunglesionai.mrml.results_folder import segment_masks

    path = Path(out_dir) / PRIOR_NODULES_SEGMENTATION
    if not path.is_file():
        return []
    volume = mrml.volume_from_volume_node(prior_volume_node)
    segmentation = slicerio.read_segmentation(str(path))
    if not np.allclose(np.asarray(segmentation["ijkToLPS"], float), volume.ijk_to_lps_matrix, atol=1e-3):
        raise ValueError(f"{path}: not on the grid of the prior volume {prior_volume_node.GetName()!r}")
    findings = []
    for segment_id, mask in segment_masks(segmentation, volume.shape_zyx).items():
        lps = volume.kji_to_lps(np.argwhere(mask.array) + np.asarray(mask.offset_kji))
        findings.append(Finding(id=segment_id, kind="nodule", center_lps_mm=tuple(lps.mean(axis=0)),
                                bbox_lps_mm=(tuple(lps.min(axis=0)), tuple(lps.max(axis=0))), detection_score=1.0,
                                mask=mask))
    return findings


def add_prior_to_scene(scene, prior_volume_node, prior_findings: list[Finding], name_prefix: str = "Prior"
                       ) -> PriorNodes:
    """Add the prior's outlines (segmentation, points) on its volume node.

    Args:
        scene: the vtkMRMLScene.
        prior_volume_node: the prior CT's vtkMRMLScalarVolumeNode.
        prior_findings: :func:`prior_findings_of_folder` (masks on the prior's grid).
        name_prefix: start of the new nodes' names.

    Returns:
        :class:`PriorNodes` (segmentation and points None when ``prior_findings`` is empty).
    """
    if not prior_findings:
        return PriorNodes(prior_volume_node.GetID())
    volume = mrml.volume_from_volume_node(prior_volume_node)
    report = Report(input=InputInfo.from_volume(volume), findings=list(prior_findings), version="prior")
    nodes = mrml.add_report_to_scene(scene, report, prior_volume_node, name_prefix=name_prefix)
    return PriorNodes(prior_volume_node.GetID(), nodes.segmentation_node_id, nodes.nodules_markups_node_id)


def _view_nodes(scene, layout_name: str):
    """(slice node, slice composite node) of a view by layout name; (None, None) when the scene has none."""
    found = []
    for class_name in ("vtkMRMLSliceNode", "vtkMRMLSliceCompositeNode"):
        nodes = scene.GetNodesByClass(class_name)
        match = None
        for n in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(n)
            if node.GetLayoutName() == layout_name:
                match = node
                break
        found.append(match)
    return tuple(found)


def show_prior_beside_current(scene, current_volume_node, prior: PriorNodes,
                              current_segmentation_node_id: Optional[str] = None) -> bool:
    """Current CT in the Red view, prior CT in the Yellow view, both axial; side-by-side layout when the scene has
    a layout node; each segmentation shown only in its scan's view (and 3D).

    Args:
        scene: the vtkMRMLScene (3D Slicer's, or one whose views were made by ``vtkMRMLLayoutLogic``).
        current_volume_node: the current CT's node.
        prior: :func:`add_prior_to_scene`'s nodes.
        current_segmentation_node_id: the current outlines (``SceneResults.segmentation_node_id``), or None.

    Returns:
        True when both views exist and were set; False when the scene has no Red/Yellow views (nothing changed).
    """
    import slicer

    red, red_composite = _view_nodes(scene, CURRENT_VIEW)
    yellow, yellow_composite = _view_nodes(scene, PRIOR_VIEW)
    if red_composite is None or yellow_composite is None:
        return False
    layouts = scene.GetNodesByClass("vtkMRMLLayoutNode")
    if layouts.GetNumberOfItems():
        layouts.GetItemAsObject(0).SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    red_composite.SetBackgroundVolumeID(current_volume_node.GetID())
    yellow_composite.SetBackgroundVolumeID(prior.volume_node_id)
    for node in (red, yellow):
        if node is not None:
            node.SetOrientationToAxial()
    three_d = [node.GetID() for node in _nodes(scene, "vtkMRMLViewNode")]
    for seg_id, view in ((current_segmentation_node_id, red), (prior.segmentation_node_id, yellow)):
        seg_node = scene.GetNodeByID(seg_id) if seg_id else None
        display = seg_node.GetDisplayNode() if seg_node is not None else None
        if display is not None and view is not None:
            display.SetViewNodeIDs([view.GetID(), *three_d])
    return True


def jump_to_finding_in_both(scene, results: review.SceneResults, finding_id: str
                            ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Centre the Red view on a finding and the Yellow view on its matched prior finding.

    Args:
        scene: the vtkMRMLScene.
        results: the current result's nodes.
        finding_id: a finding of the result.

    Returns:
        (current RAS point, prior RAS point or None when the finding is new or has no follow-up), mm. Views that
        the scene lacks are skipped.

    Raises:
        KeyError: unknown finding id.
    """
    current_ras = review.finding_position_ras(scene, results, finding_id)
    finding = review.find_finding(review.read_report(scene, results, with_masks=False), finding_id)
    center = (finding.followup or {}).get("prior_center_lps_mm")
    prior_ras = None if center is None else mrml.lps_to_ras(center)[0]
    for layout_name, ras in ((CURRENT_VIEW, current_ras), (PRIOR_VIEW, prior_ras)):
        slice_node, _ = _view_nodes(scene, layout_name)
        if slice_node is not None and ras is not None:
            slice_node.JumpSliceByCentering(*(float(v) for v in ras))
    return current_ras, prior_ras


def load_prior_of_folder(scene, out_dir: str | os.PathLike, report: Report, prior_volume_node=None
                         ) -> Optional[PriorNodes]:
    """Re-open the prior scan of an ``analyze --prior`` output folder: its CT and its outlines.

    Args:
        scene: the vtkMRMLScene.
        out_dir: the output folder.
        report: its report (``exam["prior"]["path"]`` names the prior CT).
        prior_volume_node: the prior CT's node when already in the scene; None: a scene volume on the grid of
            ``prior_nodules.seg.nrrd`` is used, else the CT at ``exam.prior.path`` is loaded.

    Returns:
        :class:`PriorNodes`, or None when the report has no prior scan or its CT can no longer be read (logged).
    """
    from lunglesionai.io.ct_files import load_volume
    from lunglesionai.io.outputs import PRIOR_NODULES_SEGMENTATION
    from lunglesionai.mrml.results_folder import find_volume_node

    prior = report.exam.get("prior") or {}
    if not prior:
        return None
    if prior_volume_node is None:
        path = Path(out_dir) / PRIOR_NODULES_SEGMENTATION
        if path.is_file():
            import slicerio

            prior_volume_node = _node_on_segmentation_grid(scene, slicerio.read_segmentation(str(path)),
                                                           find_volume_node)
    if prior_volume_node is None:
        ct = prior.get("path")
        try:
            volume = load_volume(ct)
        except (OSError, ValueError, TypeError) as error:
            logger.warning("prior CT %s not loaded: %s", ct, error)
            return None
        prior_volume_node = mrml.volume_node_from_volume(scene, volume, f"Prior {Path(str(ct)).name}")
    return add_prior_to_scene(scene, prior_volume_node, prior_findings_of_folder(out_dir, prior_volume_node))


def _node_on_segmentation_grid(scene, segmentation: dict, find_volume_node):
    """A scene volume on the grid of a slicerio segmentation (its voxels' shape and ijkToLPS), else None."""
    matrix = np.asarray(segmentation["ijkToLPS"], float)
    shape_zyx = tuple(int(n) for n in np.shape(segmentation["voxels"])[-3:][::-1])
    spacing = tuple(float(v) for v in np.linalg.norm(matrix[:3, :3], axis=0))
    direction = tuple((matrix[:3, :3] / np.asarray(spacing)).flatten().tolist())
    info = InputInfo("", shape_zyx, spacing, tuple(matrix[:3, 3]), direction)
    if not np.allclose(ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction), matrix, atol=1e-4):
        return None
    return find_volume_node(scene, info)


def _nodes(scene, class_name: str) -> list:
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())]
