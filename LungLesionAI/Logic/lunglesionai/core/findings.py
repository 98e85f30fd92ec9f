"""The one data model between pipeline, exporters and the Slicer adapter: ``Finding`` and ``Report``.

A :class:`Report` is what ``lunglesionai analyze`` writes as ``report.json`` (schema ``lunglesionai-report/1``,
see ``schemas/report-1.json``). Every world coordinate is LPS millimetres. Fields a stage did not compute stay
``None`` (written as JSON ``null``); nothing is invented. Masks live on the analysed volume's voxel grid as a
cropped boolean array plus the (k, j, i) index of the crop's first voxel.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from typing import Any, Optional

import numpy as np

from lunglesionai.core.vocabulary import (  # noqa: F401  (re-exported for callers of lunglesionai.core.findings)
    FINDING_KINDS,
    INVASIVENESS_CLASSES,
    LUNG_FINDING_KINDS,
    NOT_RUN,
    REVIEW_STATES,
    STAGES,
)

__all__ = [
    "REPORT_SCHEMA_ID",
    "ATTACHMENTS",
    "LOBES",
    "LUNG_RADS_CATEGORIES",
    "SIDES",
    "ZONES",
    "STAGES",
    "NOT_RUN",
    "REVIEW_STATES",
    "FindingMask",
    "Finding",
    "InputInfo",
    "Report",
    "load_report_schema",
    "validate_report_dict",
    "to_jsonable",
    "equivalent_diameter_mm",
]

REPORT_SCHEMA_ID = "lunglesionai-report/1"
#: ``Finding.attachment`` values (None: not determined).
ATTACHMENTS = ("juxta-pleural", "none")
#: ``Finding.location`` values: "side", "lobe" (None where lobes are not segmented) and "zone".
SIDES = ("right", "left")
LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
ZONES = ("upper", "middle", "lower")
#: Lung-RADS v2022 categories of one finding; the exam category may also be "0" (incomplete).
LUNG_RADS_CATEGORIES = ("1", "2", "3", "4A", "4B", "4X")
#: Pipeline stages in order; ``Report.stages`` maps each to the method that ran or to :data:`NOT_RUN`.


@dataclass(frozen=True)
class FindingMask:
    """A finding's voxel mask on the analysed volume's grid.

    Args:
        offset_kji: (k, j, i) index in the full volume of ``array[0, 0, 0]``.
        array: (dz, dy, dx) boolean mask.
    """

    offset_kji: tuple[int, int, int]
    array: np.ndarray

    def paste_into(self, labelmap: np.ndarray, label: int) -> None:
        """Write ``label`` into ``labelmap`` (Z, Y, X) wherever the mask is set (clipped to the labelmap)."""
        lo = np.maximum(np.asarray(self.offset_kji), 0)
        hi = np.minimum(np.asarray(self.offset_kji) + self.array.shape, labelmap.shape)
        if np.any(hi <= lo):
            return
        src = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, self.offset_kji))
        dst = tuple(slice(a, b) for a, b in zip(lo, hi))
        labelmap[dst][self.array[src]] = label

    @classmethod
    def cropped(cls, array: np.ndarray, offset_kji) -> "FindingMask":
        """The set voxels of ``array``, cropped to their bounding box.

        Args:
            array: (dz, dy, dx) boolean mask of a VOI.
            offset_kji: (k, j, i) index in the full volume of ``array[0, 0, 0]``.

        Raises:
            ValueError: no voxel of ``array`` is set.
        """
        voxels = np.argwhere(array)
        if voxels.size == 0:
            raise ValueError("cannot crop an empty mask")
        lo, hi = voxels.min(axis=0), voxels.max(axis=0) + 1
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        return cls(tuple(int(o + a) for o, a in zip(offset_kji, lo)), array[box].copy())

    @property
    def voxel_count(self) -> int:
        """Number of voxels set."""
        return int(np.count_nonzero(self.array))

    def reoriented(self, permutation) -> "FindingMask":
        """The same voxels on the grid a :class:`lunglesionai.core.orientation.AxisPermutation` leads to (exact).

        Only the crop is transposed and flipped (:meth:`lunglesionai.core.orientation.AxisPermutation.apply_crop`, the
        inverse of ``invert_crop``); ``mask.reoriented(perm)`` pasted into the
        reoriented grid equals ``perm.apply`` of the mask pasted into the original grid.

        Args:
            permutation: what :func:`lunglesionai.core.orientation.reorient_to_lps` returned for the mask's grid
                (``order_kji``, ``flip_kji``, ``lps_shape_zyx``).

        Returns:
            A new FindingMask on the reoriented grid (this one when the permutation is the identity).
        """
        if permutation.is_identity:
            return self
        return FindingMask(*permutation.apply_crop(self.offset_kji, self.array))


@dataclass
class Finding:
    """One nodule or lesion.

    Coordinates are LPS mm; lengths mm; volume mm³; intensities HU. ``None`` means "not computed".

    Args:
        id: stable identifier shown to users ("N1", "M1", "L1", ...).
        kind: "nodule" (lung nodule pipeline, 3-30 mm), "mass" (lung lesion over 30 mm, classical mass rule; not
            graded: ``malignancy_probability`` and ``invasiveness`` stay None) or "lesion" (universal lesion
            detection).
        center_lps_mm: (x, y, z) centre.
        bbox_lps_mm: ((x0, y0, z0), (x1, y1, z1)), min and max corners.
        detection_score: detector confidence in [0, 1] (a classical detector's normalised response).
        diameter_mm: equivalent-sphere diameter of the mask, or the detector's estimate without a mask.
        long_axis_mm, short_axis_mm: longest in-plane (axial) diameter and the longest diameter perpendicular
            to it in that slice (RECIST / Fleischner style).
        volume_mm3, mean_hu: from the mask.
        texture: "solid", "part-solid" or "ground-glass".
        malignancy_probability: probability in [0, 1] (``None`` until a grader runs).
        invasiveness: probabilities for "pre-invasive", "minimally-invasive", "invasive" (``None`` until a grader
            runs). A radiological surrogate from texture, not pathology.
        mean_diameter_mm: (long_axis_mm + short_axis_mm) / 2 in the axial plane, unrounded (the size Lung-RADS
            v2022 and Fleischner 2017 use; Lung-RADS rounds it to 0.1 mm, Fleischner to the nearest mm).
        solid_component_mean_diameter_mm, solid_component_long_axis_mm, solid_component_short_axis_mm,
            solid_component_volume_mm3: the solid component of a part-solid nodule (``None`` unless ``texture`` is
            "part-solid"): its axial axes, their mean and its volume, from an HU rule, not a model
            (:func:`lunglesionai.stages.measurements.solid_component`).
        calcified: benign-pattern (diffuse or central) calcification by an HU rule
            (:func:`lunglesionai.stages.measurements.is_calcified`); it cannot tell popcorn or laminated from
            other patterns reliably.
        attachment: "juxta-pleural" (the mask touches the lung mask's boundary) or "none"; fissural attachment is
            not determined (no fissure segmentation) (:func:`lunglesionai.stages.nodule_location.pleural_attachment`).
        location: ``{"side": "left"|"right", "lobe": None, "zone": "upper"|"middle"|"lower"}``; the zone is a third
            of the lung's craniocaudal extent, not a lobe (:func:`lunglesionai.stages.nodule_location.locate`).
        lung_rads: Lung-RADS v2022 category ("1", "2", "3", "4A", "4B", "4X"); ``lung_rads_reason`` the table row
            that applied; ``brock_risk`` the Brock/PanCan malignancy risk in [0, 1] (McWilliams et al., NEJM 2013).
            These three are decision support set by ``lunglesionai.clinical.read.apply_clinical_read``.
        followup: the comparison with a prior scan (``None`` without one), set by
            :func:`lunglesionai.clinical.followup.with_followup`: ``{"status": "new"|"stable"|"growing"|"shrinking",
            "prior_id", "prior_mean_diameter_mm", "volume_change_pct", "vdt_days", ...}`` (``vdt_days`` null unless
            growing; see that module for the rules and their sources).
        status: review state: "proposed", "accepted" or "rejected".
        extra: further per-finding fields written to report.json as they are.
        mask: voxel mask on the analysed grid (not written to report.json; it goes to the .seg.nrrd).
    """

    id: str
    kind: str
    center_lps_mm: tuple[float, float, float]
    bbox_lps_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    detection_score: Optional[float] = None
    diameter_mm: Optional[float] = None
    long_axis_mm: Optional[float] = None
    short_axis_mm: Optional[float] = None
    volume_mm3: Optional[float] = None
    mean_hu: Optional[float] = None
    texture: Optional[str] = None
    malignancy_probability: Optional[float] = None
    invasiveness: Optional[dict[str, float]] = None
    mean_diameter_mm: Optional[float] = None
    solid_component_mean_diameter_mm: Optional[float] = None
    solid_component_long_axis_mm: Optional[float] = None
    solid_component_short_axis_mm: Optional[float] = None
    solid_component_volume_mm3: Optional[float] = None
    calcified: Optional[bool] = None
    attachment: Optional[str] = None
    location: Optional[dict[str, Optional[str]]] = None
    lung_rads: Optional[str] = None
    lung_rads_reason: Optional[str] = None
    brock_risk: Optional[float] = None
    followup: Optional[dict[str, Any]] = None
    status: str = "proposed"
    extra: dict[str, Any] = field(default_factory=dict)
    mask: Optional[FindingMask] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"Finding.kind must be one of {FINDING_KINDS}, got {self.kind!r}")
        if self.status not in REVIEW_STATES:
            raise ValueError(f"Finding.status must be proposed/accepted/rejected, got {self.status!r}")
        if self.attachment is not None and self.attachment not in ATTACHMENTS:
            raise ValueError(f"Finding.attachment must be one of {ATTACHMENTS} or None, got {self.attachment!r}")
        if self.lung_rads is not None and self.lung_rads not in LUNG_RADS_CATEGORIES:
            raise ValueError(f"Finding.lung_rads must be one of {LUNG_RADS_CATEGORIES} or None, got {self.lung_rads!r}")
        if self.location is not None:
            _check_location(self.location)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no mask); ``extra`` keys are merged in at the top level."""
        d = {k: v for k, v in asdict(replace(self, mask=None)).items() if k not in ("extra", "mask")}
        d["center_lps_mm"] = [float(c) for c in self.center_lps_mm]
        d["bbox_lps_mm"] = [[float(c) for c in corner] for corner in self.bbox_lps_mm]
        d.update(self.extra)
        return to_jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        """Inverse of :meth:`to_dict` (unknown keys go to ``extra``)."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("extra", "mask")}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["center_lps_mm"] = tuple(kwargs["center_lps_mm"])
        kwargs["bbox_lps_mm"] = tuple(tuple(c) for c in kwargs["bbox_lps_mm"])
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})

    def summary(self) -> str:
        """One line for markups descriptions and tables, e.g. "8.1 mm solid, 260 mm³, score 0.91"."""
        parts = []
        if self.diameter_mm is not None:
            parts.append(f"{self.diameter_mm:.1f} mm" + (f" {self.texture}" if self.texture else ""))
        if self.volume_mm3 is not None:
            parts.append(f"{self.volume_mm3:.0f} mm³")
        if self.mean_hu is not None:
            parts.append(f"mean {self.mean_hu:.0f} HU")
        if self.malignancy_probability is not None:
            parts.append(f"malignancy {self.malignancy_probability:.2f}")
        if self.detection_score is not None:
            parts.append(f"score {self.detection_score:.2f}")
        return ", ".join(parts) or self.kind


@dataclass(frozen=True)
class InputInfo:
    """The analysed volume's identity and geometry (shape (Z, Y, X); spacing, origin (x, y, z) mm LPS).

    ``description`` holds descriptive header fields of a DICOM input (``series_description``, ``study_date`` as
    YYYY-MM-DD, ``modality``, ``manufacturer``, …) and, only when asked for (``--include-identifiers``),
    ``patient_name`` and ``patient_id``; empty for other inputs.
    """

    path: str
    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]
    direction: tuple[float, ...]
    description: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_volume(cls, volume) -> "InputInfo":
        """Take path and geometry from a :class:`lunglesionai.core.volume.Volume`."""
        return cls(volume.source, volume.shape_zyx, volume.spacing_mm, volume.origin_lps_mm, volume.direction)


@dataclass
class Report:
    """Everything one analysis produced: input geometry, what ran, timings, findings.

    ``stages`` maps each name in :data:`STAGES` to the method used, or :data:`NOT_RUN`.
    ``models`` lists ``{"name", "version", "sha256"}`` of each trained model used (empty for classical stages).
    ``warnings`` are one-line statements of what was not analysed or is less reliable (e.g. "no lung of
    plausible size found", thick slices); shown in report.html's header, the CLI summary and the Slicer panel.
    ``exam`` holds exam-level results: the pipeline sets ``emphysema_index_pct`` (% of lung voxels below −950 HU,
    :mod:`lunglesionai.stages.emphysema`), ``nodule_count`` (findings of kind "nodule") and ``lungs_fully_covered``
    (False when a lung is missing or cut by the scan's edge, or no lung was found); the clinical read adds
    ``lung_rads``, ``modifiers``, ``management``, ``fleischner``, ``indication``, ``assumed``,
    ``highest_risk_finding`` and ``decision_support_note`` (see ``schemas/report-1.json``).
    """

    input: InputInfo
    findings: list[Finding] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=lambda: {s: NOT_RUN for s in STAGES})
    timings_s: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    version: str = ""
    models: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exam: dict[str, Any] = field(default_factory=dict)

    def nodules(self) -> list[Finding]:
        """Findings of kind "nodule", in report order."""
        return [f for f in self.findings if f.kind == "nodule"]

    def masses(self) -> list[Finding]:
        """Findings of kind "mass", in report order."""
        return [f for f in self.findings if f.kind == "mass"]

    def lung_findings(self) -> list[Finding]:
        """Findings of the lung pipeline (kinds "mass" and "nodule", :data:`LUNG_FINDING_KINDS`), in report order:
        what ``nodules.seg.nrrd`` and ``nodules.mrk.json`` hold."""
        return [f for f in self.findings if f.kind in LUNG_FINDING_KINDS]

    def lesions(self) -> list[Finding]:
        """Findings of kind "lesion", in report order."""
        return [f for f in self.findings if f.kind == "lesion"]

    def to_dict(self) -> dict[str, Any]:
        """The ``lunglesionai-report/1`` JSON object."""
        return to_jsonable(
            {
                "schema": REPORT_SCHEMA_ID,
                "input": _input_dict(self.input),
                "software": {"name": "lunglesionai", "version": self.version, "models": list(self.models)},
                "device": self.device,
                "stages": dict(self.stages),
                "timings_s": {k: round(float(v), 4) for k, v in self.timings_s.items()},
                "findings": [f.to_dict() for f in self.findings],
                "warnings": list(self.warnings),
                "exam": dict(self.exam),
            }
        )

    def to_json(self) -> str:
        """``to_dict`` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        """Inverse of :meth:`to_dict` (masks are not in report.json, so findings come back without them).

        Raises:
            jsonschema.ValidationError: ``d`` does not follow ``lunglesionai-report/1``.
        """
        validate_report_dict(d)
        inp = d["input"]
        info = InputInfo(
            inp["path"],
            tuple(inp["shape_zyx"]),
            tuple(inp["spacing_mm"]),
            tuple(inp["origin_lps_mm"]),
            tuple(inp["direction"]),
            dict(inp.get("description", {})),
        )
        return cls(
            input=info,
            findings=[Finding.from_dict(f) for f in d["findings"]],
            stages=dict(d["stages"]),
            timings_s=dict(d["timings_s"]),
            device=d["device"],
            version=d["software"]["version"],
            models=list(d["software"]["models"]),
            warnings=list(d.get("warnings", [])),
            exam=dict(d.get("exam", {})),
        )


def _check_location(location: dict) -> None:
    """Raise ValueError unless ``location`` is {"side": SIDES, "lobe": LOBES or None, "zone": ZONES}."""
    if (not isinstance(location, dict) or not {"side", "lobe", "zone"} <= set(location)
            or location["side"] not in SIDES or location["zone"] not in ZONES
            or (location["lobe"] is not None and location["lobe"] not in LOBES)):
        raise ValueError(f"Finding.location must be {{'side': {SIDES}, 'lobe': {LOBES} or None, 'zone': {ZONES}}}, "
                         f"got {location!r}")


def _input_dict(info: InputInfo) -> dict[str, Any]:
    d = asdict(info)
    if not d["description"]:
        del d["description"]
    return d


def load_report_schema() -> dict[str, Any]:
    """The JSON schema of ``lunglesionai-report/1`` (shipped in the package as ``schemas/report-1.json``)."""
    text = resources.files("lunglesionai").joinpath("schemas/report-1.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_report_dict(d: dict[str, Any]) -> None:
    """Check a report dict against the schema.

    Raises:
        jsonschema.ValidationError: with the path of the first offending field.
    """
    import jsonschema

    jsonschema.validate(d, load_report_schema())


def to_jsonable(obj: Any, *, nan_as_none: bool = False) -> Any:
    """Turn numpy scalars/arrays and tuples into plain JSON types, recursively (inputs are not modified).

    Args:
        obj: dicts, lists, tuples, numpy arrays and scalars, plain values.
        nan_as_none: write non-finite floats as None (JSON null), e.g. for metrics undefined on a subset;
            otherwise they stay floats, and ``json.dumps(..., allow_nan=False)`` refuses them.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, nan_as_none=nan_as_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nan_as_none=nan_as_none) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), nan_as_none=nan_as_none)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if nan_as_none and not np.isfinite(obj) else float(obj)
    return obj


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter (mm) of the sphere whose volume is ``volume_mm3`` (mm³): ``(6 V / π)^(1/3)``, the size of a mask
    in ``Finding.diameter_mm``; 0 for a volume of 0.

    Raises:
        ValueError: a negative volume.
    """
    volume_mm3 = float(volume_mm3)
    if volume_mm3 < 0:
        raise ValueError(f"volume must be >= 0 mm3, got {volume_mm3}")
    return (6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)
