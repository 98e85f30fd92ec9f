"""Tests of lunglesionai.clinical.read: the clinical read of a small synthetic report (no CT needed)."""

import copy
import json

import pytest

from lunglesionai import Finding, InputInfo, Report
from lunglesionai.clinical.brock import BrockInputs, brock_risk
from lunglesionai.clinical.lung_rads import MANAGEMENT
from lunglesionai.clinical.patient import PatientInfo
from lunglesionai.clinical.read import DECISION_SUPPORT_NOTE, apply_clinical_read
from lunglesionai.core.findings import validate_report_dict


def _finding(finding_id, kind="nodule", **kwargs):
    return Finding(id=finding_id, kind=kind, center_lps_mm=(0.0, 0.0, 0.0),
                   bbox_lps_mm=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), **kwargs)


def _report(findings=None, exam=None, description=None) -> Report:
    info = InputInfo("ct", (10, 20, 30), (0.7, 0.7, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                     description or {})
    if findings is None:
        findings = [
            _finding("M1", "mass", long_axis_mm=38.0, short_axis_mm=30.0, mean_diameter_mm=34.0, texture="solid",
                     location={"side": "right", "lobe": None, "zone": "lower"}),
            _finding("N1", long_axis_mm=9.0, short_axis_mm=7.0, mean_diameter_mm=8.0, texture="solid",
                     location={"side": "left", "lobe": None, "zone": "upper"}),
            _finding("N2", long_axis_mm=12.0, short_axis_mm=10.0, mean_diameter_mm=11.0, texture="part-solid",
                     solid_component_mean_diameter_mm=5.0, location={"side": "right", "lobe": None, "zone": "middle"}),
            _finding("N3", long_axis_mm=4.0, short_axis_mm=4.0, mean_diameter_mm=4.0, texture="solid", calcified=True),
            _finding("N4", mean_diameter_mm=20.0, texture="solid", status="rejected"),
            _finding("L1", "lesion", diameter_mm=20.0),
        ]
    return Report(input=info, findings=findings,
                  exam=exam if exam is not None else {"emphysema_index_pct": 7.0, "lungs_fully_covered": True})


def _by_id(report):
    return {f.id: f for f in report.findings}


def test_each_finding_gets_its_category_and_risk_and_the_input_is_untouched():
    report = _report()
    before = copy.deepcopy(report.to_dict())
    read = _by_id(apply_clinical_read(report, PatientInfo(age_years=70.0, sex="M"), "screening"))
    assert report.to_dict() == before  # a new report; the input is not modified
    assert read["M1"].lung_rads == "4B"  # a mass: the "solid >= 15 mm" row
    assert read["N1"].lung_rads == "4A"  # solid 8 mm at baseline
    assert read["N2"].lung_rads == "3"  # part-solid 11 mm, solid component 5 mm
    assert read["N3"].lung_rads == "1"  # benign calcification
    assert read["N4"].lung_rads is None and read["N4"].brock_risk is None  # rejected: not a nodule
    assert read["L1"].lung_rads is None and read["L1"].brock_risk is None  # ULD lesion: no Lung-RADS
    assert "8.0 mm" in read["N1"].lung_rads_reason
    for fid in ("M1", "N1", "N2", "N3"):
        assert 0.0 < read[fid].brock_risk < 1.0


def test_brock_uses_the_resolved_patient_long_axis_zone_and_count():
    read = _by_id(apply_clinical_read(_report(), PatientInfo(age_years=70.0, sex="M", family_history=True),
                                      "screening"))
    # 4 counted findings (M1, N1, N2, N3; N4 is rejected); emphysema from the 7 % index; N1 in the upper zone
    expected = brock_risk(BrockInputs(age_years=70.0, female=False, family_history=True, emphysema=True,
                                      nodule_size_mm=9.0, texture="solid", upper_lobe=True, nodule_count=4,
                                      spiculation=False))
    assert read["N1"].brock_risk == pytest.approx(expected)


def test_exam_block_for_screening():
    read = apply_clinical_read(_report(), PatientInfo(age_years=70.0, sex="M"), "screening", modifiers=["S"])
    exam = read.exam
    assert exam["emphysema_index_pct"] == 7.0  # the pipeline's keys are kept
    assert exam["lung_rads"] == "4B" and exam["management"] == MANAGEMENT["4B"]
    assert exam["modifiers"] == ["S"]
    assert exam["indication"] == "screening"
    assert exam["fleischner"]["applies"] is False and "screening" in exam["fleischner"]["note"]
    assert exam["assumed"] == ["family_history", "spiculation"]  # Fleischner exclusions are not used in screening
    risks = {f.id: f.brock_risk for f in read.findings if f.brock_risk is not None and not f.calcified}
    assert exam["highest_risk_finding"] == max(risks, key=risks.get)
    assert exam["decision_support_note"] == DECISION_SUPPORT_NOTE
    json.dumps(read.to_dict(), allow_nan=False)  # writable as report.json
    validate_report_dict(read.to_dict())  # and follows schemas/report-1.json


def test_incidental_exam_uses_the_most_suspicious_non_calcified_nodule():
    findings = [
        _finding("N1", long_axis_mm=7.0, short_axis_mm=6.0, mean_diameter_mm=6.5, texture="solid"),
        _finding("N2", long_axis_mm=4.0, short_axis_mm=3.0, mean_diameter_mm=3.5, texture="solid"),
        _finding("N3", long_axis_mm=20.0, short_axis_mm=18.0, mean_diameter_mm=19.0, texture="solid", calcified=True),
    ]
    report = _report(findings, description={"patient_age": "066Y", "patient_sex": "F"})
    read = apply_clinical_read(report, PatientInfo(), "incidental", fleischner_risk="high")
    block = read.exam["fleischner"]
    assert block["applies"] is True
    assert "CT at 3-6 months" in block["recommendation"]  # multiple solid 6-8 mm (N1 guides; N3 is calcified)
    assert "multiple, 6-8 mm, high risk" in block["note"]
    assert "2 nodules" in block["note"]
    assert "age" not in read.exam["assumed"] and "sex" not in read.exam["assumed"]  # from the DICOM header
    assert {"family_history", "immunocompromised", "known_cancer"} <= set(read.exam["assumed"])
    assert read.exam["highest_risk_finding"] == "N1"


def test_incidental_exam_excluded_by_the_patient():
    report = _report([_finding("N1", mean_diameter_mm=7.0, texture="solid")])
    read = apply_clinical_read(report, PatientInfo(known_cancer=True), "incidental")
    assert read.exam["fleischner"] == {"applies": False, "recommendation": None,
                                       "note": read.exam["fleischner"]["note"]}
    assert "cancer" in read.exam["fleischner"]["note"]
    assert "known_cancer" not in read.exam["assumed"]


def test_lungs_not_fully_covered_make_the_exam_incomplete():
    read = apply_clinical_read(_report(exam={"lungs_fully_covered": False}), PatientInfo(), "screening")
    assert read.exam["lung_rads"] == "0"
    assert read.exam["management"].startswith(MANAGEMENT["0"])
    assert "4B" in read.exam["management"]  # the highest nodule category seen is named
    assert "emphysema" in read.exam["assumed"]  # no emphysema index measured


def test_an_empty_report_is_negative():
    read = apply_clinical_read(_report([]), PatientInfo(), "incidental")
    assert read.exam["lung_rads"] == "1"
    assert read.exam["highest_risk_finding"] is None
    assert read.exam["fleischner"]["applies"] is False and "No pulmonary nodule" in read.exam["fleischner"]["note"]
    assert "spiculation" not in read.exam["assumed"]


def test_follow_up_drives_stepped_management():
    report = _report([_finding("N1", long_axis_mm=10.0, short_axis_mm=8.0, mean_diameter_mm=9.0, texture="solid")])
    baseline = _by_id(apply_clinical_read(report, PatientInfo(), "screening"))["N1"]
    prior = {"status": "stable", "prior_mean_diameter_mm": 9.0, "interval_months": 3.0, "prior_category": "4A"}
    stable = _by_id(apply_clinical_read(report, PatientInfo(), "screening", follow_up={"N1": prior}))["N1"]
    assert (baseline.lung_rads, stable.lung_rads) == ("4A", "3")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"indication": "diagnostic"}, "indication"),
        ({"indication": "screening", "modifiers": ["C"]}, "modifiers"),
        ({"indication": "incidental", "fleischner_risk": "medium"}, "risk"),
        ({"indication": "screening", "follow_up": {"N9": {"status": "new"}}}, "N9"),
        ({"indication": "screening", "follow_up": {"N1": {"growth": 2.0}}}, "unknown keys"),
        ({"indication": "screening", "follow_up": {"N1": {"status": "bigger"}}}, "status"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        apply_clinical_read(_report(), PatientInfo(), **kwargs)


def test_unknown_texture_and_solid_component_are_read_conservatively_and_said():
    findings = [_finding("N1", mean_diameter_mm=7.0),  # no texture
                _finding("N2", mean_diameter_mm=9.0, texture="part-solid")]  # no solid component measured
    read = _by_id(apply_clinical_read(_report(findings), PatientInfo(), "screening"))
    assert read["N1"].lung_rads == "3" and "read as solid" in read["N1"].lung_rads_reason
    assert read["N2"].lung_rads == "4B" and "whole diameter" in read["N2"].lung_rads_reason


def test_spiculation_and_suspicious_features_come_from_extra():
    plain = _finding("N1", long_axis_mm=8.0, short_axis_mm=6.0, mean_diameter_mm=7.0, texture="solid",
                     extra={"spiculated": False})
    marked = _finding("N1", long_axis_mm=8.0, short_axis_mm=6.0, mean_diameter_mm=7.0, texture="solid",
                      extra={"spiculated": True, "suspicious_features": True})
    a = apply_clinical_read(_report([plain]), PatientInfo(), "screening")
    b = apply_clinical_read(_report([marked]), PatientInfo(), "screening")
    assert b.findings[0].brock_risk > a.findings[0].brock_risk
    assert (a.findings[0].lung_rads, b.findings[0].lung_rads) == ("3", "4X")
    assert "spiculation" not in a.exam["assumed"]


def test_the_read_records_the_patient_values_it_was_given():
    report = apply_clinical_read(_report(), PatientInfo(age_years=70.0, family_history=True), "screening")
    assert report.exam["patient_given"] == {"age_years": 70.0, "family_history": True}
    assert "age" not in report.exam["assumed"] and "sex" in report.exam["assumed"]
    validate_report_dict(json.loads(report.to_json()))
