"""Masses as findings: the mass rule (:mod:`lunglesionai.stages.masses`) run from its own seeds and from nodule
candidates whose outline came out over 30 mm, and nodule findings inside a mass merged into it.

A lesion over 30 mm is a mass, not a nodule (Fleischner Society glossary, Hansell et al., Radiology 246:697-722,
2008; Lung-RADS v2022 and the Fleischner 2017 guidelines apply to nodules up to 30 mm). Masses bypass the nodule FP
reduction (it learned nodules) and are not graded (the grader learned nodules).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Optional

import numpy as np

from lunglesionai.core.findings import Finding, FindingMask, equivalent_diameter_mm
from lunglesionai.core.volume import Volume
from lunglesionai.stages.blob_detector import Candidate
from lunglesionai.stages.masses import MassConfig, find_mass_seeds, segment_mass_with_shape
from lunglesionai.stages.measurements import measure_mask

__all__ = ["MASS_NOT_GRADED", "find_masses", "merge_into_masses", "masks_overlap"]

logger = logging.getLogger(__name__)

MASS_NOT_GRADED = "not graded: mass (the grader was trained on nodules)"
"""What a mass's ``extra["grading"]`` and the report's grading stage say."""


def find_masses(volume: Volume, lung_mask: np.ndarray, candidates: Sequence[Candidate],
                masks: Sequence[tuple[Optional[FindingMask], str]], max_nodule_diameter_mm: float,
                config: MassConfig = MassConfig()) -> list[Finding]:
    """Masses (kind "mass", by decreasing score) from the mass search's seeds and from the candidates whose nodule
    mask is over ``max_nodule_diameter_mm`` (:mod:`lunglesionai.stages.masses`); a seed inside a mass already found
    is skipped. Score: the highest score of a candidate whose centre lies in the mass, else the rule's lung contact.

    Args:
        volume: LPS-ordered CT in HU ((Z, Y, X) array).
        lung_mask: (Z, Y, X) lung labels of ``volume``.
        candidates: the nodule candidates at the operating point (``center_kji`` on ``volume``'s grid).
        masks: per candidate, (nodule mask or None, its source), as the pipeline's segmentation stage makes them.
        max_nodule_diameter_mm: the nodule/mass boundary (30 mm, Lung-RADS / Fleischner).
        config: the mass rule's settings.

    Returns:
        Mass findings with masks on ``volume``'s grid and mask-based measurements (ids empty).
    """
    voxel_mm3 = volume.voxel_volume_mm3
    big = [c.center_kji for c, (m, _) in zip(candidates, masks)
           if m is not None and equivalent_diameter_mm(m.voxel_count * voxel_mm3) > max_nodule_diameter_mm]
    labels = np.zeros(volume.shape_zyx, bool)
    found: list[Finding] = []
    for seed in list(find_mass_seeds(volume, lung_mask, config)) + big:
        if labels[_index(seed, volume.shape_zyx)]:
            continue
        result = segment_mass_with_shape(volume, seed, lung_mask, config)
        if result is None:
            continue
        mask, shape = result
        mask.paste_into(labels, True)
        inside = [c.score for c in candidates if _kji_in_mask(c.center_kji, mask)]
        score = max(inside) if inside else shape.lung_contact
        m = measure_mask(volume, mask)
        found.append(Finding(
            id="", kind="mass", detection_score=float(np.clip(score, 0.0, 1.0)), **m.finding_fields(),
            texture=m.texture,
            extra={"detector": "classical mass rule", "mask_source": "classical mass",
                   "score_source": "nodule candidate" if inside else "mass rule (lung contact)",
                   "grading": MASS_NOT_GRADED, "solidity": round(shape.solidity, 3),
                   "elongation": round(shape.elongation, 3), "lung_contact": round(shape.lung_contact, 3)},
            mask=mask))
    logger.info("%d mass(es)", len(found))
    return sorted(found, key=lambda f: -(f.detection_score or 0.0))


def _index(center_kji, shape_zyx) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(center_kji), 0, np.subtract(shape_zyx, 1)))


def merge_into_masses(volume: Volume, masses: Sequence[Finding],
                      nodules: Sequence[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(masses, nodules left): a nodule whose centre lies inside a mass's mask or whose mask overlaps it is merged
    into the mass (dropped; the mass counts it in ``extra["merged_findings"]``); a mass takes the highest score of
    what it absorbed.

    Args:
        volume: the grid of every mask ((Z, Y, X)).
        masses, nodules: findings with masks on that grid; inputs are not modified.

    Returns:
        (masses by decreasing score, the nodules not merged, in input order).
    """
    merged = {id(m): [] for m in masses}
    left = []
    for nodule in nodules:
        owner = next((m for m in masses if _inside_mask(volume, nodule.center_lps_mm, m)
                      or (nodule.mask is not None and masks_overlap(nodule.mask, m.mask))), None)
        if owner is None:
            left.append(nodule)
        else:
            merged[id(owner)].append(nodule)
    out = []
    for mass in masses:
        parts = merged[id(mass)]
        score = max([mass.detection_score or 0.0] + [p.detection_score or 0.0 for p in parts])
        out.append(replace(mass, detection_score=score, extra={**mass.extra, "merged_findings": len(parts)}))
    return sorted(out, key=lambda f: -(f.detection_score or 0.0)), left


def _inside_mask(volume: Volume, center_lps_mm, finding: Finding) -> bool:
    """Whether an LPS point's voxel is set in the finding's mask (on ``volume``'s grid)."""
    return finding.mask is not None and _kji_in_mask(volume.lps_to_kji([center_lps_mm])[0], finding.mask)


def _kji_in_mask(center_kji, mask: FindingMask) -> bool:
    """Whether the voxel nearest a (k, j, i) index is set in the mask."""
    kji = np.round(np.asarray(center_kji, dtype=float)).astype(int) - np.asarray(mask.offset_kji)
    if np.any(kji < 0) or np.any(kji >= mask.array.shape):
        return False
    return bool(mask.array[tuple(kji)])


def masks_overlap(a: FindingMask, b: FindingMask) -> bool:
    """Whether two finding masks on one grid share a voxel (their offsets are KJI voxel indices of that grid)."""
    lo = np.maximum(a.offset_kji, b.offset_kji)
    hi = np.minimum(np.add(a.offset_kji, a.array.shape), np.add(b.offset_kji, b.array.shape))
    if np.any(hi <= lo):
        return False
    sa = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, a.offset_kji))
    sb = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, b.offset_kji))
    return bool(np.any(a.array[sa] & b.array[sb]))
