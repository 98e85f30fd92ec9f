"""The project's words, as data: stage names, detectors, devices, finding kinds and review states, texture and
invasiveness-surrogate classes, DeepLesion lesion types.

Standard library only (no numpy), so that the Slicer panel and the background runner can import it before the
package's dependencies are installed; every module that needs one of these lists imports it from here instead of
repeating it.
"""

from __future__ import annotations

__all__ = [
    "DEEPLESION_TYPES",
    "DEFAULT_DETECTOR",
    "DETECTOR_NAMES",
    "DEVICES",
    "FINDING_KINDS",
    "INVASIVENESS_CLASSES",
    "LIDC_CALCIFICATION_PATTERNS",
    "LIDC_BENIGN_CALCIFICATION_PATTERNS",
    "LIDC_RATED_ATTRIBUTES",
    "LUNG_FINDING_KINDS",
    "NO_LUNG_WARNING",
    "NOT_RUN",
    "REVIEW_STATES",
    "STAGES",
    "TEXTURE_CLASSES",
]

STAGES = ("lung_mask", "detection", "fp_reduction", "segmentation", "measurement", "grading", "uld")
"""Pipeline stages, in running order (keys of ``Report.stages`` and ``Report.timings_s``)."""
NOT_RUN = "not run"
"""``Report.stages`` value of a stage that did not run."""
FINDING_KINDS = ("nodule", "mass", "lesion")
"""``Finding.kind``: a lung nodule (3–30 mm, detection pipeline), a lung mass (over 30 mm, the classical mass rule of
``stages.masses``; Fleischner glossary) or a lesion of universal lesion detection."""
LUNG_FINDING_KINDS = ("mass", "nodule")
"""The kinds the lung pipeline reports (``nodules.seg.nrrd``, ``nodules.mrk.json``, the review table's points)."""
REVIEW_STATES = ("proposed", "accepted", "rejected")
"""``Finding.status``: "proposed" (not reviewed yet), then accepted or rejected by a reader (the Slicer module's
Accept / Reject buttons)."""
NO_LUNG_WARNING = "no lung of plausible size found"
"""The start of ``Report.warnings``' entry for a scan without lungs (nothing was searched); report.html and the
panel test for it to say "not searched" instead of "no findings"."""
DETECTOR_NAMES = ("learned", "classical", "combined")
"""Nodule candidate detectors (``PipelineConfig.detector``, ``--detector``): the Retina U-Net, the multi-scale blob
filter, or both ranked together by the FP reduction."""
DEFAULT_DETECTOR = "combined"
"""The default of ``PipelineConfig.detector`` and ``--detector``."""
DEVICES = ("auto", "cpu", "cuda")
"""Where the learned stages run (``--device``); "auto" takes CUDA when torch sees a GPU."""
TEXTURE_CLASSES = ("ground-glass", "part-solid", "solid")
"""Nodule texture classes (LIDC-IDRI radiologists' ratings), in the order of the grader's texture head."""
INVASIVENESS_CLASSES = ("pre-invasive", "minimally-invasive", "invasive")
"""Invasiveness-surrogate classes (AAH/AIS, MIA, IAC as in DenseSharp), mapped one to one from texture: a CT
surrogate, not pathology."""
LIDC_RATED_ATTRIBUTES = ("spiculation", "lobulation", "margin", "sphericity")
"""LIDC-IDRI semantic ratings on a 1-5 scale predicted by the grader's attribute heads, in head order (spiculation
1 none .. 5 marked; lobulation 1 none .. 5 marked; margin 1 poorly defined .. 5 sharp; sphericity 1 linear .. 5
round). Radiologists' ratings (Armato et al., Med Phys 2011), not pathology."""
LIDC_CALCIFICATION_PATTERNS = ("popcorn", "laminated", "solid", "non-central", "central", "absent")
"""LIDC-IDRI calcification rating 1-6 in order (6 = absent), the classes of the grader's calcification head."""
LIDC_BENIGN_CALCIFICATION_PATTERNS = ("popcorn", "laminated", "solid", "central")
"""The calcification patterns read as benign (Lung-RADS v2022 category 1: complete/diffuse, central, popcorn,
concentric rings; Fleischner 2017); non-central (eccentric) calcification is not."""
DEEPLESION_TYPES = ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "pelvis")
"""DeepLesion's coarse lesion types (Yan et al., J Med Imaging 2018), in the order of ``DL_info.csv``'s
Coarse_lesion_type 1–8."""
