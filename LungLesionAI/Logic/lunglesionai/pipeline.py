"""Pipeline v0: chest CT Volume -> Report of nodule findings, as a chain of named stages on plain data.

Stages (each a function of arrays and geometry; no files, no Slicer):

1. ``reorient_to_lps``: exact axis permutation/flip so the array is LPS-ordered (undone for the masks at the end).
2. ``lung_mask``: classical lung segmentation (:func:`lunglesionai.stages.lung_mask.segment_lungs`).
3. ``detection`` and ``fp_reduction`` (:func:`lunglesionai.stages.nodule_detection.detect_nodules`): nodule candidates in
   the lungs from the learned, classical or combined detector, re-scored by the decoupled FP-reduction classifier;
   the finding's ``detection_score`` is then sqrt(detector score × FPR probability), both kept in ``extra``.
   Candidates below the operating point (``min_score``; default: the one stored with the FPR model, chosen on the
   composite validation set) are dropped.
4. ``segmentation``: classical per-candidate 3D segmentation (:func:`lunglesionai.stages.segmentation.segment_nodule`); a
   learned detection it cannot separate from a vessel or the pleura keeps the dense part of the detector's ball
   (:func:`lunglesionai.stages.segmentation.ball_mask`, ``extra["mask_source"]`` "detector box").
5. ``measurement``: centre, axes, volume, mean HU, texture from each mask (:mod:`lunglesionai.stages.measurements`),
   then duplicate merging. After grading, each nodule and mass gets the guideline measurements from its final mask
   (mean diameter, solid component, calcification: :func:`lunglesionai.stages.measurements.with_guideline_measurements`)
   and its side, zone and pleural attachment (:mod:`lunglesionai.stages.nodule_location`); ``Report.exam`` gets the
   emphysema index (:mod:`lunglesionai.stages.emphysema`), the nodule count and whether the lungs are fully covered
   (:func:`lunglesionai.stages.scan_coverage.lungs_fully_covered`).
   Masses (lesions over 30 mm, :mod:`lunglesionai.stages.masses`) are searched and segmented classically in the
   segmentation stage, from their own seeds and from candidates whose nodule mask came out over 30 mm; nodule
   findings inside a mass are merged into it. Masses bypass the operating point and the FP reduction.
6. ``grading``: the learned DenseSharp grader (:mod:`lunglesionai.stages.grading`) outlines each finding again and adds
   malignancy probability, texture and the invasiveness surrogate; measurements are redone on its mask.

A stage whose model is not installed is listed as ``"not run"`` with the reason (the learned detector falls back to
the classical one, with a warning).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from lunglesionai import __version__
from lunglesionai.core.findings import NOT_RUN, STAGES, Finding, FindingMask, InputInfo, Report
from lunglesionai.core.orientation import reorient_to_lps
from lunglesionai.core.vocabulary import DEFAULT_DETECTOR, DETECTOR_NAMES, DEVICES
from lunglesionai.core.volume import Volume
from lunglesionai.stages.blob_detector import LEARNED_METHOD_NAME, BlobDetectorConfig, Candidate
from lunglesionai.stages.emphysema import emphysema_index_pct
from lunglesionai.stages.lung_mask import segment_lungs
from lunglesionai.stages.mass_findings import MASS_NOT_GRADED, find_masses, masks_overlap, merge_into_masses
from lunglesionai.stages.masses import MassConfig
from lunglesionai.stages.measurements import measure_mask, with_guideline_measurements
from lunglesionai.stages.nodule_detection import detect_nodules, load_learned_model, torch_device
from lunglesionai.stages.nodule_location import with_location
from lunglesionai.stages.scan_coverage import lungs_fully_covered, scan_warnings
from lunglesionai.stages.segmentation import ball_mask, segment_nodule

__all__ = ["PipelineConfig", "ProgressCallback", "analyze_volume", "merge_duplicates"]

logger = logging.getLogger(__name__)

#: ``progress(stage, fraction)``: stage is a name from :data:`lunglesionai.core.findings.STAGES`, fraction in [0, 1]
#: of the whole analysis.
ProgressCallback = Callable[[str, float], None]

#: Share of the run each stage takes on a typical CT, for the progress fraction.
#: A learned mask more than this many times the classical equivalent diameter is not trusted.
MAX_LEARNED_DIAMETER_RATIO = 1.6

#: Finding id prefix per kind ("N1", "M1", "L1").
_ID_PREFIXES = {"nodule": "N", "mass": "M", "lesion": "L"}
#: What the report's stages say about masses.
MASS_METHOD = ("masses: classical (dense-tissue cores surrounded by lung, ray-cast cut at the mediastinum/chest wall, "
               "vessel opening; > 30 mm, compact, mostly in the lung)")

#: What the report's measurement stage adds about the guideline measurements (rules, not models).
GUIDELINE_MEASUREMENTS = ("guideline rules: mean axial diameter; part-solid solid component >= -400 HU; calcification "
                          ">= 200 HU (diffuse or central); side and craniocaudal zone (a third of the lung, not a "
                          "lobe); juxta-pleural contact with the lung mask's boundary")

_STAGE_WEIGHTS = {"lung_mask": 0.15, "detection": 0.4, "segmentation": 0.2, "measurement": 0.05, "grading": 0.1,
                  "uld": 0.1}


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of :func:`analyze_volume`.

    Args:
        detector: "combined" (default: both detectors' candidates, ranked together by the FP reduction),
            "learned" (the Retina U-Net detector alone) or "classical" (the multi-scale blob detector alone, the
            baseline). Without a trained ``models/detector`` "combined" and "learned" run the classical detector and
            the report says why.
        blob: settings of the classical detector.
        min_diameter_mm, max_diameter_mm: findings whose segmented equivalent diameter falls outside are dropped
            (3 mm is the smallest nodule Lung-RADS/LUNA16 count; 30 mm separates nodules from masses).
        max_candidates: at most this many candidates are segmented (highest detector score first).
        min_score: operating point: candidates whose score is below it are not segmented; None: the model's
            default (with FP reduction the FPR model's, else the learned detector's; classical alone: 0, the most
            sensitive). All stored in the models' ``config.json``, chosen on the composite validation set.
        grade: run the DenseSharp grader.
        grader_model_dir, detector_model_dir, fpr_model_dir: model folders (None: ``models/<name>`` or
            ``$LUNGLESIONAI_MODELS/<name>``).
        fpr: run the false-positive reduction classifier on the candidates.
        uld: also run universal lesion detection over the whole scan
            (:mod:`lunglesionai.stages.universal_lesions.detector`; opt-in: it reports many false positives on real
            scans; its measured performance is in ``models/uld/uld.card.md``); ``uld_model_dir`` its folder;
            ``uld_min_score`` its operating point (None: the model's, stored in its ``config.json``).
        device: "auto" (CUDA when torch sees one), "cpu" or "cuda" for the learned detector and ULD (the grader
            and the FP reduction run on the CPU); ``Report.device`` says where they ran.
        masses: also report lesions over ``mass.min_diameter_mm`` as kind "mass" (:mod:`lunglesionai.stages.masses`);
            ``mass`` its settings.
    """

    detector: str = DEFAULT_DETECTOR
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
    uld: bool = False
    uld_model_dir: Optional[str] = None
    uld_min_score: Optional[float] = None
    masses: bool = True
    mass: MassConfig = field(default_factory=MassConfig)

    def __post_init__(self) -> None:
        if self.detector not in DETECTOR_NAMES:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {DETECTOR_NAMES}")
        if not 0 < self.min_diameter_mm < self.max_diameter_mm:
            raise ValueError(
                f"need 0 < min_diameter_mm < max_diameter_mm, got {self.min_diameter_mm}, {self.max_diameter_mm}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {self.min_score}")
        if self.uld_min_score is not None and not 0.0 <= self.uld_min_score <= 1.0:
            raise ValueError(f"uld_min_score must be within [0, 1], got {self.uld_min_score}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


def _universal_lesions(volume: Volume, lung_mask: np.ndarray, nodules: list[Finding],
                       config: PipelineConfig) -> tuple[list[Finding], str, list[dict[str, str]], str]:
    """ULD over the whole scan; lesions at reported nodules are dropped; "not run" with the reason without a model.
    Returns the lesions, the stage text, the model used and the torch device it ran on."""
    from lunglesionai.nets.model_store import ModelFileError

    try:
        uld = load_learned_model("uld", config.uld_model_dir)
    except ModelFileError as error:
        logger.warning("universal lesion detection not run: %s", error)
        return [], f"{NOT_RUN} (no ULD model: {error})", [], "cpu"
    device = torch_device(config)
    settings = uld.settings() if config.uld_min_score is None else uld.settings(min_score=config.uld_min_score)
    lesions = uld.detect_lesions(volume, lung_mask, exclude_findings=nodules, settings=settings, device=device)
    c = uld.config
    stage = (f"MP3D-style 2.5-D RetinaNet ({c.n_slices} slices at {c.slice_spacing_mm} mm, {c.pixel_spacing_mm} mm "
             f"pixels), {device} (operating point: score >= {settings.min_score:.3f} on >= {settings.min_slices} "
             f"slices; chains of one lesion merged; lesions at nodules or masses"
             + ("" if settings.lung_lesions else " and in the lungs") + " left to the lung pipeline)")
    return lesions, stage, [uld.model_info()], device


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
        Report whose findings (kind "mass", ids "M1", …, then kind "nodule", ids "N1", "N2", …, each by decreasing
        detection score; then ULD lesions "L1", …) carry masks on
        ``volume``'s own grid and LPS-mm measurements; ``Report.stages`` says which method ran per stage;
        ``Report.warnings`` what was not covered (no lung found, one lung, thick slices:
        :func:`lunglesionai.stages.scan_coverage.scan_warnings`).

    Raises:
        ValueError: the volume is not 3-D or the config is inconsistent.

    Example:
        >>> from lunglesionai.synth import PhantomConfig, make_phantom
        >>> report = analyze_volume(make_phantom(PhantomConfig.small()).volume)  # doctest: +SKIP
    """
    planned = (["lung_mask", "detection", "segmentation", "measurement"] + (["grading"] if config.grade else [])
               + (["uld"] if config.uld else []))
    models: list[dict[str, str]] = []
    tracker = _StageTracker(progress, planned)
    stages = {s: NOT_RUN for s in STAGES}
    lps_volume, permutation = reorient_to_lps(volume)

    with tracker("lung_mask"):
        lung_mask = segment_lungs(lps_volume)
        stages["lung_mask"] = "classical (threshold, airway removal, left/right split, hole filling)"
        warnings = scan_warnings(lps_volume, lung_mask)
        for warning in warnings:
            logger.info("%s: %s", volume.source or "volume", warning)  # shown by the callers (CLI summary, panel)
    with tracker("detection"):
        detection = detect_nodules(lps_volume, lung_mask, config)
        threshold = detection.default_min_score if config.min_score is None else config.min_score
        candidates = [c for c in detection.candidates if c.score >= threshold][: config.max_candidates]
        stages.update(detection.stages)
        stages["detection"] += f" (operating point: score >= {threshold:.3f})"
        models += detection.models
        devices = [detection.device]
        logger.info("%d candidates", len(candidates))
    with tracker("segmentation"):
        masks = [_segment_candidate(lps_volume, c, lung_mask) for c in candidates]
        stages["segmentation"] = ("classical (adaptive threshold, region growing, vessel/pleura detachment; a learned "
                                  "detection that cannot be separated keeps the detector's ball)")
        masses = (find_masses(lps_volume, lung_mask, candidates, masks, config.max_diameter_mm, config.mass)
                  if config.masses else [])
    with tracker("measurement"):
        findings = _measure_findings(lps_volume, candidates, masks, config)
        findings = merge_duplicates(findings)
        masses, findings = merge_into_masses(lps_volume, masses, findings)
        stages["measurement"] = "mask-based (equivalent diameter, axial long/short axis, volume, mean HU, texture)"
    if config.grade:
        with tracker("grading"):
            findings, stages, grader_models = _grade_findings(lps_volume, lung_mask, findings, stages, config)
        models += grader_models
        if config.masses:
            stages["grading"] += f"; {MASS_NOT_GRADED}"
    if config.masses:
        stages["segmentation"] += f"; {MASS_METHOD}"
    guideline_start = time.perf_counter()  # after grading (final masks); timed as part of the measurement stage
    findings = with_location(lps_volume, lung_mask,
                             [with_guideline_measurements(lps_volume, f) for f in masses + findings])
    stages["measurement"] += f"; {GUIDELINE_MEASUREMENTS}"
    exam = {"emphysema_index_pct": emphysema_index_pct(lps_volume, lung_mask),
            "nodule_count": sum(f.kind == "nodule" for f in findings),
            "lungs_fully_covered": lungs_fully_covered(lps_volume, lung_mask)}
    tracker.timings_s["measurement"] = tracker.timings_s.get("measurement", 0.0) + time.perf_counter() - guideline_start
    lesions: list[Finding] = []
    if config.uld:
        with tracker("uld"):
            lesions, stages["uld"], uld_models, uld_device = _universal_lesions(lps_volume, lung_mask, findings,
                                                                                config)
        devices.append(uld_device)
        models += uld_models
    findings = [_mask_to_input_grid(f, permutation, volume.shape_zyx) for f in findings]

    return Report(
        input=InputInfo.from_volume(volume),
        findings=_renumber(findings) + lesions,
        stages=stages,
        timings_s=tracker.timings_s,
        device="cuda" if "cuda" in devices else "cpu",  # the grader and FP reduction run on the CPU
        version=__version__,
        models=models,
        warnings=warnings,
        exam=exam,
    )


def _grade_findings(
    volume: Volume, lung_mask: np.ndarray, findings: list[Finding], stages: dict[str, str], config: PipelineConfig
) -> tuple[list[Finding], dict[str, str], list[dict[str, str]]]:
    """Learned segmentation and grading of every finding (DenseSharp grader); re-measures from the learned mask.

    Without a usable model the findings are returned unchanged and the grading stage says why it did not run.
    """
    from lunglesionai.stages.grading import GraderModelError

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
    from lunglesionai.stages.grading import NoduleGrader

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
    )
    if getattr(grade, "attributes", None) is not None:  # graders with the LIDC attribute heads
        # radiologists' ratings as the grader learned them (not pathology); "spiculated" feeds the Brock model.
        # Calcification stays the HU rule's call (Finding.calcified: calling a nodule calcified lowers its
        # Lung-RADS category, so it rests on measured dense voxels); the grader's probability is shown beside it.
        extra.update(
            lidc_ratings={k: round(v, 2) for k, v in grade.attributes.items()},
            lidc_cut_probabilities={k: round(v, 4) for k, v in (grade.attribute_probabilities or {}).items()},
            spiculated=bool(grade.spiculated),
            calcified_probability_grader=round(float(grade.calcified_probability), 4),
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
            updates.update(m.finding_fields(), mask=learned)
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


def _segment_candidate(volume: Volume, candidate: Candidate,
                       lung_mask: np.ndarray) -> tuple[Optional[FindingMask], str]:
    """(mask, its source) of a candidate: the classical segmentation ("classical"); for a learned detection that it
    cannot isolate from an adjacent vessel or the pleura, the dense part of the detector's ball ("detector box",
    :func:`lunglesionai.stages.segmentation.ball_mask`): the learned detector's score, not the segmentation, decides
    whether it is a finding. A classical blob candidate without a segmentation is dropped (mask None): for it the
    failed segmentation is the evidence of a vessel or the pleura."""
    mask = segment_nodule(volume, candidate.center_kji, candidate.radius_mm, lung_mask)
    if mask is not None:
        return mask, "classical"
    if candidate.method == LEARNED_METHOD_NAME:
        return ball_mask(volume, candidate.center_kji, candidate.radius_mm, lung_mask), "detector box"
    return None, "none"


def _measure_findings(
    volume: Volume, candidates: list[Candidate], masks: list[tuple[Optional[FindingMask], str]], config: PipelineConfig
) -> list[Finding]:
    """One Finding per candidate whose mask is plausible (non-empty, diameter within the configured range); ``masks``
    are (mask, source) pairs from :func:`_segment_candidate`, the source goes to ``extra["mask_source"]``."""
    findings = []
    for candidate, (mask, source) in zip(candidates, masks):
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
                detection_score=float(np.clip(candidate.score, 0.0, 1.0)),
                **m.finding_fields(),
                texture=m.texture,
                extra={"detector": candidate.method, "detector_radius_mm": round(float(candidate.radius_mm), 2),
                       "mask_source": source, **candidate.details},
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
    return masks_overlap(a.mask, b.mask)


def _mask_to_input_grid(finding: Finding, permutation, shape_zyx: tuple[int, int, int]) -> Finding:
    """Map a finding's mask from the LPS-reoriented grid back to the input volume's grid (exact)."""
    if finding.mask is None or permutation.is_identity:
        return finding
    offset, array = permutation.invert_crop(finding.mask.offset_kji, finding.mask.array)
    return replace(finding, mask=FindingMask(tuple(int(o) for o in offset), array))


def _renumber(findings: list[Finding]) -> list[Finding]:
    """Ids by kind in list order: "M1", "M2", … for masses, "N1", "N2", … for nodules."""
    counts: dict[str, int] = {}
    renumbered = []
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
        renumbered.append(replace(f, id=f"{_ID_PREFIXES[f.kind]}{counts[f.kind]}"))
    return renumbered


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
