"""Prior/current comparison benchmark (``lunglesionai evaluate followup``): matching, status and VDT against truth.

A pairs folder holds one sub-folder per case with ``prior.nii.gz``, ``current.nii.gz`` (any CT format
:func:`lunglesionai.io.ct_files.load_volume` reads, under these names) and ``truth.json``::

    {"interval_days": 365,
     "nodules": [{"prior_lps_mm": [x, y, z] or null, "current_lps_mm": [x, y, z] or null,
                  "prior_volume_mm3": V1 or null, "current_volume_mm3": V2 or null}, ...]}

A nodule with both positions is "in both" scans; with only a current position it is new; with only a prior one it
resolved. Each case is analysed twice (:func:`lunglesionai.pipeline.analyze_volume`), compared
(:func:`lunglesionai.clinical.followup.compare_scans`: lung registration, matching, growth) and scored:

* Hit rule: a finding (nodule or mass) hits a truth nodule when its centre lies within the truth's equivalent-sphere
  radius (LUNA16's centre-in-radius rule, from ``(6 V / π)^(1/3) / 2``), at least :data:`MIN_HIT_RADIUS_MM`;
  findings and truths are paired one-to-one (minimum total distance).
* ``detected_in_both``: truth nodules in both scans hit on both; ``match_accuracy``: the share of those whose
  current finding's ``followup.prior_id`` names the prior finding that hit the same truth.
* ``status_accuracy``: over truth nodules hit where they exist (in both: on both; new: on the current scan;
  resolved: on the prior scan), the share whose reported status equals the truth's. The truth status applies the
  same rule as the report (:func:`lunglesionai.clinical.lung_rads.follow_up_status`, growth > 1.5 mm of mean
  diameter) to the equivalent-sphere diameters of the true volumes; a resolved truth is right when its prior
  finding is listed in ``exam["resolved"]``.
* ``vdt_median_abs_rel_error``: over truth nodules growing in volume by at least 25 %
  (:data:`MIN_VOLUME_GROWTH`, the NELSON trial's smallest real growth) that were matched correctly, the median of
  ``|VDT_measured − VDT_true| / VDT_true``. VDT_measured is the report's ``vdt_days``, or, where the report gives
  none (its status was not "growing": a 25 % volume change is only +0.5 mm of diameter on a 6 mm nodule), the same
  formula on the two volumes the report compared (``followup`` ``prior_volume_mm3`` / ``current_volume_mm3``; row
  field ``vdt_source``); a measured volume that did not grow is "not measurable" (counted, not in the median).
  ``vdt_within_25pct_fraction`` is the share within ±25 % among those ≥ 6 mm (equivalent prior diameter; issue
  16's acceptance set), the not measurable ones counting as outside; ``vdt_within_25pct_fraction_reliable`` the
  same over those whose ``followup["volumetry"]["reliable"]`` is true.
* ``vdt_range_coverage``: over the reported VDTs of that set of growing nodules, the share whose
  ``vdt_range_days`` holds the true VDT (the range is the report's statement of its own uncertainty).

These are measurements on the pairs given, usually made by :mod:`lunglesionai.datagen.followup_pairs` (phantoms
and real CTs with pasted nodules): not clinical performance.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from lunglesionai.clinical.followup import (
    DAYS_PER_MONTH,
    Comparison,
    FollowupConfig,
    compare_scans,
    volume_doubling_time_days,
    with_followup,
)
from lunglesionai.clinical.lung_rads import follow_up_status
from lunglesionai.core.findings import Report, equivalent_diameter_mm

__all__ = ["CASE_FILES", "MIN_HIT_RADIUS_MM", "MIN_VOLUME_GROWTH", "VDT_TOLERANCE", "evaluate_followup", "find_cases",
           "format_followup_metrics", "read_truth", "score_case", "summarize"]

logger = logging.getLogger(__name__)

CASE_FILES = ("prior.nii.gz", "current.nii.gz", "truth.json")
"""The files of one case folder."""
MIN_HIT_RADIUS_MM = 2.0
"""Smallest hit radius (mm) for tiny truth nodules (our choice)."""
VDT_TOLERANCE = 0.25
"""Relative VDT error counted as right in ``vdt_within_25pct_fraction`` (issue 16: ±25 %)."""
MIN_VOLUME_GROWTH = 0.25
"""Smallest true relative volume increase whose VDT is scored."""
ACCEPTANCE_MIN_DIAMETER_MM = 6.0
"""Smallest equivalent prior diameter (mm) of ``vdt_within_25pct_fraction``'s set (issue 16)."""
_LUNG_RADS_TO_FOLLOWUP = {"growing": "growing", "slow-growing": "growing", "stable": "stable",
                          "decreased": "shrinking"}

Analyze = Callable[[Any], Report]
"""Volume → Report (the pipeline by default)."""
Compare = Callable[[Any, Report, Any, Report, float], Comparison]
"""(prior volume, prior report, current volume, current report, interval days) → Comparison."""


def find_cases(pairs_dir: str | os.PathLike) -> list[Path]:
    """The case folders of ``pairs_dir`` (sorted by name): sub-folders holding any of :data:`CASE_FILES`.

    Raises:
        FileNotFoundError: ``pairs_dir`` is not a folder, or it holds no case.
        ValueError: a case folder lacks one of the files (named).
    """
    root = Path(pairs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of follow-up pairs")
    cases = sorted(p for p in root.iterdir() if p.is_dir() and any((p / n).exists() for n in CASE_FILES))
    if not cases:
        raise FileNotFoundError(f"{root}: no case folder with {', '.join(CASE_FILES)}")
    for case in cases:
        missing = [n for n in CASE_FILES if not (case / n).is_file()]
        if missing:
            raise ValueError(f"{case}: missing {', '.join(missing)}")
    return cases


def read_truth(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a ``truth.json`` (format: module docstring).

    Returns:
        ``{"interval_days": float, "nodules": [...]}`` with positions as (3,) float arrays (LPS mm) or None.

    Raises:
        ValueError: not JSON, or a field missing, of the wrong type or out of range (the message names the file
            and the nodule).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        days = float(data["interval_days"])
        items = list(data["nodules"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a follow-up truth file ({error})") from error
    if not math.isfinite(days) or days < 0:
        raise ValueError(f"{path}: interval_days must be a finite number >= 0, got {data['interval_days']!r}")
    return {"interval_days": days, "nodules": [_truth_nodule(path, n, item) for n, item in enumerate(items)]}


def score_case(truth: dict[str, Any], prior: Report, current: Report) -> list[dict[str, Any]]:
    """One row per truth nodule: which findings hit it, whether they were matched, status and VDT.

    Args:
        truth: what :func:`read_truth` returned.
        prior: the prior scan's report.
        current: the current scan's report with ``Finding.followup`` and ``exam["resolved"]``
            (:func:`lunglesionai.clinical.followup.with_followup`).

    Returns:
        Rows with ``kind`` ("both", "new", "resolved"), ``truth_status``, ``prior_finding``, ``current_finding``
        (ids or None), ``detected``, ``match_ok`` (None unless detected in both), ``predicted_status``,
        ``status_ok`` (None unless detected), ``vdt_true_days``, ``vdt_measured_days``, ``vdt_source``,
        ``vdt_rel_error``, ``prior_diameter_mm``, ``volume_change_pct``.
    """
    nodules, days = truth["nodules"], truth["interval_days"]
    prior_hits = _hits(nodules, "prior", prior)
    current_hits = _hits(nodules, "current", current)
    by_id = {f.id: f for f in current.findings}
    resolved = {r["prior_id"] for r in current.exam.get("resolved", [])}
    return [_row(n, nodules[n], prior_hits.get(n), current_hits.get(n), by_id, resolved, days)
            for n in range(len(nodules))]


def summarize(per_case: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics over all cases' rows (definitions: module docstring); None where nothing was counted."""
    rows = [r for case in per_case for r in case["nodules"]]
    both = [r for r in rows if r["kind"] == "both"]
    detected = [r for r in both if r["detected"]]
    judged = [r for r in rows if r["status_ok"] is not None]
    vdt_rows = [r for r in detected if r["match_ok"] and r["volume_change_pct"] >= 100 * MIN_VOLUME_GROWTH]
    errors = [r["vdt_rel_error"] for r in vdt_rows if r["vdt_rel_error"] is not None]
    accept = [r for r in vdt_rows if r["prior_diameter_mm"] >= ACCEPTANCE_MIN_DIAMETER_MM]
    reliable = [r for r in accept if r.get("volumetry_reliable")]
    ranged = [r for r in vdt_rows if r.get("vdt_range_covers_truth") is not None]
    seconds = [c["registration_seconds"] for c in per_case if c.get("registration_seconds") is not None]
    return {
        "protocol": "lunglesionai follow-up pairs (hit: centre within the truth's equivalent radius, "
                    f">= {MIN_HIT_RADIUS_MM} mm)",
        "n_cases": len(per_case), "truth_nodules": len(rows), "truth_in_both": len(both),
        "detected_in_both": len(detected), "detected_in_both_fraction": _share(len(detected), len(both)),
        "matched_correctly": sum(bool(r["match_ok"]) for r in detected),
        "match_accuracy": _share(sum(bool(r["match_ok"]) for r in detected), len(detected)),
        "status_evaluated": len(judged), "status_accuracy": _share(sum(r["status_ok"] for r in judged), len(judged)),
        "vdt_evaluated": len(errors), "vdt_not_measurable": len(vdt_rows) - len(errors),
        "vdt_median_abs_rel_error": float(np.median(errors)) if errors else None,
        "vdt_acceptance_set": len(accept),
        "vdt_within_25pct_fraction": _within(accept),
        "vdt_acceptance_set_reliable": len(reliable),
        "vdt_within_25pct_fraction_reliable": _within(reliable),
        "vdt_range_evaluated": len(ranged),
        "vdt_range_coverage": _share(sum(r["vdt_range_covers_truth"] for r in ranged), len(ranged)),
        "registration_seconds_median": float(np.median(seconds)) if seconds else None,
        "registration_seconds_max": float(max(seconds)) if seconds else None,
        "per_case": per_case,
    }


def evaluate_followup(pairs_dir: str | os.PathLike, *, pipeline_config=None,
                      followup_config: FollowupConfig = FollowupConfig(), analyze: Optional[Analyze] = None,
                      compare: Optional[Compare] = None) -> dict[str, Any]:
    """Analyse, compare and score every case of a pairs folder.

    Args:
        pairs_dir: the folder of case folders (format: module docstring).
        pipeline_config: :class:`lunglesionai.pipeline.PipelineConfig` of both analyses (None: its defaults).
        followup_config: matching settings.
        analyze: Volume → Report instead of the pipeline (tests, cached reports).
        compare: instead of :func:`lunglesionai.clinical.followup.compare_scans` (registration and matching).

    Returns:
        :func:`summarize`'s metrics; ``per_case`` rows hold ``case``, ``registration_seconds``, ``findings_prior``,
        ``findings_current`` and the ``nodules`` rows of :func:`score_case`.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed pairs folder, truth file or CT (named).
    """
    from lunglesionai.io.ct_files import load_volume

    cases = find_cases(pairs_dir)
    truths = [read_truth(case / CASE_FILES[2]) for case in cases]  # every truth file checked before any analysis
    if analyze is None:
        from lunglesionai.pipeline import PipelineConfig, analyze_volume

        analyze = functools.partial(analyze_volume, config=pipeline_config or PipelineConfig())
    if compare is None:
        compare = functools.partial(compare_scans, config=followup_config)
    per_case = []
    for i, (case, truth) in enumerate(zip(cases, truths), 1):
        logger.info("case %d/%d: %s", i, len(cases), case.name)
        volumes = [load_volume(case / name) for name in CASE_FILES[:2]]
        prior, current = (analyze(v) for v in volumes)
        comparison = compare(volumes[0], prior, volumes[1], current, truth["interval_days"])
        current = with_followup(current, comparison)
        per_case.append({"case": case.name, "registration_seconds": comparison.registration.get("seconds"),
                         "findings_prior": len(prior.lung_findings()), "findings_current": len(current.lung_findings()),
                         "nodules": score_case(truth, prior, current)})
    return summarize(per_case)


def format_followup_metrics(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f} %"

    lines = [f"{metrics['n_cases']} case(s), {metrics['truth_nodules']} truth nodules, {metrics['truth_in_both']} "
             f"in both scans, {metrics['detected_in_both']} detected in both",
             f"match accuracy {pct(metrics['match_accuracy'])}, status accuracy {pct(metrics['status_accuracy'])} "
             f"({metrics['status_evaluated']} judged)",
             f"VDT median |relative error| {pct(metrics['vdt_median_abs_rel_error'])} over {metrics['vdt_evaluated']} "
             f"nodule(s) grown >= 25 % in volume ({metrics['vdt_not_measurable']} not measurable); within ±25 % "
             f"for >= 6 mm: {pct(metrics['vdt_within_25pct_fraction'])} of {metrics['vdt_acceptance_set']} "
             f"({pct(metrics['vdt_within_25pct_fraction_reliable'])} of the {metrics['vdt_acceptance_set_reliable']} "
             f"with reliable volumetry); the reported VDT range holds the true VDT for "
             f"{pct(metrics['vdt_range_coverage'])} of {metrics['vdt_range_evaluated']}"]
    if metrics["registration_seconds_median"] is not None:
        lines.append(f"registration {metrics['registration_seconds_median']:.1f} s median, "
                     f"{metrics['registration_seconds_max']:.1f} s max")
    return "\n".join(lines)


def _truth_nodule(path: Path, n: int, item: Any) -> dict[str, Any]:
    """One checked truth nodule (positions as arrays, volumes as floats, None where absent)."""
    if not isinstance(item, dict):
        raise ValueError(f"{path}: nodule {n} is not an object")
    out = {}
    for side in ("prior", "current"):
        position, volume = item.get(f"{side}_lps_mm"), item.get(f"{side}_volume_mm3")
        if position is None:
            out[f"{side}_lps_mm"], out[f"{side}_volume_mm3"] = None, None
            continue
        array = np.asarray(position, float) if isinstance(position, list) else np.zeros(0)
        ok_volume = isinstance(volume, (int, float)) and not isinstance(volume, bool) and math.isfinite(volume)
        if array.shape != (3,) or not np.isfinite(array).all() or not ok_volume or volume <= 0:
            raise ValueError(f"{path}: nodule {n} needs {side}_lps_mm as [x, y, z] and {side}_volume_mm3 > 0, got "
                             f"{position!r} and {volume!r}")
        out[f"{side}_lps_mm"], out[f"{side}_volume_mm3"] = array, float(volume)
    if out["prior_lps_mm"] is None and out["current_lps_mm"] is None:
        raise ValueError(f"{path}: nodule {n} has neither prior_lps_mm nor current_lps_mm")
    return out


def _hits(nodules: list[dict[str, Any]], side: str, report: Report) -> dict[int, str]:
    """Truth index → id of the finding hitting it on ``side`` (one-to-one, least total distance)."""
    truths = [n for n, t in enumerate(nodules) if t[f"{side}_lps_mm"] is not None]
    findings = [f for f in report.lung_findings() if f.status != "rejected"]
    if not truths or not findings:
        return {}
    centres = np.array([nodules[n][f"{side}_lps_mm"] for n in truths])
    radius = np.array([max(MIN_HIT_RADIUS_MM, equivalent_diameter_mm(nodules[n][f"{side}_volume_mm3"]) / 2)
                       for n in truths])
    distance = np.linalg.norm(centres[:, None, :] - np.array([f.center_lps_mm for f in findings])[None], axis=-1)
    inside = distance <= radius[:, None]
    outside_cost = float(distance[inside].sum()) + 1.0
    rows, cols = linear_sum_assignment(np.where(inside, distance, outside_cost + distance))
    return {truths[r]: findings[c].id for r, c in zip(rows, cols) if inside[r, c]}


def _truth_status(truth: dict[str, Any], days: float) -> str:
    if truth["prior_lps_mm"] is None:
        return "new"
    if truth["current_lps_mm"] is None:
        return "resolved"
    status = follow_up_status(equivalent_diameter_mm(truth["current_volume_mm3"]),
                              equivalent_diameter_mm(truth["prior_volume_mm3"]), days / DAYS_PER_MONTH)
    return _LUNG_RADS_TO_FOLLOWUP[status]


def _row(n: int, truth: dict[str, Any], prior_id: Optional[str], current_id: Optional[str], by_id: dict,
         resolved: set[str], days: float) -> dict[str, Any]:
    kind = "new" if truth["prior_lps_mm"] is None else "resolved" if truth["current_lps_mm"] is None else "both"
    status = _truth_status(truth, days)
    followup = (by_id[current_id].followup or {}) if current_id is not None else {}
    detected = {"both": prior_id is not None and current_id is not None, "new": current_id is not None,
                "resolved": prior_id is not None}[kind]
    if kind == "resolved":
        predicted = None if prior_id is None else ("resolved" if prior_id in resolved else "not resolved")
    else:
        predicted = followup.get("status")
    row = {"truth_index": n, "kind": kind, "truth_status": status, "prior_finding": prior_id,
           "current_finding": current_id, "detected": detected,
           "match_ok": (followup.get("prior_id") == prior_id) if kind == "both" and detected else None,
           "predicted_status": predicted, "status_ok": (predicted == status) if detected else None,
           "prior_diameter_mm": None, "volume_change_pct": None, "vdt_true_days": None,
           "vdt_measured_days": None, "vdt_source": None, "vdt_rel_error": None, "vdt_range_covers_truth": None,
           "volumetry_method": (followup.get("volumetry") or {}).get("method"),
           "volumetry_reliable": (followup.get("volumetry") or {}).get("reliable")}
    if kind == "both":
        v1, v2 = truth["prior_volume_mm3"], truth["current_volume_mm3"]
        row.update(prior_diameter_mm=equivalent_diameter_mm(v1), volume_change_pct=100.0 * (v2 / v1 - 1.0),
                   vdt_true_days=volume_doubling_time_days(v1, v2, days))
        if row["match_ok"] and v2 > v1:
            row.update(_measured_vdt(followup, by_id[current_id], days, row["vdt_true_days"]))
    return row


def _measured_vdt(followup: dict[str, Any], finding, days: float, vdt_true: float) -> dict[str, Any]:
    """The report's VDT (and whether its range holds the true VDT), else the VDT of the two volumes the report
    compared (``followup`` prior and current volumes; the finding's own volume when the report has no current one);
    ``vdt_source`` None when they did not grow."""
    vdt, source, covers = followup.get("vdt_days"), "report", None
    if vdt is not None and followup.get("vdt_range_days"):
        low, high = followup["vdt_range_days"]
        covers = bool(low is not None and low <= vdt_true and (high is None or vdt_true <= high))
    if vdt is None:
        source = "volumes"
        v1 = followup.get("prior_volume_mm3")
        v2 = followup.get("current_volume_mm3") or finding.volume_mm3
        if v1 and v2 and v1 > 0 and v2 > 0:
            vdt = volume_doubling_time_days(v1, v2, days)
    if vdt is None:
        return {"vdt_source": None}
    return {"vdt_measured_days": float(vdt), "vdt_source": source, "vdt_rel_error": abs(vdt - vdt_true) / vdt_true,
            "vdt_range_covers_truth": covers}


def _within(rows: list[dict[str, Any]]) -> Optional[float]:
    """Share of rows whose VDT error is within :data:`VDT_TOLERANCE` (a missing error counts as outside)."""
    return _share(sum(r["vdt_rel_error"] is not None and r["vdt_rel_error"] <= VDT_TOLERANCE for r in rows), len(rows))


def _share(count: int, total: int) -> Optional[float]:
    return None if total == 0 else float(count) / total
