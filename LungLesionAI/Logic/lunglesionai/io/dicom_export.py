"""A Volume written as a synthetic single-frame CT Image Storage series (pydicom), so that DICOM SEG and SR can
reference it: the path ``analyze --dicom-out`` takes for NIfTI, NRRD, MetaImage and phantom input.

Geometry: one file per slice k of the (Z, Y, X) grid; Image Orientation (Patient) holds the volume's i and j axis
directions (the first two columns of ``direction``), Image Position (Patient) the LPS centre of voxel (0, 0, k),
Pixel Spacing (row = y, column = x) and a shared Frame of Reference UID. Voxels are rounded to int16 HU (signed,
Rescale Slope 1, Intercept 0). Reading the folder back with :func:`lunglesionai.io.ct_files.load_volume` gives the
same grid up to a k flip when the k axis points against the slice normal i × j (the reader sorts along the normal).

UIDs not given are derived from the voxels and the geometry (pydicom ``generate_uid(entropy_srcs=...)``), so
exporting the same CT twice gives the same Study/Series/Frame of Reference/SOP Instance UIDs, and the tracking UIDs
of the SR that references it stay stable across runs. DICOM PS3.3 A.3 (CT Image IOD).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lunglesionai.core.volume import Volume

__all__ = ["SYNTHETIC_PATIENT_ID", "SYNTHETIC_PATIENT_NAME", "export_volume_as_dicom_series", "synthetic_ct_datasets",
           "write_dicom_series"]

SYNTHETIC_PATIENT_ID = "LUNGLESIONAI-SYNTHETIC"
"""Patient ID of an exported series unless one is given (the source file has no patient)."""
SYNTHETIC_PATIENT_NAME = "Synthetic^CT"
_INT16_RANGE = (-32768, 32767)
_MANUFACTURER = "LungLesionAI"


def synthetic_ct_datasets(
    volume: Volume,
    *,
    patient_id: str = SYNTHETIC_PATIENT_ID,
    patient_name: str = SYNTHETIC_PATIENT_NAME,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "CT exported by LungLesionAI",
    study_date: dt.date | None = None,
) -> list[Dataset]:
    """The CT Image Storage instances (with pixel data) of ``volume``, slice k of the grid as instance k + 1.

    Args:
        volume: (Z, Y, X) HU on an LPS grid; values are rounded to int16.
        patient_id, patient_name: Patient module values.
        study_uid, series_uid: reuse these UIDs (None: derived from the voxels and geometry, stable across runs).
        series_description: Series Description.
        study_date: Study/Series/Content Date (None: 1 January 2000, a fixed date so that exports repeat exactly).

    Returns:
        One dataset per slice (file meta included), in k order.

    Raises:
        ValueError: a voxel is not finite or outside int16 after rounding.
    """
    hu = np.rint(np.asarray(volume.hu, dtype=np.float64))
    if not np.all(np.isfinite(hu)) or hu.min() < _INT16_RANGE[0] or hu.max() > _INT16_RANGE[1]:
        raise ValueError(f"{volume.source or 'volume'}: voxels must be finite HU within int16 to export as DICOM")
    pixels = hu.astype(np.int16)
    entropy = [hashlib.sha256(pixels.tobytes()).hexdigest(), repr(volume.ijk_to_lps_matrix.round(6).tolist())]
    study_uid = study_uid or generate_uid(entropy_srcs=[*entropy, "study"])
    series_uid = series_uid or generate_uid(entropy_srcs=[*entropy, study_uid, "series"])
    frame_uid = generate_uid(entropy_srcs=[*entropy, series_uid, "frame-of-reference"])
    date = (study_date or dt.date(2000, 1, 1)).strftime("%Y%m%d")
    axes = volume.direction_matrix
    orientation = [f"{v:.6f}" for v in (*axes[:, 0], *axes[:, 1])]
    nz = volume.shape_zyx[0]
    positions = volume.ijk_to_lps(np.column_stack([np.zeros(nz), np.zeros(nz), np.arange(nz)]))
    shared = _shared_header(volume, patient_id, patient_name, study_uid, series_uid, frame_uid, date,
                            series_description, orientation)
    return [_slice_dataset(shared, pixels[k], positions[k], k, series_uid) for k in range(nz)]


def export_volume_as_dicom_series(volume: Volume, folder: str | os.PathLike, **kwargs) -> list[Path]:
    """Write ``volume`` as a synthetic CT series into ``folder`` (created; must be empty or new), one file per slice
    named ``CT000001.dcm``… in k order.

    Args:
        volume: (Z, Y, X) HU on an LPS grid.
        folder: the series folder.
        **kwargs: as :func:`synthetic_ct_datasets` (patient_id, patient_name, study_uid, series_uid,
            series_description, study_date).

    Returns:
        The files written, in k order.

    Raises:
        FileExistsError: ``folder`` exists and is not empty.
        ValueError: as :func:`synthetic_ct_datasets`.

    Example:
        >>> from lunglesionai.core.volume import Volume
        >>> v = Volume(np.full((3, 4, 5), -1000, np.int16), (0.7, 0.7, 2.0), (0.0, 0.0, 0.0))
        >>> len(export_volume_as_dicom_series(v, "ct_series"))  # doctest: +SKIP
        3
    """
    return write_dicom_series(synthetic_ct_datasets(volume, **kwargs), folder)


def write_dicom_series(datasets: list[Dataset], folder: str | os.PathLike) -> list[Path]:
    """Save datasets as ``CT000001.dcm``… (Part 10 files, in list order) into ``folder`` (created; must be empty
    or new).

    Raises:
        FileExistsError: ``folder`` exists and is not empty.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder}: folder exists and is not empty; the CT series needs a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets, start=1):
        path = folder / f"CT{n:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _shared_header(volume: Volume, patient_id: str, patient_name: str, study_uid: str, series_uid: str,
                   frame_uid: str, date: str, description: str, orientation: list[str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "000000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Laterality = ""
    ds.PatientPosition = "HFS"  # synthetic: the source file does not say; head first supine is the chest CT norm
    ds.Manufacturer = _MANUFACTURER
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LungLesionAI synthetic CT"
    ds.SeriesDescription = description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.SliceThickness = f"{volume.spacing_mm[2]:.6g}"
    ds.KVP = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.PatientOrientation = ""
    ds.ImageOrientationPatient = orientation
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = volume.shape_zyx[1], volume.shape_zyx[2]
    ds.PixelSpacing = [f"{volume.spacing_mm[1]:.6g}", f"{volume.spacing_mm[0]:.6g}"]  # (row = y, column = x)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
    return ds


def _slice_dataset(shared: Dataset, pixels: np.ndarray, position_lps: np.ndarray, k: int, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.update(shared)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position_lps]
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
