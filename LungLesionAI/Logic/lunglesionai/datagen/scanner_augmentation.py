"""Scanner augmentation: make one real CT look as if another scanner, kernel and protocol had made it.

Training data come from a handful of real host CTs; the pipeline meets scans of every make, kernel, dose, slice
thickness, pixel size and contrast phase. :func:`augment_scan` draws one such acquisition per call
(:class:`ScannerAugmentation` holds the ranges and probabilities) and re-renders the host accordingly, in this
order (patient first, then reconstruction, then noise, as in a scanner):

1. **contrast vs non-contrast vessels**: the HU of vessel-like voxels inside the lungs shifted by −150…+150 HU
   (:func:`vessel_region`: dense (> 0 HU) lung voxels that a box of :attr:`~ScannerAugmentation.vessel_max_radius_mm`
   does not fit in, i.e. tubes rather than blobs, plus their one-voxel partial-volume rim), limited so that the
   median vessel stays within :data:`VESSEL_HU_RANGE`;
2. **slice thickness** (1–5 mm): a Gaussian slice-sensitivity profile along z whose FWHM, combined with the native
   one (taken as the native slice spacing), equals the drawn thickness; then slices resampled to a spacing of
   :attr:`~ScannerAugmentation.slice_overlap_range` × thickness (never finer than the native spacing);
3. **in-plane resolution**: x and y resampled to a 0.6–1.0 mm pixel (Gaussian anti-aliasing when coarser);
4. **reconstruction kernel**: a smooth kernel is an in-plane Gaussian blur (σ 0–1 mm, merged with the blurs above
   into one filter pass), a sharp kernel an in-plane unsharp mask (amount 0–1, σ :data:`SHARPEN_SIGMA_MM`) applied
   on the output grid;
5. **noise**: Gaussian noise of SD 0–30 HU added on the output grid, optionally coloured by a small Gaussian
   (:func:`lunglesionai.synth.noise.correlated_noise_slabs`, rescaled so that the SD is exactly the drawn one),
   the usual first-order model of reconstructed CT noise (Solomon & Samei, Med. Phys. 2012,
   doi:10.1118/1.4747511); the result is clipped to the scanner's stored range :data:`HU_RANGE`.

Resampling is SimpleITK's linear interpolation on an LPS grid that keeps the origin (voxel (0, 0, 0)'s centre) and
the direction cosines: a world point (LPS mm) is the same anatomy before and after, so ground truth kept in LPS mm
stays valid and maps to the new grid with :func:`map_points_kji`. The lung mask follows with nearest-neighbour
interpolation. Every random number is drawn from the caller's ``numpy.random.Generator`` (parameters first, always
the same count whichever steps apply, then the noise), so one seed gives one result, bit for bit.

The ranges are the issue's (kernel, noise 0–30 HU SD, 1–5 mm slices, 0.6–1.0 mm pixels, ±150 HU vessels); the
probabilities are chosen, not tuned. Augmented scans are training data, not clinical images.

Speed (measured on ``../shared/data/ct/tcga_thca_whole_body_ct.nii.gz``, 269×512×512 at 0.98×0.98×2.5 mm, one
thread for numpy/scipy/ITK, on a shared 2-core machine under load): with ``crop_to_lungs_margin_mm=10`` (lung box
114×205×292) 0.8–1.4 s per call with the default probabilities and 1.6–3.5 s with every step on; on the whole
volume 5–19 s (defaults) and 18–29 s (every step on; a 0.6 mm pixel makes 814×814 slices). Crop for training.

Example:
    >>> import numpy as np
    >>> from lunglesionai.core.volume import Volume
    >>> hu = np.full((40, 64, 64), -850, np.int16)
    >>> lung = np.ones(hu.shape, np.uint8)
    >>> vol = Volume(hu, (0.7, 0.7, 1.25), (0.0, 0.0, 0.0))
    >>> out, mask, params = augment_scan(vol, lung, np.random.default_rng(0))
    >>> out.hu.dtype, mask.shape == out.shape_zyx, sorted(params)[:3]
    (dtype('float32'), True, ['crop_offset_kji', 'in_plane_pixel_mm', 'kernel'])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lunglesionai.core.sitk_bridge import volume_to_sitk
from lunglesionai.core.volume import Volume
from lunglesionai.synth.noise import correlated_noise_slabs

__all__ = ["ScannerAugmentation", "augment_scan", "vessel_region", "map_points_kji", "HU_RANGE",
           "VESSEL_HU_RANGE", "SHARPEN_SIGMA_MM"]

logger = logging.getLogger(__name__)

#: The range a CT scanner stores (12-bit plus offset), HU; the augmented image is clipped to it.
HU_RANGE = (-1024.0, 3071.0)
#: Plausible HU of blood in lung vessels, unenhanced (~40) to arterial phase (~500): the contrast shift keeps the
#: median vessel voxel inside it.
VESSEL_HU_RANGE = (0.0, 500.0)
#: Aerated lung, HU: the partial-volume rim of a vessel gets the shift in proportion to (hu − this) / (threshold −
#: this), i.e. to the fraction of the voxel the vessel fills.
LUNG_PARENCHYMA_HU = -850.0
#: Width (σ) of the unsharp mask that models a sharp (lung/bone) reconstruction kernel, mm, in-plane.
SHARPEN_SIGMA_MM = 1.0
#: FWHM of a Gaussian / its σ.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Absolute limits a config's ranges must respect: (name, lowest, highest, unit).
_LIMITS = {
    "kernel_blur_sigma_mm_range": (0.0, 3.0, "mm"),
    "kernel_sharpen_amount_range": (0.0, 3.0, ""),
    "noise_sd_hu_range": (0.0, 200.0, "HU"),
    "noise_correlation_mm_range": (0.0, 3.0, "mm"),
    "slice_thickness_mm_range": (0.5, 10.0, "mm"),
    "slice_overlap_range": (0.3, 1.0, ""),
    "in_plane_pixel_mm_range": (0.3, 2.0, "mm"),
    "vessel_shift_hu_range": (-500.0, 500.0, "HU"),
}


@dataclass(frozen=True)
class ScannerAugmentation:
    """Ranges and probabilities of :func:`augment_scan`'s scanner simulation (all lengths mm, intensities HU).

    Args:
        kernel_probability: chance of changing the reconstruction kernel.
        sharp_kernel_fraction: given a kernel change, chance that it is sharp (unsharp mask) rather than smooth.
        kernel_blur_sigma_mm_range: (lo, hi) σ of the smooth kernel's in-plane Gaussian, mm (issue: 0–1.0).
        kernel_sharpen_amount_range: (lo, hi) unsharp-mask amount of the sharp kernel (issue: 0–1.0).
        noise_probability: chance of adding noise.
        noise_sd_hu_range: (lo, hi) SD of the added noise, HU (issue: 0–30).
        noise_correlation_probability: given noise, chance that it is spatially correlated.
        noise_correlation_mm_range: (lo, hi) σ of the Gaussian that colours correlated noise, mm.
        thickness_probability: chance of simulating a thicker-slice reconstruction.
        slice_thickness_mm_range: (lo, hi) reconstructed slice thickness (FWHM of the z profile), mm (issue: 1–5).
        slice_overlap_range: (lo, hi) slice spacing as a fraction of the thickness (1 = contiguous slices).
        in_plane_probability: chance of resampling x and y.
        in_plane_pixel_mm_range: (lo, hi) new pixel size (x = y), mm (issue: 0.6–1.0).
        contrast_probability: chance of shifting the vessels' HU.
        vessel_shift_hu_range: (lo, hi) HU added to vessel voxels (issue: −150…+150).
        vessel_threshold_hu: lung voxels denser than this are vessel candidates (issue: > ~0 HU).
        vessel_max_radius_mm: dense structures a box of this half-width (mm) fits in are blobs (nodules, masses,
            the widest hilar trunks), not vessels, and keep their HU.
        crop_to_lungs_margin_mm: ``None``: the whole volume; a number: first crop to the lung mask's bounding box
            grown by this margin (mm), which makes the call several times faster on a whole CT.

    Raises:
        ValueError: a probability outside [0, 1], a range that is not (lo, hi) with lo <= hi inside its absolute
            limits, a non-positive ``vessel_max_radius_mm`` or a negative ``crop_to_lungs_margin_mm``; the message
            names the field and the value.

    Example:
        >>> ScannerAugmentation(noise_sd_hu_range=(30.0, 10.0))
        Traceback (most recent call last):
        ...
        ValueError: ScannerAugmentation.noise_sd_hu_range must be (lo, hi) with 0.0 <= lo <= hi <= 200.0 HU, got (30.0, 10.0)
    """

    kernel_probability: float = 0.8
    sharp_kernel_fraction: float = 0.5
    kernel_blur_sigma_mm_range: tuple[float, float] = (0.0, 1.0)
    kernel_sharpen_amount_range: tuple[float, float] = (0.0, 1.0)
    noise_probability: float = 0.8
    noise_sd_hu_range: tuple[float, float] = (0.0, 30.0)
    noise_correlation_probability: float = 0.5
    noise_correlation_mm_range: tuple[float, float] = (0.3, 0.8)
    thickness_probability: float = 0.5
    slice_thickness_mm_range: tuple[float, float] = (1.0, 5.0)
    slice_overlap_range: tuple[float, float] = (0.5, 1.0)
    in_plane_probability: float = 0.5
    in_plane_pixel_mm_range: tuple[float, float] = (0.6, 1.0)
    contrast_probability: float = 0.5
    vessel_shift_hu_range: tuple[float, float] = (-150.0, 150.0)
    vessel_threshold_hu: float = 0.0
    vessel_max_radius_mm: float = 3.0
    crop_to_lungs_margin_mm: Optional[float] = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_probability") or f.name == "sharp_kernel_fraction":
                if not _is_number(value) or not 0.0 <= value <= 1.0:
                    raise ValueError(f"ScannerAugmentation.{f.name} must be a probability in [0, 1], got {value!r}")
            elif f.name in _LIMITS:
                object.__setattr__(self, f.name, _checked_range(f.name, value))
        if not _is_number(self.vessel_threshold_hu) or not HU_RANGE[0] <= self.vessel_threshold_hu <= HU_RANGE[1]:
            raise ValueError(f"ScannerAugmentation.vessel_threshold_hu must be in {list(HU_RANGE)} HU, "
                             f"got {self.vessel_threshold_hu!r}")
        if not _is_number(self.vessel_max_radius_mm) or not 0.0 < self.vessel_max_radius_mm <= 20.0:
            raise ValueError(f"ScannerAugmentation.vessel_max_radius_mm must be in (0, 20] mm, "
                             f"got {self.vessel_max_radius_mm!r}")
        margin = self.crop_to_lungs_margin_mm
        if margin is not None and (not _is_number(margin) or margin < 0):
            raise ValueError(f"ScannerAugmentation.crop_to_lungs_margin_mm must be None or >= 0 mm, got {margin!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def _checked_range(name: str, value: Any) -> tuple[float, float]:
    lo_limit, hi_limit, unit = _LIMITS[name]
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value)
    if ok:
        lo, hi = (float(v) for v in value)
        ok = lo_limit <= lo <= hi <= hi_limit
    if not ok:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"ScannerAugmentation.{name} must be (lo, hi) with {lo_limit} <= lo <= hi <= "
                         f"{hi_limit}{suffix}, got {value!r}")
    return (lo, hi)


def augment_scan(volume: Volume, lung_mask: np.ndarray, rng: np.random.Generator,
                 config: ScannerAugmentation = ScannerAugmentation(), *,
                 protect_mask: Optional[np.ndarray] = None) -> tuple[Volume, np.ndarray, dict[str, Any]]:
    """Re-render ``volume`` as one randomly drawn scanner/protocol would have made it (see the module docstring).

    Args:
        volume: the CT, ``hu`` (Z, Y, X) in HU, LPS geometry; not modified.
        lung_mask: (Z, Y, X) integer or bool mask of the lungs on ``volume``'s grid (labels kept); not modified.
        rng: the only source of randomness (same generator state → same result).
        config: ranges and probabilities.
        protect_mask: optional (Z, Y, X) bool mask of voxels whose HU the contrast shift must not touch (e.g.
            pasted nodules smaller than the blob rule catches); keyword only.

    Returns:
        ``(augmented, lung_mask_out, params)``: ``augmented`` a :class:`Volume` with float32 HU (Z', Y', X') on the
        new grid (spacing updated, origin and direction unchanged unless cropped: then the origin is the crop's
        first voxel), ``lung_mask_out`` the lung mask on that grid (nearest neighbour, ``lung_mask``'s dtype), and
        ``params`` a JSON-ready dict of what was drawn and applied (``None`` for a step that did not apply):
        ``kernel`` ("smooth" / "sharp" / None), ``kernel_blur_sigma_mm``, ``kernel_sharpen_amount``,
        ``noise_sd_hu``, ``noise_correlation_mm``, ``slice_thickness_mm``, ``slice_spacing_mm``,
        ``in_plane_pixel_mm``, ``vessel_shift_hu`` (the shift actually applied after the range limit),
        ``vessel_voxels``, ``crop_offset_kji``, ``spacing_mm`` (x, y, z) and ``shape_zyx`` of the result.

    Raises:
        ValueError: ``lung_mask`` (or ``protect_mask``) does not have ``volume``'s shape, or
            ``crop_to_lungs_margin_mm`` is set and the lung mask is empty.

    Example:
        >>> hu = np.full((30, 48, 48), -850, np.int16)
        >>> cfg = ScannerAugmentation(thickness_probability=1.0, slice_thickness_mm_range=(5.0, 5.0),
        ...                           slice_overlap_range=(1.0, 1.0))
        >>> out, _, p = augment_scan(Volume(hu, (0.8, 0.8, 1.0), (0, 0, 0)), np.ones(hu.shape, bool),
        ...                          np.random.default_rng(1), cfg)
        >>> out.spacing_mm[2], p["slice_thickness_mm"]
        (5.0, 5.0)
    """
    _check_masks(volume, lung_mask, protect_mask)
    params = _draw_parameters(config, rng, volume.spacing_mm)
    volume, lung_mask, protect_mask, offset = _crop_to_lungs(volume, lung_mask, protect_mask,
                                                             config.crop_to_lungs_margin_mm)
    params["crop_offset_kji"] = [int(o) for o in offset]
    hu = np.asarray(volume.hu, dtype=np.float32).copy()
    params["vessel_voxels"] = None
    if params["vessel_shift_hu"] is not None:
        params["vessel_shift_hu"], params["vessel_voxels"] = _shift_vessels(
            hu, lung_mask, volume.spacing_mm, params["vessel_shift_hu"], config, protect_mask)
    new_spacing = (params["in_plane_pixel_mm"] or volume.spacing_mm[0],
                   params["in_plane_pixel_mm"] or volume.spacing_mm[1],
                   params["slice_spacing_mm"] or volume.spacing_mm[2])
    _blur_in_place(hu, _blur_sigma_vox(volume.spacing_mm, new_spacing, params))
    out, mask_out = _resample(volume.with_array(hu), lung_mask, new_spacing)
    hu = out.hu
    if params["kernel"] == "sharp":
        hu = _unsharp_in_plane(hu, out.spacing_mm, params["kernel_sharpen_amount"])
    if params["noise_sd_hu"] is not None:
        for sl, noise in correlated_noise_slabs(hu.shape, out.spacing_mm, params["noise_sd_hu"],
                                                params["noise_correlation_mm"] or 0.0, rng):
            hu[sl] += noise
    np.clip(hu, *HU_RANGE, out=hu)
    out = Volume(hu, out.spacing_mm, out.origin_lps_mm, out.direction, volume.source)
    params["spacing_mm"] = [round(s, 6) for s in out.spacing_mm]
    params["shape_zyx"] = list(out.shape_zyx)
    return out, mask_out, params


def map_points_kji(points_lps_mm: np.ndarray, volume: Volume) -> np.ndarray:
    """Array indices (k, j, i) on ``volume``'s grid (e.g. :func:`augment_scan`'s output) of LPS points.

    Truth stays in LPS mm through the augmentation (the resampling keeps world positions), so this is all a caller
    needs to place truth on the augmented grid; it is :meth:`Volume.lps_to_kji` under a name that says so.

    Args:
        points_lps_mm: (N, 3) or (3,) points (x, y, z), LPS mm.
        volume: the grid.

    Returns:
        (N, 3) float64 fractional indices (k, j, i); round them for voxel indices.

    Example:
        >>> v = Volume(np.zeros((10, 10, 10), np.float32), (0.5, 0.5, 2.0), (-1.0, 0.0, 0.0))
        >>> map_points_kji([[0.0, 1.0, 4.0]], v).tolist()
        [[2.0, 2.0, 2.0]]
    """
    return volume.lps_to_kji(np.atleast_2d(np.asarray(points_lps_mm, dtype=float)))


def _check_masks(volume: Volume, lung_mask: np.ndarray, protect_mask: Optional[np.ndarray]) -> None:
    for name, mask in (("lung_mask", lung_mask), ("protect_mask", protect_mask)):
        if mask is not None and np.shape(mask) != volume.shape_zyx:
            raise ValueError(f"augment_scan: {name} shape {np.shape(mask)} differs from the volume's "
                             f"{volume.shape_zyx} ({volume.source or 'volume'})")


def _draw_parameters(config: ScannerAugmentation, rng: np.random.Generator,
                     spacing_mm: tuple[float, float, float]) -> dict[str, Any]:
    """Draw every parameter (always 15 numbers, in a fixed order); ``None`` for the steps that do not apply."""
    apply = rng.random(5) < np.array([config.kernel_probability, config.noise_probability,
                                      config.thickness_probability, config.in_plane_probability,
                                      config.contrast_probability])
    sharp = rng.random() < config.sharp_kernel_fraction
    blur, amount = rng.uniform(*config.kernel_blur_sigma_mm_range), rng.uniform(*config.kernel_sharpen_amount_range)
    noise_sd = rng.uniform(*config.noise_sd_hu_range)
    correlated = rng.random() < config.noise_correlation_probability
    correlation = rng.uniform(*config.noise_correlation_mm_range)
    thickness, overlap = rng.uniform(*config.slice_thickness_mm_range), rng.uniform(*config.slice_overlap_range)
    pixel, shift = rng.uniform(*config.in_plane_pixel_mm_range), rng.uniform(*config.vessel_shift_hu_range)
    native_z = float(spacing_mm[2])
    thickness = max(float(thickness), native_z)  # a reconstruction cannot be thinner than the native slices
    return {
        "kernel": ("sharp" if sharp else "smooth") if apply[0] else None,
        "kernel_blur_sigma_mm": float(blur) if apply[0] and not sharp else None,
        "kernel_sharpen_amount": float(amount) if apply[0] and sharp else None,
        "noise_sd_hu": float(noise_sd) if apply[1] else None,
        "noise_correlation_mm": float(correlation) if apply[1] and correlated else None,
        "slice_thickness_mm": thickness if apply[2] else None,
        "slice_spacing_mm": max(thickness * float(overlap), native_z) if apply[2] else None,
        "in_plane_pixel_mm": float(pixel) if apply[3] else None,
        "vessel_shift_hu": float(shift) if apply[4] else None,
    }


def _crop_to_lungs(volume: Volume, lung_mask: np.ndarray, protect_mask: Optional[np.ndarray],
                   margin_mm: Optional[float]):
    """Crop to the lung box + margin (``margin_mm`` None: no crop); returns (volume, lung, protect, offset_kji)."""
    if margin_mm is None:
        return volume, lung_mask, protect_mask, (0, 0, 0)
    nz = np.argwhere(np.asarray(lung_mask) > 0)
    if len(nz) == 0:
        raise ValueError(f"augment_scan: crop_to_lungs_margin_mm is set but the lung mask of "
                         f"{volume.source or 'the volume'} is empty")
    pad = np.ceil(margin_mm / np.asarray(volume.spacing_mm[::-1])).astype(int)
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + 1 + pad, volume.shape_zyx)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    origin = volume.kji_to_lps(lo[None, :])[0]
    cropped = Volume(volume.hu[box], volume.spacing_mm, tuple(origin), volume.direction, volume.source)
    return cropped, np.asarray(lung_mask)[box], None if protect_mask is None else protect_mask[box], tuple(lo)


def vessel_region(hu: np.ndarray, lung_mask: np.ndarray, spacing_mm: tuple[float, float, float], *,
                  threshold_hu: float = 0.0, max_radius_mm: float = 3.0) -> np.ndarray:
    """Weight (0–1) of "vessel" in each voxel: dense tubular tissue inside the lungs, with its partial-volume rim.

    Core: lung voxels denser than ``threshold_hu`` minus the blobs, i.e. the morphological opening of those voxels
    by a box of half-width ``max_radius_mm``, grown by that box again within the dense voxels (a size rule: a tube
    thinner than about ``max_radius_mm`` × √2 in radius cannot hold the box, a nodule or mass wider than about
    2 × ``max_radius_mm`` can, and keeps its HU, and so do the first millimetres of the vessels that touch it; the
    regrowth also takes in the parts of a round blob that no box reaches). Rim: the lung
    voxels next to the core (one voxel, not next to a blob), weighted by the fraction of the voxel the vessel
    fills, (hu − :data:`LUNG_PARENCHYMA_HU`) / (threshold − :data:`LUNG_PARENCHYMA_HU`), clipped to [0, 1].
    Only the lung mask's bounding box is searched.

    Args:
        hu: (Z, Y, X) HU.
        lung_mask: (Z, Y, X) lung mask (nonzero = lung).
        spacing_mm: voxel size (x, y, z), mm.
        threshold_hu: lung voxels denser than this are vessel candidates, HU.
        max_radius_mm: half-width of the box of the size rule, mm.

    Returns:
        (Z, Y, X) float32 weights, 1 in the vessel core, 0 outside the lungs and in blobs.

    Raises:
        ValueError: ``lung_mask`` does not have ``hu``'s shape.

    Example:
        >>> hu = np.full((20, 40, 40), -850.0, np.float32); hu[:, 19:21, 19:21] = 40.0   # a 1.4 mm tube along z
        >>> hu[8:20, 2:14, 2:14] = 40.0                                                   # a 8 mm block
        >>> w = vessel_region(hu, np.ones(hu.shape, bool), (0.7, 0.7, 0.7))
        >>> float(w[10, 20, 20]), float(w[12, 8, 8])
        (1.0, 0.0)
    """
    if np.shape(lung_mask) != np.shape(hu):
        raise ValueError(f"vessel_region: lung_mask shape {np.shape(lung_mask)} differs from hu's {np.shape(hu)}")
    weight = np.zeros(np.shape(hu), dtype=np.float32)
    lung = np.asarray(lung_mask) > 0
    nz = np.argwhere(lung.any(axis=(1, 2))), np.argwhere(lung.any(axis=(0, 2))), np.argwhere(lung.any(axis=(0, 1)))
    if any(len(a) == 0 for a in nz):
        return weight
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz)
    lung, sub = lung[box], np.asarray(hu[box], dtype=np.float32)
    dense = (sub > threshold_hu) & lung
    size = [2 * int(round(max_radius_mm / s)) + 1 for s in spacing_mm[::-1]]  # (z, y, x) box side, voxels
    opened = ndimage.maximum_filter(ndimage.minimum_filter(dense, size=size), size=size)
    blobs = ndimage.maximum_filter(opened, size=size) & dense  # the caps of a ball that the boxes miss
    core = dense & ~blobs
    rim = ndimage.binary_dilation(core) & lung & ~ndimage.binary_dilation(blobs) & ~core
    part = np.clip((sub - LUNG_PARENCHYMA_HU) / (threshold_hu - LUNG_PARENCHYMA_HU), 0.0, 1.0)
    weight[box] = np.where(core, np.float32(1.0), np.where(rim, part, np.float32(0.0)))
    return weight


def _shift_vessels(hu: np.ndarray, lung_mask: np.ndarray, spacing_mm, shift_hu: float,
                   config: ScannerAugmentation, protect_mask: Optional[np.ndarray]) -> tuple[float, int]:
    """Add ``shift_hu`` × vessel weight to ``hu`` (this module's own copy); returns (applied shift, core voxels).

    The shift is limited so that the median core voxel stays in :data:`VESSEL_HU_RANGE`, and no core voxel is
    pushed out of that range (voxels already outside it are only moved towards it).
    """
    weight = vessel_region(hu, lung_mask, spacing_mm, threshold_hu=config.vessel_threshold_hu,
                           max_radius_mm=config.vessel_max_radius_mm)
    if protect_mask is not None:
        weight[np.asarray(protect_mask, dtype=bool)] = 0.0
    core = weight >= 1.0
    n_core = int(core.sum())
    if n_core == 0:
        return 0.0, 0
    lo, hi = VESSEL_HU_RANGE
    median = float(np.median(hu[core]))
    shift = float(np.clip(shift_hu, min(lo - median, 0.0), max(hi - median, 0.0)))
    touched = weight > 0
    old = hu[touched]
    new = old + np.float32(shift) * weight[touched]
    in_core = weight[touched] >= 1.0
    new[in_core] = np.clip(new[in_core], np.minimum(old[in_core], lo), np.maximum(old[in_core], hi))
    hu[touched] = new
    return shift, n_core


def _blur_sigma_vox(spacing_mm, new_spacing_mm, params: dict[str, Any]) -> tuple[float, float, float]:
    """Per-axis (z, y, x) σ in native voxels of the single Gaussian pass: slice profile, anti-aliasing, kernel."""
    sigma_mm = [0.0, 0.0, 0.0]  # x, y, z
    if params["slice_thickness_mm"] is not None:
        sigma_mm[2] = _extra_fwhm(params["slice_thickness_mm"], spacing_mm[2]) / FWHM_PER_SIGMA
    for axis in (0, 1):
        aa = _extra_fwhm(new_spacing_mm[axis], spacing_mm[axis]) / FWHM_PER_SIGMA
        sigma_mm[axis] = math.hypot(aa, params["kernel_blur_sigma_mm"] or 0.0)
    return tuple(sigma_mm[a] / spacing_mm[a] for a in (2, 1, 0))


def _extra_fwhm(target_mm: float, native_mm: float) -> float:
    """FWHM to add (in quadrature) to a native profile of FWHM ``native_mm`` to reach ``target_mm``; 0 if finer."""
    return math.sqrt(max(target_mm * target_mm - native_mm * native_mm, 0.0))


def _blur_in_place(hu: np.ndarray, sigma_vox: tuple[float, float, float]) -> None:
    """Separable Gaussian of ``sigma_vox`` (z, y, x) on this module's own float32 buffer (axes with σ 0 skipped)."""
    for axis, sigma in enumerate(sigma_vox):
        if sigma > 1e-3:
            ndimage.gaussian_filter1d(hu, sigma, axis=axis, output=hu, mode="nearest")


def _resample(volume: Volume, lung_mask: np.ndarray, spacing_mm) -> tuple[Volume, np.ndarray]:
    """Resample to ``spacing_mm`` (x, y, z) keeping origin and direction (linear HU, nearest-neighbour mask).

    The new grid has voxel (0, 0, 0) at the same LPS point and as many voxels as fit within the old extent.
    """
    if np.allclose(spacing_mm, volume.spacing_mm, rtol=0, atol=1e-9):
        return volume, np.asarray(lung_mask).copy()
    old_size = np.asarray(volume.shape_zyx[::-1])
    size = [int(n) for n in np.floor((old_size - 1) * np.asarray(volume.spacing_mm) / np.asarray(spacing_mm)
                                     + 1e-6) + 1]
    image = volume_to_sitk(volume)
    hu = sitk.GetArrayFromImage(_resample_image(image, size, spacing_mm, sitk.sitkLinear, HU_RANGE[0]))
    mask = np.asarray(lung_mask)
    mask_image = sitk.GetImageFromArray(mask.view(np.uint8) if mask.dtype == bool else mask)
    mask_image.CopyInformation(image)
    mask_out = sitk.GetArrayFromImage(_resample_image(mask_image, size, spacing_mm, sitk.sitkNearestNeighbor))
    out = Volume(hu.astype(np.float32, copy=False), tuple(spacing_mm), volume.origin_lps_mm, volume.direction,
                 volume.source)
    return out, mask_out.astype(mask.dtype, copy=False)


def _resample_image(image: sitk.Image, size: list[int], spacing_mm, interpolator: int,
                    default: float = 0.0) -> sitk.Image:
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(),
                         tuple(float(s) for s in spacing_mm), image.GetDirection(), default, image.GetPixelID())


def _unsharp_in_plane(hu: np.ndarray, spacing_mm, amount: float) -> np.ndarray:
    """``hu + amount · (hu − G(hu))`` with an in-plane Gaussian of σ :data:`SHARPEN_SIGMA_MM` (new float32 array)."""
    smooth = ndimage.gaussian_filter(hu, (0.0, SHARPEN_SIGMA_MM / spacing_mm[1], SHARPEN_SIGMA_MM / spacing_mm[0]),
                                     mode="nearest")
    smooth -= hu
    smooth *= np.float32(-amount)
    smooth += hu
    return smooth
