"""Tests of lunglesionai.core.findings: the Report/Finding data model and its JSON schema."""

import json
from dataclasses import replace

import jsonschema
import numpy as np
import pytest

from lunglesionai import NOT_RUN, Finding, FindingMask, InputInfo, Report
from lunglesionai.core.findings import equivalent_diameter_mm, validate_report_dict


def _report() -> Report:
    info = InputInfo("ct.nii.gz", (10, 20, 30), (0.7, 0.7, 1.25), (-100.0, -80.0, 20.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    nodule = Finding(
        id="N1",
        kind="nodule",
        center_lps_mm=(np.float64(1.5), 2.0, 3.0),
        bbox_lps_mm=((0.0, 1.0, 2.0), (3.0, 3.0, 4.0)),
        detection_score=np.float32(0.75),
        diameter_mm=6.2,
        volume_mm3=124.8,
        texture="solid",
        extra={"detector": "classical"},
        mask=FindingMask((1, 2, 3), np.ones((2, 2, 2), bool)),
    )
    return Report(input=info, findings=[nodule], timings_s={"detection": 1.23456}, version="0.1.0")


def test_report_json_round_trip_and_schema():
    report = _report()
    d = json.loads(report.to_json())
    validate_report_dict(d)
    assert d["schema"] == "lunglesionai-report/1"
    assert d["stages"]["grading"] == NOT_RUN
    assert d["findings"][0]["malignancy_probability"] is None  # not computed, not invented
    assert d["findings"][0]["detector"] == "classical"
    assert "mask" not in d["findings"][0]
    back = Report.from_dict(d)
    assert back.findings[0].center_lps_mm == (1.5, 2.0, 3.0)
    assert back.findings[0].extra == {"detector": "classical"}
    assert back.input == report.input


@pytest.mark.parametrize(
    "path, value",
    [
        (("findings", 0, "kind"), "tumour"),
        (("findings", 0, "detection_score"), 1.5),
        (("findings", 0, "texture"), "glassy"),
        (("findings", 0, "status"), "maybe"),
        (("input", "spacing_mm"), [0.7, 0.7]),
        (("schema",), "lunglesionai-report/0"),
    ],
)
def test_schema_rejects_bad_fields(path, value):
    d = _report().to_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_report_dict(d)


def test_review_states_round_trip():
    report = _report()
    for state in ("accepted", "rejected", "proposed"):
        report.findings[0].status = state
        assert Report.from_dict(json.loads(report.to_json())).findings[0].status == state


def test_finding_validates_kind_and_status():
    with pytest.raises(ValueError, match="kind"):
        Finding("N1", "tumour", (0, 0, 0), ((0, 0, 0), (1, 1, 1)))
    assert Finding("M1", "mass", (0, 0, 0), ((0, 0, 0), (1, 1, 1))).kind == "mass"
    with pytest.raises(ValueError, match="status"):
        Finding("N1", "nodule", (0, 0, 0), ((0, 0, 0), (1, 1, 1)), status="maybe")


def test_mask_paste_clips_to_labelmap():
    labelmap = np.zeros((4, 4, 4), np.uint8)
    FindingMask((-1, 2, 3), np.ones((3, 3, 3), bool)).paste_into(labelmap, 7)
    assert labelmap.sum() == 7 * 2 * 2 * 1
    assert labelmap[0, 2, 3] == 7 and labelmap[2, 3, 3] == 0


def test_summary_mentions_measurements():
    text = _report().findings[0].summary()
    assert "6.2 mm solid" in text and "score 0.75" in text


@pytest.mark.parametrize("direction", [
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS-ordered array: i and j flipped
    (0, 0, 1, 1, 0, 0, 0, -1, 0),  # axes permuted, one flipped
])
def test_mask_reoriented_matches_the_full_grid_permutation(direction):
    from lunglesionai.core.orientation import reorient_to_lps
    from lunglesionai.core.volume import Volume

    shape = (7, 9, 11)
    volume = Volume(np.zeros(shape, np.int16), (0.7, 0.8, 1.5), (3.0, -2.0, 5.0), direction)
    _, perm = reorient_to_lps(volume)
    assert not perm.is_identity
    rng = np.random.default_rng(1)
    mask = FindingMask((1, 2, 3), rng.random((4, 5, 6)) > 0.5)
    full = np.zeros(shape, bool)
    mask.paste_into(full, True)
    moved = mask.reoriented(perm)
    rebuilt = np.zeros(perm.lps_shape_zyx, bool)
    moved.paste_into(rebuilt, True)
    np.testing.assert_array_equal(rebuilt, perm.apply(full))
    assert moved.voxel_count == mask.voxel_count
    assert FindingMask((0, 0, 0), mask.array).reoriented(type(perm).identity(shape)).array is mask.array


def test_mask_cropped_keeps_the_voxels_in_volume_coordinates():
    voi = np.zeros((6, 7, 8), bool)
    voi[2:4, 1, 5:7] = True
    mask = FindingMask.cropped(voi, (10, 20, 30))
    assert mask.offset_kji == (12, 21, 35) and mask.array.shape == (2, 1, 2) and mask.voxel_count == 4
    full, expected = np.zeros((20, 30, 40), np.uint8), np.zeros((20, 30, 40), np.uint8)
    mask.paste_into(full, 1)
    FindingMask((10, 20, 30), voi).paste_into(expected, 1)
    np.testing.assert_array_equal(full, expected)
    voi[:] = False
    assert mask.array.sum() == 4  # a copy, not a view of the VOI
    with pytest.raises(ValueError, match="empty"):
        FindingMask.cropped(voi, (0, 0, 0))


def _clinical_report() -> Report:
    """A report with every issue-15 field set, as the pipeline and the clinical read write them."""
    report = _report()
    report.findings[0] = replace(
        report.findings[0], mean_diameter_mm=6.25, texture="part-solid", solid_component_mean_diameter_mm=3.5,
        solid_component_long_axis_mm=4.0, solid_component_short_axis_mm=3.0, solid_component_volume_mm3=20.1,
        calcified=False, attachment="juxta-pleural", location={"side": "right", "lobe": None, "zone": "upper"},
        lung_rads="4A", lung_rads_reason="part-solid, solid component >= 6 mm", brock_risk=0.08)
    report.exam = {"emphysema_index_pct": 4.2, "nodule_count": 1, "lungs_fully_covered": True, "lung_rads": "4A",
                   "modifiers": [], "management": "3-month LDCT", "indication": "screening",
                   "fleischner": {"applies": False, "recommendation": None, "note": "screening exam"},
                   "assumed": ["age", "sex"], "highest_risk_finding": "N1",
                   "decision_support_note": "decision support, not a diagnosis"}
    return report


def test_clinical_fields_round_trip_and_validate():
    report = _clinical_report()
    d = json.loads(report.to_json())
    validate_report_dict(d)
    f = d["findings"][0]
    assert f["mean_diameter_mm"] == 6.25 and f["location"] == {"side": "right", "lobe": None, "zone": "upper"}
    assert f["lung_rads"] == "4A" and f["calcified"] is False and f["attachment"] == "juxta-pleural"
    assert d["exam"]["nodule_count"] == 1 and d["exam"]["fleischner"]["recommendation"] is None
    back = Report.from_dict(d)
    assert back.findings[0] == replace(report.findings[0], center_lps_mm=(1.5, 2.0, 3.0))
    assert back.exam == report.exam


def test_new_fields_default_to_null_and_older_reports_still_load():
    d = json.loads(_report().to_json())
    for key in ("mean_diameter_mm", "solid_component_mean_diameter_mm", "calcified", "attachment", "location",
                "lung_rads", "lung_rads_reason", "brock_risk"):
        assert d["findings"][0][key] is None
    assert d["exam"] == {}
    del d["exam"]  # a report.json written before issue 15
    assert Report.from_dict(d).exam == {}


@pytest.mark.parametrize(
    "path, value",
    [
        (("findings", 0, "lung_rads"), "4C"),
        (("findings", 0, "lung_rads"), "0"),  # "0" is an exam category only
        (("findings", 0, "brock_risk"), 1.2),
        (("findings", 0, "calcified"), "yes"),
        (("findings", 0, "attachment"), "fissural"),
        (("findings", 0, "mean_diameter_mm"), -1.0),
        (("findings", 0, "location", "side"), "middle"),
        (("findings", 0, "location", "zone"), "apex"),
        (("findings", 0, "location", "lobe"), "RUL2"),
        (("exam", "lung_rads"), "5"),
        (("exam", "emphysema_index_pct"), 101.0),
        (("exam", "nodule_count"), 1.5),
        (("exam", "indication"), "diagnostic"),
        (("exam", "lungs_fully_covered"), "no"),
        (("exam", "fleischner", "applies"), None),
    ],
)
def test_schema_rejects_bad_clinical_fields(path, value):
    d = _clinical_report().to_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_report_dict(d)


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("attachment", "fissural"),
        ("lung_rads", "4C"),
        ("location", {"side": "middle", "lobe": None, "zone": "upper"}),
        ("location", {"side": "left", "lobe": "RUL1", "zone": "upper"}),
        ("location", {"side": "left", "zone": "upper"}),
    ],
)
def test_finding_validates_clinical_fields(field_name, value):
    with pytest.raises(ValueError, match=field_name):
        Finding("N1", "nodule", (0, 0, 0), ((0, 0, 0), (1, 1, 1)), **{field_name: value})


def test_equivalent_diameter_is_the_sphere_of_that_volume():
    for diameter in (0.0, 1.0, 6.0, 31.4):
        volume = np.pi * diameter**3 / 6.0
        assert equivalent_diameter_mm(volume) == pytest.approx(diameter, rel=1e-12, abs=1e-12)
    assert isinstance(equivalent_diameter_mm(np.float32(10.0)), float)
    with pytest.raises(ValueError, match="volume must be >= 0"):
        equivalent_diameter_mm(-1.0)
