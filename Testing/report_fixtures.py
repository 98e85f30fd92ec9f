"""Small reports on an oblique grid (nodules and a lesion with masks), shared by the writer, report.html and MRML tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lunglesionai.core.findings import Finding, FindingMask, InputInfo, Report
from lunglesionai.core.volume import Volume

SHAPE_ZYX = (18, 22, 26)


SPACING_MM = (0.8, 0.9, 1.5)


ORIGIN_LPS_MM = (12.0, -30.0, 55.0)


_ANGLE = np.deg2rad(30.0)


#: Columns: i -> rotated 30° about S, j -> perpendicular in the axial plane, k -> inferior (left-handed grid).
DIRECTION = (np.cos(_ANGLE), -np.sin(_ANGLE), 0.0, np.sin(_ANGLE), np.cos(_ANGLE), 0.0, 0.0, 0.0, -1.0)


NODULE_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^49755003^Morphologically Altered Structure"
    "~SCT^27925004^Nodule~^^~Anatomic codes - DICOM master list~^^~^^"
)


LESION_TERMINOLOGY = NODULE_TERMINOLOGY.replace("SCT^27925004^Nodule", "SCT^52988006^Lesion")


def grid_volume() -> Volume:
    """An empty CT on the test grid (air)."""
    return Volume(np.full(SHAPE_ZYX, -1000, np.int16), SPACING_MM, ORIGIN_LPS_MM, DIRECTION, "test grid")


def sphere_finding(fid: str, kind: str, center_kji: tuple[int, int, int], radius_vox: int, volume: Volume) -> Finding:
    """A finding whose mask is a voxel ball (radius in voxels) around ``center_kji``; centre/bbox in LPS mm."""
    r = radius_vox
    k, j, i = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    ball = k**2 + j**2 + i**2 <= r * r
    offset = tuple(int(c) - r for c in center_kji)
    center = volume.kji_to_lps([center_kji])[0]
    corners = volume.kji_to_lps(np.array([np.subtract(center_kji, r), np.add(center_kji, r)]))
    return Finding(
        id=fid,
        kind=kind,
        center_lps_mm=tuple(center),
        bbox_lps_mm=(tuple(corners.min(axis=0)), tuple(corners.max(axis=0))),
        detection_score=0.9,
        diameter_mm=float(2 * r * min(SPACING_MM)),
        volume_mm3=float(ball.sum() * volume.voxel_volume_mm3),
        mask=FindingMask(offset, ball),
    )


def make_small_report(with_lesion: bool = True) -> Report:
    """Nodules N1, N2 (masks), N3 (no mask) and optionally lesion L1 (mask) on the oblique test grid."""
    volume = grid_volume()
    findings = [
        sphere_finding("N1", "nodule", (5, 6, 7), 3, volume),
        sphere_finding("N2", "nodule", (12, 15, 18), 4, volume),
        replace(sphere_finding("N3", "nodule", (9, 4, 20), 2, volume), mask=None),
    ]
    if with_lesion:
        findings.append(sphere_finding("L1", "lesion", (13, 5, 6), 2, volume))
    return Report(input=InputInfo.from_volume(volume), findings=findings, version="test")
