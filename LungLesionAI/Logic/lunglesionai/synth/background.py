"""The phantom's large structures, rendered one axial slice at a time with partial volume at their edges.

Painter's order, each layer blended by its occupancy (``hu += occupancy * (layer_hu - hu)``): air, body (fat),
muscle, thoracic cavity (mediastinal fat), upper abdomen below the diaphragm (liver, spleen, optional stomach
gas), heart, oesophagus, spine (vertebral bodies, discs, canal, posterior elements), sternum, and finally the two
lungs with their gravity gradient and low-frequency texture. Tubular structures (vessels, airways, ribs) and
nodules are added later by :mod:`.phantom`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from . import implicit as im
from . import tissues as t
from .anatomy import Anatomy, LungShape
from .grid import Grid
from .lungs import cavity_field, diaphragm_height, lung_occupancy, lung_semi_x
from .noise import PlaneSampler, SmoothField

__all__ = ["Background", "render_background"]

#: Heart chambers (blood, enhanced with contrast) as a fraction of the heart's semi-axes; the rest is myocardium.
HEART_CHAMBER_FRACTION = 0.78
#: Occupancy at or above which a voxel is labelled as lung.
LABEL_THRESHOLD = 0.5


@dataclass(frozen=True)
class Background:
    """Output of :func:`render_background`.

    Args:
        hu: (Z, Y, X) float32 HU without tubes, nodules or noise.
        lung_mask: (Z, Y, X) uint8, 1 = right lung, 2 = left lung (voxels at least half lung).
        cavity: (Z, Y, X) uint8 occupancy (0–255) of the thoracic cavity, where pulmonary vessels may be drawn.
    """

    hu: np.ndarray
    lung_mask: np.ndarray
    cavity: np.ndarray


def render_background(anat: Anatomy, grid: Grid, lung_texture: SmoothField,
                      contrast_hu: Optional[float], abdominal_gas: bool) -> Background:
    """Render body, organs, spine, sternum and lungs on ``grid``.

    Args:
        anat: the anatomy (mm, LPS).
        grid: the voxel grid.
        lung_texture: unit-variance smooth field for the parenchymal texture.
        contrast_hu: blood HU in the heart chambers with contrast, or ``None`` (unenhanced).
        abdominal_gas: draw the stomach's gas bubble.

    Returns:
        :class:`Background`.
    """
    _, ny, nx = grid.shape_zyx
    hu = np.empty(grid.shape_zyx, dtype=np.float32)
    labels = np.zeros(grid.shape_zyx, dtype=np.uint8)
    cavity = np.empty(grid.shape_zyx, dtype=np.uint8)
    x = grid.axis_mm(0).astype(np.float32)[None, :]
    y = grid.axis_mm(1).astype(np.float32)[:, None]
    spacing = grid.spacing_mm
    body = im.occupancy(im.superellipse(x, y, *anat.body_semi, anat.body_power), spacing)
    ax, ay = anat.body_semi
    inner = im.occupancy(im.superellipse(x, y, ax - anat.fat_mm, ay - anat.fat_mm, anat.body_power), spacing)
    sampler = lung_texture.sampler(x.ravel(), y.ravel())
    base = np.full((ny, nx), t.AIR_HU, dtype=np.float32)
    _paint(base, body, t.FAT_HU)
    _paint(base, inner, t.MUSCLE_HU)
    for k, z in enumerate(grid.axis_mm(2)):
        h = base.copy()
        cav = im.occupancy(cavity_field(anat, x, y, float(z)), spacing)
        cavity[k] = np.round(cav * 255.0).astype(np.uint8)
        _paint(h, cav, t.MEDIASTINAL_FAT_HU)
        _paint_abdomen(h, anat, x, y, float(z), cav, spacing, abdominal_gas)
        _paint_heart(h, anat, x, y, float(z), spacing, contrast_hu)
        _paint_disc(h, x, y, anat.esophagus_center, anat.esophagus_radius, t.SOFT_TISSUE_HU, spacing)
        _paint_spine(h, anat, x, y, float(z), spacing)
        _paint_sternum(h, anat, x, y, float(z), spacing)
        for lung in anat.lungs:
            _paint_lung(h, labels[k], anat, lung, x, y, float(z), spacing, sampler)
        hu[k] = h
    return Background(hu, labels, cavity)


def _paint(h: np.ndarray, occ: np.ndarray, value: float) -> None:
    """Blend ``value`` into the slice buffer ``h`` (this module's own scratch) with weights ``occ``."""
    h += occ * (np.float32(value) - h)


def _crop(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, pad: float):
    """Index slices (y, x) of the rectangle centre ± radius (+ pad) on the slice, or None when outside."""
    xs, ys = x.ravel(), y.ravel()
    i0, i1 = np.searchsorted(xs, [cx - rx - pad, cx + rx + pad])
    j0, j1 = np.searchsorted(ys, [cy - ry - pad, cy + ry + pad])
    if i1 <= i0 or j1 <= j0:
        return None
    return slice(int(j0), int(j1)), slice(int(i0), int(i1))


def _paint_disc(h, x, y, center, radius, value, spacing, ay: Optional[float] = None) -> None:
    """Paint an ellipse (a circle when ``ay`` is None) of the given centre and semi-axes (a structure along z)."""
    ry = radius if ay is None else ay
    box = _crop(x, y, center[0], center[1], radius, ry, 2 * spacing[0])
    if box is None:
        return
    occ = im.occupancy(im.ellipse(x[:, box[1]], y[box[0], :], center[0], center[1], radius, ry), spacing)
    _paint(h[box], occ, value)


def _paint_abdomen(h, anat: Anatomy, x, y, z: float, cav, spacing, gas: bool) -> None:
    """Liver (right) and spleen/stomach (left) inside the cavity below each hemidiaphragm."""
    right, left = anat.right_lung, anat.left_lung
    if z > max(right.dome_xyz[2], left.dome_xyz[2]) + 2 * spacing[2]:
        return
    below = np.zeros(h.shape, dtype=np.float32)
    for lung, mask in ((right, x < 0), (left, x >= 0)):
        dh, dhx, dhy = diaphragm_height(_unfloored(lung), x, y)
        occ = im.occupancy(im.below_height(z, dh, dhx, dhy, inside_below=True), spacing)
        below = np.where(mask, occ, below)
    organ = np.where(x < 0, np.float32(t.LIVER_HU), np.float32(t.SPLEEN_HU))
    h += (cav * below) * (organ - h)
    if gas:
        occ = im.occupancy(im.ellipsoid(x, y, z, anat.stomach_gas_center, anat.stomach_gas_semi), spacing)
        _paint(h, occ * cav, t.AIR_HU)


def _unfloored(lung: LungShape) -> LungShape:
    """The hemidiaphragm without the lung's floor (the abdomen continues below the costophrenic recess)."""
    return replace(lung, z_floor=-np.inf)


def _paint_heart(h, anat: Anatomy, x, y, z: float, spacing, contrast_hu: Optional[float]) -> None:
    c, semi = anat.heart_center, anat.heart_semi
    if abs(z - c[2]) > semi[2] + spacing[2]:
        return
    box = _crop(x, y, c[0], c[1], semi[0], semi[1], 2 * spacing[0])
    if box is None:
        return
    xb, yb = x[:, box[1]], y[box[0], :]
    _paint(h[box], im.occupancy(im.ellipsoid(xb, yb, z, c, semi), spacing), t.SOFT_TISSUE_HU)
    if contrast_hu is not None:
        inner = tuple(s * HEART_CHAMBER_FRACTION for s in semi)
        _paint(h[box], im.occupancy(im.ellipsoid(xb, yb, z, c, inner), spacing), contrast_hu)


def _paint_spine(h, anat: Anatomy, x, y, z: float, spacing) -> None:
    """Vertebral body (cortex, marrow, or disc at disc levels), canal, posterior arch, processes."""
    disc = _disc_fraction(anat, z, spacing[2])
    body_hu = disc * t.DISC_HU + (1.0 - disc) * t.CORTICAL_BONE_HU
    marrow_hu = disc * t.DISC_HU + (1.0 - disc) * t.MARROW_HU
    r = anat.vertebra_radius
    _paint_disc(h, x, y, anat.vertebra_center, r, body_hu, spacing)
    _paint_disc(h, x, y, anat.vertebra_center, r - anat.cortex_mm, marrow_hu, spacing)
    for center, semi in ((anat.arch_center, anat.arch_semi), (anat.process_center, anat.process_semi)):
        _paint_disc(h, x, y, center, semi[0], t.CORTICAL_BONE_HU, spacing, ay=semi[1])
    for sign in (-1.0, 1.0):
        cx, cy = anat.transverse_center
        _paint_disc(h, x, y, (sign * cx, cy), anat.transverse_semi[0], t.CORTICAL_BONE_HU, spacing,
                    ay=anat.transverse_semi[1])
    _paint_disc(h, x, y, anat.canal_center, anat.canal_radius, t.CSF_HU, spacing)


def _disc_fraction(anat: Anatomy, z: float, thickness: float) -> float:
    """Fraction of the slice at ``z`` (thickness mm) inside an intervertebral disc (discs every disc_period)."""
    period, half = anat.disc_period, 0.5 * anat.disc_thickness
    j = np.floor(z / period)
    return float(sum(im.slab_occupancy(z, thickness, (j + d) * period - half, (j + d) * period + half)
                     for d in (-1, 0, 1, 2)))


def _paint_sternum(h, anat: Anatomy, x, y, z: float, spacing) -> None:
    z0, z1 = anat.sternum_z
    frac = im.slab_occupancy(z, spacing[2], z0, z1)
    if frac <= 0:
        return
    (ax, ay), c = anat.sternum_semi, anat.sternum_center
    cortex = t.CORTICAL_BONE_HU
    _paint_disc(h, x, y, c, ax, _bone_mix(frac, cortex), spacing, ay=ay)
    inner_ax, inner_ay = ax - anat.cortex_mm, max(ay - anat.cortex_mm, 0.5)
    _paint_disc(h, x, y, c, inner_ax, _bone_mix(frac, t.MARROW_HU), spacing, ay=inner_ay)


def _bone_mix(frac: float, value: float) -> float:
    """``value`` blended with muscle by the fraction of the slice a z-limited bone fills."""
    return frac * value + (1.0 - frac) * t.MUSCLE_HU


def _paint_lung(h, labels_k, anat: Anatomy, lung: LungShape, x, y, z: float, spacing,
                texture: PlaneSampler) -> None:
    """Paint one lung's parenchyma (gravity gradient + texture) and write its label where occupancy >= 0.5."""
    if not lung.z_floor - spacing[2] <= z <= lung.z_apex + spacing[2]:
        return
    (cx, cy), ay = lung.center_xy, lung.semi_xy[1]
    box = _crop(x, y, cx, cy, float(lung_semi_x(anat, lung, z)), ay, 2 * spacing[0])
    if box is None:
        return
    xb, yb = x[:, box[1]], y[box[0], :]
    occ = lung_occupancy(anat, lung, xb, yb, z, spacing)
    if not occ.any():
        return
    parenchyma = (t.LUNG_HU + t.LUNG_GRAVITY_GRADIENT_HU * (yb - cy) / ay
                  + t.LUNG_TEXTURE_SIGMA_HU * texture(z, box[0], box[1]))
    hb = h[box]
    hb += occ * (parenchyma - hb)
    labels_k[box][occ >= LABEL_THRESHOLD] = lung.label
