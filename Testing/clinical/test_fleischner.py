"""Tests of lunglesionai.clinical.fleischner: one case per cell of the Fleischner Society 2017 table.

Expected texts are the table's recommendations (MacMahon et al., Radiology 2017;284(1):228-243), checked by
key phrases so that the tests do not copy the module's paraphrase.
"""

import pytest

from lunglesionai.clinical.fleischner import (
    SOLID_TABLE,
    SUBSOLID_TABLE,
    fleischner_read,
    risk_from_brock,
    size_bin,
    table_recommendation,
)

SOLID_CELLS = [
    # (multiple, mean diameter mm, risk, phrases of the cell)
    (False, 5.0, "low", ["No routine follow-up"]),
    (False, 5.0, "high", ["Optional CT at 12 months"]),
    (False, 7.0, "low", ["6-12 months", "consider CT at 18-24 months"]),
    (False, 7.0, "high", ["6-12 months", "then CT at 18-24 months"]),
    (False, 9.0, "low", ["3 months", "PET/CT", "tissue sampling"]),
    (False, 9.0, "high", ["3 months", "PET/CT", "tissue sampling"]),
    (True, 5.0, "low", ["No routine follow-up"]),
    (True, 5.0, "high", ["Optional CT at 12 months"]),
    (True, 7.0, "low", ["3-6 months", "consider CT at 18-24 months"]),
    (True, 7.0, "high", ["3-6 months", "then CT at 18-24 months"]),
    (True, 9.0, "low", ["3-6 months", "consider CT at 18-24 months"]),
    (True, 9.0, "high", ["3-6 months", "then CT at 18-24 months"]),
]
SUBSOLID_CELLS = [
    # (texture, multiple, mean diameter mm, phrases)
    ("ground-glass", False, 5.0, ["No routine follow-up"]),
    ("ground-glass", False, 6.0, ["6-12 months", "persistence", "every 2 years until 5 years"]),
    ("part-solid", False, 5.0, ["No routine follow-up"]),
    ("part-solid", False, 6.0, ["3-6 months", "persistence", "solid component", "annual CT for 5 years"]),
    ("ground-glass", True, 5.0, ["3-6 months", "2 and 4 years"]),
    ("part-solid", True, 6.0, ["3-6 months", "most suspicious"]),
]


@pytest.mark.parametrize("multiple, mean, risk, phrases", SOLID_CELLS)
def test_solid_cells(multiple, mean, risk, phrases):
    recommendation, cell = table_recommendation("solid", mean, multiple=multiple, risk=risk)
    for phrase in phrases:
        assert phrase in recommendation, (cell, recommendation)
    assert risk in cell and ("multiple" if multiple else "single") in cell


@pytest.mark.parametrize("texture, multiple, mean, phrases", SUBSOLID_CELLS)
def test_subsolid_cells(texture, multiple, mean, phrases):
    for risk in ("low", "high"):  # the subsolid rows do not depend on risk
        recommendation, _ = table_recommendation(texture, mean, multiple=multiple, risk=risk)
        for phrase in phrases:
            assert phrase in recommendation


def test_every_cell_of_the_tables_is_covered_by_a_case():
    assert len(SOLID_TABLE) == len(SOLID_CELLS) == 12
    assert len(SUBSOLID_TABLE) == len(SUBSOLID_CELLS) == 6


@pytest.mark.parametrize(
    "mean, texture, expected",
    [
        (5.49, "solid", "<6"),  # rounds to 5 mm
        (5.5, "solid", "6-8"),  # rounds to 6 mm (Bankier 2017: nearest whole mm)
        (8.49, "solid", "6-8"),  # 8 mm
        (8.5, "solid", ">8"),  # 9 mm
        (30.0, "solid", ">8"),
        (5.49, "ground-glass", "<6"),
        (5.5, "ground-glass", ">=6"),
        (5.5, "part-solid", ">=6"),
    ],
)
def test_sizes_are_rounded_to_the_nearest_mm_before_binning(mean, texture, expected):
    assert size_bin(mean, texture) == expected


@pytest.mark.parametrize("brock, risk", [(0.0, "low"), (0.0499, "low"), (0.05, "high"), (0.9, "high")])
def test_risk_from_brock(brock, risk):
    assert risk_from_brock(brock) == risk


def _read(**overrides):
    kwargs = dict(indication="incidental", age_years=60.0, immunocompromised=False, known_cancer=False,
                  nodule_count=1, mass_present=False, texture="solid", mean_diameter_mm=7.0, risk="low")
    kwargs.update(overrides)
    return fleischner_read(**kwargs)


@pytest.mark.parametrize(
    "overrides, why",
    [
        ({"indication": "screening"}, "screening"),
        ({"age_years": 34.9}, "younger than 35"),
        ({"immunocompromised": True}, "Immunocompromised"),
        ({"known_cancer": True}, "cancer"),
        ({"mass_present": True}, "mass"),
        ({"nodule_count": 0, "texture": None, "mean_diameter_mm": None}, "No pulmonary nodule"),
    ],
)
def test_when_the_guideline_does_not_apply(overrides, why):
    block = _read(**overrides)
    assert block["applies"] is False and block["recommendation"] is None
    assert why in block["note"]


def test_applies_from_35_years():
    assert _read(age_years=35.0)["applies"] is True


def test_risk_from_brock_is_stated_in_the_note():
    block = _read(risk=None, brock_risk=0.12)
    assert block["recommendation"] == table_recommendation("solid", 7.0, multiple=False, risk="high")[0]
    assert "high risk from the Brock risk 12.0 %" in block["note"]
    low = _read(risk=None, brock_risk=0.01)
    assert low["recommendation"] == table_recommendation("solid", 7.0, multiple=False, risk="low")[0]


def test_multiple_nodules_and_assumed_age_and_suspicious_solid_component_are_noted():
    block = _read(nodule_count=3, age_assumed=True, texture="part-solid", mean_diameter_mm=12.0,
                  solid_component_mean_diameter_mm=6.0)
    assert "most suspicious" in block["note"]
    assert "age not known" in block["note"]
    assert "highly suspicious" in block["note"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: table_recommendation("solid", 5.0, multiple=False, risk="medium"),
        lambda: table_recommendation("mixed", 5.0, multiple=False, risk="low"),
        lambda: size_bin(0.0, "solid"),
        lambda: risk_from_brock(1.5),
        lambda: _read(indication="diagnostic"),
        lambda: _read(risk=None, brock_risk=None),
        lambda: _read(texture=None),
        lambda: _read(nodule_count=-1),
    ],
)
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()
