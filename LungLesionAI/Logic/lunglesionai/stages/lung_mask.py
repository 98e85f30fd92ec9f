"""Classical lung segmentation of chest CT: right and left lung labels on the volume's grid.

The method follows Hu, Hoffman & Reinhardt, "Automatic lung segmentation for accurate quantitation of volumetric
X-ray CT images", IEEE TMI 20(6):490-498, 2001 (doi:10.1109/42.929615): grey-level thresholding of air, removal
of the air outside the body, removal of the trachea and main bronchi by region growing from the trachea, left/right
separation, and morphological smoothing so that vessels and juxta-pleural nodules belong to the lung.

Differences from the paper, each for a reason:

* Works on a coarse grid (``working_spacing_mm``, about 2 mm) and maps the labels back by nearest neighbour, so a
  512×512×300 scan takes seconds.
* Outside air is found per axial slice as air touching the slice border whose mean HU is that of pure air
  (< ``outside_air_max_mean_hu``). Lung parenchyma (about −900…−700 HU) that touches the border of a *cropped*
  volume is therefore kept, where a plain "remove border-connected air" rule would delete it.
* Tissue (>= ``air_max_hu``) in the outermost coarse voxels is removed at full resolution, so the mask's
  border follows the real lung surface instead of 2 mm blocks (block corners full of chest wall look like
  small nodules to a detector).
* Left/right separation tries erosion first (the anterior/posterior junction lines are thin), then a watershed on
  the HU image from the two eroded cores (the junction line is the bright ridge); when nothing separates, the
  mask is split at the body's midline if it straddles it.

Right/left come from world geometry (LPS: +x is the patient's left, so the right lung has the smaller x); the
volume need not be identity-oriented, but the slices should be roughly axial (see
``lunglesionai.core.orientation.reorient_to_lps``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from lunglesionai.core.volume import Volume

__all__ = [
    "BACKGROUND_LABEL",
    "block_factors",
    "LEFT_LUNG_LABEL",
    "RIGHT_LUNG_LABEL",
    "LungMaskConfig",
    "segment_lungs",
]

logger = logging.getLogger(__name__)

BACKGROUND_LABEL = 0
RIGHT_LUNG_LABEL = 1
LEFT_LUNG_LABEL = 2

#: In-plane 8-connectivity without links between slices: labels every axial slice separately in one call.
_SLICEWISE = np.zeros((3, 3, 3), bool)
_SLICEWISE[1] = True
_ML_PER_MM3 = 1e-3
#: Airway growing starts this far above the trachea seed's median HU and steps down when it leaks.
_AIRWAY_MARGIN_HU = 30.0
_AIRWAY_THRESHOLD_STEP_HU = 20.0
_MIN_SEED_VOXELS = 3


@dataclass(frozen=True)
class LungMaskConfig:
    """Parameters of :func:`segment_lungs` (HU, mm, mL).

    Args:
        working_spacing_mm: target voxel size of the coarse grid the work is done on (integer block averaging).
        air_max_hu: voxels below this are air or lung (Hu et al. use an adaptive threshold near −500; −320 keeps
            partial-volume lung at the pleura).
        outside_air_max_mean_hu: an air region touching an axial slice's border is outside the body when its
            mean is below this (pure air, about −1000 HU; lung parenchyma is about −900…−700 HU).
        body_min_hu: tissue threshold for the body mask used to find the midline.
        airway_lumen_max_hu: trachea/bronchus lumen threshold (pure air) for the airway region growing.
        airway_max_volume_ml: the grown airway tree may not exceed this; beyond it the growing leaked into
            the lung and is retried with a lower threshold (Hu et al.'s explosion control).
        trachea_area_mm2: (min, max) axial cross-section of the trachea lumen used to seed the airway growing.
        trachea_search_mm: how far below the top of the air region the trachea is searched for.
        airway_rim_voxels: coarse voxels of air around the grown lumen removed with it (its partial-volume rim).
        min_lung_volume_ml: air components smaller than this are not lungs.
        lung_min_median_hu: components with a lower median HU are gas (bowel, stomach, isolated airway),
            not aerated lung parenchyma.
        split_max_erosion_mm: how far the joined lungs are eroded at most when separating them.
        split_min_fraction: the smaller lung must hold at least this fraction of the larger one's volume
            (separate components, or parts after erosion); smaller parts are not a lung.
        closing_radius_mm: radius of the 3-D closing applied to each lung (includes vessels and juxta-pleural
            nodules up to about this radius).

    Raises:
        ValueError: a size is not positive, a fraction is outside (0, 0.5], or a HU range is reversed.
    """

    working_spacing_mm: float = 2.0
    air_max_hu: float = -320.0
    outside_air_max_mean_hu: float = -940.0
    body_min_hu: float = -500.0
    airway_lumen_max_hu: float = -950.0
    airway_max_volume_ml: float = 250.0
    trachea_area_mm2: tuple[float, float] = (80.0, 900.0)
    trachea_search_mm: float = 40.0
    airway_rim_voxels: int = 2
    min_lung_volume_ml: float = 15.0
    lung_min_median_hu: float = -960.0
    split_max_erosion_mm: float = 12.0
    split_min_fraction: float = 0.1
    closing_radius_mm: float = 15.0

    def __post_init__(self) -> None:
        positive = {
            "working_spacing_mm": self.working_spacing_mm,
            "airway_max_volume_ml": self.airway_max_volume_ml,
            "trachea_search_mm": self.trachea_search_mm,
            "min_lung_volume_ml": self.min_lung_volume_ml,
            "split_max_erosion_mm": self.split_max_erosion_mm,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"LungMaskConfig.{name} must be > 0, got {value}")
        if self.airway_rim_voxels < 1:
            raise ValueError(f"LungMaskConfig.airway_rim_voxels must be >= 1, got {self.airway_rim_voxels}")
        if self.closing_radius_mm < 0:
            raise ValueError(f"LungMaskConfig.closing_radius_mm must be >= 0, got {self.closing_radius_mm}")
        if not 0 < self.split_min_fraction <= 0.5:
            raise ValueError(f"LungMaskConfig.split_min_fraction must be in (0, 0.5], got {self.split_min_fraction}")
        lo, hi = self.trachea_area_mm2
        if not 0 <= lo < hi:
            raise ValueError(f"LungMaskConfig.trachea_area_mm2 must be (min, max) with min < max, got {lo, hi}")
        if not self.outside_air_max_mean_hu < self.air_max_hu:
            raise ValueError(
                f"outside_air_max_mean_hu ({self.outside_air_max_mean_hu}) must be below air_max_hu "
                f"({self.air_max_hu})"
            )


def segment_lungs(volume: Volume, config: LungMaskConfig = LungMaskConfig()) -> np.ndarray:
    """Label the right and left lungs of a chest CT.

    Args:
        volume: CT in HU; any direction, slices roughly axial. Cropped volumes (lungs touching the border) work.
        config: thresholds and sizes, see :class:`LungMaskConfig`.

    Returns:
        (Z, Y, X) uint8 array on ``volume``'s grid: 0 outside, 1 (:data:`RIGHT_LUNG_LABEL`) right lung (smaller
        LPS x), 2 (:data:`LEFT_LUNG_LABEL`) left lung. Vessels, small airways and nodules up to about
        ``closing_radius_mm`` at the pleura are included; the lumen of the trachea and of the bronchi grown from
        it is not. A scan with one lung or none gives what is found (logged at INFO; the pipeline reports it in
        ``Report.warnings``, :mod:`lunglesionai.stages.scan_coverage`); it never raises for anatomy.

    Raises:
        ValueError: the volume has fewer than 2 voxels along some axis.

    Example:
        >>> labels = segment_lungs(volume)          # doctest: +SKIP
        >>> right_ml = (labels == 1).sum() * volume.voxel_volume_mm3 / 1000   # doctest: +SKIP
    """
    if min(volume.shape_zyx) < 2:
        raise ValueError(f"segment_lungs needs at least 2 voxels per axis, got shape {volume.shape_zyx}")
    factors = block_factors(volume.spacing_mm, config.working_spacing_mm)
    hu = _block_mean(volume.hu, factors)
    spacing_zyx = tuple(volume.spacing_mm[2 - a] * factors[a] for a in range(3))
    coarse = Volume(hu, spacing_zyx[::-1], volume.origin_lps_mm, volume.direction)
    if abs(volume.direction_matrix[2, 2]) < 0.5:
        logger.warning("slices are not axial (k axis %s): trachea search may fail", volume.direction_matrix[:, 2])

    air = _inside_air(hu, config)
    lungs = _lung_components(hu, air, spacing_zyx, config)
    airway = _airway_tree(coarse, lungs, config)
    if airway.any():
        # the lumen plus its partial-volume rim (air-like voxels next to the lumen) would join the lungs
        rim = ndi.binary_dilation(airway, iterations=config.airway_rim_voxels, mask=lungs)
        lungs = _lung_components(hu, lungs & ~rim, spacing_zyx, config)
    labels = _split_left_right(coarse, lungs, config)
    labels = _smooth_lungs(labels, spacing_zyx, config)
    labels[airway] = BACKGROUND_LABEL
    found = sorted(set(np.unique(labels).tolist()) - {BACKGROUND_LABEL})
    if len(found) < 2:
        logger.info("lung mask: found %d lung(s) (labels %s) in %s", len(found), found, volume.source or "volume")
    return _refine_boundary(volume, labels, factors, config)


def _refine_boundary(
    volume: Volume, labels: np.ndarray, factors: tuple[int, int, int], config: LungMaskConfig
) -> np.ndarray:
    """Upsample the coarse labels and drop tissue (>= ``air_max_hu``) inside the outermost coarse voxels.

    Nearest-neighbour upsampling leaves slivers of chest wall and mediastinum in the coarse boundary voxels; at
    full resolution they would look like small blobs to a detector. Deeper tissue (vessels, and the bulk of
    juxta-pleural nodules brought in by the closing) is kept.
    """
    lung = labels > 0
    band = lung & ~ndi.binary_erosion(lung, border_value=1)
    full = _upsample_labels(labels, factors, volume.shape_zyx)
    if factors == (1, 1, 1):
        full[band & (volume.hu >= config.air_max_hu)] = BACKGROUND_LABEL
        return full
    band_full = _upsample_labels(band.astype(np.uint8), factors, volume.shape_zyx).view(bool)
    for k in range(volume.shape_zyx[0]):  # slice by slice: no full-size temporaries
        full[k][band_full[k] & (volume.hu[k] >= config.air_max_hu)] = BACKGROUND_LABEL
    return full


def block_factors(spacing_xyz: tuple[float, float, float], target_mm: float) -> tuple[int, int, int]:
    """Integer downsampling factor (>= 1) per (z, y, x) axis so that the coarse spacing is close to ``target_mm``;
    ``spacing_xyz`` is the voxel size (x, y, z) in mm (``Volume.spacing_mm``)."""
    return tuple(max(1, round(target_mm / spacing_xyz[2 - a])) for a in range(3))


def _block_mean(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean of (fz, fy, fx) blocks (edge blocks padded by repetition) as float32."""
    if factors == (1, 1, 1):
        return np.asarray(hu, dtype=np.float32)
    pad = [(0, (-n) % f) for n, f in zip(hu.shape, factors)]
    padded = np.pad(hu, pad, mode="edge") if any(p[1] for p in pad) else hu
    out_shape = tuple(n // f for n, f in zip(padded.shape, factors))
    out = np.empty(out_shape, np.float32)
    fz = factors[0]
    for k in range(out_shape[0]):  # slab by slab: no full-size float temporary
        slab = np.asarray(padded[k * fz : (k + 1) * fz], dtype=np.float32)
        blocks = slab.reshape(fz, out_shape[1], factors[1], out_shape[2], factors[2])
        out[k] = blocks.mean(axis=(0, 2, 4))
    return out


def _inside_air(hu: np.ndarray, config: LungMaskConfig) -> np.ndarray:
    """Air voxels minus the air outside the body (per-slice border regions of pure-air mean HU)."""
    air = hu < config.air_max_hu
    labels, n = ndi.label(air, structure=_SLICEWISE)
    if n == 0:
        return air
    border = np.zeros(n + 1, bool)
    for face in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        border[np.unique(face)] = True
    border[0] = False
    sums = np.bincount(labels.ravel(), weights=hu.ravel(), minlength=n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    means = sums / np.maximum(counts, 1)
    outside = border & (means < config.outside_air_max_mean_hu)
    return air & ~outside[labels]


def _lung_components(
    hu: np.ndarray, air: np.ndarray, spacing_zyx: tuple[float, ...], config: LungMaskConfig
) -> np.ndarray:
    """Keep the 3-D air components that look like aerated lung (large enough, parenchyma-like median HU)."""
    labels, n = ndi.label(air)
    if n == 0:
        return np.zeros_like(air)
    voxel_ml = float(np.prod(spacing_zyx)) * _ML_PER_MM3
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_ml
    index = np.flatnonzero(sizes >= config.min_lung_volume_ml) + 1
    if index.size == 0:
        return np.zeros_like(air)
    medians = np.array([np.median(hu[labels == lab]) for lab in index])
    keep = np.zeros(n + 1, bool)
    keep[index[medians >= config.lung_min_median_hu]] = True
    for lab, med in zip(index, medians):
        if med < config.lung_min_median_hu:
            logger.debug("dropped gas component %d (median %.0f HU, %.0f mL)", lab, med, sizes[lab - 1])
    return keep[labels]


def _superior_order(volume: Volume) -> np.ndarray:
    """Slice indices k ordered from the most superior (largest LPS z) to the most inferior."""
    z_of_k = volume.kji_to_lps(np.stack([np.arange(volume.shape_zyx[0]), np.zeros(volume.shape_zyx[0]),
                                         np.zeros(volume.shape_zyx[0])], axis=1))[:, 2]
    return np.argsort(-z_of_k, kind="stable")


def _trachea_seed(volume: Volume, lungs: np.ndarray, config: LungMaskConfig) -> tuple[np.ndarray, float] | None:
    """Trachea lumen cross-section in the upper slices (a (Z, Y, X) mask of one slice) and its median HU.

    The trachea is the roughly round air region of trachea-like area closest to the air region's left-right
    centre in the most superior slices (Hu et al. 2001 seed the airway growing the same way). Pure-air regions
    are searched first; thick or low-resolution slices, whose lumen is partial-volumed, fall back to all air.
    """
    order = [k for k in _superior_order(volume) if lungs[k].any()]
    if not order:
        return None
    n_search = max(1, round(config.trachea_search_mm / volume.spacing_mm[2]))
    centre_i = float(np.nonzero(lungs.any(axis=(0, 1)))[0].mean())
    for mask in (lungs & (volume.hu < config.airway_lumen_max_hu), lungs):
        for k in order[:n_search]:
            found = _round_central_region(volume, k, mask[k], centre_i, config)
            if found is not None:
                region, median = found
                seed = np.zeros(lungs.shape, bool)
                seed[k] = region
                return seed, median
    return None


def _round_central_region(
    volume: Volume, k: int, mask2d: np.ndarray, centre_i: float, config: LungMaskConfig
) -> tuple[np.ndarray, float] | None:
    """(Y, X) mask and median HU of the trachea-like region of slice ``k``'s ``mask2d`` nearest column
    ``centre_i`` (area within ``trachea_area_mm2``, filling over half of its bounding box, i.e. roundish)."""
    sx, sy = volume.spacing_mm[0], volume.spacing_mm[1]
    labels, _ = ndi.label(mask2d)
    best, best_dist = None, np.inf
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        region = labels[sl] == lab
        area = region.sum() * sx * sy
        fill = region.sum() / region.size  # a round lumen fills ~0.785 of its box
        if not (config.trachea_area_mm2[0] <= area <= config.trachea_area_mm2[1] and fill > 0.5):
            continue
        _jj, ii = np.nonzero(region)
        dist = abs(ii.mean() + sl[1].start - centre_i) * sx
        if dist < best_dist:
            best, best_dist = (labels == lab, float(np.median(volume.hu[k][sl][region]))), dist
    return best


def _airway_tree(volume: Volume, lungs: np.ndarray, config: LungMaskConfig) -> np.ndarray:
    """Trachea and large bronchi: air region grown from the trachea with explosion control (Hu et al. 2001)."""
    found = _trachea_seed(volume, lungs, config)
    empty = np.zeros_like(lungs)
    if found is None:
        logger.info("no trachea found in the upper slices; airways are not removed")
        return empty
    seed, seed_median = found
    voxel_ml = volume.voxel_volume_mm3 * _ML_PER_MM3
    threshold = max(config.airway_lumen_max_hu, seed_median + _AIRWAY_MARGIN_HU)
    while True:
        labels, _ = ndi.label(lungs & (volume.hu < threshold))
        hits = labels[seed & (labels > 0)]
        if hits.size < _MIN_SEED_VOXELS:
            break
        airway = labels == np.bincount(hits).argmax()
        if airway.sum() * voxel_ml <= config.airway_max_volume_ml:
            return airway
        threshold -= _AIRWAY_THRESHOLD_STEP_HU
    logger.warning("airway growing leaked into the lungs at every threshold; airways are not removed")
    return empty


def _split_left_right(volume: Volume, lungs: np.ndarray, config: LungMaskConfig) -> np.ndarray:
    """Label 1 = right, 2 = left from the lung components (joined lungs are separated first).

    The second largest component counts as the other lung only when it holds at least
    ``split_min_fraction`` of the largest's volume; smaller components are kept only when they lie within
    ``closing_radius_mm`` of a lung (pieces cut off by a crop or by the airway removal), so bowel gas is dropped.
    """
    labels, n = ndi.label(lungs)
    out = np.zeros(lungs.shape, np.uint8)
    if n == 0:
        return out
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes) + 1
    if n >= 2 and sizes[order[1] - 1] >= config.split_min_fraction * sizes[order[0] - 1]:
        parts, rest = [labels == order[0], labels == order[1]], order[2:]
    else:
        parts, rest = _separate_joined(volume, labels == order[0], config), order[1:]
    if len(parts) == 1:
        out[parts[0]] = _side_of_midline(volume, parts[0], config)
    else:
        xs = [_centroid_x_lps(volume, p) for p in parts]
        right, left = (parts[0], parts[1]) if xs[0] <= xs[1] else (parts[1], parts[0])
        out[right], out[left] = RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL
    if rest.size and out.any():
        # only pieces within closing_radius_mm of a lung are kept: the distance map is needed in the lungs' box
        # grown by that radius, not over the whole scan (a whole-body CT's bowel gas made this the slowest step)
        spacing_zyx = volume.spacing_mm[::-1]
        pad = [int(np.ceil(config.closing_radius_mm / s)) + 1 for s in spacing_zyx]
        box = ndi.find_objects((out > 0).astype(np.uint8))[0]
        box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, out.shape))
        sub_out, sub_labels = out[box], labels[box]
        dist, nearest = ndi.distance_transform_edt(sub_out == BACKGROUND_LABEL, sampling=spacing_zyx,
                                                   return_indices=True)
        near = dist <= config.closing_radius_mm
        for lab in rest:
            piece = (sub_labels == lab) & near
            sub_out[piece] = sub_out[tuple(ix[piece] for ix in nearest)]
    return out


def _centroid_x_lps(volume: Volume, mask: np.ndarray) -> float:
    """LPS x (mm) of a mask's centroid."""
    return float(volume.kji_to_lps(np.array([np.argwhere(mask).mean(axis=0)]))[0, 0])


def _side_of_midline(volume: Volume, mask: np.ndarray, config: LungMaskConfig) -> int:
    """Label of a lone lung: right if its centroid lies at smaller LPS x than the body's centre."""
    body = volume.hu > config.body_min_hu
    if not body.any():
        logger.warning("no body tissue above %.0f HU: a lone lung is called right", config.body_min_hu)
        return RIGHT_LUNG_LABEL
    return RIGHT_LUNG_LABEL if _centroid_x_lps(volume, mask) <= _centroid_x_lps(volume, body) else LEFT_LUNG_LABEL


def _separate_joined(volume: Volume, lung: np.ndarray, config: LungMaskConfig) -> list[np.ndarray]:
    """Split one component holding both lungs; returns one mask (a single lung) or two.

    Erodes in-plane (the junction lines are thin in the axial plane) until two parts of at least
    ``split_min_fraction`` of the eroded volume appear, then grows them back inside ``lung`` by a watershed on
    the smoothed HU image, so the border follows the bright junction line.
    """
    n_steps = max(1, int(config.split_max_erosion_mm / min(volume.spacing_mm[:2])))
    eroded = lung
    for _ in range(n_steps):
        eroded = ndi.binary_erosion(eroded, structure=_SLICEWISE)
        labels, n = ndi.label(eroded)
        if n < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        top = np.argsort(-sizes)[:2]
        if sizes[top[1]] >= config.split_min_fraction * sizes[top[0]]:
            markers = np.zeros(lung.shape, np.int32)
            markers[labels == top[0] + 1] = 1
            markers[labels == top[1] + 1] = 2
            grown = watershed(ndi.gaussian_filter(volume.hu, 1.0), markers, mask=lung)
            return [grown == 1, grown == 2]
    return _split_at_midline(volume, lung, config)


def _split_at_midline(volume: Volume, lung: np.ndarray, config: LungMaskConfig) -> list[np.ndarray]:
    """Split by the body's mid-sagittal plane when the mask straddles it; else it is one lung."""
    body = volume.hu > config.body_min_hu
    mid_x = _centroid_x_lps(volume, body) if body.any() else _centroid_x_lps(volume, lung)
    kji = np.argwhere(lung)
    x = volume.kji_to_lps(kji)[:, 0]
    right = x <= mid_x
    frac = right.mean()
    if min(frac, 1 - frac) < config.split_min_fraction:
        return [lung]
    logger.info("lungs joined: split at the body midline x = %.1f mm (LPS)", mid_x)
    parts = [np.zeros_like(lung), np.zeros_like(lung)]
    parts[0][tuple(kji[right].T)] = True
    parts[1][tuple(kji[~right].T)] = True
    return parts


def _smooth_lungs(labels: np.ndarray, spacing_zyx: tuple[float, ...], config: LungMaskConfig) -> np.ndarray:
    """Per lung: fill holes slice by slice, then a 3-D closing of ``closing_radius_mm`` (original labels win)."""
    out = np.zeros_like(labels)
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        lung = labels == lab
        if not lung.any():
            continue
        closed = _close_mm(lung, spacing_zyx, config.closing_radius_mm)
        box = ndi.find_objects(closed.astype(np.uint8))[0]  # fill holes only where this lung is (same result)
        closed[box] = np.stack([ndi.binary_fill_holes(s) for s in closed[box]])
        out[closed & (out == BACKGROUND_LABEL)] = lab
    out[labels > 0] = labels[labels > 0]
    return out


def _close_mm(mask: np.ndarray, spacing_zyx: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """Binary closing by a ball of ``radius_mm`` (Euclidean distance transforms on the mask's padded box)."""
    if radius_mm <= 0:
        return mask.copy()
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_zyx]
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    lo = [max(0, sl.start - p) for sl, p in zip(box, pad)]
    hi = [min(n, sl.stop + p) for sl, p, n in zip(box, pad, mask.shape)]
    sub = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    # pad with the edge so the volume border is not an edge of the lung (cropped scans)
    sub = np.pad(sub, [(p, p) for p in pad], mode="edge")
    dilated = ndi.distance_transform_edt(~sub, sampling=spacing_zyx) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=spacing_zyx) > radius_mm
    closed = closed[tuple(slice(p, -p) for p in pad)] | mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    out = mask.copy()
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = closed
    return out


def _upsample_labels(labels: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour map of coarse block labels back to the full (Z, Y, X) grid."""
    if factors == (1, 1, 1):
        return labels.astype(np.uint8)
    idx = [np.minimum(np.arange(n) // f, m - 1) for n, f, m in zip(shape, factors, labels.shape)]
    return labels[np.ix_(*idx)].astype(np.uint8)
