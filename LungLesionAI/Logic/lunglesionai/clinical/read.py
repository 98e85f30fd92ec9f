"""The clinical read of one report: Lung-RADS per nodule and for the exam, Brock risk, Fleischner block.

:func:`apply_clinical_read` takes an analysed :class:`lunglesionai.core.findings.Report` and returns a new one
(the input is not modified) whose nodule and mass findings carry ``lung_rads``, ``lung_rads_reason`` and
``brock_risk``, and whose ``exam`` gains ``lung_rads``, ``modifiers``, ``management``, ``fleischner``,
``indication``, ``assumed``, ``highest_risk_finding`` and ``decision_support_note``.

Rules of this module (each one a choice the reader can see):

* Findings of kind "lesion" (universal lesion detection) get no Lung-RADS category and no Brock risk.
* Findings the reader rejected (``status == "rejected"``) are not nodules: no category, no risk, not counted.
* Masses (kind "mass", lesions over 30 mm) get Lung-RADS 4B, the row "solid nodule ≥ 15 mm"; their Brock risk
  is computed but extrapolates the model beyond the PanCan nodules.
* Nodules: :func:`nodule_facts` builds the Lung-RADS facts. Without a prior comparison every nodule is
  "baseline"; ``follow_up`` (issue 16, prior comparison) gives per finding id the status, prior sizes, interval
  and prior category. A nodule without texture is read as solid (the strictest size rows), a part-solid nodule
  without a measured solid component is read with its whole diameter as the solid component (the higher
  category), and both say so in ``lung_rads_reason``.
* Size: ``mean_diameter_mm``, else the mean of the long and short axis, else the equivalent diameter. Brock uses
  the longest axial diameter (``long_axis_mm``), as PanCan measured it.
* Spiculation (Brock) and suspicious features (Lung-RADS 4X) are not decided here: they come from
  ``Finding.extra["spiculated"]`` and ``Finding.extra["suspicious_features"]`` (booleans) when another stage sets
  them; a missing spiculation is taken as absent and "spiculation" joins ``exam["assumed"]``.
* Exam Lung-RADS: the highest category of the counted nodules and masses; "0" when ``exam["lungs_fully_covered"]``
  is False (then the management also names the highest category seen, from 3 up).
* Fleischner (``indication == "incidental"``): the most suspicious non-calcified nodule (highest Brock risk, then
  largest) guides the recommendation, as the guideline says for multiple nodules; calcified nodules are not
  counted (the guideline is for non-calcified nodules).
* ``exam["assumed"]`` lists the patient values that took a default and are used: age, sex, family history and
  emphysema (Brock); immunocompromised and known cancer only for incidental exams (Fleischner).
* ``highest_risk_finding``: the counted, non-calcified nodule or mass with the highest Brock risk.
* ``patient_given``: the patient values the caller gave (``PatientInfo`` fields that were not None), so that a
  later re-read (after a reader's edit in Slicer, or of a saved folder) starts from the same inputs.

Sources:
    :mod:`lunglesionai.clinical.lung_rads` (ACR Lung-RADS v2022), :mod:`lunglesionai.clinical.fleischner`
    (MacMahon et al., Radiology 2017;284(1):228-243), :mod:`lunglesionai.clinical.brock` (McWilliams et al.,
    NEJM 2013;369:910-919); the choices above are this project's, not the guidelines'.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping, Optional, Sequence

from lunglesionai.clinical.brock import BrockInputs, brock_risk, is_upper_lobe
from lunglesionai.clinical.fleischner import INDICATIONS, RISK_LEVELS, fleischner_read
from lunglesionai.clinical.lung_rads import MANAGEMENT, NoduleFacts, categorize, category_rank, exam_category
from lunglesionai.clinical.patient import PatientInfo, resolve_patient
from lunglesionai.core.findings import Finding, Report

__all__ = [
    "BROCK_ASSUMPTIONS",
    "DECISION_SUPPORT_NOTE",
    "FLEISCHNER_ASSUMPTIONS",
    "FOLLOW_UP_KEYS",
    "MODIFIERS",
    "apply_clinical_read",
    "nodule_facts",
]

DECISION_SUPPORT_NOTE = (
    "Lung-RADS, Fleischner and Brock results are computed decision support from automatic measurements, not a "
    "diagnosis: a radiologist must check the findings, sizes and categories before they are used.")
"""``exam["decision_support_note"]``."""
MODIFIERS = ("S",)
"""Lung-RADS modifiers the caller may add ("S": clinically significant findings other than lung cancer)."""
FOLLOW_UP_KEYS = ("status", "prior_mean_diameter_mm", "prior_solid_component_mean_diameter_mm", "interval_months",
                  "prior_category")
"""Keys a ``follow_up`` entry may hold (the :class:`lunglesionai.clinical.lung_rads.NoduleFacts` fields)."""
BROCK_ASSUMPTIONS = ("age", "sex", "family_history", "emphysema")
"""Patient values the Brock model uses (reported in ``assumed`` when defaulted)."""
FLEISCHNER_ASSUMPTIONS = ("immunocompromised", "known_cancer")
"""Patient values only the Fleischner applicability uses (reported for incidental exams)."""
SPICULATED_KEY = "spiculated"
"""``Finding.extra`` key of a boolean spiculation reading (absent: not spiculated, assumed)."""
SUSPICIOUS_KEY = "suspicious_features"
"""``Finding.extra`` key of a boolean "additional suspicious features" flag (Lung-RADS 4X)."""
JUXTAPLEURAL_SHAPE_KEY = "benign_juxtapleural_shape"
"""``Finding.extra`` key: True when a reader confirmed a juxtapleural nodule's smooth margins and oval, lentiform or
triangular shape (:class:`lunglesionai.clinical.lung_rads.NoduleFacts`); never set by the pipeline."""
_MASS_CATEGORY = ("4B", "mass over 30 mm: row solid ≥ 15 mm")


def apply_clinical_read(report: Report, patient: PatientInfo, indication: str, *, modifiers: Sequence[str] = (),
                        fleischner_risk: Optional[str] = None,
                        follow_up: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Report:
    """A copy of ``report`` with the Lung-RADS, Brock and Fleischner read added (``report`` is not modified).

    Args:
        report: an analysed report; ``report.exam`` may hold ``emphysema_index_pct`` (float, %) and
            ``lungs_fully_covered`` (bool) from the pipeline; ``report.input.description`` the DICOM header's
            ``patient_age`` / ``patient_sex``.
        patient: what the user gave (None fields are taken from the header or defaulted, and reported).
        indication: "screening" (Lung-RADS; Fleischner does not apply) or "incidental" (Fleischner applies too).
        modifiers: Lung-RADS modifiers to report, a subset of :data:`MODIFIERS`.
        fleischner_risk: "low" or "high" when known; None: from the Brock risk of the most suspicious nodule.
        follow_up: finding id → ``{key: value}`` with keys of :data:`FOLLOW_UP_KEYS` (prior comparison).

    Returns:
        A new Report: findings replaced (``dataclasses.replace``), ``exam`` a new dict with the added keys.

    Raises:
        ValueError: an unknown indication, modifier or risk level; a follow-up entry for an unknown finding or
            with an unknown key or value; patient values out of range.

    Example:
        >>> read = apply_clinical_read(report, PatientInfo(age_years=70), "screening")  # doctest: +SKIP
        >>> read.exam["lung_rads"], read.findings[0].lung_rads, read.exam["assumed"]     # doctest: +SKIP
        ('3', '3', ['sex', 'family_history'])
    """
    if indication not in INDICATIONS:
        raise ValueError(f"indication must be one of {INDICATIONS}, got {indication!r}")
    if fleischner_risk is not None and fleischner_risk not in RISK_LEVELS:
        raise ValueError(f"Fleischner risk must be one of {RISK_LEVELS} or None, got {fleischner_risk!r}")
    bad = [m for m in modifiers if m not in MODIFIERS]
    if bad:
        raise ValueError(f"Lung-RADS modifiers must be among {MODIFIERS}, got {bad}")
    follow_up = dict(follow_up or {})
    _check_follow_up(report, follow_up)
    resolved, assumed = resolve_patient(patient, report.input.description, report.exam.get("emphysema_index_pct"))
    counted = [f for f in report.findings if f.kind in ("nodule", "mass") and f.status != "rejected"]
    spiculation_assumed = False
    findings = []
    for f in report.findings:
        if f.kind == "lesion":
            findings.append(f)
        elif f.status == "rejected":
            findings.append(replace(f, lung_rads=None, lung_rads_reason=None, brock_risk=None))
        else:
            category, reason = _lung_rads(f, follow_up.get(f.id, {}))
            risk = _brock(f, resolved, len(counted))
            spiculation_assumed |= risk is not None and not isinstance(f.extra.get(SPICULATED_KEY), bool)
            findings.append(replace(f, lung_rads=category, lung_rads_reason=reason, brock_risk=risk))
    read = [f for f in findings if f.kind in ("nodule", "mass") and f.status != "rejected"]
    exam = dict(report.exam)
    exam.update(_exam_lung_rads(read, report.exam.get("lungs_fully_covered"), modifiers))
    exam["fleischner"] = _fleischner(read, resolved, indication, fleischner_risk, "age" in assumed)
    exam["indication"] = indication
    used = BROCK_ASSUMPTIONS + (FLEISCHNER_ASSUMPTIONS if indication == "incidental" else ())
    exam["assumed"] = [a for a in assumed if a in used] + (["spiculation"] if spiculation_assumed else [])
    ranked = [f for f in read if f.brock_risk is not None and not f.calcified]
    exam["highest_risk_finding"] = max(ranked, key=lambda f: f.brock_risk).id if ranked else None
    exam["decision_support_note"] = DECISION_SUPPORT_NOTE
    exam["patient_given"] = {k: v for k, v in asdict(patient).items() if v is not None}
    return replace(report, findings=findings, exam=exam)


def nodule_facts(finding: Finding, follow_up: Optional[Mapping[str, Any]] = None) -> tuple[NoduleFacts, list[str]]:
    """The Lung-RADS facts of a nodule finding, and what had to be stood in for.

    Args:
        finding: a finding with a size (``mean_diameter_mm``, the long/short axes or ``diameter_mm``).
        follow_up: prior-comparison values (keys of :data:`FOLLOW_UP_KEYS`); None or {}: baseline.

    Returns:
        (facts, notes): notes such as "texture unknown: read as solid" for ``lung_rads_reason``.

    Raises:
        ValueError: the finding has no size, or the follow-up values are out of range.
    """
    notes = []
    mean = _mean_diameter_mm(finding)
    if mean is None:
        raise ValueError(f"finding {finding.id} has no size: no Lung-RADS category")
    texture = finding.texture
    if texture is None:
        texture = "solid"
        notes.append("texture unknown: read as solid")
    solid = finding.solid_component_mean_diameter_mm
    if texture == "part-solid" and solid is None:
        solid = mean
        notes.append("solid component not measured: whole diameter used")
    facts = NoduleFacts(texture=texture, mean_diameter_mm=mean,
                        solid_component_mean_diameter_mm=None if solid is None else float(solid),
                        calcified=finding.calcified is True, attachment=finding.attachment,
                        suspicious_features=finding.extra.get(SUSPICIOUS_KEY) is True,
                        benign_juxtapleural_shape=finding.extra.get(JUXTAPLEURAL_SHAPE_KEY) is True,
                        **dict(follow_up or {}))
    return facts, notes


def _lung_rads(finding: Finding, follow_up: Mapping[str, Any]) -> tuple[Optional[str], Optional[str]]:
    """Category and reason of a nodule or mass (None, None for a nodule without any size)."""
    if finding.kind == "mass":
        if finding.extra.get(SUSPICIOUS_KEY) is True:
            return "4X", f"{_MASS_CATEGORY[1]}; additional suspicious features (category 4B → 4X)"
        return _MASS_CATEGORY
    if _mean_diameter_mm(finding) is None:
        return None, None
    facts, notes = nodule_facts(finding, follow_up)
    category, reason = categorize(facts)
    return category, "; ".join([reason, *notes])


def _brock(finding: Finding, patient: PatientInfo, nodule_count: int) -> Optional[float]:
    """Brock risk of a counted nodule or mass (None without any size)."""
    size = next((float(s) for s in (finding.long_axis_mm, _mean_diameter_mm(finding)) if s is not None), None)
    if size is None or size <= 0:
        return None
    inputs = BrockInputs(
        age_years=float(patient.age_years), female=patient.sex == "F", family_history=patient.family_history,
        emphysema=patient.emphysema, nodule_size_mm=size, texture=finding.texture or "solid",
        upper_lobe=is_upper_lobe(finding.location) is True, nodule_count=max(1, nodule_count),
        spiculation=finding.extra.get(SPICULATED_KEY) is True)
    return brock_risk(inputs)


def _exam_lung_rads(read: list[Finding], lungs_fully_covered: Optional[bool],
                    modifiers: Sequence[str]) -> dict[str, Any]:
    """``lung_rads``, ``modifiers`` and ``management`` of the exam."""
    categories = [f.lung_rads for f in read]
    category = exam_category(categories, lungs_fully_covered)
    management = MANAGEMENT[category]
    if category == "0":
        seen = exam_category(categories, True)
        if category_rank(seen) >= category_rank("3"):
            management += f" Highest nodule category seen meanwhile: {seen} ({MANAGEMENT[seen]})"
    return {"lung_rads": category, "modifiers": list(modifiers), "management": management}


def _fleischner(read: list[Finding], patient: PatientInfo, indication: str, risk: Optional[str],
                age_assumed: bool) -> dict[str, Any]:
    """The exam's Fleischner block from its counted, non-calcified nodules (the most suspicious one guides)."""
    nodules = [f for f in read if f.kind == "nodule" and not f.calcified and _mean_diameter_mm(f) is not None]
    worst = max(nodules, key=lambda f: (f.brock_risk or 0.0, _mean_diameter_mm(f)), default=None)
    return fleischner_read(
        indication=indication, age_years=float(patient.age_years), immunocompromised=patient.immunocompromised,
        known_cancer=patient.known_cancer, nodule_count=len(nodules),
        mass_present=any(f.kind == "mass" for f in read),
        texture=None if worst is None else (worst.texture or "solid"),
        mean_diameter_mm=None if worst is None else _mean_diameter_mm(worst),
        solid_component_mean_diameter_mm=None if worst is None else worst.solid_component_mean_diameter_mm,
        risk=risk, brock_risk=None if worst is None else worst.brock_risk, age_assumed=age_assumed)


def _mean_diameter_mm(finding: Finding) -> Optional[float]:
    """``mean_diameter_mm``, else the mean of the axes, else the equivalent diameter (None if none is known)."""
    if finding.mean_diameter_mm is not None:
        return float(finding.mean_diameter_mm)
    if finding.long_axis_mm is not None and finding.short_axis_mm is not None:
        return (float(finding.long_axis_mm) + float(finding.short_axis_mm)) / 2.0
    return None if finding.diameter_mm is None else float(finding.diameter_mm)


def _check_follow_up(report: Report, follow_up: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise ValueError for follow-up entries of unknown findings or with unknown keys."""
    ids = {f.id for f in report.findings if f.kind == "nodule"}
    for finding_id, values in follow_up.items():
        if finding_id not in ids:
            raise ValueError(f"follow-up given for {finding_id!r}, which is not a nodule of this report")
        unknown = sorted(set(values) - set(FOLLOW_UP_KEYS))
        if unknown:
            raise ValueError(f"follow-up of {finding_id!r} has unknown keys {unknown}; allowed: {FOLLOW_UP_KEYS}")
