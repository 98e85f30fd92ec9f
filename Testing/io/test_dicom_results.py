"""The DICOM-results interface (lunglesionai.io.dicom_results): source series, writers, the synthetic CT export."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest

from dicom_fixtures import write_series
from dicom_out_tools import dciodvfy_errors
from lunglesionai.core.volume import Volume
from lunglesionai.io import load_volume
from lunglesionai.io.dicom_results import (
    SEG_NAME,
    SR_NAME,
    dicom_result_writers,
    export_volume_as_dicom_series,
    load_source_series,
)
from report_fixtures import grid_volume, make_small_report


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The oblique test grid (k pointing inferior) with random HU, exported as a series."""
    volume = grid_volume()
    volume = volume.with_array(np.random.default_rng(0).integers(-1000, 400, volume.shape_zyx).astype(np.int16))
    folder = tmp_path_factory.mktemp("series") / "ct"
    return volume, folder, export_volume_as_dicom_series(volume, folder)


def test_export_reads_back_as_the_same_ct(exported):
    volume, folder, paths = exported
    assert len(paths) == volume.shape_zyx[0]
    back = load_volume(folder, min_slices=3)
    # The reader stacks along the slice normal i x j (superior here), so k comes back flipped.
    assert np.array_equal(back.hu[::-1], volume.hu)
    assert np.allclose(back.kji_to_lps([[0, 0, 0]]), volume.kji_to_lps([[volume.shape_zyx[0] - 1, 0, 0]]), atol=1e-4)
    assert np.allclose(back.spacing_mm, volume.spacing_mm, atol=1e-4)


def test_export_is_valid_ct_and_repeats_its_uids(exported, tmp_path):
    volume, _, paths = exported
    assert dciodvfy_errors(paths[0]) == []
    again = export_volume_as_dicom_series(volume, tmp_path / "again")
    first, second = pydicom.dcmread(paths[3]), pydicom.dcmread(again[3])
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (second.SeriesInstanceUID, second.SOPInstanceUID)
    assert first.Modality == "CT" and first.FrameOfReferenceUID and first.RescaleType == "HU"
    other = export_volume_as_dicom_series(volume.with_array(volume.hu + 1), tmp_path / "other")
    assert pydicom.dcmread(other[3]).SeriesInstanceUID != first.SeriesInstanceUID


def test_export_refuses_a_folder_with_files(exported):
    volume, folder, _ = exported
    with pytest.raises(FileExistsError, match="not empty"):
        export_volume_as_dicom_series(volume, folder)


def test_source_series_is_sorted_along_the_normal(exported):
    _, folder, _ = exported
    source = load_source_series(folder)
    normal = np.cross(*np.asarray(source[0].ImageOrientationPatient, float).reshape(2, 3))
    along = [np.dot(np.asarray(ds.ImagePositionPatient, float), normal) for ds in source]
    assert len(source) == 18 and np.all(np.diff(along) > 0) and "PixelData" not in source[0]


def test_source_series_follows_series_uid(tmp_path):
    first = write_series(tmp_path, np.arange(12) * 2.0)
    second = write_series(tmp_path, np.arange(11) * 2.0)
    with pytest.raises(ValueError, match="--series-uid"):
        load_source_series(tmp_path)
    assert {str(ds.SeriesInstanceUID) for ds in load_source_series(tmp_path, second)} == {second}
    assert len(load_source_series(tmp_path, first)) == 12


def test_writers_write_seg_and_sr_that_pydicom_reads(exported, tmp_path):
    _, folder, _ = exported
    report = make_small_report(with_lesion=False)
    source = load_source_series(folder)
    writers = dicom_result_writers(report, source)
    assert list(writers) == [SEG_NAME, SR_NAME]
    for name, write in writers.items():
        write(tmp_path / name)
    seg, sr = pydicom.dcmread(tmp_path / SEG_NAME), pydicom.dcmread(tmp_path / SR_NAME)
    assert [str(s.TrackingID) for s in seg.SegmentSequence] == ["N1", "N2"]
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID


def test_a_ct_without_type2_patient_attributes_still_gets_seg_and_sr(exported, tmp_path):
    """Some CT files leave out Type 2 attributes (PatientBirthDate, StudyID, ...); SEG and SR carry them empty."""
    _, folder, _ = exported
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        for keyword in ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(stripped / path.name)
    source = load_source_series(stripped)
    assert source[0].PatientBirthDate == "" and source[0].StudyID == ""
    writers = dicom_result_writers(make_small_report(with_lesion=False), source)
    for name, write in writers.items():
        write(tmp_path / name)
        assert pydicom.dcmread(tmp_path / name).PatientBirthDate == ""


def test_without_masked_findings_only_the_sr(exported):
    _, folder, _ = exported
    report = make_small_report(with_lesion=True)
    report = replace(report, findings=[replace(f, mask=None) for f in report.findings])
    assert list(dicom_result_writers(report, load_source_series(folder))) == [SR_NAME]


def test_a_series_on_another_grid_is_refused(exported):
    _, folder, _ = exported
    shifted = make_small_report(with_lesion=False)
    shifted.input = replace(shifted.input, origin_lps_mm=(12.0, -30.0, 56.0))
    with pytest.raises(ValueError, match="not a slice of the analysed grid"):
        dicom_result_writers(shifted, load_source_series(folder))
    with pytest.raises(ValueError, match="no source"):
        dicom_result_writers(shifted, [])


def test_float_volume_out_of_int16_is_refused(tmp_path):
    volume = Volume(np.full((3, 4, 5), 40000.0, np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="int16"):
        export_volume_as_dicom_series(volume, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()
