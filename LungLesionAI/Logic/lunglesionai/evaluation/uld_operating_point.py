"""The universal lesion detector's whole-scan operating point: sensitivity on composite cases against lesion
findings per real scan, chosen leave one real host out.

DeepLesion's protocol (:mod:`lunglesionai.evaluation.deeplesion_protocol`) scores boxes on key slices; a user sees
linked 3-D lesions over a whole scan. Here both sides are counted on what :meth:`UniversalLesionDetector.
detect_lesions` reports (:func:`lunglesionai.stages.universal_lesions.detector.postprocess_lesions`):

* **composite sensitivity** (:func:`case_hits`): a composite lesion is found when a reported lesion has a box on the
  lesion's key slice with IoU >= :data:`HIT_IOU` with the lesion's key box (DeepLesion's hit rule applied to the
  3-D output); per lesion type;
* **findings per real scan** (:func:`findings_per_threshold`): lesions reported on real CTs without annotations
  (each one unverified; on the LIDC slabs every reader mark is known);
* **operating point** (:func:`choose_min_score`): the lowest score threshold at which every scan of a set gets at
  most ``max_findings`` lesions (issue 18: <= 3 per real scan); :func:`leave_one_scan_out` picks it on all real
  scans but one and counts the held-out one, so the count is not tuned on the scan it is reported for.

Numbers from composites are not clinical performance; real-scan counts say nothing about sensitivity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["HIT_IOU", "case_hits", "choose_min_score", "findings_per_threshold", "leave_one_scan_out"]

HIT_IOU = 0.5
"""IoU of a reported box with a lesion's key-slice box that counts as finding it (DeepLesion's rule)."""


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x0, y0, x1, y1) boxes (MONAI's ``box_iou``)."""
    from monai.data.box_utils import box_iou

    return float(np.asarray(box_iou(a[None].astype(np.float32), b[None].astype(np.float32)))[0, 0])


def case_hits(lesions: Sequence, truth: Sequence, iou: float = HIT_IOU) -> tuple[np.ndarray, int]:
    """Which composite lesions the reported lesions find, and how many reported lesions find none.

    Args:
        lesions: reported :class:`~lunglesionai.stages.universal_lesions.detector.LinkedLesion` (grid pixels).
        truth: the case's :class:`~lunglesionai.datagen.uld_cases.GridLesion` (``key_slice``, ``boxes``).
        iou: hit threshold.

    Returns:
        (hits (len(truth),) bool, false lesions: reported lesions with no box of IoU >= ``iou`` with any truth box
        on the same slice).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> box = np.array([0.0, 0, 10, 10])
        >>> case_hits([NS(slices=[3], boxes=[box])], [NS(key_slice=3, boxes={3: box})])
        (array([ True]), 0)
    """
    hits = np.zeros(len(truth), bool)
    false = 0
    for lesion in lesions:
        matched = False
        for k, box in zip(lesion.slices, lesion.boxes):
            for n, t in enumerate(truth):
                if k in t.boxes and _iou(np.asarray(box, float), np.asarray(t.boxes[k], float)) >= iou:
                    matched = True
                    hits[n] |= k == t.key_slice
        false += not matched
    return hits, false


def findings_per_threshold(scores: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Number of lesions at each threshold: ``(len(thresholds),)`` int, the count of ``scores >= t``.

    ``scores`` are the lesion scores of one scan post-processed at the lowest threshold; a threshold applied
    afterwards keeps the lesions whose best box reaches it (boxes below it can change linking, so a run at the
    threshold may differ slightly: use :meth:`detect_lesions` at the chosen point for the final count).
    """
    s = np.asarray(scores, float)
    return np.asarray([int(np.sum(s >= t)) for t in thresholds])


def choose_min_score(counts: Mapping[str, np.ndarray], thresholds: Sequence[float], max_findings: float) -> float:
    """The lowest threshold at which every scan's count is at most ``max_findings`` (the highest threshold when
    none is).

    Args:
        counts: scan → (len(thresholds),) counts (:func:`findings_per_threshold`).
        thresholds: ascending.
        max_findings: allowed lesions per scan.

    Raises:
        ValueError: no scan, or thresholds not ascending.

    Example:
        >>> float(choose_min_score({"a": np.array([9, 3, 1])}, [0.3, 0.5, 0.7], 3))
        0.5
    """
    t = np.asarray(thresholds, float)
    if not counts:
        raise ValueError("no scan to choose the operating point on")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"thresholds must be ascending, got {list(t)}")
    worst = np.max(np.stack([np.asarray(c) for c in counts.values()]), axis=0)
    ok = np.flatnonzero(worst <= max_findings)
    return float(t[ok[0]] if ok.size else t[-1])


def leave_one_scan_out(counts: Mapping[str, np.ndarray], thresholds: Sequence[float],
                       max_findings: float) -> dict[str, dict]:
    """For each scan: the threshold chosen on the others (:func:`choose_min_score`) and the scan's count there.

    Returns:
        ``{scan: {"min_score": t, "findings": n}}``.

    Raises:
        ValueError: fewer than two scans.
    """
    if len(counts) < 2:
        raise ValueError(f"leave-one-scan-out needs at least two scans, got {len(counts)}")
    t = np.asarray(thresholds, float)
    out = {}
    for name, own in counts.items():
        chosen = choose_min_score({k: v for k, v in counts.items() if k != name}, t, max_findings)
        out[name] = {"min_score": chosen, "findings": int(np.asarray(own)[int(np.flatnonzero(t == chosen)[0])])}
    return out
