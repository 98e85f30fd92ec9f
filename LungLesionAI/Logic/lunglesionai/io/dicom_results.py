"""DICOM results next to the study: the analysed series' headers, and the SEG and SR writers for an output folder.

* :func:`load_source_series`: the CT instances of the analysed series (headers only), sorted along the slice normal.
* :func:`dicom_result_writers`: ``{SEG_NAME: writer, SR_NAME: writer}`` for
  :func:`lunglesionai.io.outputs.write_outputs` ``(extra_files=...)``: the DICOM SEG of the masses and nodules
  (:mod:`lunglesionai.io.dicom_seg`) and the TID 1500 SR of their measurements (:mod:`lunglesionai.io.dicom_sr`),
  both in the source's study (patient and study attributes copied from the CT by highdicom).
* :func:`export_volume_as_dicom_series`: a synthetic CT series for non-DICOM input (:mod:`lunglesionai.io.dicom_export`).

The SEG and SR are built when the writers are made, so a grid that does not match the series is refused before
anything is written. They carry the patient's name and ID as the CT does (a PACS files them by these);
``--include-identifiers`` only concerns report.json and report.html.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from lunglesionai.core.ct_checks import CTInputError, sanitize_text
from lunglesionai.core.findings import Report
from lunglesionai.io.ct_files import MIN_SLICES
from lunglesionai.io.dicom_export import export_volume_as_dicom_series, synthetic_ct_datasets
from lunglesionai.io.dicom_seg import make_segmentation, segmented_findings, source_slice_indices
from lunglesionai.io.dicom_series import _choose_series, list_dicom_series
from lunglesionai.io.dicom_sr import make_measurement_report

__all__ = ["SEG_NAME", "SR_NAME", "dicom_result_writers", "export_volume_as_dicom_series", "load_source_series",
           "synthetic_ct_datasets"]

SEG_NAME = "nodules.seg.dcm"
"""The DICOM Segmentation in an output folder (only when a mass or nodule has a mask)."""
SR_NAME = "report.sr.dcm"
"""The TID 1500 DICOM SR in an output folder (always with DICOM output; it says when nothing was found)."""


def load_source_series(dicom_input: str | os.PathLike, series_uid: str | None = None) -> list[pydicom.Dataset]:
    """The CT instances of the analysed series, headers only (``stop_before_pixels``), sorted along the slice
    normal (row × column direction) as :func:`lunglesionai.io.ct_files.load_volume` stacks them.

    Args:
        dicom_input: the DICOM folder (or single DICOM file) that was analysed.
        series_uid: the SeriesInstanceUID chosen with ``--series-uid`` (None: the folder's one usable CT series,
            the same choice ``load_volume`` makes).

    Returns:
        The instances' datasets (one per file; one dataset for a multi-frame file).

    Raises:
        CTInputError (a ValueError): the folder holds no usable CT series, several without ``series_uid``, or a
            header lacks ImagePositionPatient / ImageOrientationPatient.
    """
    path = Path(dicom_input)
    if not path.is_dir():
        return [_with_empty_type2(pydicom.dcmread(path, stop_before_pixels=True))]
    info = _choose_series(path, list_dicom_series(path), series_uid, MIN_SLICES)
    headers = [_with_empty_type2(pydicom.dcmread(f, stop_before_pixels=True)) for f in info.files]
    if len(headers) == 1:
        return headers
    try:
        normal = np.cross(*np.asarray(headers[0].ImageOrientationPatient, float).reshape(2, 3))
        along = [float(np.dot(np.asarray(h.ImagePositionPatient, float), normal)) for h in headers]
    except (AttributeError, TypeError, ValueError) as exc:
        raise CTInputError(f"{sanitize_text(path)}: a slice lacks ImagePositionPatient/ImageOrientationPatient") \
            from exc
    return [headers[n] for n in np.argsort(along, kind="stable")]


#: Type 2 attributes of the Patient and General Study modules that SEG and SR copy from the CT (PS3.3 C.7.1.1,
#: C.7.2.1): present, but possibly empty, in a valid object. Some CT files leave them out altogether.
_PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _with_empty_type2(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """The header (read from disk, so ours to change) with every missing Type 2 patient/study attribute added
    empty, as the standard allows, so that highdicom can copy them into the SEG and SR."""
    for keyword in _PATIENT_STUDY_TYPE2:
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    return dataset


def dicom_result_writers(report: Report, source: list[pydicom.Dataset]) -> dict[str, Callable[[Path], None]]:
    """The SEG and SR of ``report`` as output-folder writers.

    Args:
        report: the analysis (after the clinical read, so that Lung-RADS and Brock are in the SR); masks on the
            grid of ``report.input``.
        source: the analysed CT instances (:func:`load_source_series`, or :func:`synthetic_ct_datasets`), one per
            slice of the report's grid.

    Returns:
        ``{SEG_NAME: writer, SR_NAME: writer}``; only ``{SR_NAME: writer}`` when no mass or nodule has a mask
        (the SR then says "All algorithms succeeded; without findings", or that nothing was searched). Each writer
        saves its dataset (DICOM Part 10 file) at the path it is given.

    Raises:
        ValueError: ``source`` is empty or is not the report's grid (count, size, spacing, orientation or slice
            positions; e.g. a series the reader resampled, or a multi-frame file), naming the problem.

    Example:
        >>> writers = dicom_result_writers(report, load_source_series("ct_folder"))  # doctest: +SKIP
        >>> write_outputs(report, "out", extra_files=writers)  # doctest: +SKIP
    """
    if not source:
        raise ValueError("no source CT instances to reference")
    segmentation = make_segmentation(report, source) if segmented_findings(report) else None
    if segmentation is None:
        source_slice_indices(report.input, source)  # the same geometry check as the SEG's
    sr = make_measurement_report(report, source, segmentation)
    writers: dict[str, Callable[[Path], None]] = {}
    if segmentation is not None:
        writers[SEG_NAME] = lambda path: segmentation.save_as(path, enforce_file_format=True)
    writers[SR_NAME] = lambda path: sr.save_as(path, enforce_file_format=True)
    return writers
