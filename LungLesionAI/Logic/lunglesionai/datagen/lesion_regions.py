"""Where lesions of each DeepLesion class may go in a CT: regions found from HU thresholds, a lung mask and
morphology (no learned segmentation).

:func:`anatomy_regions` returns boolean (Z, Y, X) masks on the CT's grid; :mod:`lunglesionai.datagen.synthetic_lesions` places
synthetic lesions in them. The rules are simple and stated, and were checked by eye on the project's real CTs
(``../shared/data/ct``: a contrast chest crop, an upper-abdomen series) and on :mod:`lunglesionai.synth` phantoms:

* **body**: HU > :data:`BODY_HU`, holes filled per axial slice, largest 3-D component (drops the table and arms).
* **dense**: HU > :data:`DENSE_HU` (bone and iodine-enhanced vessels alike), closed and hole-filled per slice;
  other regions keep :data:`DENSE_MARGIN_MM` away from it.
* **bone** (the vertebral column, where bone lesions are placed): per axial slice, HU > :data:`RING_HU` closed
  with a :data:`RING_CLOSING_MM` disc and hole-filled (marrow inside the cortical ring, and the spinal canal when
  the arch is closed, join); among the components of at least :data:`MIN_VERTEBRA_MM2` posterior to the body's
  centre with an HU standard deviation of at least :data:`MIN_BONE_STD_HU` and at least :data:`MIN_MARROW_SHARE`
  of their voxels at a median HU in the marrow range :data:`MARROW_HU_RANGE`, the largest; of it, the
  marrow-range voxels. In arterial-phase CT (the largest connected volume of median HU in
  :data:`CONTRAST_HU_RANGE` — the iodine-filled heart and aorta — is at least :data:`ARTERIAL_BLOOD_ML`) the
  aorta beside the spine passes these tests too, so there a component must also enclose the spinal canal (at
  least :data:`MIN_CANAL_MM2` below :data:`CANAL_MAX_HU`), i.e. its vertebral arch must be closed. A slice where
  nothing passes gets no bone region. Ribs, scapulae and the sternum are too thin for the lesion sizes used and
  are left out.
* **mediastinum**: per slice and image row, the pixels between the right lung's and the left lung's inner edge,
  inside the body, on thoracic slices (lung area at least :data:`ABDOMEN_LUNG_FRACTION` of the body area), away
  from the liver and from dense voxels.
* **fat**: body voxels whose 3-voxel in-plane median is within :data:`FAT_HU_RANGE`.
* **liver**: voxels right of the body's midline (LPS x below it), outside the lungs, whose in-plane median HU is
  within ±:data:`LIVER_HU_TOLERANCE` of the liver's HU, where the liver is the largest component of
  :data:`LIVER_HU_RANGE` after an opening of :data:`LIVER_OPENING_MM` (separates it from muscle and diaphragm)
  that is at least :data:`MIN_LIVER_ML`; empty when there is none (a chest CT above the diaphragm).
* **retroperitoneum**: fat within :data:`RETROPERITONEAL_REACH_MM` of the vertebra (in-plane), not behind its
  centre, on abdominal slices: below the slice of largest lung area with a lung area below
  :data:`ABDOMEN_LUNG_FRACTION` of the body area (every slice of a scan without lungs).
* **body wall**: body voxels outside the per-slice convex hull of the lungs, dense voxels and the liver, within
  :data:`WALL_DEPTH_MM` of the air around the body, with median HU in :data:`WALL_HU_RANGE` (subcutaneous fat
  and muscle), only on slices whose body touches less than :data:`MAX_BORDER_BODY_FRACTION` of the image border
  (a crop without the skin, such as the real chest crop, has none: gas in a cut-open bowel or lung would look
  like the air around the body).
* **kidney**: not found automatically (no CT here shows kidneys); pass one to the functions that accept
  ``extra_regions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.volume import Volume

__all__ = ["REGION_NAMES", "AnatomyRegions", "anatomy_regions"]

logger = logging.getLogger(__name__)

BODY_HU = -300.0
DENSE_HU = 300.0
DENSE_MARGIN_MM = 3.0
RING_HU = 300.0
RING_CLOSING_MM = 2.0
MIN_VERTEBRA_MM2 = 150.0
MARROW_HU_RANGE = (100.0, 400.0)
MIN_MARROW_SHARE = 0.25
MIN_CANAL_MM2 = 40.0
CANAL_MAX_HU = 80.0
CONTRAST_HU_RANGE = (350.0, 650.0)
ARTERIAL_BLOOD_ML = 50.0
MIN_BONE_STD_HU = 80.0
FAT_HU_RANGE = (-160.0, -40.0)
LIVER_HU_RANGE = (30.0, 200.0)
LIVER_HU_TOLERANCE = 35.0
LIVER_OPENING_MM = 6.0
MIN_LIVER_ML = 30.0
RETROPERITONEAL_REACH_MM = 45.0
ABDOMEN_LUNG_FRACTION = 0.25
WALL_HU_RANGE = (-160.0, 100.0)
WALL_DEPTH_MM = 30.0
MAX_BORDER_BODY_FRACTION = 0.1
REGION_NAMES = ("body", "lung", "dense", "bone", "mediastinum", "fat", "liver", "retroperitoneum", "body_wall", "kidney")
_ML_PER_MM3 = 1e-3


@dataclass(frozen=True)
class AnatomyRegions:
    """Boolean (Z, Y, X) masks on a CT's grid (names in :data:`REGION_NAMES`) plus the liver's median HU.

    Args:
        masks: region name → mask; every name of :data:`REGION_NAMES` is present (possibly all False).
        liver_hu: median HU of the liver region, or None when there is no liver.
        spacing_zyx_mm: voxel size (z, y, x) of the grid, mm.
    """

    masks: dict[str, np.ndarray]
    liver_hu: float | None
    spacing_zyx_mm: tuple[float, float, float]
    volumes_ml: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.masks:
            raise KeyError(f"unknown region {name!r}; regions: {sorted(self.masks)}")
        return self.masks[name]


def anatomy_regions(volume: Volume, lung_mask: np.ndarray,
                    extra_regions: dict[str, np.ndarray] | None = None) -> AnatomyRegions:
    """Find the regions of the module docstring on ``volume``'s grid.

    Args:
        volume: CT in HU, LPS-ordered axes (identity-like direction: k inferior → superior, j anterior →
            posterior, i right → left; use :func:`lunglesionai.core.orientation.reorient_to_lps` first).
        lung_mask: (Z, Y, X) lung labels on the same grid (> 0 = lung; 1 right, 2 left as
            :func:`lunglesionai.stages.lung_mask.segment_lungs` gives them).
        extra_regions: masks to add or replace (e.g. ``{"kidney": mask}``), same shape.

    Returns:
        :class:`AnatomyRegions`.

    Raises:
        ValueError: a mask's shape differs from the volume's, or the direction is not LPS-ordered.
    """
    if np.shape(lung_mask) != volume.shape_zyx:
        raise ValueError(f"lung mask shape {np.shape(lung_mask)} differs from the volume's {volume.shape_zyx}")
    if not np.all(np.diag(volume.direction_matrix) > 0.5):
        raise ValueError(f"{volume.source or 'volume'}: axes must be LPS-ordered (direction {volume.direction}); "
                         "reorient with lunglesionai.core.orientation.reorient_to_lps first")
    spacing = tuple(float(s) for s in volume.spacing_mm[::-1])
    hu = np.asarray(volume.hu, dtype=np.float32)
    smooth = ndi.median_filter(hu, size=(1, 3, 3))
    lung = np.asarray(lung_mask) > 0
    body = _body(hu) | lung
    dense = _dense(hu) & body
    near_dense = _dilate_mm(dense, spacing, DENSE_MARGIN_MM)
    bone = _vertebrae(hu, smooth, body, spacing)
    fat = body & ~lung & (smooth >= FAT_HU_RANGE[0]) & (smooth <= FAT_HU_RANGE[1])
    liver, liver_hu = _liver(smooth, body & ~lung & ~near_dense, volume, spacing)
    thoracic = _thoracic_slices(lung, body)
    mediastinum = (_between_lungs(np.asarray(lung_mask)) & body & ~lung & ~near_dense & thoracic[:, None, None]
                   & ~_dilate_mm(liver, spacing, 10.0))
    masks = {
        "body": body, "lung": lung, "dense": dense, "bone": bone, "mediastinum": mediastinum, "fat": fat,
        "liver": liver, "retroperitoneum": _retroperitoneum(fat & ~near_dense, bone, _abdominal_slices(lung, thoracic), spacing),
        "body_wall": _body_wall(smooth, body, lung | dense | liver, spacing) & ~near_dense,
        "kidney": np.zeros(hu.shape, bool),
    }
    for name, mask in (extra_regions or {}).items():
        if np.shape(mask) != hu.shape:
            raise ValueError(f"extra region {name!r} has shape {np.shape(mask)}, the volume {hu.shape}")
        masks[name] = np.asarray(mask) > 0
    voxel_ml = float(np.prod(spacing)) * _ML_PER_MM3
    volumes = {k: round(float(v.sum()) * voxel_ml, 1) for k, v in masks.items()}
    logger.info("regions of %s (ml): %s", volume.source or "volume", volumes)
    return AnatomyRegions(masks, liver_hu, spacing, volumes)


def _body(hu: np.ndarray) -> np.ndarray:
    inside = hu > BODY_HU
    filled = np.stack([ndi.binary_fill_holes(s) for s in inside])
    labels, n = ndi.label(filled)
    if n == 0:
        return filled
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def _dense(hu: np.ndarray) -> np.ndarray:
    closed = ndi.binary_closing(hu > DENSE_HU, structure=np.ones((1, 3, 3), bool))
    return np.stack([ndi.binary_fill_holes(s) for s in closed])


def _vertebrae(hu: np.ndarray, smooth: np.ndarray, body: np.ndarray, spacing) -> np.ndarray:
    """Per slice, the vertebra's marrow (see the module docstring)."""
    out = np.zeros(hu.shape, bool)
    arterial = _arterial_phase(smooth, body, spacing)
    min_pixels = MIN_VERTEBRA_MM2 / (spacing[1] * spacing[2])
    disc = _ball(spacing[1:], RING_CLOSING_MM)
    rows = np.indices(hu.shape[1:])[0]
    for k in np.flatnonzero(body.any(axis=(1, 2))):
        filled = ndi.binary_fill_holes(ndi.binary_closing(hu[k] > RING_HU, structure=disc)) & body[k]
        labels, n = ndi.label(filled)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        sizes = np.asarray(ndi.sum_labels(filled, labels, index))
        row_c = np.asarray(ndi.mean(rows, labels, index))
        marrow_k = (smooth[k] >= MARROW_HU_RANGE[0]) & (smooth[k] <= MARROW_HU_RANGE[1])
        marrow = np.asarray(ndi.mean(marrow_k, labels, index))
        canal = np.asarray(ndi.sum_labels(smooth[k] < CANAL_MAX_HU, labels, index)) * spacing[1] * spacing[2]
        spread = np.asarray(ndi.standard_deviation(hu[k], labels, index))
        ok = ((sizes >= min_pixels) & (row_c > rows[body[k]].mean()) & (marrow >= MIN_MARROW_SHARE)
              & (spread >= MIN_BONE_STD_HU) & ((canal >= MIN_CANAL_MM2) | (not arterial)))
        if ok.any():
            best = index[ok][int(np.argmax(sizes[ok]))]
            out[k] = (labels == best) & marrow_k
    return out


def _arterial_phase(smooth: np.ndarray, body: np.ndarray, spacing) -> bool:
    """True when the largest connected volume of iodine-range HU (the enhanced heart and aorta) reaches
    ARTERIAL_BLOOD_ML."""
    iodine = body & (smooth >= CONTRAST_HU_RANGE[0]) & (smooth <= CONTRAST_HU_RANGE[1])
    labels, n = ndi.label(iodine)
    if n == 0:
        return False
    largest = int(np.bincount(labels.ravel())[1:].max())
    return largest * float(np.prod(spacing)) * _ML_PER_MM3 >= ARTERIAL_BLOOD_ML


def _thoracic_slices(lung: np.ndarray, body: np.ndarray) -> np.ndarray:
    """(Z,) True where the lungs cover at least ABDOMEN_LUNG_FRACTION of the body's cross-section."""
    return lung.sum(axis=(1, 2)) >= ABDOMEN_LUNG_FRACTION * np.maximum(body.sum(axis=(1, 2)), 1)


def _abdominal_slices(lung: np.ndarray, thoracic: np.ndarray) -> np.ndarray:
    """(Z,) True on non-thoracic slices below the slice of largest lung area (k increases superiorly); every
    slice when the scan shows no lung."""
    area = lung.sum(axis=(1, 2))
    if not area.any():
        return np.ones(lung.shape[0], bool)
    return ~thoracic & (np.arange(lung.shape[0]) < int(np.argmax(area)))


def _between_lungs(labels: np.ndarray) -> np.ndarray:
    """Per slice and row: pixels strictly between the right lung (label 1) and the left lung (label 2)."""
    out = np.zeros(labels.shape, bool)
    nx = labels.shape[2]
    columns = np.arange(nx)[None, None, :]
    right = np.where(labels == 1, columns, -1).max(axis=2)  # rightmost... the right lung's inner (largest x) edge
    left = np.where(labels == 2, columns, nx).min(axis=2)  # the left lung's inner (smallest x) edge
    valid = (right >= 0) & (left < nx) & (left > right + 1)
    inside = (columns > right[..., None]) & (columns < left[..., None]) & valid[..., None]
    out[inside] = True
    return out


def _liver(smooth: np.ndarray, allowed: np.ndarray, volume: Volume, spacing) -> tuple[np.ndarray, float | None]:
    candidate = allowed & (smooth >= LIVER_HU_RANGE[0]) & (smooth <= LIVER_HU_RANGE[1])
    x_lps = volume.ijk_to_lps(np.stack([np.arange(volume.shape_zyx[2]), np.zeros(volume.shape_zyx[2]),
                                        np.zeros(volume.shape_zyx[2])], axis=1))[:, 0]
    body_x = np.argwhere(allowed)[:, 2]
    if body_x.size == 0:
        return np.zeros(smooth.shape, bool), None
    midline = x_lps[int(np.median(body_x))]
    candidate &= (x_lps < midline)[None, None, :]
    opened = ndi.binary_opening(candidate, structure=_ball(spacing, LIVER_OPENING_MM / 2))
    labels, n = ndi.label(opened)
    if n == 0:
        return np.zeros(smooth.shape, bool), None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] * float(np.prod(spacing)) * _ML_PER_MM3 < MIN_LIVER_ML:
        return np.zeros(smooth.shape, bool), None
    core = labels == best
    liver_hu = float(np.median(smooth[core]))
    grown = _dilate_mm(core, spacing, LIVER_OPENING_MM / 2) & allowed
    liver = grown & (np.abs(smooth - liver_hu) <= LIVER_HU_TOLERANCE)
    return ndi.binary_fill_holes(liver), liver_hu


def _retroperitoneum(fat: np.ndarray, bone: np.ndarray, abdominal: np.ndarray, spacing) -> np.ndarray:
    """Fat within RETROPERITONEAL_REACH_MM of the vertebra, not posterior to its centre, on abdominal slices."""
    out = np.zeros(fat.shape, bool)
    rows = np.arange(fat.shape[1])[:, None]
    for k in np.flatnonzero(abdominal & bone.any(axis=(1, 2))):
        distance = ndi.distance_transform_edt(~bone[k], sampling=spacing[1:])
        centre_row = np.argwhere(bone[k])[:, 0].mean()
        out[k] = fat[k] & (distance <= RETROPERITONEAL_REACH_MM) & (rows <= centre_row)
    return out


def _body_wall(smooth: np.ndarray, body: np.ndarray, inner: np.ndarray, spacing) -> np.ndarray:
    from skimage.morphology import convex_hull_image

    outside = ~body
    if not outside.any():
        return np.zeros(body.shape, bool)
    depth = ndi.distance_transform_edt(body, sampling=spacing)
    tissue = body & ~inner & (smooth >= WALL_HU_RANGE[0]) & (smooth <= WALL_HU_RANGE[1]) & (depth <= WALL_DEPTH_MM)
    out = np.zeros(body.shape, bool)
    border = np.ones(body.shape[1:], bool)
    border[1:-1, 1:-1] = False
    for k in np.flatnonzero(tissue.any(axis=(1, 2))):
        if inner[k].sum() >= 10 and body[k][border].mean() < MAX_BORDER_BODY_FRACTION:
            out[k] = tissue[k] & ~convex_hull_image(inner[k])
    return out


def _ball(spacing, radius_mm: float) -> np.ndarray:
    half = [max(int(np.floor(radius_mm / s)), 0) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2


def _dilate_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    if not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm
