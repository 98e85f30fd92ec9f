"""Classical 3-D segmentation of one lung nodule around a seed point.

The method follows the morphological approach of Kostis, Reeves, Yankelevitz & Henschke, "Three-dimensional
segmentation and growth-rate estimation of small pulmonary nodules in helical CT images", IEEE TMI
22(10):1259-1274, 2003 (doi:10.1109/TMI.2003.817785), with the adaptive threshold and the lung-mask based
pleura separation in the spirit of Kuhnigk et al., "Morphological segmentation and partial volume analysis for
volumetry of solid pulmonary lesions in thoracic CT scans", IEEE TMI 25(4):417-434, 2006
(doi:10.1109/TMI.2006.871547):

1. A volume of interest (VOI) around the seed, sized from the expected radius.
2. Adaptive threshold a quarter of the way (``threshold_fraction``) from the lung parenchyma (median of the VOI's
   low-density voxels) to the nodule core (upper quartile of a small sphere at the seed), clamped to a HU range;
   so solid nodules are cut near −630 HU and ground-glass nodules near −790 HU (the fraction is tuned for
   the Dice against the LIDC-IDRI consensus masks of the training split).
3. Pleura separation: the thresholded region is restricted to the VOI's local lung hull, a morphological
   closing of the parenchyma with a ball larger than the nodule (the chest wall, too thick for the ball, stays
   outside; a juxta-pleural nodule, a bump the ball cannot enter, comes inside; the rolling-ball idea of
   Armato et al., Med Phys 26(8):1405-1409, 1999), and to the slightly dilated lung mask when one is given.
4. Region growing: the connected component holding the seed.
5. Vessel detachment (Kostis et al.): a morphological opening with a ball whose radius (mm) grows with the
   nodule size, the component holding the seed, then a geodesic dilation by the same ball inside the
   thresholded region to restore the surface detail the opening removed without re-attaching vessels. When
   the result still reaches the VOI's inner faces (attached to a large structure), the opening radius is
   increased (up to ``max_opening_mm``); if it still does, the whole procedure is retried with twice the
   expected radius (up to ``max_retry_radius_mm``: the seed may sit on the surface of a larger nodule than
   expected), and failing that there is no plausible nodule.

6. Touching structures (only with ``separate_touching``): a nodule abutting a vessel or structure thicker than the
   largest opening ball cannot be opened off it. The thresholded region is then split at the watershed lines of
   its distance map (each thick part is its own maximum of the distance to the background; maxima shallower than
   ``watershed_h_mm`` merged, so a vessel's plateau does not split), and step 5 is repeated inside the basin that
   holds the seed (the classical distance-transform watershed split of touching objects, Vincent & Soille, IEEE
   TPAMI 13(6):583-598, 1991).

All distances are in mm with the volume's anisotropic spacing (Euclidean distance transforms with sampling).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume

__all__ = ["NoduleSegmentationConfig", "segment_nodule", "ball_mask", "dilate_mm", "voi_levels"]

logger = logging.getLogger(__name__)

#: An inseparable result is retried with a larger radius only when the structure at the seed is this many times
#: thicker (inscribed-ball radius) than the expected radius; vessels are not.
_RETRY_THICKNESS_RATIO = 1.5


@dataclass(frozen=True)
class NoduleSegmentationConfig:
    """Parameters of :func:`segment_nodule` (HU, mm).

    Args:
        voi_radius_factor: the VOI extends this many expected radii from the seed along each axis ...
        voi_min_half_mm: ... and at least this far.
        core_radius_fraction: the nodule's HU is taken in a sphere of this fraction of the radius (at least one
            voxel) around the seed.
        parenchyma_max_hu: VOI voxels below this are lung parenchyma (for the background level).
        threshold_fraction: threshold = background + fraction × (core − background).
        threshold_range_hu: (min, max) clamp of the threshold.
        min_contrast_hu: core − background below this: nothing to segment (returns None).
        opening_fraction: opening-ball radius = fraction × expected radius ...
        min_opening_mm, max_opening_mm: ... clamped to this range; the retry radii grow up to the max.
        lung_margin_mm: the lung mask is dilated by this much before it bounds the nodule.
        hull_radius_factor: radius of the local lung hull's closing ball in expected radii ...
        hull_min_mm: ... and at least this (mm); 0 factor disables the hull.
        min_volume_mm3: smaller results are not plausible nodules (None).
        max_retry_radius_mm: when the nodule cannot be separated from a large structure, the segmentation is
            retried with twice the expected radius (larger VOI, hull and opening) up to this radius.
        separate_touching: when the opening cannot separate the nodule, split the thresholded region at the
            watershed lines of its distance map and detach again inside the seed's basin (step 6; off by default,
            on in :mod:`lunglesionai.stages.paired_volumetry`).
        watershed_h_mm: distance-map maxima shallower than this (mm) are merged before the split.

    Raises:
        ValueError: a size is not positive, a fraction is outside (0, 1), or a range is reversed.
    """

    voi_radius_factor: float = 2.5
    voi_min_half_mm: float = 12.0
    core_radius_fraction: float = 0.5
    parenchyma_max_hu: float = -500.0
    threshold_fraction: float = 0.25
    threshold_range_hu: tuple[float, float] = (-850.0, -300.0)
    min_contrast_hu: float = 100.0
    opening_fraction: float = 0.25
    min_opening_mm: float = 0.8
    max_opening_mm: float = 4.0
    lung_margin_mm: float = 2.0
    hull_radius_factor: float = 1.5
    hull_min_mm: float = 5.0
    min_volume_mm3: float = 4.0
    max_retry_radius_mm: float = 16.0
    separate_touching: bool = False
    watershed_h_mm: float = 0.7

    def __post_init__(self) -> None:
        for name in ("voi_radius_factor", "voi_min_half_mm", "min_opening_mm", "max_opening_mm", "min_volume_mm3",
                     "max_retry_radius_mm", "watershed_h_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NoduleSegmentationConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("core_radius_fraction", "threshold_fraction", "opening_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"NoduleSegmentationConfig.{name} must be in (0, 1), got {getattr(self, name)}")
        if not self.threshold_range_hu[0] < self.threshold_range_hu[1]:
            raise ValueError(f"threshold_range_hu must be (min, max), got {self.threshold_range_hu}")
        if not self.min_opening_mm <= self.max_opening_mm:
            raise ValueError(f"min_opening_mm {self.min_opening_mm} > max_opening_mm {self.max_opening_mm}")
        for name in ("lung_margin_mm", "min_contrast_hu", "hull_radius_factor", "hull_min_mm"):
            if getattr(self, name) < 0:
                raise ValueError(f"NoduleSegmentationConfig.{name} must be >= 0, got {getattr(self, name)}")


def segment_nodule(
    volume: Volume,
    center_kji: tuple[float, float, float],
    radius_mm: float,
    lung_mask: np.ndarray | None = None,
    config: NoduleSegmentationConfig = NoduleSegmentationConfig(),
    *,
    threshold_hu: float | None = None,
) -> FindingMask | None:
    """Segment the nodule at ``center_kji``.

    Args:
        volume: CT in HU.
        center_kji: (k, j, i) fractional array index of a point inside the nodule (e.g. a detector's centre).
        radius_mm: expected radius in mm (sizes the VOI and the vessel-detaching opening).
        lung_mask: optional (Z, Y, X) array, nonzero in the lungs; bounds the nodule (pleura separation).
        config: see :class:`NoduleSegmentationConfig`.
        threshold_hu: a fixed threshold (HU) instead of the adaptive one (step 2), e.g. one threshold for the same
            nodule on a prior and a current scan (:mod:`lunglesionai.stages.paired_volumetry`); not clamped.

    Returns:
        A :class:`~lunglesionai.core.findings.FindingMask` on ``volume``'s grid (tight boolean crop + its (k, j, i)
        offset), or None when there is no plausible nodule (too little contrast, nothing above the threshold
        near the seed, too small, or inseparable from a large structure).

    Raises:
        ValueError: ``center_kji`` is not 3 numbers inside the volume, ``radius_mm`` is not positive, or
            ``lung_mask``'s shape differs from the volume's.

    Example:
        >>> mask = segment_nodule(volume, (40.0, 64.0, 64.0), 5.0)   # doctest: +SKIP
        >>> mask.voxel_count * volume.voxel_volume_mm3                  # doctest: +SKIP
    """
    centre = _validate(volume, center_kji, radius_mm, lung_mask)
    radius = float(radius_mm)
    while True:
        mask, thickness_mm = _segment_once(volume, centre, radius, lung_mask, config, threshold_hu)
        if mask is not None or thickness_mm <= _RETRY_THICKNESS_RATIO * radius or radius >= config.max_retry_radius_mm:
            return mask
        # inseparable, and the structure at the seed is much thicker than expected: the radius was underestimated
        # (a detector peak on the surface of a large nodule); retry with a larger VOI, hull and opening
        radius = min(max(2.0 * radius, thickness_mm), config.max_retry_radius_mm)


def _segment_once(
    volume: Volume,
    centre: np.ndarray,
    radius_mm: float,
    lung_mask: np.ndarray | None,
    config: NoduleSegmentationConfig,
    threshold_hu: float | None = None,
) -> tuple[FindingMask | None, float]:
    """One attempt at the given expected radius: (mask or None, thickness in mm of the structure at the seed
    when it could not be separated, else 0)."""
    spacing = np.asarray(volume.spacing_mm[::-1])  # (z, y, x)
    seed_idx, lo, hi, hu, core = _voi(volume, centre, radius_mm, config)
    voi = tuple(slice(a, b) for a, b in zip(lo, hi))
    threshold = _adaptive_threshold(hu, core, config) if threshold_hu is None else float(threshold_hu)
    if threshold is None:
        return None, 0.0
    region = hu >= threshold
    if config.hull_radius_factor > 0:
        hull_mm = max(config.hull_radius_factor * radius_mm, config.hull_min_mm)
        region &= _close_mm(hu < config.parenchyma_max_hu, hull_mm, spacing) | core
    if lung_mask is not None:
        region &= dilate_mm(np.asarray(lung_mask[voi]) > 0, config.lung_margin_mm, spacing)
    inner_faces = _inner_faces(lo, hi, volume.shape_zyx)
    nodule, inseparable = _detach(region, tuple(seed_idx - lo), core, radius_mm, spacing, inner_faces, config)
    if nodule is None or nodule.sum() * volume.voxel_volume_mm3 < config.min_volume_mm3:
        return None, _thickness_near(region, core, spacing) if inseparable else 0.0
    return FindingMask.cropped(nodule, lo), 0.0


def ball_mask(
    volume: Volume,
    center_kji: tuple[float, float, float],
    radius_mm: float,
    lung_mask: np.ndarray | None = None,
    config: NoduleSegmentationConfig = NoduleSegmentationConfig(),
) -> FindingMask | None:
    """The voxels of the ball of ``radius_mm`` around ``center_kji`` that are denser than lung parenchyma.

    The pipeline's mask for a learned detection that :func:`segment_nodule` cannot isolate (a nodule touching a
    vessel or the pleura so broadly that no opening separates it): the detector's own extent stands in for an
    outline, and the reader edits it in Slicer.

    Args:
        volume: CT in HU.
        center_kji: (k, j, i) fractional array index of the centre.
        radius_mm: ball radius in mm (the detector's box half-size).
        lung_mask: optional (Z, Y, X) lung mask; when given the ball is kept inside it, dilated by
            ``config.lung_margin_mm``.
        config: ``parenchyma_max_hu`` (voxels at or below it are left out) and ``lung_margin_mm``.

    Returns:
        A :class:`~lunglesionai.core.findings.FindingMask` on ``volume``'s grid, or None when no voxel is left.

    Raises:
        ValueError: as :func:`segment_nodule`.
    """
    centre = _validate(volume, center_kji, radius_mm, lung_mask)
    spacing = np.asarray(volume.spacing_mm[::-1])
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    seed = np.round(centre).astype(int)
    lo = np.maximum(seed - half, 0)
    hi = np.minimum(seed + half + 1, volume.shape_zyx)
    voi = tuple(slice(a, b) for a, b in zip(lo, hi))
    dense = np.asarray(volume.hu[voi]) > config.parenchyma_max_hu
    ball = _ball(tuple(hi - lo), centre - lo, radius_mm, spacing) & dense
    if lung_mask is not None:
        ball &= dilate_mm(np.asarray(lung_mask[voi]) > 0, config.lung_margin_mm, spacing)
    if not ball.any():
        return None
    return FindingMask.cropped(ball, lo)


def _thickness_near(region: np.ndarray, core: np.ndarray, spacing: np.ndarray) -> float:
    """Largest inscribed-ball radius (mm) of ``region`` centred in the core sphere: a vessel's radius, or a
    large nodule's (when the seed sits on its surface, the core still reaches into it)."""
    inside = region & ndi.binary_dilation(core, iterations=2)
    if not inside.any():
        return 0.0
    return float(ndi.distance_transform_edt(region, sampling=spacing)[inside].max())


def _validate(
    volume: Volume, center_kji: tuple[float, float, float], radius_mm: float, lung_mask: np.ndarray | None
) -> np.ndarray:
    """Checked centre as a float (3,) array."""
    centre = np.asarray(center_kji, dtype=float).reshape(-1)
    if centre.size != 3 or not np.all(np.isfinite(centre)):
        raise ValueError(f"center_kji must be 3 finite numbers (k, j, i), got {center_kji}")
    if np.any(centre < -0.5) or np.any(centre > np.asarray(volume.shape_zyx) - 0.5):
        raise ValueError(f"center_kji {tuple(centre)} lies outside the volume of shape {volume.shape_zyx}")
    if not radius_mm > 0:
        raise ValueError(f"radius_mm must be > 0, got {radius_mm}")
    if lung_mask is not None and np.shape(lung_mask) != volume.shape_zyx:
        raise ValueError(f"lung_mask shape {np.shape(lung_mask)} differs from the volume's {volume.shape_zyx}")
    return centre


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Boolean ball of ``radius_mm`` around fractional index ``centre`` (at least the nearest voxel)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    ball = dist2 <= radius_mm**2
    nearest = tuple(np.clip(np.round(centre).astype(int), 0, np.asarray(shape) - 1))
    ball[nearest] = True
    return ball


def voi_levels(
    volume: Volume,
    center_kji: tuple[float, float, float],
    radius_mm: float,
    config: NoduleSegmentationConfig = NoduleSegmentationConfig(),
) -> tuple[float, float]:
    """The two HU levels the adaptive threshold of :func:`segment_nodule` lies between, on its first VOI.

    Args:
        volume: CT in HU.
        center_kji: (k, j, i) fractional array index inside the nodule.
        radius_mm: expected radius in mm.
        config: VOI size, core sphere and parenchyma limit.

    Returns:
        (core_hu, background_hu): the upper quartile of the core sphere (radius ``core_radius_fraction`` ×
        ``radius_mm``) and the median of the VOI's voxels below ``parenchyma_max_hu`` (that limit when there are
        none).

    Raises:
        ValueError: as :func:`segment_nodule`.
    """
    _, _, _, hu, core = _voi(volume, _validate(volume, center_kji, radius_mm, None), radius_mm, config)
    return _levels(hu, core, config)


def _voi(volume: Volume, centre: np.ndarray, radius_mm: float, config: NoduleSegmentationConfig):
    """(seed index, VOI low corner, VOI high corner (exclusive), VOI HU as float32, core sphere) around ``centre``
    (k, j, i), sized from ``radius_mm``; corners and seed are (3,) int arrays of (k, j, i)."""
    spacing = np.asarray(volume.spacing_mm[::-1])  # (z, y, x)
    half = np.ceil(max(config.voi_radius_factor * radius_mm, config.voi_min_half_mm) / spacing).astype(int)
    seed_idx = np.clip(np.round(centre).astype(int), 0, np.asarray(volume.shape_zyx) - 1)
    lo = np.maximum(seed_idx - half, 0)
    hi = np.minimum(seed_idx + half + 1, volume.shape_zyx)
    hu = np.asarray(volume.hu[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
    core = _ball(hu.shape, centre - lo, max(config.core_radius_fraction * radius_mm, spacing.min()), spacing)
    return seed_idx, lo, hi, hu, core


def _levels(hu: np.ndarray, core: np.ndarray, config: NoduleSegmentationConfig) -> tuple[float, float]:
    """(core HU, parenchyma background HU) of a VOI and its core sphere."""
    parenchyma = hu[hu < config.parenchyma_max_hu]
    background = float(np.median(parenchyma)) if parenchyma.size else config.parenchyma_max_hu
    return float(np.percentile(hu[core], 75)), background


def _adaptive_threshold(hu: np.ndarray, core: np.ndarray, config: NoduleSegmentationConfig) -> float | None:
    """Threshold between parenchyma and nodule core, or None when their contrast is too low."""
    core_hu, background = _levels(hu, core, config)
    if core_hu - background < config.min_contrast_hu:
        logger.debug("no nodule: core %.0f HU vs background %.0f HU", core_hu, background)
        return None
    threshold = background + config.threshold_fraction * (core_hu - background)
    return float(np.clip(threshold, *config.threshold_range_hu))


def _inner_faces(lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(Z, Y, X)-shaped VOI boolean marking its faces that lie inside the volume (not on the volume border)."""
    faces = np.zeros(tuple(hi - lo), bool)
    for axis in range(3):
        index = [slice(None)] * 3
        if lo[axis] > 0:
            index[axis] = 0
            faces[tuple(index)] = True
        if hi[axis] < shape[axis]:
            index[axis] = -1
            faces[tuple(index)] = True
    return faces


def _detach(
    region: np.ndarray,
    seed: tuple[int, ...],
    core: np.ndarray,
    radius_mm: float,
    spacing: np.ndarray,
    inner_faces: np.ndarray,
    config: NoduleSegmentationConfig,
) -> tuple[np.ndarray | None, bool]:
    """Seed component after opening (growing radii) and geodesic restoration; when that cannot separate it and
    ``config.separate_touching``, the same inside the seed's watershed basin (step 6 of the module docstring).

    Returns (mask, False) on success, (None, False) when nothing is above the threshold at the seed, and
    (None, True) when the component still reaches the VOI's inner faces at the largest opening.
    """
    grown = _seed_component(region, seed, core)
    if grown is None:
        return None, False
    mask = _open_and_restore(grown, seed, core, radius_mm, spacing, inner_faces, config)
    if mask is None and config.separate_touching:
        basin = _seed_basin(grown, seed, spacing, config.watershed_h_mm)
        if basin is not None:
            mask = _open_and_restore(basin, seed, core, radius_mm, spacing, inner_faces, config)
    if mask is None:
        logger.debug("nodule not separable from a large structure (opening up to %.1f mm)", config.max_opening_mm)
        return None, True
    return mask, False


def _open_and_restore(grown: np.ndarray, seed: tuple[int, ...], core: np.ndarray, radius_mm: float,
                      spacing: np.ndarray, inner_faces: np.ndarray,
                      config: NoduleSegmentationConfig) -> np.ndarray | None:
    """Opening with growing radii and geodesic restoration inside ``grown``; None while it still reaches the VOI's
    inner faces at the largest opening."""
    rho = float(np.clip(config.opening_fraction * radius_mm, config.min_opening_mm, config.max_opening_mm))
    while True:
        opened = _open_mm(grown, rho, spacing)
        part = _seed_component(opened, seed, core)
        if part is None:  # the opening removed the whole nodule: too small for this ball, keep it unopened
            part = grown if rho == config.min_opening_mm else None
        if part is not None:
            restored = dilate_mm(part, rho, spacing) & grown
            restored = _seed_component(restored, seed, core)
            if restored is not None and not (restored & inner_faces).any():
                return restored
        if rho >= config.max_opening_mm:
            return None
        rho = min(rho * 1.5, config.max_opening_mm)


def _seed_basin(grown: np.ndarray, seed: tuple[int, ...], spacing: np.ndarray, h_mm: float) -> np.ndarray | None:
    """The watershed basin of the distance map (mm to the background) of ``grown`` that holds the seed: a nodule
    touching a thicker structure is a separate maximum of that map (maxima shallower than ``h_mm`` merged); None
    when the seed is in no basin or ``grown`` is one basin."""
    distance = ndi.distance_transform_edt(grown, sampling=spacing)
    markers, count = ndi.label(h_maxima(distance, h_mm) & grown)
    if count < 2:
        return None
    basins = watershed(-distance, markers, mask=grown)
    label = basins[seed]
    return None if label == 0 else basins == label


def _seed_component(mask: np.ndarray, seed: tuple[int, ...], core: np.ndarray) -> np.ndarray | None:
    """The connected component holding the seed, else the largest one meeting the core; None if none."""
    labels, n = ndi.label(mask)
    if n == 0:
        return None
    lab = labels[seed]
    if lab == 0:
        hits = labels[core & (labels > 0)]
        if hits.size == 0:
            return None
        lab = np.bincount(hits).argmax()
    return labels == lab


def _open_mm(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Opening by a ball of ``radius_mm`` (distance transforms; VOI borders do not erode)."""
    eroded = ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm
    return dilate_mm(eroded, radius_mm, spacing)


def _close_mm(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Closing by a ball of ``radius_mm``; the VOI border is not an edge (the mask is edge-padded first)."""
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad], mode="edge")
    dilated = dilate_mm(padded, radius_mm, spacing)
    if dilated.all():
        return np.ones_like(mask)
    closed = ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return closed[tuple(slice(p, -p) for p in pad)] | mask


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Dilation of a (Z, Y, X) boolean mask by a ball of ``radius_mm`` (Euclidean distance transform with voxel
    ``spacing`` (z, y, x) mm); a radius <= 0 or an empty mask gives a copy."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm
