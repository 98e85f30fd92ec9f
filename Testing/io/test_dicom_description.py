"""Tests of lunglesionai.io.dicom_description: what of a DICOM header the report describes."""

import numpy as np

from dicom_fixtures import write_series
from lunglesionai.io.dicom_description import describe_dicom_input


def test_age_and_sex_are_described_but_name_and_id_only_when_asked(tmp_path):
    # the Brock risk model (lunglesionai.clinical) reads patient_age / patient_sex from the description
    write_series(tmp_path, np.arange(3) * 2.0, tags={"PatientAge": "067Y", "PatientSex": "M",
                                                     "PatientName": "Doe^Jane", "PatientID": "PID-1"})
    plain = describe_dicom_input(tmp_path)
    assert plain["patient_age"] == "067Y" and plain["patient_sex"] == "M"
    assert "patient_name" not in plain and "patient_id" not in plain
    named = describe_dicom_input(tmp_path, include_identifiers=True)
    assert named["patient_name"] == "Doe^Jane"


def test_absent_age_and_sex_are_left_out(tmp_path):
    write_series(tmp_path, np.arange(3) * 2.0)
    described = describe_dicom_input(tmp_path)
    assert "patient_age" not in described and "patient_sex" not in described
