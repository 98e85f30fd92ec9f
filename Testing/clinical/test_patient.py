"""Tests of lunglesionai.clinical.patient: patient facts from options, DICOM header, emphysema index, defaults."""

import math

import pytest

from lunglesionai.clinical.patient import (
    DEFAULT_AGE_YEARS,
    DEFAULT_SEX,
    EMPHYSEMA_INDEX_THRESHOLD_PCT,
    PatientInfo,
    parse_dicom_age,
    parse_dicom_sex,
    resolve_patient,
)


@pytest.mark.parametrize(
    "text, years",
    [("062Y", 62.0), ("62Y", 62.0), ("006M", 0.5), ("052W", 52 / (365.25 / 7)), ("365D", 365 / 365.25),
     (" 071y ", 71.0), ("", None), ("062", None), ("abcY", None), ("999Y", None), ("062Y5", None)],
)
def test_dicom_age_strings(text, years):
    # DICOM PS3.5 VR AS: nnnD / nnnW / nnnM / nnnY; anything else is not an age
    got = parse_dicom_age(text)
    assert got == (None if years is None else pytest.approx(years))


@pytest.mark.parametrize("text, sex", [("F", "F"), ("M", "M"), (" m", "M"), ("O", None), ("", None), ("X", None)])
def test_dicom_sex(text, sex):
    assert parse_dicom_sex(text) == sex


def test_given_values_come_first_then_the_header_then_defaults():
    given = PatientInfo(age_years=55.0, family_history=True)
    resolved, assumed = resolve_patient(given, {"patient_age": "071Y", "patient_sex": "M"}, 1.0)
    assert resolved.age_years == 55.0  # the option beats the header
    assert resolved.sex == "M"  # from the header
    assert resolved.family_history is True
    assert resolved.emphysema is False  # measured: 1 % < threshold
    assert assumed == ["immunocompromised", "known_cancer"]


def test_without_anything_every_field_is_defaulted_and_listed():
    resolved, assumed = resolve_patient(PatientInfo(), {}, None)
    assert (resolved.age_years, resolved.sex, resolved.family_history, resolved.emphysema) == (
        DEFAULT_AGE_YEARS, DEFAULT_SEX, False, False)
    assert assumed == ["age", "sex", "family_history", "emphysema", "immunocompromised", "known_cancer"]


def test_dicom_keywords_are_read_too_and_unusable_header_values_fall_back():
    resolved, assumed = resolve_patient(PatientInfo(), {"PatientAge": "080Y", "patient_sex": "O"}, None)
    assert resolved.age_years == 80.0
    assert resolved.sex == DEFAULT_SEX and "sex" in assumed  # "O" is not a Brock value


@pytest.mark.parametrize("index_pct, emphysema", [(EMPHYSEMA_INDEX_THRESHOLD_PCT - 0.01, False),
                                                  (EMPHYSEMA_INDEX_THRESHOLD_PCT, True), (30.0, True), (0.0, False)])
def test_emphysema_from_the_index_threshold(index_pct, emphysema):
    resolved, assumed = resolve_patient(PatientInfo(), {}, index_pct)
    assert resolved.emphysema is emphysema
    assert "emphysema" not in assumed


def test_a_given_emphysema_beats_the_index():
    resolved, _ = resolve_patient(PatientInfo(emphysema=False), {}, 40.0)
    assert resolved.emphysema is False


@pytest.mark.parametrize(
    "kwargs",
    [{"age_years": -1.0}, {"age_years": 131.0}, {"age_years": math.nan}, {"age_years": True}, {"sex": "O"},
     {"sex": "female"}, {"family_history": 1}, {"emphysema": "yes"}, {"known_cancer": 0}],
)
def test_bad_patient_values_are_refused(kwargs):
    with pytest.raises(ValueError):
        PatientInfo(**kwargs)


@pytest.mark.parametrize("index_pct", [-1.0, 100.5, math.nan])
def test_bad_emphysema_index_is_refused(index_pct):
    with pytest.raises(ValueError, match="emphysema index"):
        resolve_patient(PatientInfo(), {}, index_pct)
