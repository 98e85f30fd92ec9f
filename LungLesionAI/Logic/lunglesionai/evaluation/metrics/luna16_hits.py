"""Scoring findings against ground truth with the LUNA16 hit criterion.

A finding is a hit when its centre lies within the true nodule's radius (diameter / 2), both in LPS mm, as in the
LUNA16 challenge (Setio et al., "Validation, comparison, and combination of algorithms for automatic detection of
pulmonary nodules in computed tomography images: the LUNA16 challenge", Medical Image Analysis 42:1-13, 2017,
doi:10.1016/j.media.2017.06.015). Each true nodule counts once; a finding that hits several true nodules is given
to the nearest; further findings on an already-found nodule are neither hits nor false positives (LUNA16 ignores
them too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DetectionMatch", "match_centres"]


@dataclass(frozen=True)
class DetectionMatch:
    """Outcome of matching findings to true nodules.

    Attributes:
        hit_truth: (T,) bool, True where a true nodule was found.
        finding_truth: (F,) int, index of the true nodule each finding hit, or -1 for a false positive,
            or -2 for a duplicate hit on an already-found nodule.
    """

    hit_truth: np.ndarray
    finding_truth: np.ndarray

    @property
    def n_truth(self) -> int:
        """Number of true nodules."""
        return int(self.hit_truth.size)

    @property
    def true_positives(self) -> int:
        """Number of true nodules found."""
        return int(self.hit_truth.sum())

    @property
    def false_positives(self) -> int:
        """Number of findings that hit no true nodule."""
        return int(np.sum(self.finding_truth == -1))

    @property
    def sensitivity(self) -> float:
        """Fraction of true nodules found (NaN when there are none)."""
        return float(self.hit_truth.mean()) if self.n_truth else float("nan")


def match_centres(
    finding_centres_lps_mm: np.ndarray,
    truth_centres_lps_mm: np.ndarray,
    truth_diameters_mm: np.ndarray,
) -> DetectionMatch:
    """Match findings to true nodules by the LUNA16 centre-within-radius rule.

    Args:
        finding_centres_lps_mm: (F, 3) finding centres (x, y, z) LPS mm, best-scoring first (order decides which
            of two findings on one nodule is the hit).
        truth_centres_lps_mm: (T, 3) true nodule centres, LPS mm.
        truth_diameters_mm: (T,) true diameters in mm.

    Returns:
        DetectionMatch.

    Raises:
        ValueError: the arrays do not have the shapes above.

    Example:
        >>> m = match_centres([[0, 0, 0], [50, 0, 0]], [[1, 0, 0]], [6.0])
        >>> m.true_positives, m.false_positives
        (1, 1)
    """
    f = np.asarray(finding_centres_lps_mm, dtype=float).reshape(-1, 3)
    t = np.asarray(truth_centres_lps_mm, dtype=float).reshape(-1, 3)
    d = np.asarray(truth_diameters_mm, dtype=float).reshape(-1)
    if d.shape[0] != t.shape[0]:
        raise ValueError(f"{t.shape[0]} true centres but {d.shape[0]} diameters")
    hit = np.zeros(t.shape[0], dtype=bool)
    assignment = np.full(f.shape[0], -1, dtype=int)
    if t.shape[0] == 0:
        return DetectionMatch(hit, assignment)
    for i, centre in enumerate(f):
        distance = np.linalg.norm(t - centre, axis=1)
        inside = np.flatnonzero(distance <= d / 2)
        if inside.size == 0:
            continue
        nearest = inside[np.argmin(distance[inside])]
        assignment[i] = -2 if hit[nearest] else nearest
        hit[nearest] = True
    return DetectionMatch(hit, assignment)
