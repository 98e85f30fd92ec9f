"""Lung masses (lesions over 30 mm): candidate search, segmentation of the whole lesion, and the rule that accepts it.

A lung lesion over 3 cm is a *mass*, not a nodule (Fleischner Society glossary: Hansell DM et al., "Fleischner
Society: glossary of terms for thoracic imaging", Radiology 246(3):697-722, 2008, doi:10.1148/radiol.2462070712;
MacMahon H et al., Radiology 284(1):228-243, 2017, doi:10.1148/radiol.2017161659). The nodule stages are tuned for
3-30 mm lesions: their VOIs are too small and their detectors see a big tumour as several "nodules". This module
is classical (no learning):

1. :func:`find_mass_seeds`: on a coarse grid, the deepest points of dense tissue (> ``soft_tissue_min_hu``) whose
   depth (distance to the nearest non-dense voxel) is that of a mass's core and which aerated lung surrounds:
   vessels, bronchial walls, fissures and the pleura are too thin, the liver, the heart and the mediastinum are
   too deep or not surrounded by lung.
2. :func:`segment_mass`: from a seed (or a nodule detector's candidate), rays cast from the lesion's core
   (:func:`ray_lengths_mm`) meet aerated lung at the lesion's edge; where a ray meets none (or only much farther
   than the typical ray) the lesion touches the mediastinum or the chest wall, and it is cut there at the typical
   radius (the ray-casting idea of juxta-pleural nodule segmentation, e.g. Kuhnigk et al., IEEE TMI
   25(4):417-434, 2006, doi:10.1109/TMI.2006.871547, at tumour scale). The dense tissue inside that star-shaped
   region, opened with a small ball to detach vessels and spicules (Kostis et al., IEEE TMI 22(10):1259-1274,
   2003, doi:10.1109/TMI.2003.817785) and restored by a geodesic dilation, is the mass.
3. The rule (:meth:`MassShape.is_mass`): equivalent diameter and axial long axis over ``min_diameter_mm``, a thick
   core, compact (solidity,
   elongation: not a vessel tree, not the diaphragm's dome) and mostly surrounded by one lung (fraction of rays
   meeting aerated lung, and of those the fraction meeting the same lung: not the heart, the mediastinum or
   the liver).

No learned model is involved: the FP-reduction classifier and the DenseSharp grader were trained on nodules and
neither scores nor grades masses.

All distances are in mm with the volume's anisotropic spacing (Euclidean distance transforms with sampling);
arrays are (Z, Y, X) = (k, j, i) on the pipeline's LPS-ordered work grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.findings import FindingMask, equivalent_diameter_mm
from lunglesionai.core.volume import Volume
from lunglesionai.stages.lung_mask import block_factors
from lunglesionai.stages.measurements import axial_axes_mm
from lunglesionai.stages.segmentation import dilate_mm

__all__ = ["MassConfig", "MassShape", "find_mass_seeds", "lung_fraction", "mass_shape", "ray_lengths_mm",
           "segment_mass", "segment_mass_with_shape"]

logger = logging.getLogger(__name__)

#: HU below which a voxel next to a mass counts as aerated lung (for :attr:`MassShape.lung_contact`).
AERATED_LUNG_MAX_HU = -500.0
#: Direction grid of the rays: polar-angle and azimuth bins (10° each).
_N_POLAR, _N_AZIMUTH = 18, 36


@dataclass(frozen=True)
class MassConfig:
    """Parameters of the mass stage (HU, mm).

    Args:
        min_diameter_mm: a lesion whose equivalent diameter and axial long axis are both over this is a mass
            (Fleischner: 30 mm; the long axis keeps a hilar vessel smeared over thick slices out).
        soft_tissue_min_hu: voxels above this are dense tissue (solid tumour, vessels, chest wall).
        voi_half_mm: the segmentation VOI extends this far from the seed along each axis (an 11 cm VOI); rays
            stop here.
        vessel_opening_mm: radius of the opening that detaches vessels and spicules from the mass (restored by a
            geodesic dilation of the same radius inside the dense tissue).
        max_ray_ratio: a ray meeting lung only farther than this many times the median ray length has left the
            lesion (through the mediastinum or the chest wall) and is cut at the median length.
        star_margin_mm: the star-shaped region extends this far beyond where the rays meet lung.
        working_spacing_mm: voxel size of the coarse grid of the seed search.
        min_seed_depth_mm, max_seed_depth_mm: a seed's depth (distance to the nearest non-dense voxel) lies in
            this range: thinner is a vessel or the pleura, deeper is the heart or the liver.
        seed_lung_margin_mm: a seed's nearest aerated lung is at most its depth + this.
        min_core_radius_mm: the largest ball inside the mask has at least this radius (a mass over 30 mm has a
            thick core; a hilar vessel or a bronchial wall smeared over thick slices does not).
        min_solidity: mask volume / convex hull volume at least this (a vessel tree is far below).
        max_elongation: square root of the largest / smallest principal moment at most this (vessels, the
            diaphragm's dome and pleural thickening are elongated or flat).
        min_lung_contact: at least this (solid-angle weighted) fraction of the rays from the lesion's core meet
            aerated lung (a mass lies in the lung; the heart, the mediastinum and the liver do not).
        min_one_lung: at least this fraction of the rays meeting lung meet the same lung (the mediastinum, between
            both lungs, does not pass).

    Raises:
        ValueError: a size is not positive, a fraction is outside (0, 1], or a ratio below 1.
    """

    min_diameter_mm: float = 30.0
    soft_tissue_min_hu: float = -300.0
    voi_half_mm: float = 55.0
    vessel_opening_mm: float = 3.0
    max_ray_ratio: float = 1.6
    star_margin_mm: float = 3.0
    working_spacing_mm: float = 3.0
    min_seed_depth_mm: float = 9.0
    max_seed_depth_mm: float = 40.0
    seed_lung_margin_mm: float = 6.0
    min_core_radius_mm: float = 11.0
    min_solidity: float = 0.6
    max_elongation: float = 2.5
    min_lung_contact: float = 0.6
    min_one_lung: float = 0.85

    def __post_init__(self) -> None:
        for name in ("min_diameter_mm", "voi_half_mm", "vessel_opening_mm", "working_spacing_mm",
                     "min_seed_depth_mm", "max_seed_depth_mm", "min_core_radius_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MassConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("star_margin_mm", "seed_lung_margin_mm"):
            if getattr(self, name) < 0:
                raise ValueError(f"MassConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_solidity", "min_lung_contact", "min_one_lung"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"MassConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("max_elongation", "max_ray_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"MassConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_seed_depth_mm > self.max_seed_depth_mm:
            raise ValueError(f"min_seed_depth_mm {self.min_seed_depth_mm} > max_seed_depth_mm {self.max_seed_depth_mm}")


@dataclass(frozen=True)
class MassShape:
    """What the mass rule measures on a candidate mask.

    Args:
        diameter_mm: equivalent-sphere diameter (mm).
        long_axis_mm: longest axial diameter (mm, :func:`lunglesionai.stages.measurements.axial_axes_mm`).
        core_radius_mm: radius of the largest ball inside the mask (mm; Euclidean distance transform).
        solidity: mask volume / volume of its convex hull, in (0, 1].
        elongation: sqrt(largest / smallest principal second moment), >= 1 (1: a sphere).
        lung_contact: solid-angle weighted fraction of the rays from the lesion's core that meet aerated lung
            (:func:`ray_lengths_mm`), in [0, 1]; NaN when not measured.
        one_lung: fraction of those rays that meet the same lung (the lung mask's label met most), in [0, 1]; NaN
            when not measured. A lung mass lies in one lung; the mediastinum lies between both.
    """

    diameter_mm: float
    long_axis_mm: float
    core_radius_mm: float
    solidity: float
    elongation: float
    lung_contact: float = float("nan")
    one_lung: float = float("nan")

    def is_mass(self, config: MassConfig) -> bool:
        """True when the shape passes the mass rule of ``config`` (size, solidity, elongation, lung contact)."""
        return bool(self.diameter_mm > config.min_diameter_mm and self.long_axis_mm > config.min_diameter_mm
                    and self.core_radius_mm >= config.min_core_radius_mm
                    and self.solidity >= config.min_solidity
                    and self.elongation <= config.max_elongation and self.lung_contact >= config.min_lung_contact
                    and self.one_lung >= config.min_one_lung)


def find_mass_seeds(volume: Volume, lung_mask: np.ndarray,
                    config: MassConfig = MassConfig()) -> list[tuple[float, float, float]]:
    """Seeds of possible masses: the deepest points of dense tissue, of a mass's depth, that border the lung.

    On a coarse grid (``working_spacing_mm``), the depth of every dense voxel (> ``soft_tissue_min_hu``) is its
    distance to the nearest non-dense voxel; a seed is a local maximum of the depth between ``min_seed_depth_mm``
    and ``max_seed_depth_mm`` whose nearest aerated lung is no farther than its depth + ``seed_lung_margin_mm``
    and from which at least ``min_lung_contact`` of the rays meet aerated lung (:func:`ray_lengths_mm`). Vessels,
    bronchial walls, fissures and the pleura are too thin; the liver, the muscles and the abdomen do not border
    the lung; the heart and the mediastinum are mostly not surrounded by it.

    Args:
        volume: CT in HU, (Z, Y, X), LPS-ordered.
        lung_mask: (Z, Y, X) array, nonzero in the lungs.
        config: see :class:`MassConfig`.

    Returns:
        (k, j, i) array indices on ``volume``'s grid, deepest first. Not every seed is a mass:
        :func:`segment_mass` decides.

    Raises:
        ValueError: ``lung_mask``'s shape differs from the volume's.
    """
    _check_mask(volume, lung_mask)
    factors = block_factors(volume.spacing_mm, config.working_spacing_mm)
    spacing = np.array([volume.spacing_mm[2 - a] * factors[a] for a in range(3)])
    box = _search_box(lung_mask, factors, spacing, config)
    if box is None:
        return []
    offset = np.array([sl.start // f for sl, f in zip(box, factors)])
    hu = _block_mean(np.asarray(volume.hu[box], dtype=np.float32), factors)
    aerated = _block_any(np.asarray(lung_mask[box]) > 0, factors) & (hu < AERATED_LUNG_MAX_HU)
    if not aerated.any():
        return []
    dense = hu > config.soft_tissue_min_hu
    depth = ndi.distance_transform_edt(dense, sampling=spacing)
    to_lung = ndi.distance_transform_edt(~aerated, sampling=spacing)
    size = tuple(max(3, 2 * int(config.min_seed_depth_mm / s) + 1) for s in spacing)
    peaks = (depth == ndi.maximum_filter(depth, size=size)) & (depth >= config.min_seed_depth_mm)
    peaks &= (depth <= config.max_seed_depth_mm) & (to_lung <= depth + config.seed_lung_margin_mm)
    seeds, kept = [], []
    for kji in sorted(np.argwhere(peaks), key=lambda p: -depth[tuple(p)]):
        if any(np.linalg.norm((kji - k) * spacing) <= depth[tuple(k)] for k in kept):
            continue  # the same lesion's core
        kept.append(kji)
        lengths = ray_lengths_mm(aerated, kji.astype(float), spacing, 2.0 * config.max_seed_depth_mm)
        if lung_fraction(lengths) >= config.min_lung_contact:
            seeds.append(tuple(float(p * f + (f - 1) / 2) for p, f in zip(kji + offset, factors)))
    logger.debug("mass search: %d depth peaks, %d seeds", int(peaks.sum()), len(seeds))
    return seeds


def _search_box(lung_mask: np.ndarray, factors: tuple[int, int, int], spacing_zyx: np.ndarray,
                config: MassConfig) -> Optional[tuple[slice, slice, slice]]:
    """The part of the volume the seed search needs, aligned to the coarse blocks: the lungs' box grown by twice the
    deepest seed depth plus the lung margin and the peak window (a seed lies within its depth + margin of aerated lung,
    its depth reaches at most ``max_seed_depth_mm`` farther, and its local-maximum window ``min_seed_depth_mm``
    beyond), so depths, peaks and rays inside it are those of the whole volume; None without lung. On a whole-body CT
    the distance maps then cover the chest instead of the scan."""
    found = ndi.find_objects((np.asarray(lung_mask) > 0).astype(np.uint8))
    if not found:
        return None
    reach_mm = 2.0 * config.max_seed_depth_mm + config.seed_lung_margin_mm + config.min_seed_depth_mm
    box = []
    for sl, f, s, n in zip(found[0], factors, spacing_zyx, lung_mask.shape):
        pad = (int(np.ceil(reach_mm / s)) + 1) * f
        start = max(0, (sl.start - pad) // f * f)
        box.append(slice(start, min(n, sl.stop + pad)))
    return tuple(box)


def ray_lengths_mm(target: np.ndarray, centre_kji: np.ndarray, spacing_zyx: np.ndarray, max_mm: float,
                   n_polar: int = _N_POLAR, n_azimuth: int = _N_AZIMUTH) -> np.ndarray:
    """Distance from a point to the first ``target`` voxel along rays on a polar/azimuth grid of directions.

    Args:
        target: (Z, Y, X) array, nonzero where a ray stops (e.g. aerated lung).
        centre_kji: (k, j, i) fractional index of the rays' origin.
        spacing_zyx: voxel size (z, y, x) in mm.
        max_mm: rays stop here.
        n_polar, n_azimuth: the direction grid: polar angle from the z axis in ``n_polar`` bins over [0, π],
            azimuth in ``n_azimuth`` bins over [0, 2π), each ray through its bin's centre.

    Returns:
        (n_polar, n_azimuth) float array of mm; ``inf`` where the ray meets no target voxel within ``max_mm``
        or leaves the array first.
    """
    return _cast_rays(target, centre_kji, spacing_zyx, max_mm, n_polar, n_azimuth)[0]


def _cast_rays(target: np.ndarray, centre_kji: np.ndarray, spacing_zyx: np.ndarray, max_mm: float,
               n_polar: int = _N_POLAR, n_azimuth: int = _N_AZIMUTH) -> tuple[np.ndarray, np.ndarray]:
    """(lengths as :func:`ray_lengths_mm`, the ``target`` value each ray met (0: none))."""
    directions = _directions(n_polar, n_azimuth)  # (P, A, 3) unit vectors in (z, y, x) mm
    step = 0.5 * float(np.min(spacing_zyx))
    t = np.arange(step, max_mm + step, step)
    points = centre_kji + directions[..., None, :] * t[:, None] / spacing_zyx  # (P, A, T, 3) indices
    index = np.round(points).astype(int)
    inside = np.all((index >= 0) & (index < target.shape), axis=-1)
    clipped = np.clip(index, 0, np.array(target.shape) - 1)
    values = target[clipped[..., 0], clipped[..., 1], clipped[..., 2]]
    hit = (values != 0) & inside & ~(np.cumsum(~inside, axis=-1) > 0)
    first = np.argmax(hit, axis=-1)
    met = hit.any(axis=-1)
    labels = np.take_along_axis(values, first[..., None], axis=-1)[..., 0]
    return np.where(met, t[first], np.inf), np.where(met, labels, 0)


def segment_mass(
    volume: Volume,
    center_kji: tuple[float, float, float],
    lung_mask: np.ndarray,
    config: MassConfig = MassConfig(),
) -> FindingMask | None:
    """The whole lung mass at ``center_kji``, or None when the dense tissue there is not a mass.

    1. The seed moves to the deepest dense voxel near it (the lesion's core).
    2. Rays from the core (:func:`ray_lengths_mm`) meet aerated lung at the lesion's edge; rays that meet none
       within the VOI, or only much farther than the typical (median) length, leave the lesion through the
       chest wall or the mediastinum and get the typical length: the lesion is cut there (a hilar tumour
       touching the mediastinum, a tumour at the pleura). The fraction of rays that meet lung is the mass's
       lung contact.
    3. The dense voxels (> ``soft_tissue_min_hu``) inside that star-shaped region, opened with a ball of
       ``vessel_opening_mm`` (vessels and spicules detach), the component at the core, restored by a geodesic
       dilation of the same radius.
    4. Accepted when :meth:`MassShape.is_mass` (diameter over ``min_diameter_mm``, compact, mostly in the lung).

    Args:
        volume: CT in HU, (Z, Y, X), LPS-ordered (the work grid of the pipeline).
        center_kji: (k, j, i) fractional array index of a point in the lesion (a detector's centre or a seed of
            :func:`find_mass_seeds`).
        lung_mask: (Z, Y, X) array, nonzero in the lungs.
        config: see :class:`MassConfig`.

    Returns:
        A :class:`~lunglesionai.core.findings.FindingMask` on ``volume``'s grid, or None (no dense tissue at the
        seed, too small, not compact, or not mostly surrounded by lung).

    Raises:
        ValueError: ``center_kji`` is not 3 numbers inside the volume, or ``lung_mask``'s shape differs from the
            volume's.

    Example:
        >>> mask = segment_mass(volume, (60.0, 70.0, 90.0), segment_lungs(volume))   # doctest: +SKIP
    """
    result = segment_mass_with_shape(volume, center_kji, lung_mask, config)
    return None if result is None else result[0]


def segment_mass_with_shape(volume: Volume, center_kji, lung_mask: np.ndarray,
                            config: MassConfig = MassConfig()) -> tuple[FindingMask, MassShape] | None:
    """:func:`segment_mass` with the :class:`MassShape` the rule accepted (same arguments, errors and None)."""
    centre = np.asarray(center_kji, dtype=float).reshape(-1)
    if centre.size != 3 or np.any(centre < -0.5) or np.any(centre > np.asarray(volume.shape_zyx) - 0.5):
        raise ValueError(f"center_kji {tuple(center_kji)} is not inside the volume of shape {volume.shape_zyx}")
    _check_mask(volume, lung_mask)
    spacing = np.array(volume.spacing_mm[::-1], dtype=float)
    half = np.ceil(config.voi_half_mm / spacing).astype(int)
    seed = np.round(centre).astype(int)
    lo, hi = np.maximum(seed - half, 0), np.minimum(seed + half + 1, volume.shape_zyx)
    voi = tuple(slice(a, b) for a, b in zip(lo, hi))
    hu = np.asarray(volume.hu[voi], dtype=np.float32)
    dense = hu > config.soft_tissue_min_hu
    aerated = np.where(hu < AERATED_LUNG_MAX_HU, np.asarray(lung_mask[voi]), 0)
    depth = ndi.distance_transform_edt(dense, sampling=spacing)
    core = seed - lo
    for _ in range(2):  # climb to the deepest dense voxel nearby (the lesion's core)
        near = _ball_around(dense.shape, core, max(config.vessel_opening_mm, float(depth[tuple(core)])), spacing)
        core = np.unravel_index(int(np.argmax(np.where(near, depth, -1.0))), dense.shape)
        core = np.asarray(core)
    if depth[tuple(core)] < config.vessel_opening_mm:
        return None
    lengths, lung_labels = _cast_rays(aerated, core.astype(float), spacing, config.voi_half_mm)
    contact, star, one_lung = _star_region(lengths, lung_labels, core, dense.shape, spacing, config)
    component = _seed_component(dense & star, core, config.vessel_opening_mm, spacing)
    if component is None:
        return None
    mask = FindingMask.cropped(component, tuple(int(v) for v in lo))
    shape = replace(mass_shape(volume, mask), lung_contact=contact, one_lung=one_lung)
    if not shape.is_mass(config):
        logger.debug("not a mass at %s: %s", tuple(seed), shape)
        return None
    return mask, shape


def _star_region(lengths: np.ndarray, lung_labels: np.ndarray, core: np.ndarray, shape: tuple[int, ...],
                 spacing: np.ndarray, config: MassConfig) -> tuple[float, np.ndarray, float]:
    """(fraction of rays meeting lung, the star-shaped region bounded by the rays' lengths + a margin, fraction of
    those rays meeting the most frequent lung label)."""
    finite = np.isfinite(lengths)
    if not finite.any():
        return 0.0, np.zeros(shape, bool), 0.0
    typical = float(np.median(lengths[finite]))
    blocked = ~finite | (lengths > config.max_ray_ratio * typical)
    met = lung_labels[~blocked]
    one_lung = float(np.bincount(met).max() / met.size) if met.size else 0.0
    bounded = np.where(blocked, typical, lengths) + config.star_margin_mm
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dz, dy, dx = ((g - c) * s for g, c, s in zip(grids, core, spacing))
    radius = np.sqrt(dz**2 + dy**2 + dx**2)
    n_polar, n_azimuth = lengths.shape
    polar = np.arccos(np.clip(dz / np.maximum(radius, 1e-6), -1, 1))
    azimuth = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    p_bin = np.minimum((polar / np.pi * n_polar).astype(int), n_polar - 1)
    a_bin = np.minimum((azimuth / (2 * np.pi) * n_azimuth).astype(int), n_azimuth - 1)
    return lung_fraction(np.where(blocked, np.inf, lengths)), radius <= bounded[p_bin, a_bin], one_lung


def _directions(n_polar: int, n_azimuth: int) -> np.ndarray:
    """(n_polar, n_azimuth, 3) unit vectors (z, y, x) through the centres of the polar/azimuth bins."""
    polar = (np.arange(n_polar) + 0.5) * np.pi / n_polar
    azimuth = (np.arange(n_azimuth) + 0.5) * 2 * np.pi / n_azimuth
    p, a = np.meshgrid(polar, azimuth, indexing="ij")
    return np.stack([np.cos(p), np.sin(p) * np.sin(a), np.sin(p) * np.cos(a)], axis=-1)


def mass_shape(volume: Volume, mask: FindingMask) -> MassShape:
    """Size and compactness of a mask (its lung contact is left NaN: :func:`segment_mass` measures it by rays).

    Args:
        volume: CT whose grid the mask is on (its spacing is used).
        mask: boolean crop + (k, j, i) offset.

    Returns:
        :class:`MassShape` (mm, fractions).

    Raises:
        ValueError: the mask is empty.
    """
    from scipy.spatial import ConvexHull, QhullError

    array = np.asarray(mask.array, dtype=bool)
    if not array.any():
        raise ValueError("mask is empty")
    spacing = np.array(volume.spacing_mm[::-1], dtype=float)
    volume_mm3 = float(np.count_nonzero(array) * np.prod(spacing))
    # the hull of the voxels' corners, so that a one-voxel-thick layer still has a volume
    surface = np.argwhere(array & ~ndi.binary_erosion(array))
    corners = (surface[:, None, :] + (np.indices((2, 2, 2)).reshape(3, -1).T - 0.5)).reshape(-1, 3) * spacing
    try:
        solidity = min(1.0, volume_mm3 / ConvexHull(corners).volume)
    except (QhullError, ValueError):
        solidity = 0.0
    coords = np.argwhere(array) * spacing
    moments = np.linalg.eigvalsh(np.cov(coords.T)) if len(coords) > 3 else np.zeros(3)
    elongation = float(np.sqrt(moments[-1] / moments[0])) if moments[0] > 0 else float("inf")
    long_axis_mm, _ = axial_axes_mm(array, volume.spacing_mm[:2])
    core_radius = float(ndi.distance_transform_edt(np.pad(array, 1), sampling=spacing).max())
    return MassShape(equivalent_diameter_mm(volume_mm3), float(long_axis_mm), core_radius,
                     float(solidity), elongation)


def lung_fraction(lengths: np.ndarray) -> float:
    """Solid-angle weighted fraction of finite ray lengths on the polar/azimuth grid of :func:`ray_lengths_mm`."""
    n_polar = lengths.shape[0]
    weights = np.sin((np.arange(n_polar) + 0.5) * np.pi / n_polar)[:, None] * np.ones_like(lengths)
    return float(np.sum(weights * np.isfinite(lengths)) / np.sum(weights))


def _seed_component(dense: np.ndarray, seed: np.ndarray, opening_mm: float,
                    spacing: np.ndarray) -> np.ndarray | None:
    """The opened dense component nearest the seed (within the opening radius), restored by a geodesic dilation
    of the opening radius inside ``dense``; None when there is none."""
    depth = ndi.distance_transform_edt(dense, sampling=spacing)
    opened = dilate_mm(depth > opening_mm, opening_mm, spacing) & dense
    labels, n = ndi.label(opened)
    if n == 0:
        return None
    near = _ball_around(dense.shape, seed, 2.0 * opening_mm, spacing)
    hits = np.bincount(labels[near & opened], minlength=n + 1)[1:]
    if hits.size == 0 or hits.max() == 0:
        return None
    component = labels == int(np.argmax(hits)) + 1
    restored = dilate_mm(component, opening_mm, spacing) & dense
    labels, _ = ndi.label(restored)
    return labels == labels[tuple(np.argwhere(component)[0])]


def _ball_around(shape: tuple[int, ...], centre: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= radius_mm**2


def _check_mask(volume: Volume, mask: np.ndarray) -> None:
    if np.shape(mask) != volume.shape_zyx:
        raise ValueError(f"mask shape {np.shape(mask)} differs from the volume's {volume.shape_zyx}")


def _block_mean(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    from skimage.measure import block_reduce

    return block_reduce(array, factors, np.mean, cval=float(np.min(array)) if array.size else 0.0)


def _block_any(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    from skimage.measure import block_reduce

    return block_reduce(array, factors, np.max, cval=0) > 0
