"""The lungs' shape: occupancy of each lung at any LPS point, and a coarse distance map for placing things in them.

A lung is its elliptic cylinder with apex dome (:class:`~.anatomy.LungShape`), intersected with the thoracic
cavity, kept above its hemidiaphragm, and cut away from the mediastinum, the heart (with its pericardial fat),
the spine, the aorta and the superior vena cava. The same function serves the renderer (per slice, with partial
volume) and the placement of vessels and nodules (sharp, at points), so the lung mask, the vessels and the
nodules agree on where the pleura is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from . import implicit as im
from .anatomy import Anatomy, LungShape

__all__ = ["LungMap", "build_lung_map", "cavity_field", "diaphragm_height", "lung_label_at", "lung_occupancy",
           "lung_semi_x"]

#: Gap kept between the lungs and the structures they are cut away from (pleura and fat), mm.
PLEURAL_GAP_MM = 3.0
#: Step of the coarse lung map at reference scale, mm (clipped to [1, 2] mm after scaling).
LUNG_MAP_STEP_MM = 2.0


def cavity_field(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> im.Field:
    """The thoracic cavity (inside the ribs): an elliptic cylinder that narrows towards the thoracic inlet."""
    fx, fy = anat.cavity_scale(z)
    ax, ay = anat.cavity_semi
    return im.ellipse(x, y, 0.0, anat.cavity_center_y, ax * fx, ay * fy)


def diaphragm_height(lung: LungShape, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Height (mm) of the hemidiaphragm under ``lung`` at (x, y), and its x and y derivatives.

    A paraboloid dome falling from ``dome_xyz`` by ``dome_depth`` over ``dome_radii``, floored at ``z_floor``.
    """
    dx = x - lung.dome_xyz[0]
    dy = y - lung.dome_xyz[1]
    rx, ry = lung.dome_radii
    k = lung.dome_depth
    h = lung.dome_xyz[2] - k * (dx * dx / (rx * rx) + dy * dy / (ry * ry))
    floored = h < lung.z_floor
    hx = np.where(floored, 0.0, -2.0 * k * dx / (rx * rx))
    hy = np.where(floored, 0.0, -2.0 * k * dy / (ry * ry))
    return np.maximum(h, lung.z_floor), hx, hy


def lung_semi_x(anat: Anatomy, lung: LungShape, z: np.ndarray | float) -> np.ndarray | float:
    """Left-right semi-axis (mm) of ``lung``'s cylinder at height ``z``: it follows the cage's widening."""
    return lung.semi_xy[0] * anat.cavity_scale(z)[0] / anat.cavity_scale(lung.z_shoulder)[0]


def lung_occupancy(
    anat: Anatomy,
    lung: LungShape,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray | float,
    spacing_mm: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Fraction of each voxel (or point) that belongs to ``lung``.

    Args:
        anat: the anatomy.
        lung: ``anat.right_lung`` or ``anat.left_lung``.
        x, y, z: broadcastable LPS coordinates, mm (z may be a scalar: one axial slice).
        spacing_mm: voxel size (x, y, z) for partial-volume occupancy; ``None`` gives the sharp 0/1 indicator.

    Returns:
        float32 array in [0, 1] of the broadcast shape.
    """
    cx, cy = lung.center_xy
    ax, ay = lung.semi_xy
    ax = lung_semi_x(anat, lung, z)
    occ = im.occupancy(im.capped_cylinder(x, y, z, cx, cy, ax, ay, lung.z_shoulder, lung.apex_height), spacing_mm)
    occ = occ * im.occupancy(cavity_field(anat, x, y, z), spacing_mm)
    h, hx, hy = diaphragm_height(lung, x, y)
    occ = occ * im.occupancy(im.below_height(z, h, hx, hy, inside_below=False), spacing_mm)
    for field in _exclusions(anat, x, y, z):
        occ = occ * (1.0 - im.occupancy(field, spacing_mm))
    return occ


def _exclusions(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> list[im.Field]:
    """Fields of the structures cut out of the lungs, each grown by the pleural gap."""
    gap = PLEURAL_GAP_MM * max(anat.scale, 0.5)
    mx, my = anat.mediastinum_semi
    hx, hy, hz = anat.heart_semi
    pad = anat.pericardial_fat_mm + gap
    out = [
        im.ellipse(x, y, 0.0, anat.mediastinum_center_y, mx, my),
        im.ellipsoid(x, y, z, anat.heart_center, (hx + pad, hy + pad, hz + pad)),
        im.ellipse(x, y, *anat.spine_exclusion_center, anat.spine_exclusion_radius, anat.spine_exclusion_radius),
    ]
    path = anat.aorta_path
    for (p0, p1, radius) in ((path[0], path[1], anat.aorta_radius), (path[-2], path[-1], anat.aorta_radius),
                             (anat.svc_path[0], anat.svc_path[1], anat.svc_radius)):
        out.append(_vertical_cylinder(x, y, z, p0, p1, radius + gap))
    for p0, p1 in zip(path[1:-2], path[2:-1]):  # the aortic arch
        field = _capsule(x, y, z, p0, p1, anat.aorta_radius + gap)
        if field is not None:
            out.append(field)
    return out


def _capsule(x, y, z, p0, p1, radius) -> im.Field | None:
    """A capsule around segment p0-p1 (field = signed distance); ``None`` when a single slice ``z`` misses it."""
    if np.ndim(z) == 0 and not min(p0[2], p1[2]) - radius <= float(z) <= max(p0[2], p1[2]) + radius:
        return None
    d = np.subtract(p1, p0, dtype=float)
    ax, ay, az = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((ax * d[0] + ay * d[1] + az * d[2]) / float(d @ d), 0.0, 1.0)
    qx, qy, qz = ax - t * d[0], ay - t * d[1], az - t * d[2]
    dist = np.maximum(np.sqrt(qx * qx + qy * qy + qz * qz), 1e-9)
    return dist - radius, qx / dist, qy / dist, qz / dist


def _vertical_cylinder(x, y, z, p0, p1, radius) -> im.Field:
    """A circular cylinder along z between the heights of p0 and p1 (sharp in z: its ends lie in the mediastinum)."""
    g, gx, gy, gz = im.ellipse(x, y, p0[0], p0[1], radius, radius)
    z0, z1 = sorted((p0[2], p1[2]))
    outside = (np.asarray(z) < z0) | (np.asarray(z) > z1)
    return np.where(outside, 1.0, g), gx, gy, gz


def lung_label_at(anat: Anatomy, points_lps_mm: np.ndarray) -> np.ndarray:
    """Lung label (0 outside, 1 right, 2 left) at (N, 3) LPS points (mm), sharp boundaries; (N,) uint8."""
    p = np.atleast_2d(np.asarray(points_lps_mm, dtype=float))
    labels = np.zeros(len(p), dtype=np.uint8)
    for lung in anat.lungs:
        inside = lung_occupancy(anat, lung, p[:, 0], p[:, 1], p[:, 2]) > 0.5
        labels[inside] = lung.label
    return labels


@dataclass(frozen=True)
class LungMap:
    """Lung labels and the distance to the pleura on a coarse isotropic grid (for sampling and placement).

    Args:
        origin_xyz: LPS position (mm) of ``labels[0, 0, 0]``.
        step_mm: grid step, mm.
        labels: (Z, Y, X) uint8, 0 / 1 (right) / 2 (left).
        distance_mm: (Z, Y, X) float32, distance from each lung point to the nearest point outside its lung, mm
            (0 outside the lungs).
    """

    origin_xyz: tuple[float, float, float]
    step_mm: float
    labels: np.ndarray
    distance_mm: np.ndarray

    def points(self, index_zyx: np.ndarray) -> np.ndarray:
        """(N, 3) LPS points (mm) of (N, 3) grid indices (k, j, i)."""
        return np.asarray(self.origin_xyz) + self.step_mm * np.asarray(index_zyx, dtype=float)[:, ::-1]

    def distance_at(self, points_lps_mm: np.ndarray) -> np.ndarray:
        """Trilinear distance to the pleura (mm) at (N, 3) LPS points; 0 outside the map."""
        idx = (np.atleast_2d(points_lps_mm) - np.asarray(self.origin_xyz)) / self.step_mm
        return ndimage.map_coordinates(self.distance_mm, idx[:, ::-1].T, order=1, mode="constant", cval=0.0)

    def candidates(self, label: int, min_mm: float, max_mm: float = np.inf,
                   z_range: tuple[float, float] = (-np.inf, np.inf)) -> np.ndarray:
        """(N, 3) LPS grid points of lung ``label`` whose pleural distance is in [min_mm, max_mm] and z in range."""
        keep = (self.labels == label) & (self.distance_mm >= min_mm) & (self.distance_mm <= max_mm)
        pts = self.points(np.argwhere(keep))
        return pts[(pts[:, 2] >= z_range[0]) & (pts[:, 2] <= z_range[1])]


def build_lung_map(anat: Anatomy) -> LungMap:
    """Evaluate both lungs (sharp) on a coarse grid over the thoracic cavity and measure pleural distances.

    The distance is scipy's exact Euclidean distance transform (Maurer et al., IEEE TPAMI 2003,
    doi:10.1109/TPAMI.2003.1177156) of each lung separately.
    """
    step = float(np.clip(LUNG_MAP_STEP_MM * anat.scale, 1.0, 2.0))
    ax, ay = anat.cavity_semi
    z_lo, z_hi = anat.lungs_z_range
    lo = np.array([-ax * anat.cavity_scale(z_lo)[0], anat.cavity_center_y - ay, z_lo]) - 2 * step
    hi = np.array([ax * anat.cavity_scale(z_lo)[0], anat.cavity_center_y + ay, z_hi]) + 2 * step
    n = np.ceil((hi - lo) / step).astype(int) + 1
    x = (lo[0] + step * np.arange(n[0]))[None, None, :]
    y = (lo[1] + step * np.arange(n[1]))[None, :, None]
    z = (lo[2] + step * np.arange(n[2]))[:, None, None]
    labels = np.zeros(tuple(n[::-1]), dtype=np.uint8)
    distance = np.zeros(labels.shape, dtype=np.float32)
    for lung in anat.lungs:
        inside = lung_occupancy(anat, lung, x, y, z) > 0.5
        labels[inside] = lung.label
        distance += ndimage.distance_transform_edt(inside, sampling=step).astype(np.float32)
    return LungMap(tuple(float(v) for v in lo), step, labels, distance)
