"""Paired volumetry: one nodule measured the same way on a prior and a current CT, for volume change and VDT.

A volume-doubling time depends only on the ratio of the two volumes, so what matters is that both are measured with
one method and one density cut. The pipeline's own outlines (the learned DenseSharp mask, or the adaptive classical
threshold) are fitted per scan: on a thick-section scan a small nodule's partial-volume halo is counted and its core
is diluted, and the two scans of a pair are not over-measured by the same factor (a 3 mm-section pair of a
nodule grown ×2.2 was measured ×1.5). The paired measurement:

1. **Levels** on each scan (:func:`lunglesionai.stages.segmentation.voi_levels`): the nodule core (upper quartile of
   the core sphere) and the lung parenchyma around it (median of the VOI below −500 HU).
2. **One foreground for both scans**: the denser of the two cores, at most ``max_foreground_hu`` (a calcified core
   does not move the cut), so the nodule is cut at the same density on both scans even when partial volume dilutes
   the smaller appearance.
3. **One threshold fraction**: each scan is cut half way (``threshold_fraction``) between its parenchyma and the
   common foreground, the level at which a blurred edge keeps its true position (half maximum), and segmented with
   :func:`lunglesionai.stages.segmentation.segment_nodule` at that fixed threshold: same region growing, the same
   vessel detachment (opening scaled by the nodule's size) and pleura separation on both scans.
4. **Partial-volume correction** (Kuhnigk J-M et al., "Morphological segmentation and partial volume analysis for
   volumetry of solid pulmonary lesions in thoracic CT scans", IEEE TMI 25(4):417-434, 2006,
   doi:10.1109/TMI.2006.871547): the voxels deeper inside the outline than ``shell_mm`` (at least the coarsest voxel
   spacing) count whole; those of the band within ``shell_mm`` of the outline's surface, on either side, count by
   their density fraction ``clip((HU − parenchyma) / (foreground − parenchyma), 0, 1)``. Band voxels outside the
   outline and above the threshold belong to something else (a vessel the detachment cut off, the chest wall) and
   are left out. A blur spreads a nodule's density without changing its sum, so the sum is nearly independent of
   slice thickness.

**Reliability** (our rules; :attr:`PairedVolumes.reasons` says which applied): the measurement is marked
unreliable when either outline fails (no contrast, not separable), when a scan's voxels are coarser than
``thin_section_mm`` (the Fleischner Society's 2017 guideline, MacMahon H et al., Radiology 2017;284(1):228-243,
asks for thin sections, ≤ 1.5 mm, to measure nodules), when the nodule's equivalent diameter is under
``min_voxels_across`` (5) of the scan's coarsest voxel spacing (our choice: on the project's pairs a 6.8 mm nodule
on 1.5 mm voxels, 4.5 across, had its ×1.7 growth measured as ×1.4), or when the nodule is not solid (foreground −
parenchyma under ``min_solid_contrast_hu``; sub-solid nodules have no sharp edge to measure). Then
:mod:`lunglesionai.clinical.followup` widens the VDT range.

On the project's follow-up pairs (pasted LIDC-IDRI nodules in warped copies of one scan; not clinical performance)
the paired volume ratio matched the true ratio better than the per-scan outlines did; the numbers and the command
are in README ("Comparison with a prior scan").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from scipy import ndimage

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.segmentation import dilate_mm, segment_nodule, voi_levels

__all__ = ["PAIRED_METHOD", "PairedVolumes", "PairedVolumetryConfig", "measure_pair", "partial_volume_mm3"]

PAIRED_METHOD = "paired (one foreground and threshold fraction, partial-volume corrected)"
"""``PairedVolumes.method`` of a successful paired measurement."""


@dataclass(frozen=True)
class PairedVolumetryConfig:
    """Parameters of :func:`measure_pair` (HU, mm).

    Args:
        threshold_fraction: each scan is cut at parenchyma + fraction × (foreground − parenchyma).
        max_foreground_hu: the common foreground is at most this (solid soft tissue; a calcified core, denser,
            does not raise it).
        shell_mm: half-width of the partial-volume band, at least the scan's coarsest voxel spacing.
        thin_section_mm: coarser voxel spacing (any axis) than this marks the measurement unreliable.
        min_voxels_across: an equivalent diameter under this many coarsest voxel spacings marks it unreliable.
        min_solid_contrast_hu: foreground − parenchyma under this (a sub-solid nodule) marks it unreliable.

    Raises:
        ValueError: a fraction outside (0, 1) or a size that is not positive.
    """

    threshold_fraction: float = 0.5
    max_foreground_hu: float = 150.0
    shell_mm: float = 1.5
    thin_section_mm: float = 1.5
    min_voxels_across: float = 5.0
    min_solid_contrast_hu: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold_fraction < 1:
            raise ValueError(f"threshold_fraction must be in (0, 1), got {self.threshold_fraction}")
        for name in ("shell_mm", "thin_section_mm", "min_voxels_across", "min_solid_contrast_hu"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PairedVolumetryConfig.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class PairedVolumes:
    """One nodule's volumes on the prior and the current scan, measured together (:func:`measure_pair`).

    Args:
        prior_volume_mm3, current_volume_mm3: the volumes (mm³); None where the outline failed.
        method: :data:`PAIRED_METHOD`, or why there is no paired measurement.
        reliable: False when a reliability rule applied (module docstring).
        reasons: the rules that applied, in words (empty when reliable).
        foreground_hu: the common foreground (HU); None when it could not be measured.
        threshold_hu: (prior, current) thresholds (HU).
        prior_mask, current_mask: the outlines on each scan's grid (None where they failed).
    """

    prior_volume_mm3: Optional[float]
    current_volume_mm3: Optional[float]
    method: str
    reliable: bool
    reasons: tuple[str, ...]
    foreground_hu: Optional[float] = None
    threshold_hu: tuple[Optional[float], Optional[float]] = (None, None)
    prior_mask: Optional[FindingMask] = None
    current_mask: Optional[FindingMask] = None

    @property
    def measured(self) -> bool:
        """Both volumes were measured."""
        return self.prior_volume_mm3 is not None and self.current_volume_mm3 is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no masks): ``method``, ``reliable``, ``reasons``, ``prior_volume_mm3``,
        ``current_volume_mm3``, ``foreground_hu``, ``threshold_hu``."""
        return {"method": self.method, "reliable": self.reliable, "reasons": list(self.reasons),
                "prior_volume_mm3": self.prior_volume_mm3, "current_volume_mm3": self.current_volume_mm3,
                "foreground_hu": self.foreground_hu, "threshold_hu": list(self.threshold_hu)}


def measure_pair(prior: Volume, prior_center_kji: Sequence[float], prior_radius_mm: float,
                 current: Volume, current_center_kji: Sequence[float], current_radius_mm: float, *,
                 prior_lung_mask: Optional[np.ndarray] = None, current_lung_mask: Optional[np.ndarray] = None,
                 config: PairedVolumetryConfig = PairedVolumetryConfig()) -> PairedVolumes:
    """Measure one matched nodule on both scans with one method (module docstring).

    Args:
        prior, current: the two CTs (HU, each on its own grid and orientation).
        prior_center_kji, current_center_kji: (k, j, i) fractional array index of the nodule on each scan.
        prior_radius_mm, current_radius_mm: its expected radius on each (mm; e.g. half the reported mean diameter).
        prior_lung_mask, current_lung_mask: optional (Z, Y, X) lung masks of each scan (pleura separation).
        config: see :class:`PairedVolumetryConfig`.

    Returns:
        :class:`PairedVolumes`; a failed outline gives None for that volume, ``reliable`` False and the reason.

    Raises:
        ValueError: a centre outside its volume, a radius that is not positive, or a lung mask of another shape.

    Example:
        >>> pair = measure_pair(prior, (40, 64, 64), 4.0, current, (41, 60, 66), 5.0)   # doctest: +SKIP
        >>> pair.current_volume_mm3 / pair.prior_volume_mm3                              # doctest: +SKIP
    """
    scans = (("prior", prior, prior_center_kji, prior_radius_mm, prior_lung_mask),
             ("current", current, current_center_kji, current_radius_mm, current_lung_mask))
    levels = [voi_levels(volume, tuple(centre), radius) for _, volume, centre, radius, _ in scans]
    foreground = min(max(core for core, _ in levels), config.max_foreground_hu)
    reasons: list[str] = []
    volumes: list[Optional[float]] = []
    masks: list[Optional[FindingMask]] = []
    thresholds: list[Optional[float]] = []
    for (name, volume, centre, radius, lung), (_, background) in zip(scans, levels):
        coarsest = float(max(volume.spacing_mm))
        if coarsest > config.thin_section_mm:
            reasons.append(f"{coarsest:.1f} mm voxels on the {name} scan (thin sections are <= "
                           f"{config.thin_section_mm:g} mm)")
        if foreground - background < config.min_solid_contrast_hu:
            reasons.append(f"not solid on the {name} scan (core {foreground:.0f} HU over parenchyma "
                           f"{background:.0f} HU)")
        threshold = background + config.threshold_fraction * (foreground - background)
        mask = None
        if foreground > background:
            mask = segment_nodule(volume, tuple(centre), radius, lung, threshold_hu=threshold)
        thresholds.append(float(threshold))
        masks.append(mask)
        if mask is None:
            reasons.append(f"no outline at {threshold:.0f} HU on the {name} scan")
            volumes.append(None)
            continue
        shell = max(config.shell_mm, coarsest)
        volume_mm3 = partial_volume_mm3(volume, mask, background, foreground, shell, threshold_hu=threshold)
        diameter = (6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)
        if diameter < config.min_voxels_across * coarsest:
            reasons.append(f"{diameter:.1f} mm across on {coarsest:.1f} mm voxels on the {name} scan")
        volumes.append(volume_mm3)
    method = PAIRED_METHOD if all(v is not None for v in volumes) else "no paired measurement"
    return PairedVolumes(volumes[0], volumes[1], method, not reasons, tuple(dict.fromkeys(reasons)),
                         float(foreground), (thresholds[0], thresholds[1]), masks[0], masks[1])


def partial_volume_mm3(volume: Volume, mask: FindingMask, background_hu: float, foreground_hu: float,
                       shell_mm: float, *, threshold_hu: Optional[float] = None) -> float:
    """Outline volume with the partial-volume band of Kuhnigk et al. 2006 (module docstring, step 4).

    Args:
        volume: the CT (HU).
        mask: the outline on ``volume``'s grid.
        background_hu, foreground_hu: parenchyma and nodule levels (HU); foreground > background.
        shell_mm: half-width of the band around the outline's surface (mm).
        threshold_hu: band voxels outside the outline at or above it are another structure and not counted (None:
            all counted).

    Returns:
        Volume in mm³: the voxels deeper than ``shell_mm`` inside the outline plus the density fractions of the band
        within ``shell_mm`` of its surface, times the voxel volume.

    Raises:
        ValueError: foreground not above background, or a shell that is not positive.
    """
    if not foreground_hu > background_hu:
        raise ValueError(f"foreground {foreground_hu} HU must be above background {background_hu} HU")
    if not shell_mm > 0:
        raise ValueError(f"shell_mm must be > 0, got {shell_mm}")
    spacing = np.asarray(volume.spacing_mm[::-1], float)
    pad = np.ceil(shell_mm / spacing).astype(int) + 1
    offset = np.asarray(mask.offset_kji)
    lo = np.maximum(offset - pad, 0)
    hi = np.minimum(offset + np.asarray(mask.array.shape) + pad, volume.shape_zyx)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    inside = np.zeros(tuple(hi - lo), bool)
    FindingMask(tuple(int(o) for o in offset - lo), mask.array).paste_into(inside, True)
    hu = np.asarray(volume.hu[window], np.float32)
    core = ndimage.distance_transform_edt(np.pad(inside, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] > shell_mm
    band = dilate_mm(inside, shell_mm, spacing) & ~core
    if threshold_hu is not None:
        band &= inside | (hu < threshold_hu)
    fraction = np.clip((hu[band] - background_hu) / (foreground_hu - background_hu), 0.0, 1.0)
    return float((np.count_nonzero(core) + fraction.sum()) * volume.voxel_volume_mm3)

