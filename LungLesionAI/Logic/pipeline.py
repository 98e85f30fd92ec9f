"""Pipeline v0: chest CT Volume -> Report of nodule findings, as a chain of named stages on plain data.

Stages (each a function of arrays and geometry; no files, no Slicer):

1. ``reorient_to_lps``: exact axis permutation/flip so the array is LPS-ordered (undone for the masks at the end).
2. ``lung_mask``: classical lung segmentation (:func:`lunglesionai.lungmask.segment_lungs`).
3. ``detection``: the learned RetinaNet detector (:mod:`lunglesionai.learned_detection`, default) or the classical
   multi-scale blob detector (:func:`lunglesionai.detection.detect_candidates`, the baseline) in the lungs.
   ``fp_reduction``: with the learned detector, the decoupled classifier (:mod:`lunglesionai.fpr`) re-scores each
   candidate; the finding's ``detection_score`` is then sqrt(detector score × FPR probability), both kept in
   ``extra``. Candidates below the operating point (``min_score``; default: the one stored with the FPR model,
   chosen on the composite validation set) are dropped.
4. ``segmentation``: classical per-candidate 3D segmentation (:func:`lunglesionai.segmentation.segment_nodule`).
5. ``measurement``: centre, axes, volume, mean HU, texture from each mask (:mod:`lunglesionai.measurements`),
   then duplicate merging.
6. ``grading``: the learned DenseSharp grader (:mod:`lunglesionai.grader`) outlines each finding again and adds
   malignancy probability, texture and the invasiveness surrogate; measurements are redone on its mask.

Universal lesion detection has no model yet: the Report lists it as ``"not run"``; so are grading and false-positive
reduction when their model is not found (the learned detector falls back to the classical one, with a warning).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from . import __version__
from .detection import BlobDetectorConfig, Candidate, detect_candidates
from .learned_detection import boxes_to_candidates
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
#: A learned mask more than this many times the classical equivalent diameter is not trusted.
MAX_LEARNED_DIAMETER_RATIO = 1.6

_STAGE_WEIGHTS = {"lung_mask": 0.15, "detection": 0.45, "segmentation": 0.25, "measurement": 0.05, "grading": 0.1}


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of :func:`analyze_volume`.

    Args:
        detector: "learned" (RetinaNet + FP reduction, default) or "classical" (multi-scale blob detector).
        blob: settings of the classical detector.
        min_diameter_mm, max_diameter_mm: findings whose segmented equivalent diameter falls outside are dropped
            (3 mm is the smallest nodule Lung-RADS/LUNA16 count; 30 mm separates nodules from masses).
        max_candidates: at most this many candidates are segmented (highest detector score first).
        min_score: operating point: candidates whose score is below it are not segmented; None: the detector's
            default (learned: stored with the FPR model; classical: 0, the most sensitive).
        grade: run the DenseSharp grader.
        grader_model_dir, detector_model_dir, fpr_model_dir: model folders (None: ``models/<name>`` or
            ``$LUNGLESIONAI_MODELS/<name>``).
        fpr: run the false-positive reduction after the learned detector.
        device: "auto" (CUDA when torch sees one), "cpu" or "cuda" for the learned detector.
    """

    detector: str = "learned"
    blob: BlobDetectorConfig = field(default_factory=BlobDetectorConfig)
    min_diameter_mm: float = 3.0
    max_diameter_mm: float = 30.0
    max_candidates: int = 120
    min_score: Optional[float] = None
    grade: bool = True
    grader_model_dir: Optional[str] = None
    detector_model_dir: Optional[str] = None
    fpr_model_dir: Optional[str] = None
    fpr: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.detector not in _DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {sorted(_DETECTORS)}")
        if not 0 < self.min_diameter_mm < self.max_diameter_mm:
            raise ValueError(
                f"need 0 < min_diameter_mm < max_diameter_mm, got {self.min_diameter_mm}, {self.max_diameter_mm}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {self.min_score}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


@dataclass(frozen=True)
class _Detection:
    """What a detection method returns: candidates (after FP reduction when it ran), the operating point it
    applied, the Report.stages texts of "detection" and "fp_reduction", and the models used."""

    candidates: list[Candidate]
    stages: dict[str, str]
    models: list[dict[str, str]] = field(default_factory=list)


def _classical_detector(volume: Volume, lung_mask: np.ndarray, config: PipelineConfig) -> _Detection:
    threshold = 0.0 if config.min_score is None else config.min_score
    candidates = [c for c in detect_candidates(volume, lung_mask, config.blob) if c.score >= threshold]
    return _Detection(candidates, {"detection": f"classical multi-scale blob detector (min score {threshold})"})


def _learned_detector(volume: Volume, lung_mask: np.ndarray, config: PipelineConfig) -> _Detection:
    from .learned_detection import combine_scores
    from .model_store import ModelFileError

    try:
        detector = _load_learned("detector", config.detector_model_dir)
    except ModelFileError as error:
        logger.warning("learned detector unavailable (%s); using the classical detector", error)
        fallback = _classical_detector(volume, lung_mask, config)
        return replace(fallback, stages={"detection": f"{fallback.stages['detection']}; the learned detector was "
                                                      f"not found: {error}"})
    reducer, fpr_stage = None, NOT_RUN
    if config.fpr:
        try:
            reducer = _load_learned("fpr", config.fpr_model_dir)
        except ModelFileError as error:
            logger.warning("false-positive reduction not run: %s", error)
            fpr_stage = f"{NOT_RUN} (no FPR model: {error})"
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and torch_cuda_available()) else "cpu"
    grid, boxes, scores = detector.predict(volume, lung_mask, device=device)
    details: list[dict] = [{"detector_score": round(float(s), 4)} for s in scores]
    threshold = detector.default_min_score if config.min_score is None else config.min_score
    if reducer is not None and len(boxes):
        probabilities = reducer.probabilities(grid.image, 0.5 * (boxes[:, :3] + boxes[:, 3:]))
        for d, p in zip(details, probabilities):
            d["fpr_probability"] = round(float(p), 4)
        scores = combine_scores(scores, probabilities)
        threshold = reducer.default_min_score if config.min_score is None else config.min_score
        fpr_stage = "decoupled 3-D CNN classifier on detector-grid crops (NoduleNet-style)"
    candidates = [c for c in boxes_to_candidates(volume, grid, boxes, scores, lung_mask, details)
                  if c.score >= threshold]
    models = [detector.model_info()] + ([reducer.model_info()] if reducer is not None else [])
    stages = {"detection": f"RetinaNet 3-D (MONAI) on a {detector.config.spacing_mm} mm grid, {device} "
                           f"(operating point: score >= {threshold:.3f})", "fp_reduction": fpr_stage}
    return _Detection(candidates, stages, models)


def torch_cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=4)
def _load_learned(name: str, folder: Optional[str]):
    """The ``detector`` or ``fpr`` model of ``folder`` (None = default folder), loaded once per process.

    Raises:
        lunglesionai.model_store.ModelFileError: the model is missing or broken.
    """
    from .fpr import FalsePositiveReducer
    from .learned_detection import LearnedDetector

    return {"detector": LearnedDetector, "fpr": FalsePositiveReducer}[name].load(folder)


#: Registry of detection methods: name -> function(volume, lung_mask, config) -> _Detection.
_DETECTORS: dict[str, Callable[[Volume, np.ndarray, PipelineConfig], _Detection]] = {
    "learned": _learned_detector,
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
    planned = ["lung_mask", "detection", "segmentation", "measurement"] + (["grading"] if config.grade else [])
    models: list[dict[str, str]] = []
    tracker = _StageTracker(progress, planned)
    stages = {s: NOT_RUN for s in STAGES}
    lps_volume, permutation = reorient_to_lps(volume)

    with tracker("lung_mask"):
        lung_mask = segment_lungs(lps_volume)
        stages["lung_mask"] = "classical (threshold, airway removal, left/right split, hole filling)"
    with tracker("detection"):
        detection = _DETECTORS[config.detector](lps_volume, lung_mask, config)
        candidates = detection.candidates[: config.max_candidates]
        stages.update(detection.stages)
        models += detection.models
        logger.info("%d candidates", len(candidates))
    with tracker("segmentation"):
        masks = [segment_nodule(lps_volume, c.center_kji, c.radius_mm, lung_mask) for c in candidates]
        stages["segmentation"] = "classical (adaptive threshold, region growing, vessel/pleura detachment)"
    with tracker("measurement"):
        findings = _measure_findings(lps_volume, candidates, masks, config)
        findings = merge_duplicates(findings)
        stages["measurement"] = "mask-based (equivalent diameter, axial long/short axis, volume, mean HU, texture)"
    if config.grade:
        with tracker("grading"):
            findings, stages, grader_models = _grade_findings(lps_volume, lung_mask, findings, stages, config)
        models += grader_models
    findings = [_mask_to_input_grid(f, permutation, volume.shape_zyx) for f in findings]

    return Report(
        input=InputInfo.from_volume(volume),
        findings=_renumber(findings),
        stages=stages,
        timings_s=tracker.timings_s,
        device="cpu",
        version=__version__,
        models=models,
    )


def _grade_findings(
    volume: Volume, lung_mask: np.ndarray, findings: list[Finding], stages: dict[str, str], config: PipelineConfig
) -> tuple[list[Finding], dict[str, str], list[dict[str, str]]]:
    """Learned segmentation and grading of every finding (DenseSharp grader); re-measures from the learned mask.

    Without a usable model the findings are returned unchanged and the grading stage says why it did not run.
    """
    from .grader import GraderModelError

    stages = dict(stages)
    try:
        grader = _load_grader(config.grader_model_dir)
    except GraderModelError as error:
        logger.warning("grading not run: %s", error)
        stages["grading"] = f"{NOT_RUN} (no grader model: {error})"
        return findings, stages, []
    centers = [volume.lps_to_kji([f.center_lps_mm])[0] for f in findings]
    results = grader.grade_many(volume, centers, [f.diameter_mm for f in findings])
    graded = [_apply_grade(volume, lung_mask, f, r, config) for f, r in zip(findings, results)]
    stages["segmentation"] = "DenseSharp learned mask (classical mask screens candidates and seeds the size)"
    stages["grading"] = "DenseSharp multi-task grader (malignancy, texture, invasiveness surrogate)"
    return merge_duplicates(graded), stages, [grader.model_info()]


@functools.lru_cache(maxsize=2)
def _load_grader(model_dir: Optional[str]):
    """The grader of ``model_dir`` (None = default), loaded once per process."""
    from .grader import NoduleGrader

    return NoduleGrader.load(model_dir)


def _apply_grade(volume: Volume, lung_mask: np.ndarray, finding: Finding, grade, config: PipelineConfig) -> Finding:
    """The finding with the grader's outputs; mask and measurements from the learned mask when it is plausible.

    The learned mask is clipped to the lung mask and reduced to its component overlapping the classical mask.
    It replaces the classical one only when its centre stays within the classical equivalent radius and its
    diameter within :data:`MAX_LEARNED_DIAMETER_RATIO` of the classical one: the grader was trained on crops
    centred on real nodules, so on a vessel or the pleura it can outline the wrong structure.
    """
    extra = dict(finding.extra)
    extra.update(
        malignancy_rating=round(grade.malignancy_rating, 3),
        texture_probabilities={k: round(v, 4) for k, v in grade.texture_probabilities.items()},
        texture_hu_rule=finding.texture,
        mask_source="classical",
    )
    updates = dict(
        malignancy_probability=round(grade.malignancy_probability, 4),
        invasiveness={k: round(v, 4) for k, v in grade.invasiveness.items()},
        texture=grade.texture,
        extra=extra,
    )
    learned = _restrict_learned_mask(grade.mask, finding.mask, lung_mask)
    if learned is not None:
        m = measure_mask(volume, learned)
        shift_mm = float(np.linalg.norm(np.subtract(m.center_lps_mm, finding.center_lps_mm)))
        plausible = (
            config.min_diameter_mm <= m.diameter_mm <= config.max_diameter_mm
            and shift_mm <= finding.diameter_mm / 2
            and m.diameter_mm <= MAX_LEARNED_DIAMETER_RATIO * finding.diameter_mm
        )
        if plausible:
            extra["mask_source"] = "densesharp"
            updates.update(
                center_lps_mm=tuple(m.center_lps_mm),
                bbox_lps_mm=tuple(tuple(c) for c in m.bbox_lps_mm),
                diameter_mm=m.diameter_mm,
                long_axis_mm=m.long_axis_mm,
                short_axis_mm=m.short_axis_mm,
                volume_mm3=m.volume_mm3,
                mean_hu=m.mean_hu,
                mask=learned,
            )
    return replace(finding, **updates)


def _restrict_learned_mask(
    learned: Optional[FindingMask], classical: Optional[FindingMask], lung_mask: np.ndarray
) -> Optional[FindingMask]:
    """``learned`` inside the lung mask, keeping only its connected component that overlaps ``classical`` most."""
    from scipy import ndimage

    if learned is None or classical is None or learned.voxel_count == 0:
        return None
    inside = np.zeros(learned.array.shape, dtype=np.uint8)
    FindingMask(tuple(-o for o in learned.offset_kji), lung_mask > 0).paste_into(inside, 1)
    labels, n = ndimage.label(learned.array & (inside > 0))
    if n == 0:
        return None
    reference = np.zeros(learned.array.shape, dtype=np.uint8)
    shift = tuple(c - o for c, o in zip(classical.offset_kji, learned.offset_kji))
    FindingMask(shift, classical.array).paste_into(reference, 1)
    overlap = np.bincount(labels[reference > 0], minlength=n + 1)[1:]
    if overlap.max() == 0:
        return None
    return FindingMask(learned.offset_kji, labels == int(np.argmax(overlap)) + 1)


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
                extra={"detector": candidate.method, "detector_radius_mm": round(float(candidate.radius_mm), 2),
                       **candidate.details},
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

    def __init__(self, progress: Optional[ProgressCallback], planned: list[str]) -> None:
        self._progress = progress
        total = sum(_STAGE_WEIGHTS[s] for s in planned)
        self._weights = {s: _STAGE_WEIGHTS[s] / total for s in planned}
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
        self._done = min(1.0, self._done + self._weights.get(self._stage, 0.0))
        logger.info("stage %s: %.2f s", self._stage, self.timings_s[self._stage])
        if self._progress and exc[0] is None:
            self._progress(self._stage, self._done)
