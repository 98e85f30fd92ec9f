"""Tests of lunglesionai.clinical.followup: matching, growth status, VDT and the Lung-RADS follow-up (no CT needed)."""

import math

import numpy as np
import pytest

from lunglesionai import Finding, InputInfo, Report
from lunglesionai.clinical.followup import (
    DAYS_PER_MONTH,
    FollowupConfig,
    compare_findings,
    interval_days_from_study_dates,
    match_findings,
    vdt_range_days,
    volume_doubling_time_days,
    with_followup,
)
from lunglesionai.clinical.patient import PatientInfo
from lunglesionai.clinical.read import apply_clinical_read
from lunglesionai.core.findings import validate_report_dict

SHIFT_MM = np.array([12.0, -7.0, 9.0])  # the "breathing" between the two scans in the hand-made cases


def _sphere_volume(diameter_mm):
    return math.pi / 6 * diameter_mm**3


def _finding(finding_id, center, diameter_mm, kind="nodule", **kwargs):
    c = np.asarray(center, float)
    return Finding(id=finding_id, kind=kind, center_lps_mm=tuple(c), bbox_lps_mm=(tuple(c - 5), tuple(c + 5)),
                   mean_diameter_mm=diameter_mm, diameter_mm=diameter_mm, volume_mm3=_sphere_volume(diameter_mm),
                   texture=kwargs.pop("texture", "solid"), **kwargs)


def _report(findings, study_date=None):
    description = {"study_date": study_date} if study_date else {}
    info = InputInfo("ct", (10, 20, 30), (0.7, 0.7, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), description)
    return Report(input=info, findings=findings, version="test", exam={"lungs_fully_covered": True})


def _pair():
    """Prior N1 (6 mm), N2 (9 mm), N3 (5 mm, resolved); current (ids by size order): N1 is the prior N2 (9.3 mm,
    stable), N2 the prior N1 grown to 8 mm, N3 new (7 mm)."""
    prior = _report([_finding("N1", (-60, 10, -100), 6.0), _finding("N2", (50, 20, -80), 9.0),
                     _finding("N3", (40, -30, -150), 5.0)], "2023-03-01")
    current = _report([_finding("N1", np.add((50, 20, -80), SHIFT_MM) + 1.0, 9.3),
                       _finding("N2", np.add((-60, 10, -100), SHIFT_MM) - 1.0, 8.0),
                       _finding("N3", (-40, -30, -60), 7.0)], "2024-02-01")
    return prior, current


def _shift(points):
    return np.asarray(points) + SHIFT_MM


# ---------------------------------------------------------------------------------------------- VDT
@pytest.mark.parametrize("v1, v2, days, expected", [
    (100.0, 200.0, 90, 90.0),            # one doubling in 90 days
    (100.0, 400.0, 100, 50.0),           # two doublings
    (_sphere_volume(6), _sphere_volume(8), 365, 365 * math.log(2) / (3 * math.log(8 / 6))),
    (200.0, 100.0, 90, None),            # shrinking: no doubling time
    (100.0, 100.0, 90, None),            # unchanged
    (100.0, 200.0, 0, None),             # same day
])
def test_volume_doubling_time(v1, v2, days, expected):
    vdt = volume_doubling_time_days(v1, v2, days)
    assert vdt == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("v1, v2, days", [(0.0, 10.0, 30), (-1.0, 10.0, 30), (10.0, float("nan"), 30),
                                          (10.0, 20.0, -1), (10.0, 20.0, float("inf"))])
def test_volume_doubling_time_refuses_bad_values(v1, v2, days):
    with pytest.raises(ValueError):
        volume_doubling_time_days(v1, v2, days)


@pytest.mark.parametrize("ratio, bounded", [(4.0, True), (1.6, True), (1.2, False)])
def test_vdt_range_brackets_the_vdt(ratio, bounded):
    vdt = volume_doubling_time_days(100.0, 100.0 * ratio, 200)
    shortest, longest = vdt_range_days(100.0, 100.0 * ratio, 200, repeatability=0.25)
    assert shortest < vdt
    assert (longest is not None) == bounded
    if bounded:
        assert longest > vdt
    assert vdt_range_days(100.0, 100.0 * ratio, 200, repeatability=0.0) == (pytest.approx(vdt), pytest.approx(vdt))
    with pytest.raises(ValueError):
        vdt_range_days(100.0, 200.0, 200, repeatability=1.0)


# ---------------------------------------------------------------------------------------------- matching
def test_matching_is_one_to_one_and_minimises_the_total_distance():
    # Greedy nearest-first would pair prior 0 with current 0 (2 mm) and leave prior 1 alone (current 1 too far for
    # it); the assignment pairs both.
    prior = np.array([[0.0, 0, 0], [9.0, 0, 0]])
    current = np.array([[2.0, 0, 0], [-6.0, 0, 0]])
    config = FollowupConfig(min_gate_mm=5.0, gate_diameter_fraction=0.0, registration_tolerance_mm=3.0)
    matches = match_findings(prior, [5.0, 5.0], current, [5.0, 5.0], config=config)
    assert [(p, c) for p, c, _ in matches] == [(0, 1), (1, 0)]
    assert [d for _, _, d in matches] == pytest.approx([6.0, 7.0])


@pytest.mark.parametrize("distance_mm, diameter_mm, matched", [
    (9.9, 6.0, True),     # gate max(5, 3) + 5 = 10 mm
    (10.1, 6.0, False),
    (24.0, 40.0, True),   # a 40 mm mass: max(5, 20) + 5 = 25 mm
    (26.0, 40.0, False),
])
def test_gate_scales_with_size(distance_mm, diameter_mm, matched):
    matches = match_findings(np.zeros((1, 3)), [diameter_mm], np.array([[0.0, distance_mm, 0.0]]), [diameter_mm])
    assert bool(matches) == matched


@pytest.mark.parametrize("prior, sizes, current", [
    (np.zeros((2, 2)), [1.0, 1.0], np.zeros((1, 3))),          # (N, 2) points
    (np.zeros((2, 3)), [1.0], np.zeros((1, 3))),               # sizes do not fit
    (np.full((1, 3), np.nan), [1.0], np.zeros((1, 3))),        # NaN centre
])
def test_matching_refuses_bad_shapes(prior, sizes, current):
    with pytest.raises(ValueError):
        match_findings(prior, sizes, current, [1.0])


def test_no_findings_no_matches():
    assert match_findings(np.zeros((0, 3)), [], np.zeros((2, 3)), [4.0, 5.0]) == []


# ---------------------------------------------------------------------------------------------- comparison
def test_compare_with_the_registration_matches_grows_and_resolves():
    prior, current = _pair()
    days = 337.0
    comparison = compare_findings(prior, current, _shift, days)
    stable, grown, new = (comparison.followup[i] for i in ("N1", "N2", "N3"))
    assert stable["prior_id"] == "N2" and stable["status"] == "stable"  # 9.0 → 9.3 mm: +0.3 mm
    assert grown["prior_id"] == "N1" and grown["status"] == "growing"  # 6.0 → 8.0 mm: +2.0 mm in 11 months
    assert grown["vdt_days"] == pytest.approx(volume_doubling_time_days(_sphere_volume(6), _sphere_volume(8), days))
    assert grown["volume_change_pct"] == pytest.approx(100 * ((8 / 6) ** 3 - 1))
    assert grown["vdt_range_days"][0] < grown["vdt_days"] < grown["vdt_range_days"][1]
    assert grown["match_distance_mm"] == pytest.approx(math.sqrt(3))
    assert stable["vdt_days"] is None and stable["vdt_range_days"] is None
    assert new == {**new, "status": "new", "prior_id": None, "vdt_days": None}
    assert [r["prior_id"] for r in comparison.resolved] == ["N3"]
    assert comparison.resolved[0]["mapped_center_lps_mm"] == pytest.approx(np.add((40, -30, -150), SHIFT_MM))
    facts = comparison.lung_rads_follow_up
    assert facts["N2"] == {"status": "growing", "prior_mean_diameter_mm": 6.0, "interval_months": days / DAYS_PER_MONTH}
    assert facts["N3"]["status"] == "new"


def test_without_the_registration_the_shifted_nodules_do_not_match():
    prior, current = _pair()
    comparison = compare_findings(prior, current, lambda p: np.asarray(p), 337.0)
    assert all(f["status"] == "new" for f in comparison.followup.values())
    assert sorted(r["prior_id"] for r in comparison.resolved) == ["N1", "N2", "N3"]


@pytest.mark.parametrize("days, prior_mm, now_mm, status, rads_status", [
    (365, 6.0, 7.6, "growing", "growing"),        # +1.6 mm within 12 months
    (365, 6.0, 7.5, "stable", "stable"),          # +1.5 mm is not growth (more than 1.5 mm is)
    (500, 6.0, 9.0, "growing", "slow-growing"),   # growth over more than 12 months
    (180, 9.0, 7.4, "shrinking", "decreased"),
    (180, 9.0, 7.5, "stable", "stable"),
])
def test_status_follows_the_lung_rads_growth_rule(days, prior_mm, now_mm, status, rads_status):
    prior = _report([_finding("N1", (0, 0, 0), prior_mm)])
    current = _report([_finding("N1", (1, 0, 0), now_mm)])
    comparison = compare_findings(prior, current, lambda p: p, days)
    assert comparison.followup["N1"]["status"] == status
    assert comparison.lung_rads_follow_up["N1"]["status"] == rads_status
    assert (comparison.followup["N1"]["vdt_days"] is not None) == (status == "growing")


def test_lesions_and_rejected_findings_take_no_part():
    prior = _report([_finding("N1", (0, 0, 0), 6.0, status="rejected"), _finding("L1", (30, 0, 0), 6.0, "lesion")])
    current = _report([_finding("N1", (0, 0, 0), 6.0), _finding("L1", (30, 0, 0), 6.0, "lesion")])
    comparison = compare_findings(prior, current, lambda p: p, 100)
    assert list(comparison.followup) == ["N1"] and comparison.followup["N1"]["status"] == "new"
    assert comparison.resolved == []


def test_bad_map_points_and_interval_are_refused():
    prior, current = _pair()
    with pytest.raises(ValueError, match="shape"):
        compare_findings(prior, current, lambda p: np.asarray(p)[:, :2], 100)
    with pytest.raises(ValueError, match="interval"):
        compare_findings(prior, current, _shift, -3)


def test_the_read_uses_the_follow_up_rows_and_the_report_validates():
    prior, current = _pair()
    comparison = compare_findings(prior, current, _shift, 337.0)
    report = with_followup(current, comparison, prior_info={"path": "prior.nii.gz", "source": "ct",
                                                            "interval_source": "study dates"})
    read = apply_clinical_read(report, PatientInfo(age_years=65, sex="F"), "screening",
                               follow_up=comparison.lung_rads_follow_up)
    by_id = {f.id: f for f in read.findings}
    assert by_id["N2"].lung_rads == "4B" and "growing solid ≥ 8 mm" in by_id["N2"].lung_rads_reason
    assert by_id["N3"].lung_rads == "4A" and "new solid 6 to < 8 mm" in by_id["N3"].lung_rads_reason
    assert by_id["N1"].lung_rads == "3" and "stable" in by_id["N1"].lung_rads_reason  # 4A step-down at follow-up
    without_prior = apply_clinical_read(current, PatientInfo(age_years=65), "screening")
    baseline = {f.id: f.lung_rads for f in without_prior.findings}
    assert baseline == {"N1": "4A", "N2": "4A", "N3": "3"}  # the same sizes without a prior
    data = read.to_dict()
    validate_report_dict(data)
    assert data["findings"][1]["followup"]["status"] == "growing"
    assert data["exam"]["resolved"][0]["prior_id"] == "N3" and data["exam"]["prior"]["interval_days"] == 337.0
    assert Report.from_dict(data).findings[1].followup == data["findings"][1]["followup"]


def test_with_followup_refuses_unknown_findings():
    prior, current = _pair()
    comparison = compare_findings(prior, current, _shift, 10)
    with pytest.raises(ValueError, match="N3"):
        with_followup(_report(current.findings[:2]), comparison)


# ---------------------------------------------------------------------------------------------- interval
@pytest.mark.parametrize("prior, current, expected", [
    ({"study_date": "2023-01-10"}, {"study_date": "2024-01-10"}, 365.0),
    ({"study_date": "2024-01-10"}, {"study_date": "2024-01-10"}, 0.0),
    ({}, {"study_date": "2024-01-10"}, None),
    ({"study_date": "2023-01-10"}, {}, None),
])
def test_interval_from_study_dates(prior, current, expected):
    assert interval_days_from_study_dates(prior, current) == expected


@pytest.mark.parametrize("prior, current", [({"study_date": "2024-02-01"}, {"study_date": "2024-01-01"}),
                                            ({"study_date": "01.01.2024"}, {"study_date": "2024-02-01"})])
def test_interval_refuses_reversed_or_malformed_dates(prior, current):
    with pytest.raises(ValueError):
        interval_days_from_study_dates(prior, current)


# ---------------------------------------------------------------------------------------------- paired volumetry
def _paired(v1, v2, reliable=True, reasons=()):
    from lunglesionai.stages.paired_volumetry import PAIRED_METHOD, PairedVolumes

    def measure(old, new):
        return PairedVolumes(v1, v2, PAIRED_METHOD, reliable, tuple(reasons), 30.0, (-410.0, -405.0))
    return measure


def test_paired_volumes_replace_the_findings_own_in_the_change_and_the_vdt():
    prior, current = _pair()
    days = 337.0
    grown = compare_findings(prior, current, _shift, days, volumetry=_paired(100.0, 250.0)).followup["N2"]
    assert grown["prior_volume_mm3"] == 100.0 and grown["current_volume_mm3"] == 250.0
    assert grown["volume_change_pct"] == pytest.approx(150.0)
    assert grown["vdt_days"] == pytest.approx(volume_doubling_time_days(100.0, 250.0, days))
    assert grown["vdt_range_days"] == pytest.approx(list(vdt_range_days(100.0, 250.0, days, repeatability=0.25)))
    assert grown["volumetry"]["method"].startswith("paired") and grown["volumetry"]["reliable"] is True
    assert grown["volumetry"]["repeatability"] == 0.25 and grown["volumetry"]["threshold_hu"] == [-410.0, -405.0]


def test_the_growth_rule_reads_the_paired_volumes_when_both_were_measured():
    """A nodule that halved (5.5 → 4.5 mm equivalent) whose current outline was over-segmented (own mean diameters
    5.7 → 8.3 mm): with paired volumes the status is stable, as the Lung-RADS rule on one method says."""
    prior = _report([_finding("N1", (0, 0, 0), 5.7)])
    current = _report([_finding("N1", (1, 0, 0), 8.3)])
    own = compare_findings(prior, current, lambda p: p, 180.0).followup["N1"]
    assert own["status"] == "growing" and own["status_basis"] == "mean diameters"
    assert own["equivalent_diameter_change_mm"] is None
    paired = compare_findings(prior, current, lambda p: p, 180.0, volumetry=_paired(89.2, 47.1)).followup["N1"]
    assert paired["status"] == "stable" and paired["status_basis"] == "equivalent diameters of the paired volumes"
    assert paired["equivalent_diameter_change_mm"] == pytest.approx(
        (6 * 47.1 / math.pi) ** (1 / 3) - (6 * 89.2 / math.pi) ** (1 / 3))
    assert paired["mean_diameter_change_mm"] == pytest.approx(2.6)  # the own sizes are still reported
    assert compare_findings(prior, current, lambda p: p, 180.0,
                            volumetry=_paired(40.0, 200.0)).followup["N1"]["status"] == "growing"


def test_unreliable_paired_volumetry_widens_the_vdt_range():
    prior, current = _pair()
    reliable = compare_findings(prior, current, _shift, 337.0, volumetry=_paired(100.0, 250.0)).followup["N2"]
    thick = compare_findings(prior, current, _shift, 337.0,
                             volumetry=_paired(100.0, 250.0, False, ["3.0 mm voxels on the prior scan"])).followup["N2"]
    assert thick["vdt_days"] == pytest.approx(reliable["vdt_days"])
    assert thick["volumetry"]["repeatability"] == 0.5 and thick["volumetry"]["reasons"] == [
        "3.0 mm voxels on the prior scan"]
    assert thick["vdt_range_days"][0] < reliable["vdt_range_days"][0]
    assert thick["vdt_range_days"][1] > reliable["vdt_range_days"][1]


def test_a_failed_paired_measurement_falls_back_to_the_findings_own_volumes():
    from lunglesionai.stages.paired_volumetry import PairedVolumes

    prior, current = _pair()
    failed = PairedVolumes(80.0, None, "no paired measurement", False, ("no outline at -400 HU on the current scan",))
    grown = compare_findings(prior, current, _shift, 337.0, volumetry=lambda old, new: failed).followup["N2"]
    assert grown["prior_volume_mm3"] == pytest.approx(_sphere_volume(6.0))
    assert grown["current_volume_mm3"] == pytest.approx(_sphere_volume(8.0))
    assert grown["volumetry"] == {"method": "each scan's own outline", "reliable": False, "reasons": [
        "no outline at -400 HU on the current scan"], "repeatability": 0.5}
    plain = compare_findings(prior, current, _shift, 337.0).followup["N2"]
    assert plain["volumetry"]["reliable"] is True and plain["volumetry"]["reasons"] == []


def test_unreliable_repeatability_is_checked():
    with pytest.raises(ValueError, match="unreliable_volume_repeatability"):
        FollowupConfig(unreliable_volume_repeatability=1.0)


# ---------------------------------------------------------------------------------------------- solid component
def _part_solid(finding_id, center, diameter_mm, solid_mm):
    return _finding(finding_id, center, diameter_mm, texture="part-solid", solid_component_mean_diameter_mm=solid_mm,
                    solid_component_volume_mm3=_sphere_volume(solid_mm))


def test_a_growing_solid_component_makes_a_part_solid_nodule_growing_and_gets_its_own_vdt():
    """Total 12 mm on both scans, solid component 4 → 6 mm in 180 days: Lung-RADS v2022 "growing part-solid,
    solid component ≥ 4 mm" (4B), although the total mean diameter is stable."""
    prior = _report([_part_solid("N1", (0, 0, 0), 12.0, 4.0)])
    current = _report([_part_solid("N1", (1, 0, 0), 12.0, 6.0)])
    comparison = compare_findings(prior, current, lambda p: p, 180.0)
    entry = comparison.followup["N1"]
    solid = entry["solid_component"]
    assert solid["status"] == "growing" and solid["mean_diameter_change_mm"] == pytest.approx(2.0)
    assert solid["vdt_days"] == pytest.approx(180.0 * math.log(2) / math.log((6.0 / 4.0) ** 3))
    assert entry["status"] == "growing" and comparison.lung_rads_follow_up["N1"]["status"] == "growing"
    assert entry["vdt_days"] is None  # the total volume did not grow
    read = apply_clinical_read(with_followup(current, comparison), PatientInfo(age_years=65), "screening",
                               follow_up=comparison.lung_rads_follow_up)
    assert read.findings[0].lung_rads == "4B" and "growing part-solid" in read.findings[0].lung_rads_reason
    validate_report_dict(read.to_dict())


def test_a_stable_solid_component_leaves_the_status_to_the_total_size():
    prior = _report([_part_solid("N1", (0, 0, 0), 10.0, 5.0)])
    current = _report([_part_solid("N1", (1, 0, 0), 10.2, 5.3)])
    entry = compare_findings(prior, current, lambda p: p, 180.0).followup["N1"]
    assert entry["status"] == "stable" and entry["solid_component"]["status"] == "stable"
    assert entry["solid_component"]["vdt_days"] is None
    solid_only = compare_findings(_report([_finding("N1", (0, 0, 0), 10.0)]),
                                  _report([_finding("N1", (1, 0, 0), 10.2)]), lambda p: p, 180.0)
    assert "solid_component" not in solid_only.followup["N1"]  # solid nodules have no separate component
