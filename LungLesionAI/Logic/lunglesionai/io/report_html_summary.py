"""The top of ``report.html``: the study (from the DICOM header) and the exam summary of the clinical read.

The exam summary shows what ``Report.exam`` holds (filled by the pipeline and by
``lunglesionai.clinical.read.apply_clinical_read``, which this module, in the io layer, does not import): the exam's
Lung-RADS v2022 category (ACR) and its management, the indication, the Fleischner 2017 recommendation (MacMahon
et al., Radiology 2017;284(1):228-243) or why it does not apply, the emphysema index (% of lung voxels below
−950 HU, Gevenois et al. 1996), the nodule count, the highest-risk nodule (Brock/PanCan, McWilliams et al., NEJM
2013;369:910-919), the patient values that were assumed, and a line saying that this is decision support, not a
diagnosis. Functions return lists of HTML lines with every value escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any, Optional

from lunglesionai.core.findings import Finding, Report
from lunglesionai.io.findings_table import fixed
from lunglesionai.io.report_html_followup import prior_exam_rows

__all__ = [
    "DECISION_SUPPORT_TEXT",
    "STUDY_KEYS",
    "brock_text",
    "exam_summary_html",
    "lung_rads_badge",
    "study_html",
]

DECISION_SUPPORT_TEXT = ("Decision support, not a diagnosis: the categories and risks are computed from automatic "
                         "measurements and must be checked by a radiologist.")
"""The line shown when the report carries no ``exam["decision_support_note"]`` of its own."""

STUDY_KEYS = {
    "study_description": "Study", "series_description": "Series", "study_date": "Study date",
    "series_date": "Series date", "patient_name": "Patient name", "patient_id": "Patient ID",
    "patient_age": "Patient age", "patient_sex": "Patient sex",
}
"""``InputInfo.description`` keys shown in the study block (in this order) and their labels; the patient's name
and ID are in the description only with ``--include-identifiers``."""

_INDICATIONS = {"screening": "screening (Lung-RADS v2022)",
                "incidental": "incidental finding (Fleischner 2017; Lung-RADS shown for reference)"}
_ASSUMED_LABELS = {"family_history": "family history of lung cancer", "known_cancer": "known cancer"}
_CATEGORY_CLASS = {"0": "lr0", "1": "lr1", "2": "lr1", "3": "lr3", "4A": "lr4", "4B": "lr4", "4X": "lr4"}


def brock_text(risk: Optional[float]) -> str:
    """A Brock risk in [0, 1] as a percentage for people: "12.3 %", "< 0.1 %" (no-break space before "%"), or
    "–" for None."""
    if risk is None:
        return "–"
    return "< 0.1\u00a0%" if risk < 0.0005 else f"{fixed(100.0 * risk, 1)}\u00a0%"


def lung_rads_badge(category: Optional[str]) -> str:
    """HTML of a Lung-RADS category as a coloured badge ("–" when None); 1-2 green, 3 amber, 4A-4X red."""
    if not category:
        return "–"
    css = _CATEGORY_CLASS.get(category, "lr0")
    return f'<span class="lr {css}">{html.escape(category)}</span>'


def study_html(description: Mapping[str, str]) -> list[str]:
    """``<dt>/<dd>`` lines of the study: the :data:`STUDY_KEYS` present in ``description`` (DICOM header fields),
    or one line saying that the input carries no study description (not DICOM)."""
    esc = html.escape
    shown = [(label, description[key]) for key, label in STUDY_KEYS.items() if description.get(key)]
    if not shown:
        return ["<dt>Study</dt><dd>no study description or date: the input is not a DICOM series</dd>"]
    return [f"<dt>{esc(label)}</dt><dd>{esc(str(value))}</dd>" for label, value in shown]


def _assumed_text(assumed: list[str]) -> str:
    if not assumed:
        return "none: all values were given or read from the DICOM header"
    names = ", ".join(_ASSUMED_LABELS.get(a, a.replace("_", " ")) for a in assumed)
    return (f"{names}: defaults, not this patient's values (give age, sex and family history with --age, --sex, "
            "--family-history or in the Slicer panel)")


def _fleischner_html(exam: Mapping[str, Any]) -> str:
    block = exam.get("fleischner")
    if not isinstance(block, Mapping):
        return "–"
    note = html.escape(str(block.get("note") or ""))
    if block.get("applies") and block.get("recommendation"):
        return f"<strong>{html.escape(str(block['recommendation']))}</strong>" + (
            f'<br><span class="small">{note}</span>' if note else "")
    return f"does not apply: {note}" if note else "does not apply"


def _highest_risk_html(report: Report, finding_id: Optional[str]) -> str:
    if not finding_id:
        return "none (no nodule or mass with a Brock risk)"
    finding: Optional[Finding] = next((f for f in report.findings if f.id == finding_id), None)
    link = f'<a href="#{html.escape(finding_id)}">{html.escape(finding_id)}</a>'
    if finding is None:
        return link
    link += f" ({html.escape(finding.kind)})"
    size = f", mean diameter {fixed(finding.mean_diameter_mm, 1)} mm" if finding.mean_diameter_mm is not None else ""
    return (f"{link}: Brock risk {brock_text(finding.brock_risk)}, Lung-RADS {lung_rads_badge(finding.lung_rads)}"
            f"{html.escape(size)}")


def exam_summary_html(report: Report) -> list[str]:
    """HTML lines of the exam summary block (``<section id="exam">``) from ``report.exam``.

    Args:
        report: a report; ``exam`` may be empty (no clinical read: the block says so and shows what the pipeline
            measured), or hold the keys of ``schemas/report-1.json`` (``lung_rads``, ``management``,
            ``fleischner``, ``indication``, ``assumed``, ``highest_risk_finding``, ``emphysema_index_pct``,
            ``nodule_count``, ``lungs_fully_covered``, ``modifiers``, ``decision_support_note``; with a prior scan
            ``prior`` and ``resolved``, :func:`lunglesionai.io.report_html_followup.prior_exam_rows`).

    Returns:
        Lines of HTML (values escaped); the highest-risk finding links to its pictures (``#<finding id>``).
    """
    esc = html.escape
    exam = report.exam
    lines = ['<section class="exam" id="exam">', "<h2>Exam summary</h2>"]
    if exam.get("lung_rads"):
        modifiers = " ".join(str(m) for m in exam.get("modifiers") or [])
        lines.append(f'<p class="category">Lung-RADS v2022 category {lung_rads_badge(str(exam["lung_rads"]))}'
                     + (f" modifier {esc(modifiers)}" if modifiers else "") + "</p>")
        lines.append(f'<p class="management"><strong>Management:</strong> {esc(str(exam.get("management", "–")))}'
                     "</p>")
    else:
        lines.append("<p>No clinical read (Lung-RADS, Fleischner, Brock) was made for this report.</p>")
    rows: list[tuple[str, str]] = []
    if "indication" in exam:
        rows.append(("Indication", esc(_INDICATIONS.get(str(exam["indication"]), str(exam["indication"])))))
    if "fleischner" in exam:
        rows.append(("Fleischner 2017", _fleischner_html(exam)))
    if "highest_risk_finding" in exam:
        rows.append(("Highest Brock risk", _highest_risk_html(report, exam.get("highest_risk_finding"))))
    if exam.get("nodule_count") is not None:
        rows.append(("Nodules", esc(str(exam["nodule_count"]))))
    if exam.get("emphysema_index_pct") is not None:
        rows.append(("Emphysema index", esc(f"{fixed(exam['emphysema_index_pct'], 1)} % of lung voxels below "
                                            "−950 HU (LAA-950; scan-dependent)")))
    if exam.get("lungs_fully_covered") is False:
        rows.append(("Lung coverage", "<strong>incomplete</strong>: a lung is missing or cut by the scan's edge"))
    if "assumed" in exam:
        rows.append(("Assumed values", esc(_assumed_text(list(exam.get("assumed") or [])))))
    rows += prior_exam_rows(exam)
    if rows:
        lines.append('<table class="kv">' + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
                     + "</table>")
    note = str(exam.get("decision_support_note") or DECISION_SUPPORT_TEXT)
    lines += [f'<p class="decision">{esc(note)}</p>', "</section>"]
    return lines
