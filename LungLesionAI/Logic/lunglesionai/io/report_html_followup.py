"""The prior-scan parts of ``report.html`` (``analyze --prior``): the change of each finding, the prior scan and
the resolved nodules in the exam block, and the prior/current thumbnails side by side.

Inputs are what :func:`lunglesionai.clinical.followup.with_followup` writes: ``Finding.followup`` (status, prior id,
prior mean diameter, change in mean diameter, volume change %, VDT and its range, the prior centre in the prior
scan's LPS mm) and ``exam["prior"]`` / ``exam["resolved"]``. The prior thumbnail is an axial slice of the prior CT
through the matched prior finding's centre, at the same field of view as the current one, with the prior finding's
outline when its mask is known (a prior analysed in the same run; a prior output folder's report has no masks).
Statuses follow the Lung-RADS v2022 growth rule (see :mod:`lunglesionai.clinical.followup`); the VDT is Schwartz's
(Cancer 1961) with a ±25 % volume-repeatability range (Gietema et al., Radiology 2006).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from lunglesionai.core.findings import Finding
from lunglesionai.core.volume import Volume
from lunglesionai.io.findings_table import fixed
from lunglesionai.io.report_pictures import finding_thumbnails

__all__ = ["change_cell", "change_sentence", "prior_axial_png", "prior_exam_rows"]

_MISSING = "–"


def change_cell(finding: Finding) -> str:
    """Short plain-text change of a finding for the table: "growing +1.9 mm, +85 % vol., VDT 160 d", "new",
    "stable −0.2 mm", or "–" without a prior scan; the diameter change is the one the growth rule read (the
    paired volumes' equivalent diameter when measured, else the mean diameter)."""
    followup = finding.followup
    if not followup:
        return _MISSING
    parts = [str(followup.get("status") or _MISSING)]
    change = followup.get("equivalent_diameter_change_mm")  # what the growth rule read, when paired
    if change is None:
        change = followup.get("mean_diameter_change_mm")
    if change is not None:
        parts.append(f"{_signed(change, 1)} mm")
    if followup.get("volume_change_pct") is not None:
        parts.append(f"{_signed(followup['volume_change_pct'], 0)} % vol.")
    if followup.get("vdt_days") is not None:
        parts.append(f"VDT {fixed(followup['vdt_days'], 0)} d")
    return parts[0] + (" " + ", ".join(parts[1:]) if len(parts) > 1 else "")


def change_sentence(finding: Finding) -> str:
    """The change written out for the finding's section (plain text; "" without a prior scan)."""
    followup = finding.followup
    if not followup:
        return ""
    status = str(followup.get("status"))
    interval = followup.get("interval_days")
    over = f" over {fixed(interval, 0)} days" if interval is not None else ""
    if status == "new":
        return f"New since the prior scan{over}: no prior nodule within the matching gate."
    text = (f"{status.capitalize()}{over}: matched to prior {followup.get('prior_id')}; mean diameter "
            f"{_num(followup.get('prior_mean_diameter_mm'), 1)} → {_num(finding.mean_diameter_mm, 1)} mm")
    if followup.get("mean_diameter_change_mm") is not None:
        text += f" ({_signed(followup['mean_diameter_change_mm'], 1)} mm)"
    if followup.get("volume_change_pct") is not None:
        text += f"; volume {_signed(followup['volume_change_pct'], 0)} %"
    if followup.get("equivalent_diameter_change_mm") is not None:
        text += (f" (equivalent diameter {_signed(followup['equivalent_diameter_change_mm'], 1)} mm, which the "
                 "growth rule read)")
    volumetry = followup.get("volumetry") or {}
    if followup.get("vdt_days") is not None:
        text += f"; volume-doubling time {fixed(followup['vdt_days'], 0)} days"
        low, high = (list(followup.get("vdt_range_days") or []) + [None, None])[:2]
        repeatability = volumetry.get("repeatability", 0.25)
        if low is not None:
            text += f" (±{fixed(100 * repeatability, 0)} % volume repeatability: {fixed(low, 0)} to "
            text += ("unbounded" if high is None else f"{fixed(high, 0)}") + " days)"
    if followup.get("volume_change_pct") is not None and volumetry.get("reliable") is False:
        reasons = "; ".join(volumetry.get("reasons") or [])
        text += f". Volumetry less reliable ({reasons})" if reasons else ". Volumetry less reliable"
    solid = followup.get("solid_component")
    if solid:
        text += (f". Solid component {solid.get('status')}: {_num(solid.get('prior_mean_diameter_mm'), 1)} → "
                 f"{_num(solid.get('mean_diameter_mm'), 1)} mm")
        if solid.get("vdt_days") is not None:
            text += f", volume-doubling time {fixed(solid['vdt_days'], 0)} days"
    return text + "."


def prior_exam_rows(exam: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rows (label, HTML) of the exam block about the prior scan and the resolved nodules; [] without a prior."""
    prior = exam.get("prior")
    if not prior:
        return []
    esc = html.escape
    when = f"{prior.get('study_date')}, " if prior.get("study_date") else ""
    interval = f"{fixed(prior.get('interval_days'), 0)} days before this scan"
    source = f" (interval from {prior['interval_source']})" if prior.get("interval_source") else ""
    seconds = (prior.get("registration") or {}).get("seconds")
    registered = f"; lungs registered in {fixed(seconds, 1)} s" if seconds is not None else ""
    rows = [("Prior scan", esc(f"{when}{interval}{source}{registered}: {prior.get('path', '')}"))]
    resolved = list(exam.get("resolved") or [])
    if resolved:
        items = []
        for entry in resolved:
            size = entry.get("prior_mean_diameter_mm")
            center = entry.get("prior_center_lps_mm") or []
            items.append(f"{entry.get('prior_id')} (prior mean diameter {_num(size, 1)} mm, prior LPS "
                         f"({', '.join(fixed(c, 1) for c in center)}) mm)")
        rows.append(("Resolved since the prior", esc("; ".join(items)) + " — not found in this scan."))
    else:
        rows.append(("Resolved since the prior", "none"))
    return rows


def prior_axial_png(prior_volume_lps: Volume, prior_findings: Sequence[Finding], finding: Finding, half_fov_mm: float,
                    color_rgb: tuple[float, float, float], size_px: int, perm: Optional[Sequence[int]] = None
                    ) -> Optional[bytes]:
    """The prior scan's axial thumbnail for a matched finding, or None (no prior centre, or it lies outside).

    Args:
        prior_volume_lps: the prior CT in LPS axis order (:func:`lunglesionai.core.orientation.reorient_to_lps`).
        prior_findings: the prior report's findings (masks on the prior's analysed grid, or None).
        finding: a current finding with ``followup["prior_center_lps_mm"]`` (prior LPS mm).
        half_fov_mm: half the side of the field of view, mm (the current thumbnail's).
        color_rgb: outline colour, RGB in [0, 1].
        size_px: long side of the picture, pixels.
        perm: the axis permutation ``reorient_to_lps`` returned for the prior volume (applied to its masks).
    """
    followup = finding.followup or {}
    center = followup.get("prior_center_lps_mm")
    if center is None:
        return None
    center_kji = prior_volume_lps.lps_to_kji([center])[0]
    if np.any(center_kji < -0.5) or np.any(center_kji > np.asarray(prior_volume_lps.shape_zyx) - 0.5):
        return None
    by_id = {f.id: f for f in prior_findings}
    prior = by_id.get(str(followup.get("prior_id")))
    mask = None
    if prior is not None and prior.mask is not None:
        mask = prior.mask.reoriented(perm) if perm is not None else prior.mask
    return finding_thumbnails(prior_volume_lps, mask, center_kji, half_fov_mm, color_rgb, size_px).axial


def _num(value: Optional[float], decimals: int) -> str:
    return _MISSING if value is None else fixed(value, decimals)


def _signed(value: float, decimals: int) -> str:
    text = fixed(value, decimals)
    return text if text.startswith("-") else "+" + text
