"""The clinical read of a result under review: its inputs, the re-read after an edit, and the exam summary text.

A reviewed result must keep its Lung-RADS categories, Brock risks and Fleischner block in step with what the reader
changed (an outline, an axis, a rejection). :func:`reread` runs :func:`lunglesionai.clinical.read.apply_clinical_read`
again on the whole report (the exam category is the highest of the counted nodules, so one edit can change it),
with the inputs of the first read:

* the indication and the patient values the panel sent, which the findings table keeps in the attribute
  :data:`CLINICAL_INPUTS_ATTRIBUTE` (:func:`store_clinical_inputs`, saved with the scene);
* for results opened from an output folder without that attribute: ``exam["indication"]`` of report.json and no
  given patient values, so age and sex come from the DICOM header (``report.input.description``) or the stated
  defaults. report.json does not hold values given on the command line (``--age`` …); when the first read used
  such a value (it is not in ``exam["assumed"]`` and not in the header) the re-read says so in the log.

A report that was never read (no ``exam["indication"]``, e.g. from an older version) is left as it is.

:func:`exam_summary_text` is the text shown at the top of the Slicer results: exam Lung-RADS and management,
Fleischner where it applies, emphysema index, nodule count, highest-risk nodule, assumed values and the
decision-support note. Sources: ACR Lung-RADS v2022; MacMahon et al., Radiology 2017;284(1):228-243
(doi:10.1148/radiol.2017161659); McWilliams et al., NEJM 2013;369:910-919 (doi:10.1056/NEJMoa1214726).
No Slicer import here: these functions take and return a Report and a table node's attribute text.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from typing import Any, Mapping, Optional

from lunglesionai.clinical.patient import PatientInfo
from lunglesionai.core.findings import Finding, Report

__all__ = [
    "CLINICAL_INPUTS_ATTRIBUTE",
    "clinical_inputs_json",
    "clinical_inputs_from_json",
    "reread",
    "location_text",
    "brock_percent",
    "exam_summary_text",
]

logger = logging.getLogger(__name__)

#: Findings-table attribute: {"indication": str, "patient": {PatientInfo field: value or null}} (JSON).
CLINICAL_INPUTS_ATTRIBUTE = "LungLesionAI.ClinicalInputs"
_ASSUMED_LABELS = {"family_history": "family history of lung cancer", "known_cancer": "known cancer"}
_HEADER_KEYS = {"age": ("patient_age", "PatientAge"), "sex": ("patient_sex", "PatientSex")}


def clinical_inputs_json(patient: PatientInfo, indication: str) -> str:
    """The attribute text of :data:`CLINICAL_INPUTS_ATTRIBUTE` (what the user gave; None = not given).

    Raises:
        ValueError: ``indication`` is not "screening" or "incidental".
    """
    from lunglesionai.clinical.fleischner import INDICATIONS

    if indication not in INDICATIONS:
        raise ValueError(f"indication must be one of {INDICATIONS}, got {indication!r}")
    return json.dumps({"indication": indication, "patient": asdict(patient)})


def clinical_inputs_from_json(text: Optional[str], report: Report) -> tuple[PatientInfo, str]:
    """The inputs to read ``report`` again with: the stored attribute text, else report.json's indication.

    Args:
        text: the table's :data:`CLINICAL_INPUTS_ATTRIBUTE` value (None or "" when absent).
        report: the result's report (``exam["indication"]``, ``exam["assumed"]``, the DICOM description).

    Returns:
        (patient values given, indication); PatientInfo() when none were stored.

    Raises:
        ValueError: stored values out of range (see :class:`lunglesionai.clinical.patient.PatientInfo`).
    """
    if text:
        stored = json.loads(text)
        known = {f.name for f in fields(PatientInfo)}
        return PatientInfo(**{k: v for k, v in stored.get("patient", {}).items() if k in known}), stored["indication"]
    exam = report.exam
    indication = str(exam.get("indication", "screening"))
    if isinstance(exam.get("patient_given"), dict):  # recorded by the read itself (CLI runs included)
        known = {f.name for f in fields(PatientInfo)}
        return PatientInfo(**{k: v for k, v in exam["patient_given"].items() if k in known}), indication
    description = report.input.description or {}
    used = ["age", "sex", "family_history"] + (["immunocompromised", "known_cancer"] if indication == "incidental"
                                               else [])
    lost = [name for name in used if name not in exam.get("assumed", [])
            and not any(key in description for key in _HEADER_KEYS.get(name, ()))]
    if lost and "indication" in exam:
        logger.warning("the first read used given patient values (%s) that report.json does not hold; the re-read "
                       "takes them from the DICOM header or the defaults", ", ".join(lost))
    return PatientInfo(), indication


def reread(report: Report, patient: PatientInfo, indication: str) -> Report:
    """``report`` read again (Lung-RADS, Brock, Fleischner), keeping its Lung-RADS modifiers; unchanged when it
    was never read (no ``exam["indication"]``).

    Raises:
        ValueError: as :func:`lunglesionai.clinical.read.apply_clinical_read`.
    """
    from lunglesionai.clinical.read import apply_clinical_read

    if "indication" not in report.exam:
        return report
    return apply_clinical_read(report, patient, indication, modifiers=list(report.exam.get("modifiers", [])))


def location_text(location: Optional[Mapping[str, Any]]) -> str:
    """"right, upper zone" (a zone, not a lobe), "left, LUL" when the lobe is known, "" when not located."""
    if not location:
        return ""
    if location.get("lobe"):
        return f"{location['side']}, {location['lobe']}"
    return f"{location['side']}, {location['zone']} zone" if location.get("zone") else str(location["side"])


def brock_percent(risk: Optional[float]) -> float:
    """Brock risk in % with 1 decimal (NaN for None): the table's "Brock risk (%)" column."""
    return float("nan") if risk is None else round(100.0 * float(risk), 1)


def exam_summary_text(report: Report) -> str:
    """The exam summary shown at the top of the Slicer results (plain text, one fact per line).

    Returns:
        e.g. "Lung-RADS 4A (screening): 3-month LDCT …\\nFleischner: does not apply (screening) …\\n
        Emphysema index 3.2 % …\\nNodules: 2; highest Brock risk: N1 (12.3 %)\\nAssumed: sex …\\nDecision
        support …"; a line saying the clinical read was not run when the report has none.
    """
    exam = report.exam
    lines = []
    if "lung_rads" in exam:
        modifiers = "".join(exam.get("modifiers", []))
        lines.append(f"Lung-RADS {exam['lung_rads']}{modifiers} ({exam.get('indication', '?')}): "
                     f"{exam.get('management', '')}".rstrip(": "))
    else:
        lines.append("Clinical read (Lung-RADS, Fleischner, Brock) not run for this result.")
    fleischner = exam.get("fleischner")
    if isinstance(fleischner, Mapping):
        text = fleischner.get("recommendation") if fleischner.get("applies") else "does not apply"
        note = fleischner.get("note")
        lines.append(f"Fleischner 2017: {text}" + (f" ({note})" if note else ""))
    if exam.get("emphysema_index_pct") is not None:
        lines.append(f"Emphysema index (LAA-950): {float(exam['emphysema_index_pct']):.1f} % of lung voxels "
                     "below -950 HU")
    count = exam.get("nodule_count", len(report.nodules()))
    lines.append(f"Nodules: {count}; highest Brock risk: {_highest_risk_text(report, exam.get('highest_risk_finding'))}")
    if "assumed" in exam:
        assumed = [_ASSUMED_LABELS.get(a, a.replace("_", " ")) for a in exam["assumed"]]
        lines.append("Assumed (not given, not in the DICOM header): " + (", ".join(assumed) or "none"))
    if exam.get("lungs_fully_covered") is False:
        lines.append("The lungs are not fully covered by the scan (Lung-RADS 0).")
    if "decision_support_note" in exam:
        lines.append(str(exam["decision_support_note"]))
    return "\n".join(lines)


def _highest_risk_text(report: Report, finding_id: Optional[str]) -> str:
    finding: Optional[Finding] = next((f for f in report.findings if f.id == finding_id), None)
    if finding is None or finding.brock_risk is None:
        return "none"
    where = location_text(finding.location)
    return f"{finding.id} ({100.0 * finding.brock_risk:.1f} %, Lung-RADS {finding.lung_rads or '-'}" + (
        f", {where})" if where else ")")
