"""Fleischner Society 2017 recommendations for incidental pulmonary nodules, as tables (one entry per cell).

:func:`table_recommendation` reads the table for one nodule (the most suspicious one when there are several:
the table's own rule for multiple nodules); :func:`fleischner_read` first decides whether the guideline applies
to the exam at all and returns the report block ``{"applies", "recommendation", "note"}``.

Size. The mean of the long and short axis, rounded to the nearest whole millimetre (half up) before it is
binned (Bankier et al. 2017): 5.4 mm is 5 mm (< 6 mm), 5.5 mm is 6 mm (6-8 mm), 8.4 mm is 8 mm (6-8 mm), 8.5 mm
is 9 mm (> 8 mm). Volumes (the table's 100 and 250 mm³) are not used.

Risk. The solid-nodule rows depend on the patient's risk, "low" or "high". The guideline defines it by clinical
factors (smoking history and other known risk factors) and refers to risk calculators such as the Brock model;
it merges the ACCP's intermediate (5-65 %) and high (> 65 %) cancer-probability groups into "high". When the
caller does not give the risk, :func:`risk_from_brock` uses the Brock risk of the most suspicious nodule: below
:data:`BROCK_LOW_RISK_BELOW` (5 %, the ACCP low-probability bound) → "low", otherwise "high". This mapping is our
choice (the guideline names no threshold of its own) and the note says which risk was used and why.

When it does not apply (``applies`` False, ``recommendation`` None, the note says why): lung cancer screening
(Lung-RADS applies instead), patients younger than :data:`MIN_AGE_YEARS` (35), immunocompromised patients,
patients with a known primary cancer, an exam without nodules, and masses (lesions over 30 mm are not nodules).

Sources:
    MacMahon H, Naidich DP, Goo JM, et al. "Guidelines for Management of Incidental Pulmonary Nodules Detected on
    CT Images: From the Fleischner Society 2017". Radiology 2017;284(1):228-243, doi:10.1148/radiol.2017161659,
    Table (solid nodules: single/multiple × < 6, 6-8, > 8 mm × low/high risk; subsolid nodules: single
    ground-glass, single part-solid, multiple × < 6, ≥ 6 mm) and its scope. Bankier AA, et al. Radiology
    2017;285(2):584-600, doi:10.1148/radiol.2017162894 (measuring and rounding). The cells were checked against
    three secondary reproductions of the table (Radiopaedia's article, a radiology teaching page and World J
    Radiol 2017;9(7):304, Tables 1-4); the paper itself was not available offline, nor was the wording of its
    risk definition (paraphrased above from memory; :data:`BROCK_LOW_RISK_BELOW` is ours). Texts are
    paraphrased, not quoted.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from lunglesionai.core.rounding import round_half_up

__all__ = [
    "BROCK_LOW_RISK_BELOW",
    "INDICATIONS",
    "MIN_AGE_YEARS",
    "RISK_LEVELS",
    "SOLID_TABLE",
    "SUBSOLID_TABLE",
    "fleischner_read",
    "risk_from_brock",
    "size_bin",
    "table_recommendation",
]

INDICATIONS = ("screening", "incidental")
"""Why the CT was done: lung cancer screening (Lung-RADS) or any other reason (incidental nodules: Fleischner)."""
RISK_LEVELS = ("low", "high")
"""Patient risk levels of the Fleischner table."""
MIN_AGE_YEARS = 35.0
"""The guideline applies to patients of this age (years) or older."""
BROCK_LOW_RISK_BELOW = 0.05
"""Brock risk below which the patient counts as "low" risk when no risk level is given (ACCP low-probability
bound; our mapping)."""
TEXTURES = ("solid", "part-solid", "ground-glass")
"""Nodule textures the table distinguishes (part-solid and ground-glass are the subsolid rows)."""

SOLID_TABLE: dict[tuple[str, str, str], str] = {
    ("single", "<6", "low"): "No routine follow-up.",
    ("single", "<6", "high"): "Optional CT at 12 months.",
    ("single", "6-8", "low"): "CT at 6-12 months, then consider CT at 18-24 months.",
    ("single", "6-8", "high"): "CT at 6-12 months, then CT at 18-24 months.",
    ("single", ">8", "low"): "Consider CT at 3 months, PET/CT or tissue sampling.",
    ("single", ">8", "high"): "Consider CT at 3 months, PET/CT or tissue sampling.",
    ("multiple", "<6", "low"): "No routine follow-up.",
    ("multiple", "<6", "high"): "Optional CT at 12 months.",
    ("multiple", "6-8", "low"): "CT at 3-6 months, then consider CT at 18-24 months.",
    ("multiple", "6-8", "high"): "CT at 3-6 months, then CT at 18-24 months.",
    ("multiple", ">8", "low"): "CT at 3-6 months, then consider CT at 18-24 months.",
    ("multiple", ">8", "high"): "CT at 3-6 months, then CT at 18-24 months.",
}
"""Solid nodules: (single|multiple, size bin, risk) → recommendation (Fleischner 2017 table, paraphrased)."""
SUBSOLID_TABLE: dict[tuple[str, str], str] = {
    ("ground-glass", "<6"): "No routine follow-up.",
    ("ground-glass", ">=6"): "CT at 6-12 months to confirm persistence, then CT every 2 years until 5 years.",
    ("part-solid", "<6"): "No routine follow-up.",
    ("part-solid", ">=6"): "CT at 3-6 months to confirm persistence; if unchanged and the solid component stays "
                           "< 6 mm, annual CT for 5 years.",
    ("multiple", "<6"): "CT at 3-6 months; if stable, consider CT at 2 and 4 years.",
    ("multiple", ">=6"): "CT at 3-6 months; further management based on the most suspicious nodule(s).",
}
"""Subsolid nodules: (single ground-glass | single part-solid | multiple, size bin) → recommendation."""
_SOLID_COMPONENT_SUSPICIOUS_MM = 6
_MASS_MM = 30


def size_bin(mean_diameter_mm: float, texture: str) -> str:
    """The table's size column for a nodule: "<6", "6-8" or ">8" (solid), "<6" or ">=6" (subsolid).

    Args:
        mean_diameter_mm: mean of long and short axis (mm), unrounded; rounded to whole mm (half up) here.
        texture: "solid", "part-solid" or "ground-glass".

    Raises:
        ValueError: a size that is not positive and finite, or an unknown texture.

    Example:
        >>> size_bin(5.4, "solid"), size_bin(5.5, "solid"), size_bin(8.5, "solid"), size_bin(5.5, "ground-glass")
        ('<6', '6-8', '>8', '>=6')
    """
    if texture not in TEXTURES:
        raise ValueError(f"Fleischner texture must be one of {TEXTURES}, got {texture!r}")
    if isinstance(mean_diameter_mm, bool) or not isinstance(mean_diameter_mm, (int, float)) \
            or not math.isfinite(mean_diameter_mm) or mean_diameter_mm <= 0:
        raise ValueError(f"Fleischner mean diameter must be a finite number > 0 mm, got {mean_diameter_mm!r}")
    size = round_half_up(mean_diameter_mm)
    if texture != "solid":
        return "<6" if size < 6 else ">=6"
    return "<6" if size < 6 else ("6-8" if size <= 8 else ">8")


def table_recommendation(texture: str, mean_diameter_mm: float, *, multiple: bool, risk: str) -> tuple[str, str]:
    """The table cell for one nodule (for several nodules: the most suspicious one).

    Args:
        texture: "solid", "part-solid" or "ground-glass".
        mean_diameter_mm: its mean diameter (mm), unrounded.
        multiple: the exam has more than one nodule.
        risk: "low" or "high" (used by the solid rows only).

    Returns:
        (recommendation, cell): the paraphrased recommendation and the cell, e.g. "solid, single, 6-8 mm, low
        risk".

    Raises:
        ValueError: an unknown texture or risk level, or a size that is not positive and finite.

    Example:
        >>> table_recommendation("solid", 7.0, multiple=False, risk="high")
        ('CT at 6-12 months, then CT at 18-24 months.', 'solid, single, 6-8 mm, high risk')
    """
    if risk not in RISK_LEVELS:
        raise ValueError(f"Fleischner risk must be one of {RISK_LEVELS}, got {risk!r}")
    column = size_bin(mean_diameter_mm, texture)
    count = "multiple" if multiple else "single"
    shown = column.replace(">=", "≥ ").replace("<", "< ").replace(">", "> ") + " mm"
    if texture == "solid":
        return SOLID_TABLE[(count, column, risk)], f"solid, {count}, {shown}, {risk} risk"
    row = "multiple" if multiple else texture
    return SUBSOLID_TABLE[(row, column)], f"subsolid, {count if multiple else texture}, {shown}"


def risk_from_brock(brock_risk: float) -> str:
    """"low" below :data:`BROCK_LOW_RISK_BELOW`, else "high".

    Raises:
        ValueError: ``brock_risk`` is not a probability.

    Example:
        >>> risk_from_brock(0.049), risk_from_brock(0.05)
        ('low', 'high')
    """
    if not (isinstance(brock_risk, (int, float)) and 0.0 <= brock_risk <= 1.0):
        raise ValueError(f"Brock risk must be a probability in [0, 1], got {brock_risk!r}")
    return "low" if brock_risk < BROCK_LOW_RISK_BELOW else "high"


def fleischner_read(*, indication: str, age_years: float, immunocompromised: bool, known_cancer: bool,
                    nodule_count: int, mass_present: bool, texture: Optional[str] = None,
                    mean_diameter_mm: Optional[float] = None, solid_component_mean_diameter_mm: Optional[float] = None,
                    risk: Optional[str] = None, brock_risk: Optional[float] = None,
                    age_assumed: bool = False) -> dict[str, Any]:
    """The report's Fleischner block for one exam.

    Args:
        indication: "screening" (never applies) or "incidental".
        age_years: the patient's age; the guideline applies from 35 years.
        immunocompromised, known_cancer: exclusions of the guideline.
        nodule_count: nodules in the exam (masses not counted).
        mass_present: the exam has a lung mass (> 30 mm): outside the guideline.
        texture, mean_diameter_mm, solid_component_mean_diameter_mm: the most suspicious nodule (when
            ``nodule_count`` > 0).
        risk: "low" or "high" when known; None: from ``brock_risk`` (:func:`risk_from_brock`).
        brock_risk: Brock risk of the most suspicious nodule (needed for solid nodules when ``risk`` is None).
        age_assumed: the age is a default, not the patient's (the note says so).

    Returns:
        ``{"applies": bool, "recommendation": str | None, "note": str}``.

    Raises:
        ValueError: an unknown indication, texture or risk; a nodule count below 0; a solid nodule without a
            risk level or Brock risk; a nodule count > 0 without the nodule's texture and size.

    Example:
        >>> block = fleischner_read(indication="incidental", age_years=60, immunocompromised=False,
        ...                         known_cancer=False, nodule_count=1, mass_present=False, texture="ground-glass",
        ...                         mean_diameter_mm=4.0)
        >>> block["applies"], block["recommendation"], block["note"]
        (True, 'No routine follow-up.', 'Fleischner 2017 cell: subsolid, ground-glass, < 6 mm.')
    """
    if indication not in INDICATIONS:
        raise ValueError(f"indication must be one of {INDICATIONS}, got {indication!r}")
    if nodule_count < 0:
        raise ValueError(f"nodule count must be 0 or more, got {nodule_count}")
    reason = _not_applicable(indication, age_years, immunocompromised, known_cancer, nodule_count, mass_present)
    if reason is not None:
        return {"applies": False, "recommendation": None, "note": reason}
    if texture is None or mean_diameter_mm is None:
        raise ValueError("the most suspicious nodule's texture and mean diameter are needed")
    notes = []
    if texture == "solid" and risk is None:
        if brock_risk is None:
            raise ValueError("a solid nodule needs a risk level or its Brock risk")
        risk = risk_from_brock(brock_risk)
        notes.append(f"{risk} risk from the Brock risk {100 * brock_risk:.1f} % "
                     f"({'<' if risk == 'low' else '≥'} {100 * BROCK_LOW_RISK_BELOW:.0f} %)")
    # Subsolid rows do not depend on the risk level; "high" only fills the argument then.
    recommendation, cell = table_recommendation(texture, mean_diameter_mm, multiple=nodule_count > 1,
                                                risk=risk or "high")
    notes.insert(0, f"Fleischner 2017 cell: {cell}")
    if nodule_count > 1:
        notes.append(f"{nodule_count} nodules: the most suspicious guides management")
    if (texture == "part-solid" and solid_component_mean_diameter_mm is not None
            and round_half_up(solid_component_mean_diameter_mm) >= _SOLID_COMPONENT_SUSPICIOUS_MM):
        notes.append("solid component ≥ 6 mm: a persistent part-solid nodule like this is highly suspicious")
    if age_assumed:
        notes.append("age not known: assumed ≥ 35 years")
    return {"applies": True, "recommendation": recommendation, "note": "; ".join(notes) + "."}


def _not_applicable(indication: str, age_years: float, immunocompromised: bool, known_cancer: bool,
                    nodule_count: int, mass_present: bool) -> Optional[str]:
    """Why the guideline does not apply to this exam, or None when it does."""
    if indication == "screening":
        return "Lung cancer screening: Lung-RADS applies, not the Fleischner guideline."
    if age_years < MIN_AGE_YEARS:
        return f"Patient younger than {MIN_AGE_YEARS:.0f} years: the Fleischner guideline does not apply."
    if immunocompromised:
        return "Immunocompromised patient: the Fleischner guideline does not apply."
    if known_cancer:
        return "Known primary cancer: the Fleischner guideline does not apply (nodules may be metastases)."
    if mass_present:
        return (f"A lung mass (over {_MASS_MM} mm) is present: outside the Fleischner guideline for nodules; "
                "it needs diagnostic work-up.")
    if nodule_count == 0:
        return "No pulmonary nodule reported: no Fleischner recommendation."
    return None
