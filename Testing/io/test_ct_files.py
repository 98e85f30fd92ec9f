"""Tests of lunglesionai.io.ct_files: CT loading (DICOM series/file, NIfTI, NRRD, MHA), checks, and atomic saving.

Most data are made here: small volumes through SimpleITK, a hand-written NIfTI-1 header (RAS affine), and
synthetic DICOM series written with pydicom. Real CT from ../shared is used where present (skips otherwise).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import shared_path
from dicom_fixtures import COLS, ROWS, hu_of_z, write_enhanced_ct, write_series
from lunglesionai.core.volume import Volume
from lunglesionai.io.ct_files import (
    MIN_SLICES,
    CTInputError,
    list_dicom_series,
    load_volume,
    save_volume,
    volume_from_sitk,
    volume_to_sitk,
)

# ------------------------------------------------------------------------------------------ helpers


def write_nifti_ras(path: Path, data_zyx: np.ndarray, spacing, offset_ras) -> None:
    """A NIfTI-1 int16 file written byte by byte, sform = RAS affine diag(spacing) + offset (no ITK involved)."""
    header = np.zeros(348, np.uint8)

    def put(offset: int, dtype: str, values) -> None:
        raw = np.asarray(values, dtype=dtype).tobytes()
        header[offset:offset + len(raw)] = np.frombuffer(raw, np.uint8)

    put(0, "<i4", 348)
    put(40, "<i2", [3, data_zyx.shape[2], data_zyx.shape[1], data_zyx.shape[0], 1, 1, 1, 1])
    put(70, "<i2", [4, 16])  # datatype int16, bitpix
    put(76, "<f4", [1.0, *spacing, 1, 1, 1, 1])
    put(108, "<f4", 352.0)  # vox_offset
    put(112, "<f4", [1.0, 0.0])  # scl_slope, scl_inter
    header[123] = 2  # xyzt_units: mm
    put(252, "<i2", [0, 1])  # qform_code 0, sform_code 1 (scanner)
    put(280, "<f4", [spacing[0], 0, 0, offset_ras[0]])
    put(296, "<f4", [0, spacing[1], 0, offset_ras[1]])
    put(312, "<f4", [0, 0, spacing[2], offset_ras[2]])
    header[344:348] = np.frombuffer(b"n+1\0", np.uint8)
    path.write_bytes(header.tobytes() + bytes(4) + data_zyx.astype("<i2").tobytes())


def _oblique_direction(degrees: float) -> tuple[float, ...]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return tuple(np.array([[c, -s, 0], [s, c, 0], [0, 0, -1.0]]).reshape(-1))


def _ct_like(shape=(12, 10, 11), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 1500, size=shape).astype(np.int16)


# ------------------------------------------------------------------------------------------ image files


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_save_load_roundtrip_keeps_voxels_and_geometry(tmp_path, suffix):
    vol = Volume(_ct_like(), (0.7, 0.8, 2.5), (-12.5, 40.0, -300.25), _oblique_direction(30), "test")
    path = save_volume(vol, tmp_path / f"ct{suffix}")
    back = load_volume(path)
    assert back.hu.dtype == np.int16
    np.testing.assert_array_equal(back.hu, vol.hu)
    np.testing.assert_allclose(back.spacing_mm, vol.spacing_mm, atol=1e-5)
    np.testing.assert_allclose(back.origin_lps_mm, vol.origin_lps_mm, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-5)
    np.testing.assert_allclose(back.kji_to_lps([[11, 9, 10]]), vol.kji_to_lps([[11, 9, 10]]), atol=1e-3)
    assert back.source == str(path.resolve())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_nifti_ras_affine_is_converted_to_lps(tmp_path):
    data = _ct_like((11, 12, 13))
    path = tmp_path / "ras.nii"
    write_nifti_ras(path, data, spacing=(2.0, 3.0, 4.0), offset_ras=(10.0, 20.0, 30.0))
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.hu, data)
    np.testing.assert_allclose(vol.spacing_mm, (2.0, 3.0, 4.0))
    np.testing.assert_allclose(vol.origin_lps_mm, (-10.0, -20.0, 30.0))
    np.testing.assert_allclose(vol.direction_matrix, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    i, j, k = 5, 7, 3  # RAS of voxel (i, j, k) = (10 + 2i, 20 + 3j, 30 + 4k); LPS negates x and y
    np.testing.assert_allclose(vol.ijk_to_lps([[i, j, k]])[0], (-(10 + 2 * i), -(20 + 3 * j), 30 + 4 * k))


def test_dtype_policy_int16_when_integral_else_float32(tmp_path):
    base = _ct_like().astype(np.float32)
    integral = volume_from_sitk(sitk.GetImageFromArray(base.astype(np.float64)), "f64")
    assert integral.hu.dtype == np.int16 and np.array_equal(integral.hu, base)
    frac = volume_from_sitk(sitk.GetImageFromArray(base + 0.25), "frac")
    assert frac.hu.dtype == np.float32 and np.allclose(frac.hu, base + 0.25)
    wide = volume_from_sitk(sitk.GetImageFromArray(np.full((3, 3, 3), 40000, np.int32)), "wide")
    assert wide.hu.dtype == np.float32 and wide.hu.max() == 40000


def test_volume_to_sitk_and_back_is_exact():
    vol = Volume(_ct_like(), (0.5, 0.6, 1.25), (1.0, 2.0, 3.0), _oblique_direction(-20), "mem")
    image = volume_to_sitk(vol)
    assert image.GetSize() == (11, 10, 12)
    back = volume_from_sitk(image, "mem")
    np.testing.assert_array_equal(back.hu, vol.hu)
    np.testing.assert_allclose(back.ijk_to_lps_matrix, vol.ijk_to_lps_matrix)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(CTInputError, match="no such file") as err:
        load_volume(missing)
    assert str(missing) in str(err.value)


def test_text_file_is_unsupported(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    with pytest.raises(CTInputError, match="unreadable or unsupported") as err:
        load_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_png_is_refused_as_2d(tmp_path):
    path = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.uint8)), str(path))
    with pytest.raises(CTInputError, match="2-D image") as err:
        load_volume(path)
    assert str(path) in str(err.value)


def test_too_few_slices(tmp_path):
    path = save_volume(Volume(_ct_like((MIN_SLICES - 3, 16, 16)), (1, 1, 1), (0, 0, 0)), tmp_path / "thin.nrrd")
    with pytest.raises(CTInputError, match=f"only {MIN_SLICES - 3} slices") as err:
        load_volume(path)
    assert str(path) in str(err.value)
    assert load_volume(path, min_slices=5).shape_zyx == (MIN_SLICES - 3, 16, 16)


def test_non_hu_intensities_are_refused_with_both_explanations(tmp_path):
    raw = (_ct_like() + 1024).astype(np.int16)  # MR-like / raw CT without offset: minimum >= 0
    path = save_volume(Volume(raw, (1, 1, 1), (0, 0, 0)), tmp_path / "mr.mha")
    with pytest.raises(CTInputError, match="Hounsfield") as err:
        load_volume(path)
    message = str(err.value)
    assert str(path) in message and "MR" in message and "-1024" in message
    assert load_volume(path, check_hu=False).hu.min() >= 0


def test_save_rejects_unknown_suffix_and_failed_write_leaves_old_file(tmp_path, monkeypatch):
    vol = Volume(_ct_like(), (1, 1, 1), (0, 0, 0))
    with pytest.raises(ValueError, match=".nii.gz"):
        save_volume(vol, tmp_path / "ct.png")
    target = save_volume(vol, tmp_path / "ct.nrrd")
    before = target.read_bytes()

    def broken_write(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_volume(vol.with_array(vol.hu + 1), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nrrd"]


# ------------------------------------------------------------------------------------------ DICOM


def test_dicom_series_geometry_and_hu(tmp_path):
    z = -50.0 + 2.5 * np.arange(12)
    write_series(tmp_path, z[::-1])  # files shuffled, positions descending in instance order
    vol = load_volume(tmp_path)
    assert vol.shape_zyx == (12, ROWS, COLS) and vol.hu.dtype == np.int16
    np.testing.assert_allclose(vol.spacing_mm, (0.7, 0.8, 2.5), atol=1e-6)
    np.testing.assert_allclose(vol.origin_lps_mm, (-20.0, 30.0, -50.0), atol=1e-4)
    np.testing.assert_allclose(vol.direction_matrix, np.eye(3), atol=1e-9)
    for k in range(12):  # sorted feet -> head, each slice's HU encodes its own z
        np.testing.assert_array_equal(vol.hu[k], hu_of_z(z[k]))
    np.testing.assert_allclose(vol.kji_to_lps([[3, 5, 4]])[0], (-20 + 4 * 0.7, 30 + 5 * 0.8, z[3]), atol=1e-4)


_RZ = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
_RX = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
OBLIQUE_IOP = tuple((_RZ @ _RX)[:, :2].T.reshape(-1))  # row and column cosines of a rotated plane


@pytest.mark.parametrize("iop", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), OBLIQUE_IOP],
                         ids=["axial", "coronal", "oblique"])
def test_dicom_series_geometry_matches_simpleitk(tmp_path, iop):
    write_series(tmp_path, 100.0 - 1.25 * np.arange(11), iop=tuple(np.round(iop, 6)))
    vol = load_volume(tmp_path, check_hu=False)  # the slices' values encode z (HU = 10·z up to 1000): not a CT
    np.testing.assert_allclose(vol.direction_matrix[:, :2].T.reshape(-1), np.asarray(iop, float), atol=1e-6)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    reference = volume_from_sitk(image)
    np.testing.assert_allclose(vol.ijk_to_lps_matrix, reference.ijk_to_lps_matrix, atol=1e-4)
    np.testing.assert_array_equal(vol.hu, reference.hu)


def test_mr_series_is_refused(tmp_path):
    write_series(tmp_path, np.arange(12.0), modality="MR", description="T1 axial")
    with pytest.raises(CTInputError, match="no CT series") as err:
        load_volume(tmp_path)
    assert "MR" in str(err.value) and "T1 axial" in str(err.value) and str(tmp_path) in str(err.value)


def test_two_ct_series_need_series_uid(tmp_path):
    thin = write_series(tmp_path, np.arange(20.0), description="Lung 1mm")
    thick = write_series(tmp_path, 5.0 * np.arange(12), description="Body 5mm")
    with pytest.raises(CTInputError, match="2 CT series") as err:
        load_volume(tmp_path)
    for text in (thin, thick, "Lung 1mm", "Body 5mm", "(20 slices)", "(12 slices)"):
        assert text in str(err.value)
    vol = load_volume(tmp_path, series_uid=thick)
    assert vol.shape_zyx[0] == 12 and vol.spacing_mm[2] == pytest.approx(5.0)
    with pytest.raises(CTInputError, match="no series with uid"):
        load_volume(tmp_path, series_uid="1.2.999")


def test_ct_series_is_picked_among_mr_and_localizer(tmp_path):
    write_series(tmp_path, np.arange(15.0), modality="MR", description="MR")
    write_series(tmp_path, [0.0, 1.0], description="Scout")
    uid = write_series(tmp_path, 2.0 * np.arange(13), description="Chest")
    infos = {info.description: info for info in list_dicom_series(tmp_path)}
    assert set(infos) == {"MR", "Scout", "Chest"}
    assert infos["Chest"].uid == uid and infos["Chest"].n_slices == 13 and infos["MR"].modality == "MR"
    assert len(infos["Scout"].files) == 2
    assert load_volume(tmp_path).shape_zyx == (13, ROWS, COLS)


def test_small_jitter_is_accepted_without_resampling(tmp_path):
    z = 2.0 * np.arange(12) + np.array([0, 0.04, -0.03, 0.02, 0, 0, 0.05, 0, -0.04, 0, 0.03, 0])
    write_series(tmp_path, z)
    vol = load_volume(tmp_path)
    assert vol.shape_zyx[0] == 12 and vol.hu.dtype == np.int16
    assert vol.spacing_mm[2] == pytest.approx((z[-1] - z[0]) / 11, abs=1e-4)


def test_moderately_non_uniform_series_is_resampled_with_warning(tmp_path, caplog):
    gaps = [2.0, 2.0, 2.6, 2.0, 1.6, 2.0, 2.0, 2.4, 2.0, 2.0, 2.0]
    z = np.concatenate([[0.0], np.cumsum(gaps)])
    write_series(tmp_path, z)
    with caplog.at_level(logging.WARNING, logger="lunglesionai.io.ct_files"):
        vol = load_volume(tmp_path)
    assert "resampled to 2 mm" in caplog.text and str(tmp_path) in caplog.text
    n_out = int(np.floor(z[-1] / 2.0)) + 1
    assert vol.shape_zyx == (n_out, ROWS, COLS) and vol.spacing_mm[2] == pytest.approx(2.0)
    targets = 2.0 * np.arange(n_out)
    expected = np.stack([np.interp(targets, z, [hu_of_z(v)[r, c] for v in z])
                         for r, c in [(1, 2), (3, 4)]], axis=1)
    np.testing.assert_allclose(vol.hu[:, [1, 3], [2, 4]], expected, atol=1e-3)


def test_missing_slice_is_refused(tmp_path):
    z = np.delete(2.0 * np.arange(14), 6)
    write_series(tmp_path, z)
    with pytest.raises(CTInputError, match="missing slice") as err:
        load_volume(tmp_path)
    assert "4.00 mm" in str(err.value) and "refused" in str(err.value) and str(tmp_path) in str(err.value)


def test_duplicate_slice_positions_are_refused(tmp_path):
    z = np.sort(np.concatenate([2.0 * np.arange(12), [8.0]]))
    write_series(tmp_path, z)
    with pytest.raises(CTInputError, match="duplicate slice positions"):
        load_volume(tmp_path)


def test_gantry_tilt_is_refused(tmp_path):
    write_series(tmp_path, 2.0 * np.arange(12), drift_y_per_mm=np.tan(np.radians(15)))
    with pytest.raises(CTInputError, match="gantry tilt") as err:
        load_volume(tmp_path)
    assert "15.0°" in str(err.value)


def test_varying_rescale_slope_is_read_as_float(tmp_path):
    z = 2.0 * np.arange(12)
    slopes = [1.0] * 12
    slopes[4] = 0.3  # GDCM would pick an integer type from the first slice and truncate this one
    write_series(tmp_path, z, slopes=slopes)
    vol = load_volume(tmp_path)
    assert vol.hu.dtype == np.float32
    np.testing.assert_allclose(vol.hu[4], np.rint((hu_of_z(z[4]) + 1024) / 0.3) * 0.3 - 1024, atol=1e-3)
    for k in (3, 5):
        np.testing.assert_array_equal(vol.hu[k], hu_of_z(z[k]))


def test_enhanced_multiframe_ct_file(tmp_path):
    z = 30.0 - 2.0 * np.arange(12)  # frames stored head -> feet
    path = tmp_path / "enhanced.dcm"
    write_enhanced_ct(path, z)
    vol = load_volume(path)
    assert vol.shape_zyx == (12, ROWS, COLS)
    np.testing.assert_allclose(vol.origin_lps_mm, (-20.0, 30.0, z.min()), atol=1e-4)
    np.testing.assert_allclose(vol.spacing_mm, (0.7, 0.8, 2.0), atol=1e-6)
    np.testing.assert_allclose(vol.direction_matrix, np.eye(3), atol=1e-9)
    np.testing.assert_array_equal(vol.hu[0], hu_of_z(z.min()))
    np.testing.assert_array_equal(vol.hu[-1], hu_of_z(z.max()))


def test_single_dicom_slice_file_is_refused(tmp_path):
    write_series(tmp_path / "one", [0.0])
    path = next((tmp_path / "one").iterdir())
    with pytest.raises(CTInputError, match="single 2-D DICOM slice") as err:
        load_volume(path)
    assert str(path) in str(err.value)
    with pytest.raises(CTInputError, match="--series-uid"):
        load_volume(path, series_uid="1.2.3")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(CTInputError, match="no DICOM image series") as err:
        load_volume(tmp_path)
    assert str(tmp_path) in str(err.value)


# ------------------------------------------------------------------------------------------ real data


def test_real_nifti_chest_crop():
    path = shared_path("ct", "chest_ct_crop_1p5mm.nii.gz")
    vol = load_volume(path)
    assert vol.shape_zyx == (164, 126, 120) and vol.hu.dtype == np.int16
    np.testing.assert_allclose(vol.spacing_mm, (1.5, 1.5, 1.5), atol=1e-5)
    assert vol.hu.min() < -900 and vol.hu.max() > 1000  # air/lung and bone/contrast present
    reference = sitk.ReadImage(str(path))
    np.testing.assert_allclose(vol.origin_lps_mm, reference.GetOrigin())
    center = [[60, 63, 82]]
    np.testing.assert_allclose(vol.ijk_to_lps(center)[0], reference.TransformContinuousIndexToPhysicalPoint(center[0]))


def test_real_nrrd_lowres_chest():
    vol = load_volume(shared_path("ct", "chest_ct_lowres.nrrd"))
    assert vol.shape_zyx == (34, 128, 128) and vol.hu.dtype == np.int16  # stored int32, values fit int16
    np.testing.assert_allclose(vol.spacing_mm, (3.046876, 3.046876, 10.0), atol=1e-4)
    np.testing.assert_allclose(vol.direction_matrix, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)


def test_real_dicom_series():
    folder = shared_path("ct", "abdomen_lung_base_dicom")
    (info,) = list_dicom_series(folder)
    assert info.modality == "CT" and info.n_slices == 20
    vol = load_volume(folder)
    assert vol.shape_zyx == (20, 512, 512) and vol.hu.dtype == np.int16
    np.testing.assert_allclose(vol.spacing_mm, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    np.testing.assert_allclose(vol.origin_lps_mm, (-249.51171875, -437.51171875, -804.5), atol=1e-4)
    assert vol.hu.min() <= -1000 and vol.hu.max() > 500


def test_real_single_slice_is_refused():
    path = shared_path("ct", "chest_single_slice.dcm")
    with pytest.raises(CTInputError, match="single 2-D DICOM slice") as err:
        load_volume(path)
    assert str(path.resolve()) in str(err.value)  # load_volume names the resolved path


def test_pydicom_reads_synthetic_series_headers(tmp_path):
    """Guard for the synthetic writer itself: the files are valid DICOM that pydicom parses."""
    write_series(tmp_path, [0.0, 2.0])
    for path in tmp_path.iterdir():
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CT" and ds.pixel_array.shape == (ROWS, COLS)
