"""Write a :class:`~lunglesionai.core.findings.Report` to an output folder, atomically.

``write_outputs(report, OUT)`` writes the files 3D Slicer and scripts read:

* ``nodules.seg.nrrd``: Slicer segmentation on the analysed volume's grid, one segment per lung finding (masses
  then nodules) with a mask ("Mass 1…", SCT 4147007; "Nodule 1…", SCT 27925004; category SCT 49755003), written
  with ``slicerio`` (no Slicer needed); a report without such masks gives a valid segmentation with no segments.
* ``nodules.mrk.json``: Slicer markups, one Fiducial with a control point per mass and nodule (LPS mm).
* ``report.json``: ``lunglesionai-report/1``, validated before anything is written.
* ``findings.csv``: one row per finding, the columns of report.html's table (:mod:`lunglesionai.io.findings_table`).
* ``lesions.mrk.json`` (ROI boxes) when the report has lesions, ``lesions.seg.nrrd`` when a lesion has a mask.
* ``report.html`` when the CT is given (``volume=``): the findings table with thumbnails and 3D renderings, for
  people (:mod:`lunglesionai.io.report_html`).
* ``prior_nodules.seg.nrrd`` with a prior scan (``analyze --prior``) whose findings have masks: the prior's nodule
  and mass outlines on the prior CT's grid (segment id = prior finding id, the ``prior_id`` of
  ``Finding.followup``), so that Slicer shows both scans with their outlines.

Everything goes to a temporary sibling folder first, which gets a manifest of its files and is renamed to OUT
when complete (:mod:`lunglesionai.core.output_folder`); a failure leaves no OUT (or the previous OUT untouched) and no
temporary folder, and ``overwrite`` never replaces a folder holding files lunglesionai did not write. Markups follow Slicer's schema v1.0.3
(``Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lunglesionai.core.findings import Finding, FindingMask, InputInfo, Report, validate_report_dict
from lunglesionai.core.output_folder import atomic_output_folder, check_output_folder, write_json_atomic
from lunglesionai.core.segments import (
    FINDING_ID_TAG,
    mask_crop_in_grid,
    reference_image_geometry_string,
    segment_styles,
)
from lunglesionai.core.volume import Volume, ijk_to_lps_matrix
from lunglesionai.io.findings_table import write_findings_csv

__all__ = [
    "MARKUPS_SCHEMA_URL",
    "NODULES_SEGMENTATION",
    "NODULES_MARKUPS",
    "LESIONS_SEGMENTATION",
    "LESIONS_MARKUPS",
    "REPORT_JSON",
    "REPORT_HTML",
    "FINDINGS_CSV",
    "PRIOR_NODULES_SEGMENTATION",
    "segmentation_dict",
    "markups_fiducial_dict",
    "markups_roi_dict",
    "write_outputs",
]

logger = logging.getLogger(__name__)

#: ``@schema`` written into markups files (the version the files are checked against).
MARKUPS_SCHEMA_URL = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
NODULES_SEGMENTATION = "nodules.seg.nrrd"
NODULES_MARKUPS = "nodules.mrk.json"
LESIONS_SEGMENTATION = "lesions.seg.nrrd"
LESIONS_MARKUPS = "lesions.mrk.json"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
FINDINGS_CSV = "findings.csv"
PRIOR_NODULES_SEGMENTATION = "prior_nodules.seg.nrrd"
_STANDARD_NAMES = (NODULES_SEGMENTATION, NODULES_MARKUPS, LESIONS_SEGMENTATION, LESIONS_MARKUPS, REPORT_JSON,
                   FINDINGS_CSV, REPORT_HTML, PRIOR_NODULES_SEGMENTATION)
#: Keys of the dict :func:`write_outputs` returns, per standard file.
_RESULT_KEYS = {
    NODULES_SEGMENTATION: "nodules_segmentation",
    NODULES_MARKUPS: "nodules_markups",
    LESIONS_SEGMENTATION: "lesions_segmentation",
    LESIONS_MARKUPS: "lesions_markups",
    REPORT_JSON: "report",
    REPORT_HTML: "report_html",
    FINDINGS_CSV: "findings_csv",
    PRIOR_NODULES_SEGMENTATION: "prior_segmentation",
}
#: gzip level of the .seg.nrrd voxels: zlib's default; on a 512×512×300 grid with 20 nodules it writes 92 kB in
#: 0.35 s (level 1: 364 kB, 0.2 s; level 9: 91 kB, 0.35 s).
_NRRD_COMPRESSION_LEVEL = 6
_MAX_LABEL = 255  # uint8 labelmap layers
_IDENTITY_3X3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
_REFERENCE_GEOMETRY_DESCRIPTION = (
    "Image geometry description string determining the geometry of the labelmap that is created in course of "
    "conversion. Can be copied from a volume, using the button."
)


def segmentation_dict(findings: list[Finding], info: InputInfo) -> dict[str, Any]:
    """A ``slicerio`` segmentation of the findings that carry masks, on the analysed volume's grid.

    Segments share a labelmap layer unless their masks overlap (then a new layer is opened, as Slicer does), so
    the voxels are usually one uint8 array the size of the volume.

    Args:
        findings: nodules and/or lesions; masks lie on the grid of ``info``. Segment names count findings of each
            kind in list order ("Nodule 1", "Nodule 2", …), so a finding without mask still uses its number.
        info: the analysed volume's geometry (shape (Z, Y, X), spacing (x, y, z) mm, LPS origin and direction).

    Returns:
        Dict for ``slicerio.write_segmentation``: ``voxels`` uint8 indexed (i, j, k), or (layer, i, j, k) when
        masks overlap (views of (Z, Y, X) arrays); ``ijkToLPS`` 4×4; one segment per masked finding with
        id = finding id, name, colour, terminology, status and the finding id tag.

    Raises:
        ValueError: finding ids are empty, repeated or contain "|" or ":".
    """
    from slicerio.segmentation import terminology_entry_from_string

    shape_zyx = tuple(int(n) for n in info.shape_zyx)
    styles = segment_styles(findings)
    layers: list[np.ndarray] = []
    label_counts: list[int] = []
    segments = []
    for finding in findings:
        if finding.mask is None:
            continue
        layer, label = _paste_into_free_layer(layers, label_counts, finding.mask, shape_zyx)
        style = styles[finding.id]
        segments.append({
            "id": finding.id,
            "name": style.name,
            "color": list(style.color_rgb),
            "terminology": terminology_entry_from_string(style.terminology),
            "status": style.status,
            "tags": {FINDING_ID_TAG: finding.id},
            "labelValue": label,
            "layer": layer,
            # Full extent: older Slicer cropped all segments of a layer to the first segment's extent.
            "extent": [0, shape_zyx[2] - 1, 0, shape_zyx[1] - 1, 0, shape_zyx[0] - 1],
        })
    if not layers:
        layers.append(np.zeros(shape_zyx, dtype=np.uint8))
    voxels = layers[0].T if len(layers) == 1 else np.stack(layers).transpose(0, 3, 2, 1)
    return {
        "voxels": voxels,
        "ijkToLPS": ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction),
        "containedRepresentationNames": ["Binary labelmap", "Closed surface"],
        "masterRepresentation": "Binary labelmap",
        # Written as the raw header field: Slicer drops the last parameter unless the list ends with "&",
        # which slicerio's "conversionParameters" writer (1.4.0) leaves out.
        "Segmentation_ConversionParameters":
            f"Reference image geometry|{reference_image_geometry_string(info)}|{_REFERENCE_GEOMETRY_DESCRIPTION}&",
        "segments": segments,
    }


def _paste_into_free_layer(
    layers: list[np.ndarray], label_counts: list[int], mask: FindingMask, shape_zyx: tuple[int, ...]
) -> tuple[int, int]:
    """Write the mask into the first (Z, Y, X) layer where it overlaps nothing (a new one if none).

    ``label_counts[n]`` is the number of labels used in layer n (updated). Returns (layer index, label value).
    """
    first_kji, src = mask_crop_in_grid(mask, shape_zyx)
    dst = tuple(slice(f, f + n) for f, n in zip(first_kji, src.shape))
    index = next(
        (n for n, layer in enumerate(layers) if label_counts[n] < _MAX_LABEL and not np.any(layer[dst][src])),
        None,
    )
    if index is None:
        layers.append(np.zeros(shape_zyx, dtype=np.uint8))
        label_counts.append(0)
        index = len(layers) - 1
    label_counts[index] += 1
    layers[index][dst][src] = label_counts[index]
    return index, label_counts[index]


def markups_fiducial_dict(findings: list[Finding], name: str = "Nodules") -> dict[str, Any]:
    """Slicer markups JSON with one Fiducial markup: a control point per finding at its centre (LPS mm).

    Args:
        findings: usually ``report.lung_findings()`` (masses and nodules); each point's label is the finding id
            and its description
            :meth:`Finding.summary`.
        name: the markup's (node) name.

    Returns:
        Dict following markups schema v1.0.3 (``coordinateSystem`` "LPS", positions in mm).

    Raises:
        ValueError: a centre is not three finite numbers.

    Example:
        >>> from lunglesionai.core.findings import Finding
        >>> f = Finding("N1", "nodule", (1.0, 2.0, 3.0), ((0, 1, 2), (2, 3, 4)))
        >>> markups_fiducial_dict([f])["markups"][0]["controlPoints"][0]["position"]
        [1.0, 2.0, 3.0]
    """
    points = [
        _control_point(index, f.id, f.summary(), _finite_xyz(f.center_lps_mm, f.id))
        for index, f in enumerate(findings, start=1)
    ]
    markup = {
        "type": "Fiducial",
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points),
        "controlPoints": points,
    }
    return {"@schema": MARKUPS_SCHEMA_URL, "markups": [markup]}


def markups_roi_dict(findings: list[Finding]) -> dict[str, Any]:
    """Slicer markups JSON with one ROI (axis-aligned box in LPS) per finding, from ``bbox_lps_mm``.

    Args:
        findings: usually ``report.lesions()``; each ROI is named by the finding id, its single control point
            (the box centre) labelled with the id and described by :meth:`Finding.summary`.

    Returns:
        Dict following markups schema v1.0.3 (``roiType`` "Box", ``center`` and ``size`` in LPS mm).

    Raises:
        ValueError: a box corner is not three finite numbers.
    """
    markups = []
    for f in findings:
        lo, hi = (_finite_xyz(corner, f.id) for corner in f.bbox_lps_mm)
        center = [(a + b) / 2 for a, b in zip(lo, hi)]
        markups.append({
            "type": "ROI",
            "name": f.id,
            "coordinateSystem": "LPS",
            "coordinateUnits": "mm",
            "locked": False,
            "roiType": "Box",
            "center": center,
            "orientation": list(_IDENTITY_3X3),
            "size": [abs(b - a) for a, b in zip(lo, hi)],
            "insideOut": False,
            "controlPoints": [_control_point(1, f.id, f.summary(), center)],
        })
    return {"@schema": MARKUPS_SCHEMA_URL, "markups": markups}


def _control_point(index: int, label: str, description: str, position: list[float]) -> dict[str, Any]:
    return {
        "id": str(index),
        "label": label,
        "description": description,
        "associatedNodeID": "",
        "position": list(position),
        "orientation": list(_IDENTITY_3X3),
        "selected": True,
        "locked": False,
        "visibility": True,
        "positionStatus": "defined",
    }


def _finite_xyz(values: Any, finding_id: str) -> list[float]:
    xyz = np.asarray(values, dtype=float).reshape(-1)
    if xyz.size != 3 or not np.all(np.isfinite(xyz)):
        raise ValueError(f"finding {finding_id}: expected three finite LPS coordinates, got {values!r}")
    return [float(v) for v in xyz]


def write_outputs(
    report: Report,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    volume: Volume | None = None,
    command: str = "analyze",
    prior_volume: Volume | None = None,
    prior_findings: Sequence[Finding] = (),
) -> dict[str, Path]:
    """Write the report's files into ``out_dir``, atomically, with a manifest of them
    (:mod:`lunglesionai.core.output_folder`).

    Args:
        report: the analysis result; masks on the grid of ``report.input``.
        out_dir: output folder; its parent is created when missing.
        overwrite: replace an existing ``out_dir`` (only once the new one is complete, and only when its manifest
            covers every entry in it: a folder lunglesionai wrote).
        extra_files: more files to write into the same folder, as ``{file name: writer(path)}``; each writer
            writes its file (or a folder of files) at the given path (inside the temporary folder).
        volume: the analysed CT (the report's input grid); when given, ``report.html`` is written too
            (:func:`lunglesionai.io.report_html.write_report_html`).
        command: the command recorded in the manifest.
        prior_volume, prior_findings: the prior CT and its findings of ``analyze --prior``: report.html shows the
            prior's axial thumbnail beside the current one (:func:`lunglesionai.io.report_html.write_report_html`),
            and the prior's nodule and mass masks (on ``prior_volume``'s grid) go to ``prior_nodules.seg.nrrd``.

    Returns:
        Final path of every file written, keyed "nodules_segmentation", "nodules_markups", "report",
        "findings_csv", and
        "lesions_markups" / "lesions_segmentation" / "report_html" / "prior_segmentation" when present; extra
        files are keyed by their names.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False (a FileExistsError too).
        OutputPathError: ``out_dir`` is a file, protected, not writable, or holds files lunglesionai did not write
            (:func:`lunglesionai.core.output_folder.check_output_folder`).
        ValueError: an extra file name is not a plain file name or clashes with a standard output; finding ids
            are empty, repeated or contain "|" or ":"; ``volume`` is not on the report's input grid.
        jsonschema.ValidationError: the report does not follow ``lunglesionai-report/1``.
    """
    if volume is not None and tuple(volume.shape_zyx) != tuple(report.input.shape_zyx):
        raise ValueError(f"volume shape {volume.shape_zyx} is not the report's input {report.input.shape_zyx}")
    extra = dict(extra_files or {})
    _check_extra_names(extra)
    inputs = [report.input.path] if report.input.path and Path(report.input.path).exists() else []
    out = check_output_folder(out_dir, overwrite=overwrite, inputs=inputs)
    report_dict = report.to_dict()
    validate_report_dict(report_dict)
    segment_styles(report.findings)  # finding ids usable as segment ids, checked before anything is written
    with atomic_output_folder(out, overwrite=overwrite, command=command) as staging:
        names = _write_files(report, report_dict, staging, extra, volume, (prior_volume, tuple(prior_findings)))
    logger.info("wrote %s to %s", ", ".join(names), out)
    return {_RESULT_KEYS.get(name, name): out / name for name in names}


def _check_extra_names(extra: Mapping[str, Callable[[Path], None]]) -> None:
    for name in extra:
        if not name or name in (".", "..") or Path(name).name != name or name in _STANDARD_NAMES:
            raise ValueError(f"extra file name {name!r} must be a plain file name other than {_STANDARD_NAMES}")


def _write_files(report: Report, report_dict: dict, folder: Path, extra: Mapping,
                 volume: Volume | None = None, prior: tuple = (None, ())) -> list[str]:
    """Write every output into ``folder``; returns the file names in writing order."""
    import slicerio

    nodules, lesions = report.lung_findings(), report.lesions()
    writers: dict[str, Callable[[Path], None]] = {
        NODULES_SEGMENTATION: lambda p: slicerio.write_segmentation(
            str(p), segmentation_dict(nodules, report.input), compression_level=_NRRD_COMPRESSION_LEVEL),
        NODULES_MARKUPS: lambda p: write_json_atomic(p, markups_fiducial_dict(nodules)),
    }
    if any(f.mask is not None for f in lesions):
        writers[LESIONS_SEGMENTATION] = lambda p: slicerio.write_segmentation(
            str(p), segmentation_dict(lesions, report.input), compression_level=_NRRD_COMPRESSION_LEVEL)
    if lesions:
        writers[LESIONS_MARKUPS] = lambda p: write_json_atomic(p, markups_roi_dict(lesions))
    writers[REPORT_JSON] = lambda p: write_json_atomic(p, report_dict)
    writers[FINDINGS_CSV] = lambda p: write_findings_csv(report, p)
    if volume is not None:
        from lunglesionai.io.report_html import write_report_html

        writers[REPORT_HTML] = lambda p: write_report_html(report, volume, p, prior_volume=prior[0],
                                                           prior_findings=prior[1])
    prior_volume, prior_findings = prior
    prior_lung = [f for f in prior_findings if f.kind in ("nodule", "mass") and f.mask is not None]
    if prior_volume is not None and prior_lung:
        prior_info = InputInfo.from_volume(prior_volume)
        writers[PRIOR_NODULES_SEGMENTATION] = lambda p: slicerio.write_segmentation(
            str(p), segmentation_dict(prior_lung, prior_info), compression_level=_NRRD_COMPRESSION_LEVEL)
    writers.update(extra)
    for name, write in writers.items():
        write(folder / name)
        if not (folder / name).exists():  # a file, or a folder of files (e.g. analyze --dicom-out's ct_series)
            raise FileNotFoundError(f"the writer of {name!r} did not create the file")
    return list(writers)
