"""The patient facts the clinical rules need, and where each one came from: given, DICOM header, or a default.

The Brock/PanCan model needs age, sex, family history of lung cancer and emphysema; the Fleischner guideline
needs the age (it applies from 35 years) and whether the patient is immunocompromised or has a known cancer
(then it does not apply). :func:`resolve_patient` fills each field from, in order:

1. the value given (command-line options, the Slicer panel): :class:`PatientInfo` fields that are not None;
2. the DICOM header of the input, as ``Report.input.description`` holds it (keys ``patient_age``, e.g. "062Y",
   and ``patient_sex``, "F"/"M"; :mod:`lunglesionai.io.dicom_description`); for emphysema, the exam's emphysema
   index (LAA-950, % of lung voxels below −950 HU) compared with :data:`EMPHYSEMA_INDEX_THRESHOLD_PCT`;
3. the stated defaults below, and the field's name goes into the ``assumed`` list that the report shows.

Defaults (each reported as assumed, never silently):

* age :data:`DEFAULT_AGE_YEARS` = 62 years: the age at which the Brock model is centred (its age term is
  0.0287 × (age − 62)), so an unknown age neither raises nor lowers the risk; 62 is also ≥ 35, so Fleischner
  is not ruled out by an unknown age.
* sex :data:`DEFAULT_SEX` = "F": the Brock model gives women the higher risk (+0.6011 on the logit); assuming
  "F" does not understate the risk of a patient of unknown sex. Lung-RADS and Fleischner do not use sex.
* family history of lung cancer :data:`DEFAULT_FAMILY_HISTORY` = False: the common case; stated as assumed.
* emphysema: from the emphysema index when the pipeline measured it; otherwise False (assumed).
* immunocompromised, known cancer: False (assumed; they matter only for whether Fleischner applies).

Sources:
    * DICOM PS3.5 (2024) §6.2, Value Representation AS (Age String): "nnnD", "nnnW", "nnnM" or "nnnY".
    * DICOM PS3.3 C.7.1.1 (Patient Module): Patient's Sex (0010,0040) is "M", "F" or "O" (other); "O" is not
      a value of the Brock model and is treated as unknown.
    * Emphysema threshold: CT emphysema as ≥ 5 % of the lung below −950 HU (LAA-950), the COPDGene convention
      quoted e.g. by Amaza et al., Int J Chron Obstruct Pulmon Dis 2021;16:1231-1242, doi:10.2147/COPD.S284477;
      the −950 HU threshold was validated against pathology by Gevenois et al., Am J Respir Crit Care Med
      1996;154:187-192. The Brock model itself used emphysema as scored by a radiologist on the screening CT
      (McWilliams et al., NEJM 2013), not LAA-950: the index is a stand-in. Low-dose scans with sharp kernels
      raise LAA-950 (noise), so the index can overstate emphysema on such scans (not corrected here).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, fields
from typing import Mapping, Optional

__all__ = [
    "DEFAULT_AGE_YEARS",
    "DEFAULT_FAMILY_HISTORY",
    "DEFAULT_SEX",
    "EMPHYSEMA_INDEX_THRESHOLD_PCT",
    "MAX_AGE_YEARS",
    "SEXES",
    "REPORT_NAMES",
    "PatientInfo",
    "parse_dicom_age",
    "parse_dicom_sex",
    "resolve_patient",
]

logger = logging.getLogger(__name__)

SEXES = ("F", "M")
"""``PatientInfo.sex`` values (DICOM Patient's Sex without "O")."""
DEFAULT_AGE_YEARS = 62.0
"""Age assumed when none is given or in the header: the Brock model's centring age (years)."""
DEFAULT_SEX = "F"
"""Sex assumed when none is given or in the header: the Brock model's higher-risk value."""
DEFAULT_FAMILY_HISTORY = False
"""Family history of lung cancer assumed when none is given."""
EMPHYSEMA_INDEX_THRESHOLD_PCT = 5.0
"""LAA-950 (% of lung voxels below −950 HU) from which emphysema counts as present (COPDGene convention)."""
MAX_AGE_YEARS = 130.0
"""Largest plausible age (years); larger values are refused as input errors."""
REPORT_NAMES = {"age_years": "age", "sex": "sex", "family_history": "family_history", "emphysema": "emphysema",
                "immunocompromised": "immunocompromised", "known_cancer": "known_cancer"}
"""``PatientInfo`` field → the name report.json's ``exam["assumed"]`` uses for it."""
_BOOL_FIELDS = ("family_history", "emphysema", "immunocompromised", "known_cancer")
_DICOM_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_DAYS_PER_YEAR = {"D": 365.25, "W": 365.25 / 7.0, "M": 12.0, "Y": 1.0}
_AGE_KEYS = ("patient_age", "PatientAge")
_SEX_KEYS = ("patient_sex", "PatientSex")


@dataclass(frozen=True)
class PatientInfo:
    """What is known about the patient; None = not known (``resolve_patient`` fills it).

    Args:
        age_years: age in years at the scan, 0-130.
        sex: "F" or "M".
        family_history: a first-degree relative had lung cancer (Brock's "family history of lung cancer").
        emphysema: emphysema present on the CT.
        immunocompromised: the patient is immunocompromised (the Fleischner guideline does not apply).
        known_cancer: the patient has a known primary cancer (the Fleischner guideline does not apply).

    Raises:
        ValueError: an age outside 0-130 years or not finite, a sex other than "F"/"M", a flag that is not a bool.

    Example:
        >>> PatientInfo(age_years=70, sex="M").family_history is None
        True
    """

    age_years: Optional[float] = None
    sex: Optional[str] = None
    family_history: Optional[bool] = None
    emphysema: Optional[bool] = None
    immunocompromised: Optional[bool] = None
    known_cancer: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.age_years is not None and (isinstance(self.age_years, bool)
                                           or not isinstance(self.age_years, (int, float))
                                           or not math.isfinite(self.age_years)
                                           or not 0.0 <= self.age_years <= MAX_AGE_YEARS):
            raise ValueError(f"patient age must be a number of years in 0-{MAX_AGE_YEARS:.0f}, got {self.age_years!r}")
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"patient sex must be one of {SEXES}, got {self.sex!r}")
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"PatientInfo.{name} must be True, False or None, got {value!r}")


def parse_dicom_age(text: str) -> Optional[float]:
    """Years from a DICOM Age String ("062Y", "006M", "010W", "003D"); None when it is not one.

    Raises:
        Nothing: header content never stops an analysis; an unreadable value is None.

    Example:
        >>> parse_dicom_age("062Y"), parse_dicom_age("006M"), parse_dicom_age("unknown")
        (62.0, 0.5, None)
    """
    match = _DICOM_AGE.match(str(text))
    if match is None:
        return None
    years = int(match.group(1)) / _DAYS_PER_YEAR[match.group(2).upper()]
    return years if years <= MAX_AGE_YEARS else None


def parse_dicom_sex(text: str) -> Optional[str]:
    """"F" or "M" from a DICOM Patient's Sex value; None for "O", empty or anything else.

    Example:
        >>> parse_dicom_sex("F"), parse_dicom_sex(" m "), parse_dicom_sex("O")
        ('F', 'M', None)
    """
    value = str(text).strip().upper()
    return value if value in SEXES else None


def resolve_patient(given: PatientInfo, dicom_description: Mapping[str, str],
                    emphysema_index_pct: Optional[float]) -> tuple[PatientInfo, list[str]]:
    """Every field of ``given`` filled in: given value, else DICOM header / emphysema index, else the default.

    Args:
        given: values from the command line or the panel (None = not given).
        dicom_description: ``Report.input.description`` (keys ``patient_age``, ``patient_sex``; the DICOM
            keywords ``PatientAge``/``PatientSex`` are read too); {} for non-DICOM inputs.
        emphysema_index_pct: % of lung voxels below −950 HU (``Report.exam["emphysema_index_pct"]``), or None
            when not measured.

    Returns:
        (resolved, assumed): a PatientInfo with no None field, and the report names (:data:`REPORT_NAMES`) of the
        fields that took a default, in field order, e.g. ``["age", "sex", "family_history"]``.

    Raises:
        ValueError: ``emphysema_index_pct`` is not a finite number in 0-100.

    Example:
        >>> resolved, assumed = resolve_patient(PatientInfo(sex="M"), {"patient_age": "071Y"}, 2.0)
        >>> resolved.age_years, resolved.sex, resolved.emphysema, assumed
        (71.0, 'M', False, ['family_history', 'immunocompromised', 'known_cancer'])
    """
    if emphysema_index_pct is not None and (not math.isfinite(emphysema_index_pct)
                                            or not 0.0 <= emphysema_index_pct <= 100.0):
        raise ValueError(f"emphysema index must be a percentage in 0-100, got {emphysema_index_pct!r}")
    from_header = {
        "age_years": _first(dicom_description, _AGE_KEYS, parse_dicom_age),
        "sex": _first(dicom_description, _SEX_KEYS, parse_dicom_sex),
        "emphysema": None if emphysema_index_pct is None else emphysema_index_pct >= EMPHYSEMA_INDEX_THRESHOLD_PCT,
    }
    defaults = {"age_years": DEFAULT_AGE_YEARS, "sex": DEFAULT_SEX, "family_history": DEFAULT_FAMILY_HISTORY,
                "emphysema": False, "immunocompromised": False, "known_cancer": False}
    values, assumed = {}, []
    for f in fields(PatientInfo):
        value = getattr(given, f.name)
        if value is None:
            value = from_header.get(f.name)
        if value is None:
            value = defaults[f.name]
            assumed.append(REPORT_NAMES[f.name])
        values[f.name] = value
    return PatientInfo(**values), assumed


def _first(description: Mapping[str, str], keys: tuple[str, ...], parse) -> object:
    """The first key of ``keys`` in ``description`` whose value ``parse`` reads (None if none)."""
    for key in keys:
        if key in description:
            value = parse(description[key])
            if value is None:
                logger.warning("DICOM header %s %r is not usable; a given value or the default is used", key,
                               description[key])
            else:
                return value
    return None
