"""Pipeline v0: chest CT Volume -> Report of nodule findings, as a chain of named stages on plain data.

Stages (each a function of arrays and geometry; no files, no Slicer):

1. ``reorient_to_lps``: exact axis permutation/flip so the array is LPS-ordered (undone for the masks at the end).
2. ``lung_mask``: classical lung segmentation (:func:`lunglesionai.lungmask.segment_lungs`).
3. ``detection``: classical multi-scale blob detector in the lungs (:func:`lunglesionai.detection.detect_candidates`).
4. ``segmentation``: classical per-candidate 3D segmentation (:func:`lunglesionai.segmentation.segment_nodule`).
5. ``measurement``: centre, axes, volume, mean HU, texture from each mask (:mod:`lunglesionai.measurements`),
   then duplicate merging.

False-positive reduction, grading and universal lesion detection have no model yet: the Report lists them as
``"not run"`` and leaves their fields ``None``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from . import __version__
from .detection import BlobDetectorConfig, Candidate, detect_candidates
from .findings import NOT_RUN, STAGES, Finding, FindingMask, InputInfo, Report
from .lungmask import segment_lungs
from .measurements import measure_mask
from .orientation import reorient_to_lps
from .segmentation import segment_nodule
from .volume import Volume

__all__ = ["PipelineConfig", "ProgressCallback", "analyze_volume", "merge_duplicates"]

logger = logging.getLogger(__name__)

#: ``progress(stage, fraction)``: stage is a name from :data:`lunglesionai.findings.STAGES`, fraction in [0, 1]
#: of the whole analysis.
ProgressCallback = Callable[[str, float], None]

#: Share of the run each stage takes on a typical CT, for the progress fraction.
_STAGE_WEIGHTS = {"lung_mask": 0.15, "detection": 0.45, "segmentation": 0.3, "measurement": 0.1}


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of :func:`analyze_volume`.

    Args:
        detector: detection method; only "classical" (multi-scale blob detector) exists in v0.
        blob: settings of the classical detector.
        min_diameter_mm, max_diameter_mm: findings whose segmented equivalent diameter falls outside are dropped
            (3 mm is the smallest nodule Lung-RADS/LUNA16 count; 30 mm separates nodules from masses).
        max_candidates: at most this many candidates are segmented (highest detector score first).
        min_score: candidates below this detector score are not segmented.
    """

    detector: str = "classical"
    blob: BlobDetectorConfig = field(default_factory=BlobDetectorConfig)
    min_diameter_mm: float = 3.0
    max_diameter_mm: float = 30.0
    max_candidates: int = 120
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.detector not in _DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {sorted(_DETECTORS)}")
        if not 0 < self.min_diameter_mm < self.max_diameter_mm:
            raise ValueError(
                f"need 0 < min_diameter_mm < max_diameter_mm, got {self.min_diameter_mm}, {self.max_diameter_mm}"
            )
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {self.min_score}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


def _classical_detector(volume: Volume, lung_mask: np.ndarray, config: PipelineConfig) -> list[Candidate]:
    return detect_candidates(volume, lung_mask, config.blob)


#: Registry of detection methods: name -> function(volume, lung_mask, config) -> candidates.
_DETECTORS: dict[str, Callable[[Volume, np.ndarray, PipelineConfig], list[Candidate]]] = {
    "classical": _classical_detector,
}


def analyze_volume(
    volume: Volume,
    config: PipelineConfig = PipelineConfig(),
    progress: Optional[ProgressCallback] = None,
) -> Report:
    """Find, outline and measure lung nodules in a chest CT.

    Args:
        volume: CT in HU, any axis orientation (it is reoriented to LPS internally and masks are mapped back).
        config: pipeline settings.
        progress: optional ``progress(stage, fraction)`` callback, called when each stage starts and ends.

    Returns:
        Report whose findings (kind "nodule", ids "N1", "N2", … by decreasing detection score) carry masks on
        ``volume``'s own grid and LPS-mm measurements; ``Report.stages`` says which method ran per stage.

    Raises:
        ValueError: the volume is not 3-D or the config is inconsistent.

    Example:
        >>> from lunglesionai.synth import PhantomConfig, make_phantom
        >>> report = analyze_volume(make_phantom(PhantomConfig.small()).volume)  # doctest: +SKIP
    """
    tracker = _StageTracker(progress)
    stages = {s: NOT_RUN for s in STAGES}
    lps_volume, permutation = reorient_to_lps(volume)

    with tracker("lung_mask"):
        lung_mask = segment_lungs(lps_volume)
        stages["lung_mask"] = "classical (threshold, airway removal, left/right split, hole filling)"
    with tracker("detection"):
        candidates = _DETECTORS[config.detector](lps_volume, lung_mask, config)
        candidates = [c for c in candidates if c.score >= config.min_score][: config.max_candidates]
        stages["detection"] = f"{config.detector} multi-scale blob detector"
        logger.info("%d candidates", len(candidates))
    with tracker("segmentation"):
        masks = [segment_nodule(lps_volume, c.center_kji, c.radius_mm, lung_mask) for c in candidates]
        stages["segmentation"] = "classical (adaptive threshold, region growing, vessel/pleura detachment)"
    with tracker("measurement"):
        findings = _measure_findings(lps_volume, candidates, masks, config)
        findings = merge_duplicates(findings)
        findings = [_mask_to_input_grid(f, permutation, volume.shape_zyx) for f in findings]
        stages["measurement"] = "mask-based (equivalent diameter, axial long/short axis, volume, mean HU, texture)"

    return Report(
        input=InputInfo.from_volume(volume),
        findings=_renumber(findings),
        stages=stages,
        timings_s=tracker.timings_s,
        device="cpu",
        version=__version__,
    )


def _measure_findings(
    volume: Volume, candidates: list[Candidate], masks: list[Optional[FindingMask]], config: PipelineConfig
) -> list[Finding]:
    """One Finding per candidate whose mask is plausible (non-empty, diameter within the configured range)."""
    findings = []
    for candidate, mask in zip(candidates, masks):
        if mask is None or mask.voxel_count == 0:
            continue
        m = measure_mask(volume, mask)
        if not config.min_diameter_mm <= m.diameter_mm <= config.max_diameter_mm:
            logger.debug("dropped candidate at %s: diameter %.1f mm", candidate.center_kji, m.diameter_mm)
            continue
        findings.append(
            Finding(
                id="",
                kind="nodule",
                center_lps_mm=tuple(m.center_lps_mm),
                bbox_lps_mm=tuple(tuple(c) for c in m.bbox_lps_mm),
                detection_score=float(np.clip(candidate.score, 0.0, 1.0)),
                diameter_mm=m.diameter_mm,
                long_axis_mm=m.long_axis_mm,
                short_axis_mm=m.short_axis_mm,
                volume_mm3=m.volume_mm3,
                mean_hu=m.mean_hu,
                texture=m.texture,
                extra={"detector": candidate.method, "detector_radius_mm": round(float(candidate.radius_mm), 2)},
                mask=mask,
            )
        )
    return findings


def merge_duplicates(findings: list[Finding]) -> list[Finding]:
    """Merge findings that describe the same nodule, keeping the highest-scoring one.

    Two findings are duplicates when their masks share a voxel, or when either's centre lies within the other's
    equivalent radius (for findings without masks). The kept finding's mask becomes the union of the group's masks
    only when they overlap; its measurements are those of the kept finding.

    Args:
        findings: nodules with masks on one common grid (any order).

    Returns:
        The findings without duplicates, by decreasing ``detection_score``; inputs are not modified.
    """
    ordered = sorted(findings, key=lambda f: -(f.detection_score or 0.0))
    kept: list[Finding] = []
    for finding in ordered:
        if not any(_same_nodule(finding, k) for k in kept):
            kept.append(finding)
    return kept


def _same_nodule(a: Finding, b: Finding) -> bool:
    distance = float(np.linalg.norm(np.subtract(a.center_lps_mm, b.center_lps_mm)))
    radius = max((a.diameter_mm or 0.0), (b.diameter_mm or 0.0)) / 2
    if distance <= radius:
        return True
    if a.mask is None or b.mask is None:
        return False
    return _masks_overlap(a.mask, b.mask)


def _masks_overlap(a: FindingMask, b: FindingMask) -> bool:
    lo = np.maximum(a.offset_kji, b.offset_kji)
    hi = np.minimum(np.add(a.offset_kji, a.array.shape), np.add(b.offset_kji, b.array.shape))
    if np.any(hi <= lo):
        return False
    sa = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, a.offset_kji))
    sb = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, b.offset_kji))
    return bool(np.any(a.array[sa] & b.array[sb]))


def _mask_to_input_grid(finding: Finding, permutation, shape_zyx: tuple[int, int, int]) -> Finding:
    """Map a finding's mask from the LPS-reoriented grid back to the input volume's grid (exact)."""
    if finding.mask is None or permutation.is_identity:
        return finding
    offset, array = permutation.invert_crop(finding.mask.offset_kji, finding.mask.array)
    return replace(finding, mask=FindingMask(tuple(int(o) for o in offset), array))


def _renumber(findings: list[Finding]) -> list[Finding]:
    return [replace(f, id=f"N{i}") for i, f in enumerate(findings, start=1)]


class _StageTracker:
    """Context manager factory timing each stage and reporting progress."""

    def __init__(self, progress: Optional[ProgressCallback]) -> None:
        self._progress = progress
        self._done = 0.0
        self.timings_s: dict[str, float] = {}

    def __call__(self, stage: str) -> "_StageTracker":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()
        if self._progress:
            self._progress(self._stage, self._done)

    def __exit__(self, *exc) -> None:
        self.timings_s[self._stage] = time.perf_counter() - self._start
        self._done = min(1.0, self._done + _STAGE_WEIGHTS.get(self._stage, 0.0))
        logger.info("stage %s: %.2f s", self._stage, self.timings_s[self._stage])
        if self._progress and exc[0] is None:
            self._progress(self._stage, self._done)
