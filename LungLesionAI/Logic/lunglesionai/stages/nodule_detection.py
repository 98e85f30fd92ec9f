"""The pipeline's nodule detection stage: candidate detectors and the decoupled false-positive reduction.

Detectors (``PipelineConfig.detector``, :data:`DETECTOR_NAMES`):

- ``"classical"``: the multi-scale Hessian blob detector (:func:`lunglesionai.stages.blob_detector.detect_candidates`).
- ``"learned"``: the RetinaNet / Retina U-Net detector (:mod:`lunglesionai.stages.retina_detector`); without a trained
  ``models/detector`` the classical detector runs instead and ``Report.stages`` says why.
- ``"combined"``: both detectors' candidates together.

Then the FP reduction (:mod:`lunglesionai.stages.fp_reduction`, NoduleNet's decoupled classifier) re-scores every candidate:
score = sqrt(detector score × P(nodule)) (:func:`lunglesionai.stages.retina_detector.combine_scores`); both go into the
candidate's ``details``. Candidates are (k, j, i) voxel positions of the LPS-ordered volume the pipeline works on.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Optional, Protocol

import numpy as np

from lunglesionai.core.findings import NOT_RUN
from lunglesionai.core.vocabulary import DETECTOR_NAMES
from lunglesionai.core.volume import Volume
from lunglesionai.stages.blob_detector import BlobDetectorConfig, Candidate, detect_candidates

if TYPE_CHECKING:
    from lunglesionai.stages.retina_detector import DetectionGrid

__all__ = ["DetectionResult", "DETECTOR_NAMES", "NoduleDetectionSettings", "detect_nodules", "load_learned_model", "torch_device",
           "torch_cuda_available"]

logger = logging.getLogger(__name__)


class NoduleDetectionSettings(Protocol):
    """The settings this stage reads (``lunglesionai.pipeline.PipelineConfig`` has them all; the stage does not
    depend on the pipeline above it)."""

    detector: str
    blob: BlobDetectorConfig
    detector_model_dir: Optional[str]
    fpr: bool
    fpr_model_dir: Optional[str]
    device: str


@dataclass(frozen=True)
class DetectionResult:
    """What a detector or the FP reduction returns: candidates (best first), the Report.stages texts it sets, the
    models it used, the operating point that applies when ``PipelineConfig.min_score`` is None, the learned
    detector's grid (reused by the FP reduction when its spacing matches; None otherwise) and the torch device the
    learned detector ran on ("cpu" when only classical methods ran)."""

    candidates: list[Candidate]
    stages: dict[str, str]
    models: list[dict[str, str]] = field(default_factory=list)
    default_min_score: float = 0.0
    grid: Optional["DetectionGrid"] = None
    device: str = "cpu"


def _classical_detector(volume: Volume, lung_mask: np.ndarray, config: "NoduleDetectionSettings") -> DetectionResult:
    return DetectionResult(detect_candidates(volume, lung_mask, config.blob),
                           {"detection": "classical multi-scale blob detector"})


def _learned_detector(volume: Volume, lung_mask: np.ndarray, config: "NoduleDetectionSettings") -> DetectionResult:
    from lunglesionai.nets.model_store import ModelFileError
    from lunglesionai.stages.retina_detector import boxes_to_candidates

    try:
        detector = load_learned_model("detector", config.detector_model_dir)
    except ModelFileError as error:
        logger.warning("learned detector unavailable (%s); using the classical detector", error)
        fallback = _classical_detector(volume, lung_mask, config)
        return replace(fallback, stages={"detection": f"{fallback.stages['detection']} (the learned detector was "
                                                      f"not found: {error})"})
    device = torch_device(config)
    grid, boxes, scores = detector.predict(volume, lung_mask, device=device)
    candidates = [] if grid is None else boxes_to_candidates(volume, grid, boxes, scores, lung_mask)
    stage = f"RetinaNet 3-D (MONAI) on a {detector.config.spacing_mm} mm grid, {device}"
    return DetectionResult(candidates, {"detection": stage}, [detector.model_info()], detector.default_min_score,
                           grid, device)


def _reduce_false_positives(volume: Volume, lung_mask: np.ndarray, detection: DetectionResult,
                            config: "NoduleDetectionSettings") -> DetectionResult:
    """Re-score the candidates with the decoupled FP-reduction classifier when it is wanted and installed.

    The new score is sqrt(detector score × FPR probability) (:func:`lunglesionai.stages.retina_detector.combine_scores`);
    both go into each candidate's ``details``. The default operating point becomes the FPR model's.
    """
    from lunglesionai.nets.model_store import ModelFileError
    from lunglesionai.stages.retina_detector import combine_scores, detection_grid

    if not config.fpr:
        return replace(detection, stages={**detection.stages, "fp_reduction": NOT_RUN})
    try:
        reducer = load_learned_model("fpr", config.fpr_model_dir)
    except ModelFileError as error:
        logger.warning("false-positive reduction not run: %s", error)
        return replace(detection, stages={**detection.stages, "fp_reduction": f"{NOT_RUN} (no FPR model: {error})"})
    candidates, grid = detection.candidates, detection.grid
    if candidates and (grid is None or grid.spacing_mm != reducer.grid_spacing_mm):
        grid = detection_grid(volume, lung_mask, reducer.grid_spacing_mm)
    if grid is not None:
        centres = grid.lps_to_index(volume.kji_to_lps(np.array([c.center_kji for c in candidates])))
        probabilities = reducer.probabilities(grid.image, centres)
        scores = combine_scores(np.array([c.score for c in candidates]), probabilities)
        candidates = sorted(
            (replace(c, score=float(s), details={**c.details, "detector_score": round(float(c.score), 4),
                                                  "fpr_probability": round(float(p), 4)})
             for c, s, p in zip(candidates, scores, probabilities)),
            key=lambda c: -c.score)
    stage = f"decoupled 3-D CNN classifier on {reducer.grid_spacing_mm} mm crops (NoduleNet-style)"
    return DetectionResult(candidates, {**detection.stages, "fp_reduction": stage},
                           detection.models + [reducer.model_info()], reducer.default_min_score, detection.grid,
                           detection.device)


def torch_device(config: "NoduleDetectionSettings") -> str:
    """"cuda" when ``config.device`` is "cuda", or "auto" and torch sees a GPU; else "cpu"."""
    return "cuda" if config.device == "cuda" or (config.device == "auto" and torch_cuda_available()) else "cpu"


def torch_cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=4)
def load_learned_model(name: str, folder: Optional[str]):
    """The ``detector``, ``fpr`` or ``uld`` model of ``folder`` (None = default folder), loaded once per process.

    Raises:
        lunglesionai.nets.model_store.ModelFileError: the model is missing or broken.
    """
    from lunglesionai.stages.fp_reduction import FalsePositiveReducer
    from lunglesionai.stages.retina_detector import LearnedDetector
    from lunglesionai.stages.universal_lesions.detector import UniversalLesionDetector

    return {"detector": LearnedDetector, "fpr": FalsePositiveReducer, "uld": UniversalLesionDetector}[name].load(folder)


def _combined_detector(volume: Volume, lung_mask: np.ndarray, config: "NoduleDetectionSettings") -> DetectionResult:
    """The learned detector's boxes and the classical blob candidates together (each keeps its own detector score
    and method); the FP reduction ranks them on one scale and duplicate findings are merged after segmentation
    (without it the two detectors' scores are not comparable: use "learned" or "classical" with ``fpr=False``).
    Without a detector model this is the classical detector alone (the learned detector's fallback).

    The classical detector runs in a worker thread while the network runs: torch and NumPy/SciPy release the GIL
    in their loops, so on 2 CPU cores the stage takes about a third less (18 → 11 s on the benchmark phantom); the
    candidates are the same as run one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        classical_job = pool.submit(_classical_detector, volume, lung_mask, config)
        learned = _learned_detector(volume, lung_mask, config)
        classical = classical_job.result()
    if learned.grid is None and not learned.models:  # fell back to the classical candidates
        return learned
    candidates = sorted(learned.candidates + classical.candidates, key=lambda c: -c.score)
    stage = f"{learned.stages['detection']} + {classical.stages['detection']}"
    return replace(learned, candidates=candidates, stages={"detection": stage})


#: Registry of detection methods: name -> function(volume, lung_mask, config) -> DetectionResult.
_DETECTORS: dict[str, Callable[[Volume, np.ndarray, "NoduleDetectionSettings"], DetectionResult]] = {
    "learned": _learned_detector,
    "classical": _classical_detector,
    "combined": _combined_detector,
}
assert tuple(_DETECTORS) == DETECTOR_NAMES, "the registry must hold the vocabulary's detectors"
"""The detection methods :class:`PipelineConfig` and the CLI's ``--detector`` accept."""


def detect_nodules(volume: Volume, lung_mask: np.ndarray, config: "NoduleDetectionSettings") -> DetectionResult:
    """Candidates of ``config.detector``, re-scored by the FP reduction when ``config.fpr`` and its model is
    installed (else its stage text says "not run" and why).

    Args:
        volume: LPS-ordered CT in HU ((Z, Y, X) array).
        lung_mask: (Z, Y, X) lung mask of ``volume``.
        config: the pipeline settings (detector, model folders, device, FP reduction on/off).

    Returns:
        The candidates, best first, with the stage texts, the models used and the default operating point.

    Raises:
        KeyError: unknown ``config.detector`` (PipelineConfig already refuses one).
    """
    return _reduce_false_positives(volume, lung_mask, _DETECTORS[config.detector](volume, lung_mask, config), config)
