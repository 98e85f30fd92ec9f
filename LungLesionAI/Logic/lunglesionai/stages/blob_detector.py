"""Classical lung nodule candidate detection: a multi-scale Hessian "dot" (blob) filter inside the lung mask.

Method:

1. Crop to the lung mask's bounding box, clip HU to a window (so calcium and contrast do not dominate faint
   ground-glass nodules), replace everything outside the lung mask by the lung's median HU (so the chest wall
   and mediastinum are flat background and juxta-pleural nodules inside the mask stand out), and resample to an
   isotropic ``working_spacing_mm`` grid.
2. At each scale σ (from ``min_diameter_mm`` to ``max_diameter_mm``), compute the scale-normalised Hessian
   (Lindeberg, "Feature detection with automatic scale selection", IJCV 30(2):79-116, 1998,
   doi:10.1023/A:1008045108935) and the dot-enhancement response of Li, Sone & Doi, "Selective enhancement
   filters for nodules, vessels, and airway walls in two- and three-dimensional CT scans", Med Phys
   30(8):2040-2051, 2003 (doi:10.1118/1.1581411): with eigenvalues ordered |λ1| ≥ |λ2| ≥ |λ3| and all negative
   (a bright blob), ``z_dot = σ² |λ3|² / |λ1|``; it is zero for tubes (λ3 ≈ 0: vessels) and plates (walls).
   The Hessian is taken by central differences of the Gaussian-smoothed image, and its eigenvalues (closed
   form) only where the Laplacian allows a response above ``min_response_hu``. Large scales run on
   block-averaged coarser grids (at least ``min_sigma_voxels`` voxels per σ) to stay fast.
3. Maxima of the response in space and over the neighbouring scales (Lindeberg's scale selection), refined to
   sub-voxel position; maxima whose centre is not at least ``min_centre_contrast_hu`` brighter than the lung
   (airway lumens ringed by walls) are dropped; then greedy non-maximum suppression across scales (strongest
   response first).
4. Score in [0, 1], Frangi-style (Frangi et al., MICCAI 1998, LNCS 1496:130-137, doi:10.1007/BFb0056195):
   ``score = (|λ3| / |λ1|) ** blob_power × (1 − exp(−(m / contrast_scale_hu)²)) × centrality **
   centrality_power`` with ``m = σ² |trace| / 3`` (about 0.3 × the blob's contrast in HU for a sphere). The
   first factor is 1 for a sphere, about 0.65 for a 2:1 ellipsoid, about 0.5 at a vessel's end or bend and
   0.2-0.4 at branchings; the second makes the score nearly independent of contrast once a blob is clearly
   above noise, so ground-glass nodules (contrast ~250 HU) rank with solid ones (~900 HU); the third (``m`` at
   the maximum over the largest ``m`` within σ) is low where the dot response peaks off a structure's centre,
   as it does beside vessel branchings.

Vessel bends, ends and branchings and small airway walls remain the main false positives; this is the
classical baseline that learned detectors (and a false-positive reduction stage) must beat.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.volume import Volume

__all__ = ["BlobDetectorConfig", "Candidate", "blob_scales_mm", "detect_candidates"]

logger = logging.getLogger(__name__)

METHOD_NAME = "hessian-dot"
"""``Candidate.method`` of this detector's candidates."""
LEARNED_METHOD_NAME = "retinanet"
"""``Candidate.method`` of the learned detector's candidates (:mod:`lunglesionai.stages.retina_detector`)."""
#: For a uniform sphere the dot response peaks at σ ≈ radius / RADIUS_PER_SIGMA (measured on voxelised spheres).
RADIUS_PER_SIGMA = math.sqrt(3.0)
#: Gaussian kernels are cut at this many σ (speed; the response changes by < 1 %).
_TRUNCATE = 3.0


@dataclass(frozen=True)
class Candidate:
    """A nodule candidate.

    Args:
        center_kji: (k, j, i) fractional array index of the centre on the analysed volume's grid.
        radius_mm: estimated radius in mm (from the scale of the strongest response).
        score: blob score in [0, 1] (roundness × contrast × centrality; not a calibrated probability).
        method: the detector that produced it, e.g. "hessian-dot".
        details: method-specific numbers copied into the finding's ``extra`` (e.g. ``{"detector_score",
            "fpr_probability"}`` of the learned detector).
    """

    center_kji: tuple[float, float, float]
    radius_mm: float
    score: float
    method: str = METHOD_NAME
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BlobDetectorConfig:
    """Parameters of :func:`detect_candidates` (mm, HU).

    Args:
        min_diameter_mm, max_diameter_mm: nodule sizes searched (the scales follow from them).
        scale_ratio: ratio between successive scales σ.
        working_spacing_mm: isotropic grid of the finest scales.
        min_sigma_voxels: coarser scales run on a grid where σ spans at least this many voxels.
        hu_window: (low, high) HU clip before filtering.
        threshold: minimum score kept.
        min_response_hu: dot responses below this (HU-like units) are not considered peaks (noise).
        contrast_scale_hu: scale of the contrast factor of the score (``m`` at which it reaches 0.63).
        blob_power: exponent of the eigenvalue ratio in the score (higher suppresses vessels more).
        centrality_power: exponent of the centrality factor (see ``_blob_score``).
        max_candidates: at most this many, best first (400: the false-positive reduction re-ranks them, and the
            pipeline segments at most ``PipelineConfig.max_candidates`` of the re-ranked ones; with 120, 29 of the
            32 nodules missed on the composite validation set had no candidate at all).
        min_centre_contrast_hu: a candidate's centre must be at least this much brighter than the lung's median
            HU (rejects airway lumens ringed by bright walls, which the Hessian sees as blobs at large scales).
        nms_overlap: a candidate within ``nms_overlap`` × (larger radius) of a stronger one is dropped.

    Raises:
        ValueError: sizes not positive or reversed, ratio ≤ 1, threshold outside [0, 1), window reversed.
    """

    min_diameter_mm: float = 3.0
    max_diameter_mm: float = 30.0
    scale_ratio: float = 1.5
    working_spacing_mm: float = 1.0
    min_sigma_voxels: float = 1.5
    hu_window: tuple[float, float] = (-1000.0, 100.0)
    threshold: float = 0.3
    min_response_hu: float = 8.0
    contrast_scale_hu: float = 30.0
    blob_power: float = 1.5
    centrality_power: float = 2.0
    max_candidates: int = 400
    min_centre_contrast_hu: float = 100.0
    nms_overlap: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.min_diameter_mm <= self.max_diameter_mm:
            raise ValueError(
                f"need 0 < min_diameter_mm <= max_diameter_mm, got {self.min_diameter_mm}, {self.max_diameter_mm}"
            )
        if not self.scale_ratio > 1:
            raise ValueError(f"scale_ratio must be > 1, got {self.scale_ratio}")
        for name in ("working_spacing_mm", "min_sigma_voxels", "min_response_hu", "contrast_scale_hu", "blob_power",
                     "centrality_power", "nms_overlap"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BlobDetectorConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")


def blob_scales_mm(config: BlobDetectorConfig) -> list[float]:
    """Scales σ (mm) searched: geometric from min to max diameter (σ = diameter / 2 / √3)."""
    lo = config.min_diameter_mm / 2 / RADIUS_PER_SIGMA
    hi = config.max_diameter_mm / 2 / RADIUS_PER_SIGMA
    n = max(1, math.ceil(math.log(hi / lo) / math.log(config.scale_ratio) - 1e-9) + 1)
    return [float(s) for s in np.geomspace(lo, hi, n)]


def detect_candidates(
    volume: Volume, lung_mask: np.ndarray, config: BlobDetectorConfig = BlobDetectorConfig()
) -> list[Candidate]:
    """Find blob-like nodule candidates inside the lungs.

    Args:
        volume: CT in HU, any spacing and direction (work is in voxel space with physical spacing).
        lung_mask: (Z, Y, X) array, nonzero inside the lungs (e.g. :func:`lunglesionai.stages.lung_mask.segment_lungs`).
        config: see :class:`BlobDetectorConfig`.

    Returns:
        Candidates with centres inside the lung mask, sorted by decreasing score, at most ``max_candidates``;
        empty when the mask is empty.

    Raises:
        ValueError: ``lung_mask``'s shape differs from the volume's.

    Example:
        >>> cands = detect_candidates(volume, segment_lungs(volume))   # doctest: +SKIP
        >>> [(c.center_kji, round(c.radius_mm, 1), round(c.score, 2)) for c in cands[:3]]  # doctest: +SKIP
    """
    if np.shape(lung_mask) != volume.shape_zyx:
        raise ValueError(f"lung_mask shape {np.shape(lung_mask)} differs from the volume's {volume.shape_zyx}")
    lung = np.asarray(lung_mask) > 0
    if not lung.any():
        logger.warning("empty lung mask: no nodule candidates")
        return []
    image, mask, box_lo, background_hu = _prepare(volume, lung, config)
    min_centre_hu = background_hu + config.min_centre_contrast_hu
    peaks = _all_peaks(image, mask, config)
    peaks = [p for p in peaks if _value_at(image, p.pos_mm / config.working_spacing_mm) >= min_centre_hu]
    kept = _suppress(peaks, config)
    native = np.asarray(volume.spacing_mm[::-1])
    out = []
    for peak in kept:
        kji = np.asarray(box_lo) + peak.pos_mm / native
        idx = tuple(np.clip(np.round(kji).astype(int), 0, np.asarray(lung.shape) - 1))
        if lung[idx]:
            out.append(Candidate(tuple(float(c) for c in kji), RADIUS_PER_SIGMA * peak.sigma_mm, peak.score))
        if len(out) == config.max_candidates:
            break
    logger.info("blob detector: %d scale-space peaks, %d candidates", len(peaks), len(out))
    return out


def _prepare(
    volume: Volume, lung: np.ndarray, config: BlobDetectorConfig
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int], float]:
    """Cropped, windowed, lung-only, isotropically resampled image; its lung mask; the crop's (k, j, i) start;
    the lung's median HU (which replaces everything outside the mask)."""
    native = np.asarray(volume.spacing_mm[::-1])
    margin = np.ceil(config.max_diameter_mm / native).astype(int)
    box = ndi.find_objects(lung.astype(np.uint8))[0]
    lo = tuple(int(max(0, sl.start - m)) for sl, m in zip(box, margin))
    hi = tuple(int(min(n, sl.stop + m)) for sl, m, n in zip(box, margin, lung.shape))
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    hu = np.clip(np.asarray(volume.hu[crop], dtype=np.float32), *config.hu_window)
    inside = lung[crop]
    background = float(np.median(hu[inside]))
    hu[~inside] = background
    ws = config.working_spacing_mm
    scale = ws / native
    shape = tuple(int(np.floor((n - 1) / s)) + 1 for n, s in zip(hu.shape, scale))
    positions = [np.arange(n) * s for n, s in zip(shape, scale)]
    image = hu
    for axis in np.argsort(scale)[::-1]:  # shrink the most-reduced axes first
        image = _linear_resample_axis(image, positions[axis], int(axis))
    mask = inside[np.ix_(*[np.minimum(np.round(p).astype(int), n - 1) for p, n in zip(positions, inside.shape)])]
    return image, mask, lo, background


def _linear_resample_axis(a: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional ``positions`` along ``axis`` (float32)."""
    i0 = np.minimum(np.floor(positions).astype(int), a.shape[axis] - 1)
    i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
    shape = [1, 1, 1]
    shape[axis] = len(positions)
    w = (positions - i0).astype(np.float32).reshape(shape)
    out = np.take(a, i0, axis=axis)
    out *= 1.0 - w
    out += np.take(a, i1, axis=axis) * w
    return out


def _value_at(image: np.ndarray, idx: np.ndarray) -> float:
    """Trilinear value of ``image`` at fractional (k, j, i) ``idx`` (clamped to the array)."""
    idx = np.clip(idx, 0, np.asarray(image.shape) - 1)
    return float(ndi.map_coordinates(image, idx.reshape(3, 1), order=1)[0])


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f×f×f blocks (trailing partial blocks dropped)."""
    if f == 1:
        return a
    shape = tuple(n // f for n in a.shape)
    a = a[: shape[0] * f, : shape[1] * f, : shape[2] * f]
    return a.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5), dtype=np.float32)


@dataclass(frozen=True)
class _Peak:
    """A scale-space maximum: position (mm from the crop start, (z, y, x)), scale, dot response, score."""

    pos_mm: np.ndarray
    sigma_mm: float
    response: float
    score: float


@dataclass(frozen=True)
class _Level:
    """One scale on its block-averaged grid (``factor`` base voxels per voxel).

    ``response`` is the dense dot response (None when nothing passed the prefilter); ``maxima`` the (N, 3)
    voxel indices of its scored spatial maxima and ``scores`` their scores.
    """

    sigma_mm: float
    factor: int
    response: np.ndarray | None
    maxima: np.ndarray
    scores: np.ndarray

    def at(self, pos_mm: np.ndarray, ws: float) -> float:
        """Largest response in the 3×3×3 neighbourhood of the voxel holding ``pos_mm`` (0 if none)."""
        if self.response is None:
            return 0.0
        idx = np.round((pos_mm / ws - (self.factor - 1) / 2.0) / self.factor).astype(int)
        lo = np.clip(idx - 1, 0, np.asarray(self.response.shape) - 1)
        hi = np.clip(idx + 2, 1, np.asarray(self.response.shape))
        patch = self.response[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return float(patch.max()) if patch.size else 0.0


def _all_peaks(image: np.ndarray, mask: np.ndarray, config: BlobDetectorConfig) -> list[_Peak]:
    """Scale-space peaks over all scales, keeping at most three scales' maps in memory at a time."""
    sigmas = blob_scales_mm(config)
    levels: dict[int, _Level] = {}
    peaks: list[_Peak] = []
    for i in range(len(sigmas)):
        for j in (i - 1, i, i + 1):
            if 0 <= j < len(sigmas) and j not in levels:
                levels[j] = _scale_level(image, mask, sigmas[j], config)
        levels.pop(i - 2, None)
        neighbours = [levels[j] for j in (i - 1, i + 1) if j in levels]
        peaks.extend(_scale_space_peaks(levels[i], neighbours, config))
    return peaks


def _scale_level(image: np.ndarray, mask: np.ndarray, sigma: float, config: BlobDetectorConfig) -> _Level:
    """Dot response and scored spatial maxima at scale ``sigma`` (mm).

    The grid is block-averaged so σ spans at least ``min_sigma_voxels`` voxels; the Gaussian σ is reduced
    by the blur the box average already applied (variance ((f·ws)² − ws²) / 12).
    """
    ws = config.working_spacing_mm
    f = max(1, int(sigma / (config.min_sigma_voxels * ws)))
    level = _block_mean(image, f)
    level_mask = _block_mean(mask.astype(np.float32), f) > 0.5 if f > 1 else mask
    spacing = f * ws
    sigma_vox = math.sqrt(max(sigma**2 - (spacing**2 - ws**2) / 12.0, (0.5 * spacing) ** 2)) / spacing
    smooth = ndi.gaussian_filter(level, sigma_vox, mode="nearest", truncate=_TRUNCATE)
    strength = _laplacian(smooth) * (-(sigma**2) / spacing**2 / 3.0)  # σ²|trace|/3 where bright
    flat = np.flatnonzero(level_mask & (strength >= config.min_response_hu))  # z_dot <= |λ3| <= |trace|/3
    empty = _Level(sigma, f, None, np.empty((0, 3), int), np.empty(0))
    if flat.size == 0:
        return empty
    lam1, lam3 = _extreme_eigenvalues(_hessian_at(smooth, flat) * (sigma**2 / spacing**2))
    blob = lam3 < 0  # all three negative: a bright blob
    lam1_abs = np.maximum(-lam1, 1e-6)
    response = np.zeros(level.shape, np.float32)
    response.flat[flat] = np.where(blob, lam3**2 / lam1_abs, 0.0)
    where = _sparse_maxima(response, flat, config.min_response_hu)
    if where.size == 0:
        return empty
    maxima = np.stack(np.unravel_index(flat[where], level.shape), axis=1)
    ratio = -lam3[where] / lam1_abs[where]
    scores = _blob_score(ratio, strength, maxima, max(1, round(sigma_vox)), config)
    keep = scores >= config.threshold
    return _Level(sigma, f, response, maxima[keep], scores[keep])


def _laplacian(a: np.ndarray) -> np.ndarray:
    """Discrete Laplacian (voxel units) by central second differences; zero on the array's outer faces."""
    out = np.zeros_like(a)
    inner = (slice(1, -1),) * 3
    view = out[inner]
    np.multiply(a[inner], -6.0, out=view)
    for axis in range(3):
        view += a[tuple(slice(0, -2) if ax == axis else slice(1, -1) for ax in range(3))]
        view += a[tuple(slice(2, None) if ax == axis else slice(1, -1) for ax in range(3))]
    return out


def _sparse_maxima(response: np.ndarray, flat: np.ndarray, min_response: float) -> np.ndarray:
    """Positions in ``flat`` (interior voxel indices) where ``response`` >= ``min_response`` and is not exceeded
    by any of the 26 neighbours (only the listed voxels are checked: the response is zero elsewhere)."""
    values = response.flat[flat]
    where = np.flatnonzero(values >= min_response)
    strides = [st // response.itemsize for st in response.strides]
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                offset = dz * strides[0] + dy * strides[1] + dx * strides[2]
                if offset and where.size:
                    where = where[response.flat[flat[where] + offset] <= values[where]]
    return where


def _blob_score(
    ratio: np.ndarray, strength: np.ndarray, maxima: np.ndarray, half: int, config: BlobDetectorConfig
) -> np.ndarray:
    """Score in [0, 1] of response maxima: roundness × contrast × centrality.

    Centrality is the strength (σ²|trace|/3) at the maximum over the largest strength within ``half`` voxels:
    the dot response of a branching or bent vessel peaks off its centre line, where the Laplacian is weaker;
    a blob's dot and Laplacian peak together.
    """
    s = strength[tuple(maxima.T)]
    local = np.empty(len(maxima))
    for n, (k, j, i) in enumerate(maxima):
        local[n] = strength[max(k - half, 0) : k + half + 1, max(j - half, 0) : j + half + 1,
                            max(i - half, 0) : i + half + 1].max()
    centrality = np.clip(s / np.maximum(local, 1e-6), 0.0, 1.0)
    contrast = -np.expm1(-((s / config.contrast_scale_hu) ** 2))
    return np.clip(ratio, 0.0, 1.0) ** config.blob_power * contrast * centrality**config.centrality_power


def _scale_space_peaks(level: _Level, neighbours: list[_Level], config: BlobDetectorConfig) -> list[_Peak]:
    """The level's maxima that are also maxima over the neighbouring scales, at sub-voxel position."""
    ws = config.working_spacing_mm
    out = []
    for ix, score in zip(level.maxima, level.scores):
        value = float(level.response[tuple(ix)])
        pos = (ix * level.factor + (level.factor - 1) / 2.0) * ws
        if any(n.at(pos, ws) > value for n in neighbours):
            continue
        pos = pos + _subvoxel_offset(level.response, ix) * level.factor * ws
        out.append(_Peak(pos, level.sigma_mm, value, float(score)))
    return out


def _subvoxel_offset(r: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-axis vertex offset (voxels, within ±0.5) of the parabola through a maximum and its two neighbours."""
    offset = np.zeros(3)
    for axis in range(3):
        if 0 < idx[axis] < r.shape[axis] - 1:
            lo, hi = idx.copy(), idx.copy()
            lo[axis] -= 1
            hi[axis] += 1
            a, b, c = float(r[tuple(lo)]), float(r[tuple(idx)]), float(r[tuple(hi)])
            denom = a - 2 * b + c
            if denom < 0:
                offset[axis] = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return offset


def _hessian_at(smooth: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """(6, N) float64 Hessian (zz, yy, xx, zy, zx, yx) by central differences at interior flat indices."""
    sz, sy, sx = (st // smooth.itemsize for st in smooth.strides)
    v = smooth.ravel()

    def at(offset: int) -> np.ndarray:
        return v[flat + offset].astype(np.float64)

    c2 = 2.0 * at(0)
    out = [at(sz) + at(-sz) - c2, at(sy) + at(-sy) - c2, at(sx) + at(-sx) - c2]
    for a, b in ((sz, sy), (sz, sx), (sy, sx)):
        out.append(0.25 * (at(a + b) - at(a - b) - at(b - a) + at(-a - b)))
    return np.stack(out)


def _extreme_eigenvalues(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest eigenvalues of symmetric 3×3 matrices given as (zz, yy, xx, zy, zx, yx) rows.

    Closed form (trigonometric solution of the characteristic cubic; Smith, Comm ACM 4(4):168, 1961,
    doi:10.1145/355578.366316), vectorised.
    """
    a00, a11, a22, a01, a02, a12 = h
    q = (a00 + a11 + a22) / 3.0
    p1 = a01**2 + a02**2 + a12**2
    p2 = (a00 - q) ** 2 + (a11 - q) ** 2 + (a22 - q) ** 2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    safe = np.where(p > 0, p, 1.0)
    b00, b11, b22 = (a00 - q) / safe, (a11 - q) / safe, (a22 - q) / safe
    b01, b02, b12 = a01 / safe, a02 / safe, a12 / safe
    det = b00 * (b11 * b22 - b12**2) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02)
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    largest = q + 2.0 * p * np.cos(phi)
    smallest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return smallest, largest


def _suppress(peaks: list[_Peak], config: BlobDetectorConfig) -> list[_Peak]:
    """Greedy non-maximum suppression across scales, strongest response first; returned best score first.

    Ordering by response (not score) keeps the centre of a large blob, whose response is the strongest, over
    the weaker, possibly rounder off-centre maxima inside it.
    """
    ordered = sorted(peaks, key=lambda p: -p.response)
    pos = np.array([p.pos_mm for p in ordered]).reshape(-1, 3)
    radius = np.array([RADIUS_PER_SIGMA * p.sigma_mm for p in ordered])
    kept_idx: list[int] = []
    for i in range(len(ordered)):
        if kept_idx:
            k = np.asarray(kept_idx)
            dist = np.linalg.norm(pos[k] - pos[i], axis=1)
            if np.any(dist < config.nms_overlap * np.maximum(radius[k], radius[i])):
                continue
        kept_idx.append(i)
    return sorted((ordered[i] for i in kept_idx), key=lambda p: -p.score)
