"""The Brock (PanCan) probability that a lung nodule is cancer: the full model with spiculation.

    logit = 0.0287 (age − 62) + 0.6011 female + 0.2961 family history + 0.2953 emphysema
            − 5.3854 ((size / 10)^−0.5 − 1.58113883) + 0.377 part-solid − 0.1276 non-solid
            + 0.6581 upper lobe − 0.0824 (nodule count − 4) + 0.7729 spiculation − 6.7892
    risk  = 1 / (1 + exp(−logit))

Age in years; size in mm; the binary terms are 1 when present. Each continuous term is centred (age 62, size
4 mm as 1.58113883 = (4/10)^−0.5, 4 nodules), so the constant −6.7892 is the logit of a 62-year-old man with one
4 mm solid, non-spiculated, non-upper-lobe nodule among 4, without family history or emphysema (risk 0.11 %).

Inputs as the model defines them, and what the pipeline gives instead:

* nodule size: the longest diameter in mm (PanCan measured the longest axial diameter with calipers; van Riel
  et al., Eur Radiol 2017;27:4019, doi:10.1007/s00330-017-4767-2, "Dlongest-C"). :mod:`lunglesionai.clinical.read`
  passes ``long_axis_mm``.
* type: solid, part-solid, non-solid (ground-glass), read by a radiologist; the pipeline's texture comes from HU
  or the grader.
* upper lobe: RUL or LUL. The pipeline has no lobe segmentation; ``location.zone == "upper"`` (upper third of the
  lung's craniocaudal extent) stands in for it (:func:`is_upper_lobe`). This is an approximation: the upper zone
  is not the upper lobe (the LUL reaches far below the upper third; apical lower-lobe segments reach into it).
* nodule count: all nodules reported in the scan (PanCan counted every nodule of the participant's CT).
* emphysema: a radiologist's reading of the CT in PanCan; :mod:`lunglesionai.clinical.patient` uses LAA-950.
* spiculation: a radiologist's reading in PanCan; here whatever the caller knows (default: absent).

The model was derived on a first (baseline) screening CT of current or former smokers aged 50-75 (PanCan) and
validated on the BCCA chemoprevention trials; outside that population (incidental nodules, never-smokers,
masses > 30 mm) its risk is an extrapolation.

Sources:
    McWilliams A, Tammemagi MC, Mayo JR, et al. "Probability of cancer in pulmonary nodules detected on first
    screening CT". N Engl J Med 2013;369(10):910-919, doi:10.1056/NEJMoa1214726, Supplementary Appendix (full
    model with spiculation). The supplementary appendix itself was not available offline. The coefficients were
    checked against (1) the peer-reviewed table of Brock ("BU") coefficients in a 2019 comparison of prediction
    models (Eur Radiol 2019;29(10):5367-5377, doi:10.1007/s00330-019-06168-x, Table 2: the same nine
    coefficients, with the uncentred constant 0.2761, which equals −6.7892 after removing the centring terms;
    ``Testing/clinical/test_brock.py`` checks this) and (2) two independent open-source calculators (read, not
    copied), one with more digits (0.0286687, 0.296109, 0.2953112, −5.385484, 0.6581383, −0.0824156, 0.7729335,
    −6.78917), which agree with the 4-digit values used here to < 0.1 % relative risk. No worked example with a
    published numeric result was available offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = [
    "BROCK_FULL_WITH_SPICULATION",
    "TEXTURES",
    "BrockCoefficients",
    "BrockInputs",
    "brock_logit",
    "brock_risk",
    "is_upper_lobe",
    "size_term",
]

TEXTURES = ("solid", "part-solid", "ground-glass")
"""Nodule types of the model (ground-glass = non-solid)."""
UPPER_LOBES = ("RUL", "LUL")
"""Lobes that count as "upper lobe"."""


@dataclass(frozen=True)
class BrockCoefficients:
    """Coefficients of a Brock/PanCan logistic model (logit scale) and its centring values."""

    age_per_year: float
    female: float
    family_history: float
    emphysema: float
    size: float
    part_solid: float
    non_solid: float
    upper_lobe: float
    count_per_nodule: float
    spiculation: float
    constant: float
    age_centre_years: float = 62.0
    size_centre_term: float = 1.58113883
    count_centre: float = 4.0


BROCK_FULL_WITH_SPICULATION = BrockCoefficients(
    age_per_year=0.0287, female=0.6011, family_history=0.2961, emphysema=0.2953, size=-5.3854, part_solid=0.377,
    non_solid=-0.1276, upper_lobe=0.6581, count_per_nodule=-0.0824, spiculation=0.7729, constant=-6.7892,
)
"""McWilliams et al. 2013, full model with spiculation (Supplementary Appendix), 4-digit coefficients."""


@dataclass(frozen=True)
class BrockInputs:
    """The predictors of the Brock model for one nodule.

    Args:
        age_years: age in years (finite, 0-130).
        female: the patient is a woman.
        family_history: family history of lung cancer.
        emphysema: emphysema on the CT.
        nodule_size_mm: longest diameter of the nodule (mm, > 0).
        texture: "solid", "part-solid" or "ground-glass".
        upper_lobe: the nodule is in an upper lobe.
        nodule_count: number of nodules in the scan, this one included (≥ 1).
        spiculation: the nodule is spiculated.

    Raises:
        ValueError: a value outside its range or list.
    """

    age_years: float
    female: bool
    family_history: bool
    emphysema: bool
    nodule_size_mm: float
    texture: str
    upper_lobe: bool
    nodule_count: int
    spiculation: bool

    def __post_init__(self) -> None:
        if not _finite(self.age_years) or not 0.0 <= self.age_years <= 130.0:
            raise ValueError(f"Brock age must be a number of years in 0-130, got {self.age_years!r}")
        if not _finite(self.nodule_size_mm) or self.nodule_size_mm <= 0:
            raise ValueError(f"Brock nodule size must be a finite number > 0 mm, got {self.nodule_size_mm!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"Brock nodule type must be one of {TEXTURES}, got {self.texture!r}")
        if isinstance(self.nodule_count, bool) or not isinstance(self.nodule_count, int) or self.nodule_count < 1:
            raise ValueError(f"Brock nodule count must be an integer ≥ 1, got {self.nodule_count!r}")
        for name in ("female", "family_history", "emphysema", "upper_lobe", "spiculation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"BrockInputs.{name} must be True or False, got {getattr(self, name)!r}")


def size_term(nodule_size_mm: float, coefficients: BrockCoefficients = BROCK_FULL_WITH_SPICULATION) -> float:
    """The model's transformed size, (size / 10)^−0.5 − 1.58113883 (0 at 4 mm, negative above).

    Raises:
        ValueError: the size is not a finite number > 0.

    Example:
        >>> round(size_term(4.0), 6), round(size_term(10.0), 6)
        (0.0, -0.581139)
    """
    if not _finite(nodule_size_mm) or nodule_size_mm <= 0:
        raise ValueError(f"Brock nodule size must be a finite number > 0 mm, got {nodule_size_mm!r}")
    return (nodule_size_mm / 10.0) ** -0.5 - coefficients.size_centre_term


def brock_logit(inputs: BrockInputs, coefficients: BrockCoefficients = BROCK_FULL_WITH_SPICULATION) -> float:
    """The model's linear predictor (log-odds of cancer) for ``inputs``.

    Example:
        >>> round(brock_logit(BrockInputs(62, False, False, False, 4.0, "solid", False, 4, False)), 4)
        -6.7892
    """
    c = coefficients
    return (c.age_per_year * (inputs.age_years - c.age_centre_years)
            + c.female * inputs.female
            + c.family_history * inputs.family_history
            + c.emphysema * inputs.emphysema
            + c.size * size_term(inputs.nodule_size_mm, c)
            + c.part_solid * (inputs.texture == "part-solid")
            + c.non_solid * (inputs.texture == "ground-glass")
            + c.upper_lobe * inputs.upper_lobe
            + c.count_per_nodule * (inputs.nodule_count - c.count_centre)
            + c.spiculation * inputs.spiculation
            + c.constant)


def brock_risk(inputs: BrockInputs, coefficients: BrockCoefficients = BROCK_FULL_WITH_SPICULATION) -> float:
    """Probability in [0, 1] that the nodule is (or becomes, within the 2-4-year follow-up of PanCan) cancer.

    Args:
        inputs: the predictors (:class:`BrockInputs`).
        coefficients: the model (default: full model with spiculation).

    Returns:
        1 / (1 + exp(−logit)).

    Example:
        >>> inputs = BrockInputs(65, True, False, True, 12.0, "part-solid", True, 1, True)
        >>> round(brock_risk(inputs), 3)
        0.462
    """
    logit = brock_logit(inputs, coefficients)
    return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0


def is_upper_lobe(location: Optional[Mapping[str, Optional[str]]]) -> Optional[bool]:
    """Whether a finding's ``location`` is in an upper lobe; the upper zone stands in when the lobe is unknown.

    Args:
        location: ``{"side", "lobe", "zone"}`` of :class:`lunglesionai.core.findings.Finding`, or None.

    Returns:
        True/False from ``lobe`` when known (RUL, LUL); else from ``zone == "upper"`` (an approximation: a
        craniocaudal third, not a lobe); None when neither is known.

    Example:
        >>> is_upper_lobe({"side": "left", "lobe": "LLL", "zone": "upper"}), is_upper_lobe({"zone": "upper"})
        (False, True)
    """
    if not location:
        return None
    if location.get("lobe") is not None:
        return location["lobe"] in UPPER_LOBES
    if location.get("zone") is not None:
        return location["zone"] == "upper"
    return None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
