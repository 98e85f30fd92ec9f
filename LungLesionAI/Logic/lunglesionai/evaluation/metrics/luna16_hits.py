"""The LUNA16 hit rule: which candidates are true positives, false positives, or neither.

This is the one implementation of the rule in the package; the LUNA16 protocol's FROC
(:func:`lunglesionai.evaluation.luna16_protocol.match_scan`), ``evaluate phantom`` and the demo
(:func:`lunglesionai.evaluation.phantom_protocol.score_against_phantom`) all call :func:`match_luna16`.

Source: the LUNA16 challenge's evaluation script ``noduleCADEvaluationLUNA16.py``, function ``evaluateCAD`` (Setio
et al., "Validation, comparison, and combination of algorithms for automatic detection of pulmonary nodules in
computed tomography images: the LUNA16 challenge", Medical Image Analysis 42:1-13, 2017,
doi:10.1016/j.media.2017.06.015). The rule, exactly as that script applies it per scan:

1. A candidate **hits** a nodule when the squared Euclidean distance between the candidate and the nodule centre
   is **strictly less** than the squared radius, radius = ``diameter_mm / 2`` (script: ``dist < radiusSquared``).
   A candidate exactly on the sphere (distance == radius) does not hit.
2. Each reference nodule is found when at least one candidate hits it; it counts **once**, with the **highest
   score** of the candidates hitting it (script: ``maxProb``; on equal scores the first in input order).
   The other candidates on that nodule are **neither TP nor FP** (script: ``doubleCandidatesIgnored``).
3. A candidate inside **several** nodules hits **each** of them (the script matches every nodule against all
   candidates and only prints "CAD mark ... detected two nodules"); there is no nearest-nodule assignment.
4. A candidate that hits no reference nodule but lies strictly within an **excluded** finding
   (``annotations_excluded.csv``) is **ignored**: neither TP nor FP (script: ``irrelevantCandidates``). Reference
   nodules are checked before excluded ones, so a candidate on both is a hit. An excluded finding of unknown size
   (negative diameter, ``-1`` in the CSV) gets a 10 mm diameter (script: ``if diameter < 0.0: diameter = 10.0``).
5. Every other candidate is a **false positive**.

Coordinates are world (x, y, z) in mm, LPS, for candidates, nodules and excluded findings alike; the rule only
uses distances, so any common frame gives the same answer.

Not part of the hit rule and not done here: the script's optional cap on candidates per scan
(``maxNumberOfCADMarks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EXCLUDED_DEFAULT_DIAMETER_MM", "LUNA16_HIT_RULE", "DetectionMatch", "finite_rows", "match_luna16"]

EXCLUDED_DEFAULT_DIAMETER_MM = 10.0
"""Diameter given to an excluded finding of unknown size (negative diameter), as ``noduleCADEvaluationLUNA16.py``."""

LUNA16_HIT_RULE = (
    "LUNA16 script (noduleCADEvaluationLUNA16.py): a candidate hits a nodule when its centre is strictly within "
    "the nodule's radius (distance < diameter_mm/2, LPS mm); a candidate inside several nodules hits each; a nodule "
    "counts once, with its highest-scoring hit, the other hits on it are neither TP nor FP; candidates on no nodule "
    "but within an excluded finding (radius 5 mm when its diameter is -1) are ignored; the rest are false positives"
)
"""One-sentence statement of the rule, written into metrics JSON as ``hit_criterion``."""

FALSE_POSITIVE = -1
"""``finding_truth`` code: the candidate hits no nodule and no excluded finding."""
DUPLICATE = -2
"""``finding_truth`` code: the candidate hits a nodule but is not its highest-scoring hit (neither TP nor FP)."""
IGNORED = -3
"""``finding_truth`` code: the candidate hits no nodule but an excluded finding (neither TP nor FP)."""


@dataclass(frozen=True)
class DetectionMatch:
    """One scan's candidates matched to its reference nodules by :func:`match_luna16`.

    Attributes:
        hits: (N, T) bool, candidate n strictly within nodule t's radius.
        truth_finding: (T,) int, index of the candidate counted for nodule t (its highest-scoring hit), -1 if missed.
        nodule_scores: (T,) float, the score of that candidate; ``-inf`` where the nodule was missed.
        finding_truth: (N,) int, for each candidate: the nodule it is the counted hit of (the nearest one when it is
            counted for several), or :data:`FALSE_POSITIVE` (-1), :data:`DUPLICATE` (-2), :data:`IGNORED` (-3).
        scores: (N,) float, the candidates' scores.
    """

    hits: np.ndarray
    truth_finding: np.ndarray
    nodule_scores: np.ndarray
    finding_truth: np.ndarray
    scores: np.ndarray

    @property
    def hit_truth(self) -> np.ndarray:
        """(T,) bool, True where a reference nodule was found."""
        return self.truth_finding >= 0

    @property
    def n_truth(self) -> int:
        """Number of reference nodules."""
        return int(self.truth_finding.size)

    @property
    def true_positives(self) -> int:
        """Number of reference nodules found."""
        return int(self.hit_truth.sum())

    @property
    def false_positives(self) -> int:
        """Number of candidates that are false positives."""
        return int(np.sum(self.finding_truth == FALSE_POSITIVE))

    @property
    def fp_scores(self) -> np.ndarray:
        """(F,) scores of the false-positive candidates, in input order."""
        return self.scores[self.finding_truth == FALSE_POSITIVE]

    @property
    def n_duplicates(self) -> int:
        """Hits beyond the first on each nodule, summed over nodules (the script's ``doubleCandidatesIgnored``)."""
        return int(np.clip(self.hits.sum(axis=0) - 1, 0, None).sum())

    @property
    def n_ignored(self) -> int:
        """Candidates ignored because they lie within an excluded finding only."""
        return int(np.sum(self.finding_truth == IGNORED))

    @property
    def sensitivity(self) -> float:
        """Fraction of reference nodules found (NaN when there are none)."""
        return float(self.hit_truth.mean()) if self.n_truth else float("nan")


def match_luna16(
    candidates_lps_mm,
    scores,
    nodules_lps_mm,
    nodule_diameters_mm,
    excluded_lps_mm=None,
    excluded_diameters_mm=None,
) -> DetectionMatch:
    """Match one scan's candidates to its reference nodules by the LUNA16 script's rule (module docstring).

    Args:
        candidates_lps_mm: (N, 3) candidate centres (x, y, z), LPS mm.
        scores: (N,) candidate scores (higher = more suspicious); decide which hit counts for a nodule.
        nodules_lps_mm: (T, 3) reference nodule centres, LPS mm.
        nodule_diameters_mm: (T,) reference diameters in mm, all > 0.
        excluded_lps_mm: (E, 3) excluded-finding centres, LPS mm, or None (no excluded findings).
        excluded_diameters_mm: (E,) their diameters in mm; negative = unknown (:data:`EXCLUDED_DEFAULT_DIAMETER_MM`).

    Returns:
        DetectionMatch.

    Raises:
        ValueError: an array does not have the shape above, a value is not finite, or a reference diameter is <= 0.

    Example:
        >>> m = match_luna16([[0, 0, 0], [1, 0, 0], [50, 0, 0]], [0.3, 0.9, 0.5], [[0, 0, 0]], [6.0])
        >>> m.truth_finding.tolist(), m.finding_truth.tolist(), m.false_positives
        ([1], [-2, 0, -1], 1)
    """
    cand = _points(candidates_lps_mm, "candidates_lps_mm")
    score = _values(scores, cand.shape[0], "scores")
    truth = _points(nodules_lps_mm, "nodules_lps_mm")
    diameters = _values(nodule_diameters_mm, truth.shape[0], "nodule_diameters_mm")
    if np.any(diameters <= 0):
        raise ValueError(f"reference diameters must be > 0, got {diameters[diameters <= 0].tolist()}")
    excl = _points(np.zeros((0, 3)) if excluded_lps_mm is None else excluded_lps_mm, "excluded_lps_mm")
    excl_d = _values(np.zeros(0) if excluded_diameters_mm is None else excluded_diameters_mm, excl.shape[0],
                     "excluded_diameters_mm")
    excl_d = np.where(excl_d < 0, EXCLUDED_DEFAULT_DIAMETER_MM, excl_d)

    hits, d2 = _strictly_inside(cand, truth, diameters)
    masked = np.where(hits, score[:, None], -np.inf)
    found = hits.any(axis=0)
    truth_finding = np.where(found, np.argmax(masked, axis=0) if cand.shape[0] else -1, -1)
    nodule_scores = np.where(found, masked.max(axis=0, initial=-np.inf), -np.inf)
    on_excluded = _strictly_inside(cand, excl, excl_d)[0].any(axis=1)
    labels = np.where(hits.any(axis=1), DUPLICATE, np.where(on_excluded, IGNORED, FALSE_POSITIVE))
    counted = np.zeros_like(hits)
    counted[truth_finding[found], np.flatnonzero(found)] = True
    is_counted = counted.any(axis=1)
    nearest = np.argmin(np.where(counted, d2, np.inf), axis=1) if truth.shape[0] else labels
    labels = np.where(is_counted, nearest, labels)
    return DetectionMatch(hits, truth_finding.astype(int), nodule_scores.astype(float), labels.astype(int), score)


def _strictly_inside(points: np.ndarray, centres: np.ndarray, diameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) bool "point n strictly inside sphere m" (squared distance < squared radius) and (N, M) squared mm."""
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return d2 < (diameters[None, :] / 2.0) ** 2, d2


def finite_rows(array, name: str, columns: int, what: str = "LPS mm") -> np.ndarray:
    """(n, ``columns``) float array of finite values; an empty input gives (0, ``columns``).

    Raises:
        ValueError: another shape, or NaN/Inf values; the message names ``name``.
    """
    a = np.asarray(array, dtype=float)
    if a.size == 0:
        return np.zeros((0, columns))
    if a.ndim != 2 or a.shape[1] != columns:
        raise ValueError(f"{name} must be an (n, {columns}) array of {what}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values")
    return a


def _points(array, name: str) -> np.ndarray:
    """(n, 3) float array of finite LPS coordinates (:func:`finite_rows`)."""
    return finite_rows(array, name, 3)


def _values(array, n: int, name: str) -> np.ndarray:
    """(n,) float array of finite values. Raises ValueError when the length is not n or a value is not finite."""
    a = np.asarray(array, dtype=float).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} values for {n} points")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values")
    return a
