"""lunglesionai.clinical: guideline rules on top of the analysis (level 4 of :mod:`lunglesionai.core.layers`).

One module per rule, each with its source cited and a test per row of its source table:

* :mod:`~lunglesionai.clinical.lung_rads`: ACR Lung-RADS v2022 categories and management (screening CT);
* :mod:`~lunglesionai.clinical.fleischner`: Fleischner Society 2017 recommendations (incidental nodules);
* :mod:`~lunglesionai.clinical.brock`: Brock/PanCan probability of cancer (McWilliams et al., NEJM 2013);
* :mod:`~lunglesionai.clinical.patient`: the patient facts they need, with their origin and defaults;
* :mod:`~lunglesionai.clinical.read`: :func:`apply_clinical_read`, all of it on one report.

The results are decision support computed from automatic measurements, not a diagnosis.
"""

from lunglesionai.clinical.brock import BrockInputs, brock_risk
from lunglesionai.clinical.fleischner import fleischner_read, table_recommendation
from lunglesionai.clinical.lung_rads import MANAGEMENT, NoduleFacts, categorize, exam_category
from lunglesionai.clinical.patient import PatientInfo, resolve_patient
from lunglesionai.clinical.read import apply_clinical_read
from lunglesionai.core.rounding import round_half_up

__all__ = [
    "MANAGEMENT",
    "BrockInputs",
    "NoduleFacts",
    "PatientInfo",
    "apply_clinical_read",
    "brock_risk",
    "categorize",
    "exam_category",
    "fleischner_read",
    "resolve_patient",
    "round_half_up",
    "table_recommendation",
]
