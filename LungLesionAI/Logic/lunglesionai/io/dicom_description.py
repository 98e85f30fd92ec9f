"""Descriptive header fields of a DICOM input for the report, without patient identifiers unless asked.

report.json (``input.description``) and report.html show what a reader needs to recognise the scan — series
description, study and series date, modality, manufacturer and model, reconstruction kernel, slice thickness,
the patient's age and sex (the Brock risk model of :mod:`lunglesionai.clinical` needs them) — and leave out the
patient's name and ID unless ``include_identifiers`` (``--include-identifiers``) asks for them, so that reports
and logs can be shared without carrying direct identifiers (the attributes DICOM PS3.15 Annex E, Basic
Application Level Confidentiality Profile, removes; age and sex are kept as its Retain Patient Characteristics
Option keeps them). Header strings are sanitised (control characters replaced) before they reach any file or
terminal.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from lunglesionai.core.ct_checks import sanitize_text

__all__ = ["DESCRIPTIVE_TAGS", "IDENTIFYING_TAGS", "describe_dicom_input"]

logger = logging.getLogger(__name__)

DESCRIPTIVE_TAGS = {
    "series_description": "SeriesDescription",
    "study_description": "StudyDescription",
    "study_date": "StudyDate",
    "series_date": "SeriesDate",
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "manufacturer_model": "ManufacturerModelName",
    "convolution_kernel": "ConvolutionKernel",
    "slice_thickness_mm": "SliceThickness",
    "patient_age": "PatientAge",  # DICOM Age String, e.g. "062Y": the Brock risk model's age (lunglesionai.clinical)
    "patient_sex": "PatientSex",  # "F", "M" or "O": the Brock risk model's sex
}
"""report key → DICOM keyword of the fields always reported (when present)."""
IDENTIFYING_TAGS = {"patient_name": "PatientName", "patient_id": "PatientID"}
"""report key → DICOM keyword of the fields reported only with ``include_identifiers``."""
_DATE_KEYS = ("study_date", "series_date")


def describe_dicom_input(path: str | os.PathLike, *, series_uid: str | None = None,
                         include_identifiers: bool = False) -> dict[str, str]:
    """Descriptive header fields of a DICOM input (a series folder or a multi-frame file); {} for other files.

    Args:
        path: the input as given to :func:`lunglesionai.io.ct_files.load_volume`.
        series_uid: the SeriesInstanceUID analysed in a folder of several series; None: the CT series with the
            most images.
        include_identifiers: also report PatientName and PatientID.

    Returns:
        ``{key: text}`` for the keys of :data:`DESCRIPTIVE_TAGS` (and :data:`IDENTIFYING_TAGS` when asked) that
        the header has; dates as YYYY-MM-DD. Never raises for header content: unreadable files are skipped.
    """
    p = Path(path)
    keywords = [*DESCRIPTIVE_TAGS.values(), *IDENTIFYING_TAGS.values(), "SeriesInstanceUID"]
    if p.is_dir():
        headers = [h for f in sorted(p.iterdir()) if f.is_file() and (h := _header(f, keywords)) is not None]
    else:
        header = _header(p, keywords)
        headers = [header] if header is not None else []
    headers = [h for h in headers if str(h.get("Modality", "")) in ("CT", "")]
    if not headers:
        return {}
    counts = Counter(str(h.get("SeriesInstanceUID", "")) for h in headers)
    uid = series_uid if series_uid is not None else counts.most_common(1)[0][0]
    chosen = next((h for h in headers if str(h.get("SeriesInstanceUID", "")) == uid), headers[0])
    fields = dict(DESCRIPTIVE_TAGS, **(IDENTIFYING_TAGS if include_identifiers else {}))
    description = {}
    for key, keyword in fields.items():
        value = str(chosen.get(keyword, "") or "").strip()
        if value:
            description[key] = _iso_date(value) if key in _DATE_KEYS else sanitize_text(value, 120)
    return description


def _header(path: Path, keywords: list[str]) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=keywords)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError) as exc:
        logger.debug("%s: not read for the report's description (%s)", path, exc)
        return None


def _iso_date(value: str) -> str:
    """DICOM DA (YYYYMMDD) → YYYY-MM-DD; anything else sanitised as it is."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else sanitize_text(value)
