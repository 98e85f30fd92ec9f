"""Prior/current comparison of one patient's chest CTs: matching, growth, volume-doubling time, Lung-RADS follow-up.

The prior scan's nodules and masses are carried into the current scan with the lung registration's ``map_points``
(:func:`lunglesionai.stages.registration.register_lungs`, or any callable (N, 3) LPS mm → (N, 3) LPS mm) and
matched one-to-one to the current ones; each current finding then gets a ``followup`` entry, the prior findings
left over are "resolved", and the Lung-RADS read receives the follow-up facts it needs
(:func:`lunglesionai.clinical.read.apply_clinical_read`, ``follow_up=``).

Rules (this project's choices are marked as such):

* Matching: a minimum-total-distance one-to-one assignment (Hungarian method, Kuhn 1955, via
  ``scipy.optimize.linear_sum_assignment``) between the mapped prior centres and the current centres, allowed only
  within a gate that grows with size: ``max(min_gate_mm, gate_diameter_fraction · larger mean diameter) +
  registration_tolerance_mm`` (:class:`FollowupConfig`; the numbers are ours). The assignment first maximises the
  number of pairs inside their gates, then minimises their total distance.
* Status of a matched finding: Lung-RADS v2022 growth, an increase of the mean diameter (rounded to 0.1 mm) by
  more than 1.5 mm (:func:`lunglesionai.clinical.lung_rads.follow_up_status`); within 12 months it is "growing",
  over a longer interval "slow-growing" for Lung-RADS and "growing" in ``followup``. A decrease by more than
  1.5 mm is "shrinking" (Lung-RADS "decreased"; the symmetric threshold is ours: Lung-RADS reads stable and
  decreased alike); anything else is "stable". When paired volumetry (below) measured both volumes, the rule is
  applied to the diameters of the spheres of those two volumes (equivalent diameters) instead of each scan's own
  mean diameter (our choice: one method on both scans; on the project's pairs an over-segmented current outline
  turned a nodule that halved into "growing +2.6 mm"); ``followup["status_basis"]`` says which. An unmatched
  current finding is "new"; an unmatched prior one "resolved" (listed in ``exam["resolved"]``).
* Volumes of a matched pair of nodules are measured again, together, by paired volumetry
  (:func:`lunglesionai.stages.paired_volumetry.measure_pair`: one foreground, the same density cuts, vessel
  detachment and a partial-volume band on both scans), because the per-scan outlines can be biased differently on
  two scans; when that fails, or for masses, each finding's own mask volume is used. ``followup["volumetry"]`` says
  which, and whether the measurement is reliable (thin sections, enough voxels across, solid, density cuts that
  agree, both outlines found).
* Volume-doubling time (Schwartz M., "A biomathematical approach to clinical tumor growth", Cancer
  1961;14:1272-1294): ``VDT = Δt · ln 2 / ln(V2 / V1)`` in days, from those two volumes; reported only for
  growing findings. Its range (``vdt_range_days``) allows the volume ratio to be off by the inter-scan
  repeatability of semi-automatic nodule volumetry, ±25 % (:data:`VOLUME_REPEATABILITY`: the 95 % limits of
  agreement of repeated low-dose scans were −21.2 % to +23.8 %, Gietema HA et al., "Pulmonary nodules: interscan
  variability of semiautomated volume measurements with multisection CT", Radiology 2006;241(1):251-257; the
  NELSON trial took 25 % volume change as the smallest real growth). The upper end is ``None`` (unbounded) when
  the ratio is within that repeatability. An unreliable volumetry widens the range to ±50 %
  (:data:`UNRELIABLE_VOLUME_REPEATABILITY`; our choice, twice the thin-section figure, for the thick sections, small
  and sub-solid nodules that the reliability rules name).
* Interval: from the StudyDate of both scans (``Report.input.description["study_date"]``) or given.

* Part-solid nodules (either scan): the solid component's change is given too (``followup["solid_component"]``:
  Lung-RADS status, mean diameters, volumes, VDT when it grows), from each scan's solid component (the same fixed
  HU rule on both). Lung-RADS v2022 reads part-solid growth on the solid component ("new or growing solid
  component", categories 4A/4B), so a solid component growing by more than 1.5 mm makes the nodule "growing" even
  when its total mean diameter is stable.

Not covered: texture changes (a ground-glass nodule gaining a solid component is "new solid component" in
Lung-RADS; here only the sizes are compared), and growth over more than two exams.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from lunglesionai.clinical.lung_rads import follow_up_status
from lunglesionai.core.findings import Finding, Report, equivalent_diameter_mm

__all__ = [
    "DAYS_PER_MONTH",
    "FOLLOWUP_STATUSES",
    "UNRELIABLE_VOLUME_REPEATABILITY",
    "VOLUME_REPEATABILITY",
    "Comparison",
    "FollowupConfig",
    "compare_findings",
    "compare_scans",
    "interval_days_from_study_dates",
    "match_findings",
    "vdt_range_days",
    "volume_doubling_time_days",
    "with_followup",
]

FOLLOWUP_STATUSES = ("new", "stable", "growing", "shrinking")
"""``Finding.followup["status"]`` values (resolved prior findings are listed in ``exam["resolved"]``)."""
DAYS_PER_MONTH = 365.25 / 12.0
"""Days per month, to turn the interval into the months Lung-RADS counts."""
VOLUME_REPEATABILITY = 0.25
"""Relative inter-scan repeatability of a nodule volume (±25 %; Gietema et al., Radiology 2006, see above)."""
UNRELIABLE_VOLUME_REPEATABILITY = 0.5
"""The repeatability assumed when the volumetry is marked unreliable (±50 %; our choice, see above)."""
OWN_OUTLINES = "each scan's own outline"
"""``followup["volumetry"]["method"]`` when the findings' own mask volumes were compared."""
STATUS_FROM_PAIRED_VOLUMES = "equivalent diameters of the paired volumes"
"""``followup["status_basis"]`` when the growth rule read the paired volumetry."""
STATUS_FROM_MEAN_DIAMETERS = "mean diameters"
"""``followup["status_basis"]`` when it read each scan's own mean diameter."""
_LUNG_RADS_TO_FOLLOWUP = {"growing": "growing", "slow-growing": "growing", "stable": "stable",
                          "decreased": "shrinking"}

MapPoints = Callable[[np.ndarray], np.ndarray]
"""(N, 3) prior LPS mm → (N, 3) current LPS mm."""
PairVolumetry = Callable[[Finding, Finding], Any]
"""(prior finding, current finding) → :class:`lunglesionai.stages.paired_volumetry.PairedVolumes` or None."""


@dataclass(frozen=True)
class FollowupConfig:
    """Matching gate (all mm; our choices, not a guideline's).

    Args:
        min_gate_mm: smallest allowed distance between a mapped prior centre and a current centre.
        gate_diameter_fraction: the gate is at least this fraction of the larger mean diameter of the two.
        registration_tolerance_mm: added to every gate for the registration's residual error.
        volume_repeatability: relative volume repeatability used for the VDT range (:data:`VOLUME_REPEATABILITY`).
        unreliable_volume_repeatability: the same when the volumetry is marked unreliable
            (:data:`UNRELIABLE_VOLUME_REPEATABILITY`).

    Raises:
        ValueError: a negative or non-finite value, or a repeatability outside [0, 1).
    """

    min_gate_mm: float = 5.0
    gate_diameter_fraction: float = 0.5
    registration_tolerance_mm: float = 5.0
    volume_repeatability: float = VOLUME_REPEATABILITY
    unreliable_volume_repeatability: float = UNRELIABLE_VOLUME_REPEATABILITY

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"FollowupConfig.{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("volume_repeatability", "unreliable_volume_repeatability"):
            if getattr(self, name) >= 1:
                raise ValueError(f"FollowupConfig.{name} must be < 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Comparison:
    """What the comparison of a prior and a current report found.

    Args:
        followup: current finding id → its ``Finding.followup`` entry (nodules and masses that were compared).
        resolved: one entry per prior finding without a current match: ``{"prior_id", "prior_center_lps_mm",
            "mapped_center_lps_mm", "prior_mean_diameter_mm", "prior_volume_mm3"}`` (LPS mm, mm, mm³).
        lung_rads_follow_up: current nodule id → facts for ``apply_clinical_read(..., follow_up=)``.
        interval_days: days between the scans.
        registration: what the registration reported (``seconds``, ``stages``, ``metric_value``), empty when
            ``map_points`` came from elsewhere.
    """

    followup: dict[str, dict[str, Any]]
    resolved: list[dict[str, Any]]
    lung_rads_follow_up: dict[str, dict[str, Any]]
    interval_days: float
    registration: dict[str, Any] = dataclasses.field(default_factory=dict)


def volume_doubling_time_days(prior_volume_mm3: float, current_volume_mm3: float,
                              interval_days: float) -> Optional[float]:
    """Volume-doubling time ``Δt · ln 2 / ln(V2 / V1)`` (days; Schwartz, Cancer 1961).

    Args:
        prior_volume_mm3, current_volume_mm3: nodule volumes V1, V2 (mm³) on the prior and current scan.
        interval_days: Δt, days between the scans.

    Returns:
        The VDT in days; None when the volume did not increase or the interval is 0.

    Raises:
        ValueError: a volume that is not positive and finite, or a negative or non-finite interval.

    Example:
        >>> volume_doubling_time_days(100.0, 200.0, 90), volume_doubling_time_days(200.0, 100.0, 90)
        (90.0, None)
    """
    _check_positive("prior_volume_mm3", prior_volume_mm3)
    _check_positive("current_volume_mm3", current_volume_mm3)
    _check_interval(interval_days)
    if current_volume_mm3 <= prior_volume_mm3 or interval_days == 0:
        return None
    return float(interval_days * math.log(2.0) / math.log(current_volume_mm3 / prior_volume_mm3))


def vdt_range_days(prior_volume_mm3: float, current_volume_mm3: float, interval_days: float, *,
                   repeatability: float = VOLUME_REPEATABILITY) -> tuple[Optional[float], Optional[float]]:
    """The VDT's range when the measured volume ratio may be off by up to the factor ``1 + repeatability`` either way.

    Args:
        prior_volume_mm3, current_volume_mm3: V1, V2 (mm³).
        interval_days: days between the scans.
        repeatability: relative repeatability of the volume ratio (0.25: ±25 %, Gietema et al. 2006).

    Returns:
        (shortest, longest) VDT in days; the longest is None (unbounded) when ``V2 / V1 / (1 + repeatability)``
        is not above 1; both None when the volume did not grow at all or the interval is 0.

    Raises:
        ValueError: as :func:`volume_doubling_time_days`; ``repeatability`` outside [0, 1).

    Example:
        >>> [round(v) for v in vdt_range_days(100.0, 400.0, 100)]   # VDT 50 days
        [43, 60]
    """
    if not 0 <= repeatability < 1:
        raise ValueError(f"repeatability must be in [0, 1), got {repeatability!r}")
    if volume_doubling_time_days(prior_volume_mm3, current_volume_mm3, interval_days) is None:
        return None, None
    ratio = current_volume_mm3 / prior_volume_mm3
    shortest = interval_days * math.log(2.0) / math.log(ratio * (1 + repeatability))
    low_ratio = ratio / (1 + repeatability)
    longest = interval_days * math.log(2.0) / math.log(low_ratio) if low_ratio > 1 else None
    return float(shortest), longest


def match_findings(prior_centers_lps_mm: np.ndarray, prior_diameters_mm: np.ndarray,
                   current_centers_lps_mm: np.ndarray, current_diameters_mm: np.ndarray, *,
                   config: FollowupConfig = FollowupConfig()) -> list[tuple[int, int, float]]:
    """One-to-one matches of (already mapped) prior centres to current centres inside size-scaled gates.

    Args:
        prior_centers_lps_mm: (N, 3) prior centres mapped into the current scan, LPS mm.
        prior_diameters_mm: (N,) their mean diameters (mm).
        current_centers_lps_mm: (M, 3) current centres, LPS mm.
        current_diameters_mm: (M,) mean diameters (mm).
        config: the gate (see :class:`FollowupConfig`).

    Returns:
        ``[(prior_index, current_index, distance_mm), ...]`` sorted by prior index; each index at most once.

    Raises:
        ValueError: shapes that do not fit, or non-finite values.

    Example:
        >>> match_findings(np.array([[0., 0, 0], [30, 0, 0]]), np.array([6., 8]),
        ...                np.array([[31., 0, 0], [1, 0, 0]]), np.array([6., 9]))
        [(0, 1, 1.0), (1, 0, 1.0)]
    """
    prior, current = _points(prior_centers_lps_mm, "prior"), _points(current_centers_lps_mm, "current")
    d_prior = _sizes(prior_diameters_mm, len(prior), "prior")
    d_current = _sizes(current_diameters_mm, len(current), "current")
    if len(prior) == 0 or len(current) == 0:
        return []
    distance = np.linalg.norm(prior[:, None, :] - current[None, :, :], axis=-1)
    gate = (np.maximum(config.min_gate_mm, config.gate_diameter_fraction * np.maximum(d_prior[:, None],
                                                                                       d_current[None, :]))
            + config.registration_tolerance_mm)
    inside = distance <= gate
    # Outside the gate costs more than every allowed pair together: the most pairs first, then the least distance.
    outside_cost = float(distance[inside].sum()) + 1.0 if inside.any() else 1.0
    rows, cols = linear_sum_assignment(np.where(inside, distance, outside_cost + distance))
    return [(int(r), int(c), float(distance[r, c])) for r, c in zip(rows, cols) if inside[r, c]]


def compare_findings(prior: Report, current: Report, map_points: MapPoints, interval_days: float, *,
                     config: FollowupConfig = FollowupConfig(),
                     volumetry: Optional[PairVolumetry] = None) -> Comparison:
    """Match the prior report's nodules and masses to the current report's, and describe each change.

    Findings of kind "lesion" and findings a reader rejected take no part.

    Args:
        prior, current: reports of the two scans (LPS mm, their own grids).
        map_points: (N, 3) prior LPS mm → (N, 3) current LPS mm (the lung registration's ``map_points``).
        interval_days: days from the prior to the current scan (≥ 0).
        config: matching gate and VDT repeatability.
        volumetry: measures a matched pair of nodules together (:func:`compare_scans` passes paired volumetry on
            the two CTs); None, or a None result: the findings' own mask volumes are compared.

    Returns:
        A :class:`Comparison`; ``followup`` entries hold ``status`` (:data:`FOLLOWUP_STATUSES`), ``prior_id``,
        ``prior_mean_diameter_mm``, ``mean_diameter_change_mm``, ``prior_volume_mm3`` and ``current_volume_mm3``
        (the two volumes compared), ``volume_change_pct``, ``vdt_days`` (None unless growing), ``vdt_range_days``
        ([shortest, longest or None], None unless growing), ``volumetry`` (``method``, ``reliable``, ``reasons``,
        ``repeatability``), ``interval_days`` and ``match_distance_mm`` (None for new findings).

    Raises:
        ValueError: a negative interval, a compared finding without any size, or ``map_points`` returning the
            wrong shape.

    Example:
        >>> comparison = compare_findings(prior, current, lambda p: p, 365)   # doctest: +SKIP
        >>> comparison.followup["N1"]["status"]                                 # doctest: +SKIP
        'growing'
    """
    _check_interval(interval_days)
    olds, news = _compared(prior), _compared(current)
    old_centers = np.array([f.center_lps_mm for f in olds], float).reshape(-1, 3)
    mapped = old_centers
    if len(olds):
        mapped = np.asarray(map_points(old_centers), float)
        if mapped.shape != old_centers.shape:
            raise ValueError(f"map_points returned shape {mapped.shape} for {old_centers.shape} points")
    matches = match_findings(mapped, np.array([_mean_diameter_mm(f) for f in olds]),
                             np.array([f.center_lps_mm for f in news], float).reshape(-1, 3),
                             np.array([_mean_diameter_mm(f) for f in news]), config=config)
    by_current = {c: (p, d) for p, c, d in matches}
    followup, lung_rads = {}, {}
    for index, finding in enumerate(news):
        if index in by_current:
            old, distance = olds[by_current[index][0]], by_current[index][1]
            paired = volumetry(old, finding) if volumetry is not None else None
            followup[finding.id], rads_status = _change(old, finding, interval_days, distance, config, paired)
            facts = {"status": rads_status, "prior_mean_diameter_mm": _mean_diameter_mm(old),
                     "prior_solid_component_mean_diameter_mm": old.solid_component_mean_diameter_mm,
                     "prior_category": old.lung_rads}
        else:
            followup[finding.id] = _new_entry(interval_days)
            facts = {"status": "new"}
        facts["interval_months"] = interval_days / DAYS_PER_MONTH
        if finding.kind == "nodule":
            lung_rads[finding.id] = {k: v for k, v in facts.items() if v is not None}
    matched_prior = {p for p, _, _ in matches}
    resolved = [{"prior_id": f.id, "prior_center_lps_mm": [float(c) for c in f.center_lps_mm],
                 "mapped_center_lps_mm": [float(c) for c in mapped[i]],
                 "prior_mean_diameter_mm": _mean_diameter_mm(f), "prior_volume_mm3": f.volume_mm3}
                for i, f in enumerate(olds) if i not in matched_prior]
    return Comparison(followup, resolved, lung_rads, float(interval_days))


def with_followup(current: Report, comparison: Comparison, *,
                  prior_info: Optional[Mapping[str, Any]] = None) -> Report:
    """A copy of ``current`` with ``Finding.followup`` set and ``exam["resolved"]`` / ``exam["prior"]`` added.

    Call :func:`lunglesionai.clinical.read.apply_clinical_read` afterwards with
    ``follow_up=comparison.lung_rads_follow_up`` for the Lung-RADS follow-up rows.

    Args:
        current: the current report (not modified).
        comparison: what :func:`compare_findings` or :func:`compare_scans` returned for it.
        prior_info: what to record about the prior scan in ``exam["prior"]`` (e.g. ``path``, ``study_date``,
            ``interval_source``); the interval and the registration's summary are added.

    Raises:
        ValueError: ``comparison`` names a finding that ``current`` does not have.
    """
    unknown = sorted(set(comparison.followup) - {f.id for f in current.findings})
    if unknown:
        raise ValueError(f"follow-up given for findings {unknown} that the current report does not have")
    findings = [replace(f, followup=dict(comparison.followup[f.id])) if f.id in comparison.followup else f
                for f in current.findings]
    exam = dict(current.exam)
    exam["resolved"] = [dict(r) for r in comparison.resolved]
    exam["prior"] = {**dict(prior_info or {}), "interval_days": comparison.interval_days,
                     "registration": dict(comparison.registration)}
    return replace(current, findings=findings, exam=exam)


def compare_scans(prior_volume, prior: Report, current_volume, current: Report, interval_days: float, *,
                  config: FollowupConfig = FollowupConfig(), registration_config=None) -> Comparison:
    """Register the prior CT to the current one on the lungs, then :func:`compare_findings`.

    Args:
        prior_volume, current_volume: the two CTs (:class:`lunglesionai.core.volume.Volume`, HU, any orientation).
        prior, current: their reports (findings in LPS mm).
        interval_days: days between the scans.
        config: matching settings.
        registration_config: a :class:`lunglesionai.stages.registration.RegistrationConfig`; None: its defaults.

    Returns:
        The :class:`Comparison`, with the registration's ``seconds``, ``stages`` and ``metric_value``.

    Raises:
        ValueError: no lung found on one of the scans (named by its source), and the errors of
            :func:`compare_findings` and of the registration.
    """
    from lunglesionai.stages.lung_mask import segment_lungs
    from lunglesionai.stages.registration import RegistrationConfig, register_lungs

    masks = []
    for volume in (prior_volume, current_volume):
        mask = segment_lungs(volume)
        if not mask.any():
            raise ValueError(f"{volume.source or 'volume'}: no lung found, the scans cannot be registered")
        masks.append(mask)
    registration = register_lungs(prior_volume, masks[0], current_volume, masks[1],
                                  config=registration_config or RegistrationConfig())
    volumetry = functools.partial(_paired_volumes, prior_volume, masks[0], current_volume, masks[1])
    comparison = compare_findings(prior, current, registration.map_points, interval_days, config=config,
                                  volumetry=volumetry)
    summary = {"seconds": float(registration.seconds), "stages": list(registration.stages),
               "metric_value": None if registration.metric_value is None else float(registration.metric_value)}
    return replace(comparison, registration=summary)


def _paired_volumes(prior_volume, prior_lung: np.ndarray, current_volume, current_lung: np.ndarray, old: Finding,
                    new: Finding):
    """Paired volumetry of a matched pair of nodules on the two CTs (None for masses: their own masks are used)."""
    from lunglesionai.stages.paired_volumetry import PairedVolumes, measure_pair

    if old.kind != "nodule" or new.kind != "nodule":
        return None
    centres = [volume.lps_to_kji(np.asarray(f.center_lps_mm, float)).reshape(-1)
               for volume, f in ((prior_volume, old), (current_volume, new))]
    try:
        return measure_pair(prior_volume, centres[0], _mean_diameter_mm(old) / 2.0, current_volume, centres[1],
                            _mean_diameter_mm(new) / 2.0, prior_lung_mask=prior_lung, current_lung_mask=current_lung)
    except ValueError as error:  # a centre on the scan's edge, a size of 0: compare the findings' own volumes
        return PairedVolumes(None, None, "no paired measurement", False, (str(error),))


def interval_days_from_study_dates(prior_description: Mapping[str, str],
                                   current_description: Mapping[str, str]) -> Optional[float]:
    """Days between the two scans' ``study_date`` (YYYY-MM-DD, from the DICOM StudyDate); None if one is missing.

    Args:
        prior_description, current_description: ``Report.input.description`` of each scan.

    Raises:
        ValueError: a date that is not YYYY-MM-DD, or a prior study later than the current one.

    Example:
        >>> interval_days_from_study_dates({"study_date": "2023-01-10"}, {"study_date": "2024-01-10"})
        365.0
    """
    texts = [d.get("study_date") for d in (prior_description, current_description)]
    if not all(texts):
        return None
    try:
        prior_date, current_date = (date.fromisoformat(str(t)) for t in texts)
    except ValueError as error:
        raise ValueError(f"study dates must be YYYY-MM-DD, got {texts[0]!r} and {texts[1]!r}") from error
    days = (current_date - prior_date).days
    if days < 0:
        raise ValueError(f"the prior study ({prior_date}) is later than the current one ({current_date})")
    return float(days)


def _change(old: Finding, new: Finding, interval_days: float, distance_mm: float, config: FollowupConfig,
            paired=None) -> tuple[dict[str, Any], str]:
    """The ``followup`` entry of a matched pair, and its Lung-RADS status (``paired``: its PairedVolumes)."""
    d_old, d_new = _mean_diameter_mm(old), _mean_diameter_mm(new)
    months = interval_days / DAYS_PER_MONTH
    equivalent = None
    if paired is not None and paired.measured and paired.prior_volume_mm3 > 0 and paired.current_volume_mm3 > 0:
        equivalent = (equivalent_diameter_mm(paired.prior_volume_mm3),
                      equivalent_diameter_mm(paired.current_volume_mm3))
        rads_status = follow_up_status(equivalent[1], equivalent[0], months)
    else:
        rads_status = follow_up_status(d_new, d_old, months)
    solid = _solid_component_change(old, new, interval_days)
    if solid is not None and _grows(solid["status"]) and not _grows(rads_status):
        rads_status = solid["status"]  # Lung-RADS v2022 reads part-solid growth on the solid component
    status = _LUNG_RADS_TO_FOLLOWUP[rads_status]
    volumes, volumetry = _compared_volumes(old, new, paired)
    repeatability = config.volume_repeatability if volumetry["reliable"] else config.unreliable_volume_repeatability
    volumetry["repeatability"] = repeatability
    have_volumes = all(v is not None and v > 0 for v in volumes)
    vdt, vdt_range = None, None
    if status == "growing" and have_volumes:
        vdt = volume_doubling_time_days(*volumes, interval_days)
        vdt_range = None if vdt is None else list(vdt_range_days(*volumes, interval_days,
                                                                 repeatability=repeatability))
    entry = {"status": status, "prior_id": old.id, "prior_mean_diameter_mm": d_old,
             "mean_diameter_change_mm": d_new - d_old,
             "status_basis": STATUS_FROM_MEAN_DIAMETERS if equivalent is None else STATUS_FROM_PAIRED_VOLUMES,
             "equivalent_diameter_change_mm": None if equivalent is None else equivalent[1] - equivalent[0],
             "prior_volume_mm3": volumes[0],
             "current_volume_mm3": volumes[1],
             "volume_change_pct": 100.0 * (volumes[1] / volumes[0] - 1.0) if have_volumes else None,
             "vdt_days": vdt, "vdt_range_days": vdt_range, "volumetry": volumetry,
             "interval_days": float(interval_days), "match_distance_mm": float(distance_mm),
             "prior_center_lps_mm": [float(c) for c in old.center_lps_mm]}
    if solid is not None:
        entry["solid_component"] = solid
    return entry, rads_status


def _solid_component_change(old: Finding, new: Finding, interval_days: float) -> Optional[dict[str, Any]]:
    """``followup["solid_component"]`` of a part-solid nodule whose solid component was measured on both scans (the
    same fixed HU rule on both, :func:`lunglesionai.stages.measurements.solid_component`): its Lung-RADS status,
    mean diameters, volumes and, when its volume grew, VDT; None otherwise."""
    if "part-solid" not in (old.texture, new.texture):
        return None
    sizes = (old.solid_component_mean_diameter_mm, new.solid_component_mean_diameter_mm)
    volumes = (old.solid_component_volume_mm3, new.solid_component_volume_mm3)
    if not all(v is not None and v > 0 for v in sizes + volumes):
        return None
    rads = follow_up_status(float(sizes[1]), float(sizes[0]), interval_days / DAYS_PER_MONTH)
    vdt = volume_doubling_time_days(float(volumes[0]), float(volumes[1]), interval_days)
    return {"status": rads, "prior_mean_diameter_mm": float(sizes[0]), "mean_diameter_mm": float(sizes[1]),
            "mean_diameter_change_mm": float(sizes[1]) - float(sizes[0]), "prior_volume_mm3": float(volumes[0]),
            "current_volume_mm3": float(volumes[1]), "volume_change_pct": 100.0 * (volumes[1] / volumes[0] - 1.0),
            "vdt_days": vdt if _grows(rads) else None}


def _compared_volumes(old: Finding, new: Finding, paired) -> tuple[tuple[Optional[float], Optional[float]],
                                                                   dict[str, Any]]:
    """(prior, current) volumes to compare and the ``volumetry`` entry: the paired measurement when it has both
    volumes, else the findings' own (reliable only when no paired measurement was attempted)."""
    if paired is not None and paired.measured:
        summary = paired.to_dict()
        return (summary.pop("prior_volume_mm3"), summary.pop("current_volume_mm3")), summary
    reasons = list(paired.reasons) if paired is not None else []
    return (old.volume_mm3, new.volume_mm3), {"method": OWN_OUTLINES, "reliable": paired is None,
                                              "reasons": reasons}


def _new_entry(interval_days: float) -> dict[str, Any]:
    return {"status": "new", "prior_id": None, "prior_mean_diameter_mm": None, "mean_diameter_change_mm": None,
            "prior_volume_mm3": None, "current_volume_mm3": None, "volume_change_pct": None, "vdt_days": None,
            "vdt_range_days": None, "volumetry": None, "interval_days": float(interval_days),
            "match_distance_mm": None, "prior_center_lps_mm": None}


def _grows(rads_status: str) -> bool:
    """A Lung-RADS follow-up status that ``followup`` calls "growing" ("growing" or "slow-growing")."""
    return _LUNG_RADS_TO_FOLLOWUP[rads_status] == "growing"


def _compared(report: Report) -> list[Finding]:
    """The nodules and masses of a report that take part in the comparison (not rejected)."""
    return [f for f in report.findings if f.kind in ("nodule", "mass") and f.status != "rejected"]


def _mean_diameter_mm(finding: Finding) -> float:
    """Lung-RADS size: ``mean_diameter_mm``, else the mean of the axes, else the equivalent diameter (as
    :mod:`lunglesionai.clinical.read` reads it)."""
    if finding.mean_diameter_mm is not None:
        return float(finding.mean_diameter_mm)
    if finding.long_axis_mm is not None and finding.short_axis_mm is not None:
        return (float(finding.long_axis_mm) + float(finding.short_axis_mm)) / 2.0
    if finding.diameter_mm is not None:
        return float(finding.diameter_mm)
    raise ValueError(f"finding {finding.id} has no size: it cannot be compared with the prior scan")


def _points(points: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(points, float).reshape(-1, 3) if np.size(points) == 0 else np.asarray(points, float)
    if array.ndim != 2 or array.shape[1] != 3 or not np.isfinite(array).all():
        raise ValueError(f"{name} centres must be a finite (N, 3) array of LPS mm, got shape {np.shape(points)}")
    return array


def _sizes(sizes: Sequence[float], n: int, name: str) -> np.ndarray:
    array = np.asarray(sizes, float).reshape(-1)
    if array.shape != (n,) or not np.isfinite(array).all():
        raise ValueError(f"{name} diameters must be {n} finite values, got {np.shape(sizes)}")
    return array


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_interval(interval_days: float) -> None:
    if not (isinstance(interval_days, (int, float)) and math.isfinite(interval_days) and interval_days >= 0):
        raise ValueError(f"interval_days must be a finite number >= 0, got {interval_days!r}")
