"""Nodules on the voxel grid: supersampled partial-volume rendering and their exact ground truth.

Each nodule is rendered in its own bounding box. Voxels that a boundary may cross (the nodule's surface, its
solid core's surface, or the pleura inside the nodule) are split into ``n × n × n`` sub-samples; the rest are
decided at their centres. A sub-sample counts when it is inside the nodule *and* inside the nodule's lung, so
juxta-pleural nodules stop at the pleura. The voxel's nodule fraction and the mean HU of its nodule part blend the
nodule into the image; the fraction also gives the truth mask (>= 50 %), the volume and the centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lunglesionai.core.findings import FindingMask, equivalent_diameter_mm

from .anatomy import Anatomy
from .grid import Grid
from .lungs import lung_occupancy
from .nodule_shapes import NoduleShape
from .tubes import subsample_offsets

__all__ = ["NoduleTruth", "NoduleRender", "render_nodule", "paint_nodule", "nodule_truth", "MASK_THRESHOLD"]

#: A voxel belongs to a nodule's mask when the nodule fills at least this fraction of it.
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class NoduleTruth:
    """Ground truth of one phantom nodule (LPS mm, HU, mm³).

    Args:
        id: "GT1", "GT2", … (largest first).
        center_lps_mm: (x, y, z) centroid of the nodule's lung part, mm.
        diameter_mm: equivalent-sphere diameter of ``volume_mm3``, mm.
        texture: "solid", "part-solid" or "ground-glass" (the strings of ``Finding.texture``).
        attachment: "isolated", "juxta-pleural" or "juxta-vascular".
        shape: "round", "lobulated" or "spiculated".
        mean_hu: mean HU of the final (noisy) image inside ``mask``.
        volume_mm3: volume of the analytic nodule inside its lung (supersampled on the grid), mm³.
        mask: voxels the nodule fills to >= 50 %, a bool crop on the volume's grid.
        nominal_diameter_mm: diameter of the nodule's main body before lobes, spicules and pleural cut, mm.
        solid_diameter_mm: diameter of the solid part (the core of a part-solid nodule; 0 for ground glass), mm.
        lung: "right" or "left".
    """

    id: str
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    texture: str
    attachment: str
    shape: str
    mean_hu: float
    volume_mm3: float
    mask: FindingMask
    nominal_diameter_mm: float = 0.0
    solid_diameter_mm: float = 0.0
    lung: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field except the mask (plus ``mask_voxels`` and ``mask_offset_kji``)."""
        return {
            "id": self.id,
            "center_lps_mm": [round(float(c), 3) for c in self.center_lps_mm],
            "diameter_mm": round(float(self.diameter_mm), 3),
            "texture": self.texture,
            "attachment": self.attachment,
            "shape": self.shape,
            "mean_hu": round(float(self.mean_hu), 1),
            "volume_mm3": round(float(self.volume_mm3), 2),
            "nominal_diameter_mm": round(float(self.nominal_diameter_mm), 3),
            "solid_diameter_mm": round(float(self.solid_diameter_mm), 3),
            "lung": self.lung,
            "mask_voxels": self.mask.voxel_count,
            "mask_offset_kji": [int(v) for v in self.mask.offset_kji],
        }


@dataclass(frozen=True)
class NoduleRender:
    """A nodule on the grid, inside ``box`` ((z, y, x) slices).

    Args:
        box: index slices of the nodule's bounding box.
        fraction: (dz, dy, dx) float32, fraction of each voxel filled by the nodule's lung part.
        hu: (dz, dy, dx) float32, mean HU of the nodule part of each voxel (meaningless where fraction is 0).
    """

    box: tuple[slice, slice, slice]
    fraction: np.ndarray
    hu: np.ndarray


def render_nodule(shape: NoduleShape, anat: Anatomy, grid: Grid, supersample: int) -> NoduleRender | None:
    """Supersampled occupancy and HU of ``shape`` on ``grid``, clipped to its lung.

    Returns:
        :class:`NoduleRender`, or ``None`` when the nodule misses the grid.
    """
    half_diag = 0.5 * float(np.linalg.norm(grid.spacing_mm))
    reach = shape.bound_radius_mm + half_diag
    box = grid.box_slices(shape.center - reach, shape.center + reach)
    if box is None:
        return None
    z, y, x = grid.slice_coords(box)
    lung = anat.right_lung if shape.spec.lung_label == anat.right_lung.label else anat.left_lung
    sd = shape.signed_distance(x, y, z)
    core = shape.core_signed_distance(x, y, z)
    lung_occ = lung_occupancy(anat, lung, x, y, z, grid.spacing_mm)
    inside = (sd < 0) & (lung_occ >= 0.5)
    fraction = inside.astype(np.float32)
    hu = np.where(core < 0, shape.spec.core_hu or shape.spec.hu, shape.spec.hu).astype(np.float32)
    near = (np.abs(sd) < half_diag) | (np.abs(core) < half_diag) | ((sd < half_diag) & (lung_occ > 0) & (lung_occ < 1))
    if supersample > 1 and near.any():
        kk, jj, ii = np.nonzero(near)
        off = subsample_offsets(grid.spacing_mm, supersample)
        px = x.ravel()[ii][:, None] + off[None, :, 0]
        py = y.ravel()[jj][:, None] + off[None, :, 1]
        pz = z.ravel()[kk][:, None] + off[None, :, 2]
        sub_in = (shape.signed_distance(px, py, pz) < 0) & (lung_occupancy(anat, lung, px, py, pz) > 0.5)
        sub_core = shape.core_signed_distance(px, py, pz) < 0
        sub_hu = np.where(sub_core, shape.spec.core_hu or shape.spec.hu, shape.spec.hu)
        count = sub_in.sum(axis=1)
        fraction[kk, jj, ii] = count / sub_in.shape[1]
        hu[kk, jj, ii] = np.where(count > 0, (sub_hu * sub_in).sum(axis=1) / np.maximum(count, 1), shape.spec.hu)
    return NoduleRender(box, fraction, hu)


def nodule_truth(render: NoduleRender, shape: NoduleShape, final_hu: np.ndarray, lung_mask: np.ndarray,
                 grid: Grid, nodule_id: str) -> NoduleTruth:
    """Measure a rendered nodule: mask (>= 50 % and in its lung), centroid, volume, mean HU of ``final_hu``.

    Args:
        render: the nodule's rendering.
        shape: its geometry and kind.
        final_hu: (Z, Y, X) the finished image (noise included), HU.
        lung_mask: (Z, Y, X) uint8 lung labels.
        grid: the grid.
        nodule_id: "GT<n>".
    """
    box, frac = render.box, render.fraction
    spec = shape.spec
    mask = (frac >= MASK_THRESHOLD) & (lung_mask[box] == spec.lung_label)
    if not mask.any():  # a tiny nodule split across voxels: keep its fullest voxel
        mask = np.zeros_like(mask)
        mask[np.unravel_index(int(np.argmax(frac)), frac.shape)] = True
    voxel_mm3 = float(np.prod(grid.spacing_mm))
    volume = float(frac.sum()) * voxel_mm3
    z, y, x = grid.slice_coords(box)
    total = max(float(frac.sum()), 1e-12)
    center = tuple(float((frac * np.broadcast_to(c, frac.shape)).sum() / total) for c in (x, y, z))
    nz = np.argwhere(mask)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    offset = tuple(int(b.start + o) for b, o in zip(box, lo))
    mean_hu = float(final_hu[box][mask].mean())
    solid = {"solid": 1.0, "part-solid": spec.core_fraction, "ground-glass": 0.0}[spec.texture] * spec.diameter_mm
    return NoduleTruth(
        id=nodule_id,
        center_lps_mm=center,
        diameter_mm=equivalent_diameter_mm(volume),
        texture=spec.texture,
        attachment=spec.attachment,
        shape=spec.shape,
        mean_hu=mean_hu,
        volume_mm3=volume,
        mask=FindingMask(offset, crop),
        nominal_diameter_mm=float(spec.diameter_mm),
        solid_diameter_mm=float(solid),
        lung="right" if spec.lung_label == 1 else "left",
    )


def paint_nodule(hu: np.ndarray, render: NoduleRender) -> None:
    """Blend a nodule into ``hu`` (the phantom's own buffer) inside its box; denser tissue already there wins."""
    view = hu[render.box]
    blended = view + render.fraction * (render.hu - view)
    np.maximum(view, blended, out=view)

