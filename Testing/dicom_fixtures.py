"""Small synthetic DICOM series and files written with pydicom, shared by the io and CLI tests."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ROWS, COLS = 6, 5
PIXEL_SPACING = (0.8, 0.7)  # DICOM order: (row spacing = y, column spacing = x)


def hu_of_z(z_mm: float, shape=(ROWS, COLS)) -> np.ndarray:
    """Slice content that encodes its own position: HU = 10 * z, plus a column ramp and an air corner."""
    hu = np.full(shape, round(10 * z_mm), np.int32) + np.arange(shape[1])[None, :]
    hu[0, 0] = -1000
    return hu


def dicom_slice(hu, position, series_uid, *, modality="CT", description="Chest", slope=1.0, intercept=-1024.0,
                 iop=(1, 0, 0, 0, 1, 0), number=1) -> Dataset:
    sop_class = CT_STORAGE if modality == "CT" else MR_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesDescription, ds.InstanceNumber = modality, description, number
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", series_uid
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{float(v):.6f}" for v in iop]
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = np.shape(hu)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    stored = np.rint((np.asarray(hu, float) - intercept) / slope).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    return ds


def write_series(folder: Path, z_positions, *, modality="CT", description="Chest", xy=(-20.0, 30.0),
                 drift_y_per_mm=0.0, slopes=None, iop=(1, 0, 0, 0, 1, 0), shape=(ROWS, COLS), series_uid=None,
                 tags=None, first_number=1, prefix=None, transfer_syntax=None) -> str:
    """Write one series (files in shuffled order); returns its SeriesInstanceUID.

    Slice n lies at (xy, 0) + z_positions[n] * normal (+ a sideways drift in y for a tilted gantry).
    ``shape`` is (Rows, Columns); ``series_uid`` reuses a UID (a second reconstruction under one series);
    ``tags`` (keyword -> value) are set on every slice; InstanceNumbers count from ``first_number``; files are
    named ``{prefix}_{n:03d}.dcm`` (prefix: the UID's last 8 characters); ``transfer_syntax`` (e.g.
    ``pydicom.uid.RLELossless``) compresses the pixel data with pydicom's own encoder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    order = list(range(len(z_positions)))
    random.Random(0).shuffle(order)
    for n in order:
        z = float(z_positions[n])
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        position = np.array([xy[0], xy[1] + drift_y_per_mm * z, 0.0]) + z * normal
        slope = 1.0 if slopes is None else slopes[n]
        ds = dicom_slice(hu_of_z(z, shape), position, uid, modality=modality, description=description,
                         slope=slope, iop=iop, number=first_number + n)
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        if transfer_syntax is not None:
            ds.compress(transfer_syntax)
        ds.save_as(folder / f"{prefix or uid[-8:]}_{n:03d}.dcm", enforce_file_format=True)
    return uid


def write_enhanced_ct(path: Path, z_positions) -> None:
    """A multi-frame Enhanced CT file, frames in the given (e.g. descending) order."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", generate_uid(), generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(z_positions), ROWS, COLS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    measures, orientation, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = list(PIXEL_SPACING), 2.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in z_positions:
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = [-20.0, 30.0, float(z)]
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([hu_of_z(z) + 1024 for z in z_positions]).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
