"""The lung findings as a DICOM Segmentation (SEG, BINARY) that references the analysed CT series (highdicom).

One segment per mass or nodule finding that has a mask, in report order (masses then nodules, as
``nodules.seg.nrrd``): Segment Label "Nodule k" / "Mass k", the SNOMED CT terminology of the ``.seg.nrrd``
(category SCT 49755003 Morphologically Altered Structure; type SCT 27925004 Nodule or SCT 4147007 Mass,
:mod:`lunglesionai.core.segments`), its colour, Tracking ID = the finding id and Tracking UID =
:func:`tracking_uid` (the same pair the SR's measurement group carries), and the algorithm identification (name
"LungLesionAI", family DCM 123110 Artificial Intelligence, the package version, and each trained model's name,
version and SHA-256 from ``Report.models`` as parameters). Segment Algorithm Type is AUTOMATIC for a proposed
finding and SEMIAUTOMATIC once a reader accepted or rejected it (the outline may have been edited).

The frames are the source slices' planes: :func:`source_slice_indices` maps each CT instance to its slice k of the
report's grid and refuses a series whose geometry is not that grid. DICOM PS3.3 A.51 (Segmentation IOD); 3D
Slicer's QuantitativeReporting / dcmqi ``segimage2itkimage`` read BINARY segmentations (Herz et al., Cancer Res
2017, doi:10.1158/0008-5472.CAN-17-0336).
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lunglesionai.core.findings import Finding, InputInfo, Report
from lunglesionai.core.segments import mask_crop_in_grid, segment_styles
from lunglesionai.core.volume import ijk_to_lps_matrix

__all__ = [
    "ALGORITHM_NAME",
    "GRID_TOLERANCE_MM",
    "SEG_SERIES_NUMBER",
    "algorithm_identification",
    "make_segmentation",
    "segmented_findings",
    "source_slice_indices",
    "tracking_uid",
]

ALGORITHM_NAME = "LungLesionAI"
SEG_SERIES_NUMBER = 9101
"""Series Number of the SEG (high, so that it sorts after the CT series in a PACS viewer)."""
GRID_TOLERANCE_MM = 1e-3
"""Largest difference (mm) between a source slice's position or spacing and the report's grid."""
_ORIENTATION_TOLERANCE = 1e-4
_TYPE_CODES = {"nodule": ("27925004", "Nodule"), "mass": ("4147007", "Mass")}
_CATEGORY = ("49755003", "Morphologically Altered Structure")
_REVIEWED = ("accepted", "rejected")


def tracking_uid(series_uid: str, finding_id: str) -> str:
    """The Tracking Unique Identifier of a finding: a UID derived from the source series and the finding id
    (pydicom ``generate_uid(entropy_srcs=...)``), the same in every run on that series.

    Example:
        >>> tracking_uid("1.2.3", "N1") == tracking_uid("1.2.3", "N1") != tracking_uid("1.2.3", "N2")
        True
    """
    return generate_uid(entropy_srcs=[str(series_uid), "lunglesionai-finding", str(finding_id)])


def segmented_findings(report: Report) -> list[Finding]:
    """The findings that become segments: masses and nodules (:meth:`Report.lung_findings`) with a mask, in
    report order."""
    return [f for f in report.lung_findings() if f.mask is not None]


def algorithm_identification(report: Report):
    """The highdicom ``AlgorithmIdentificationSequence`` of the analysis: name, family (DCM 123110 Artificial
    Intelligence), the package version, and one parameter per trained model ``{name: "version sha256:…"}``."""
    import highdicom as hd

    parameters = {str(m.get("name", "model")): f"{m.get('version', '')} sha256:{m.get('sha256', '')}".strip()
                  for m in report.models}
    return hd.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence,
                                              version=report.version or "unknown", parameters=parameters or None)


def source_slice_indices(info: InputInfo, source: list[pydicom.Dataset]) -> np.ndarray:
    """The slice k of the report's grid that each source CT instance shows.

    Args:
        info: the report's grid (shape (Z, Y, X), spacing (x, y, z) mm, LPS origin, direction).
        source: single-frame CT instances (headers suffice), one per slice of the grid.

    Returns:
        (N,) int array, ``k[n]`` for ``source[n]``; every k of the grid appears exactly once.

    Raises:
        ValueError: the instances are not exactly the grid's slices: other count, rows/columns, pixel spacing,
            orientation (rows along i, columns along j), a position off the grid, two instances on one slice, or
            several Frames of Reference.
    """
    nz, ny, nx = (int(n) for n in info.shape_zyx)
    if len(source) != nz:
        raise ValueError(f"the source series has {len(source)} instances, the analysed grid {nz} slices "
                         f"(a resampled or cropped series cannot be referenced)")
    matrix = ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction)
    axes = matrix[:3, :3] / np.asarray(info.spacing_mm, float)[None, :]
    if len({str(ds.get("FrameOfReferenceUID", "")) for ds in source}) != 1:
        raise ValueError("the source instances do not share one FrameOfReferenceUID")
    ks = []
    for ds in source:
        _check_instance(ds, (ny, nx), info.spacing_mm, axes)
        ijk = np.linalg.solve(matrix[:3, :3], np.asarray(ds.ImagePositionPatient, float) - matrix[:3, 3])
        k = int(round(ijk[2]))
        offset_mm = np.abs(matrix[:3, :3] @ (ijk - [0.0, 0.0, k]))
        if offset_mm.max() > GRID_TOLERANCE_MM or not 0 <= k < nz:
            raise ValueError(f"source instance {ds.SOPInstanceUID}: ImagePositionPatient "
                             f"{list(ds.ImagePositionPatient)} is not a slice of the analysed grid")
        ks.append(k)
    if len(set(ks)) != nz:
        raise ValueError("two source instances lie on one slice of the analysed grid")
    return np.asarray(ks, dtype=int)


def _check_instance(ds: pydicom.Dataset, rows_cols: tuple[int, int], spacing_mm, axes: np.ndarray) -> None:
    uid = ds.get("SOPInstanceUID", "?")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise ValueError(f"source instance {uid} is multi-frame; SEG/SR reference single-frame CT series only")
    if (int(ds.Rows), int(ds.Columns)) != rows_cols:
        raise ValueError(f"source instance {uid}: {ds.Rows}×{ds.Columns} pixels, the grid {rows_cols[0]}×"
                         f"{rows_cols[1]}")
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    if abs(row_mm - spacing_mm[1]) > GRID_TOLERANCE_MM or abs(col_mm - spacing_mm[0]) > GRID_TOLERANCE_MM:
        raise ValueError(f"source instance {uid}: PixelSpacing {[row_mm, col_mm]} differs from the grid's "
                         f"(y, x) {spacing_mm[1], spacing_mm[0]} mm")
    orientation = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    if not np.allclose(orientation, axes[:, :2].T, atol=_ORIENTATION_TOLERANCE):
        raise ValueError(f"source instance {uid}: ImageOrientationPatient {orientation.ravel().tolist()} is not "
                         f"the grid's i and j axes")


def make_segmentation(report: Report, source: list[pydicom.Dataset], *, series_uid: str | None = None,
                      sop_instance_uid: str | None = None):
    """The DICOM SEG of the report's masses and nodules with masks (:func:`segmented_findings`).

    Args:
        report: masks on the grid of ``report.input``; ``report.models`` and ``report.version`` name the algorithm.
        source: the analysed CT instances (headers suffice; :func:`lunglesionai.io.dicom_results.load_source_series`).
        series_uid, sop_instance_uid: UIDs of the SEG (None: new ones).

    Returns:
        ``highdicom.seg.Segmentation`` (a pydicom Dataset): BINARY, frames only where a segment has voxels,
        segment n = the n-th finding of :func:`segmented_findings`.

    Raises:
        ValueError: no finding to segment; the source is not the report's grid (:func:`source_slice_indices`);
            finding ids unusable as segment ids (:func:`lunglesionai.core.segments.segment_styles`).
    """
    import highdicom as hd

    findings = segmented_findings(report)
    if not findings:
        raise ValueError("the report has no mass or nodule with a mask: no DICOM SEG to write")
    order = np.argsort(source_slice_indices(report.input, source))
    source = [source[n] for n in order]  # ascending k: frame n shows grid slice n
    styles = segment_styles(report.lung_findings())
    algorithm = algorithm_identification(report)
    series_of_source = str(source[0].SeriesInstanceUID)
    label_type = np.uint8 if len(findings) < 256 else np.uint16
    descriptions, labelmap, overlapping = [], np.zeros(report.input.shape_zyx, label_type), False
    for number, finding in enumerate(findings, start=1):
        first, crop = mask_crop_in_grid(finding.mask, report.input.shape_zyx)
        box = tuple(slice(f, f + n) for f, n in zip(first, crop.shape))
        overlapping |= bool(np.any(labelmap[box][crop]))
        labelmap[box][crop] = number
        style = styles[finding.id]
        code, meaning = _TYPE_CODES[finding.kind]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=style.name,
            segmented_property_category=hd.sr.CodedConcept(_CATEGORY[0], "SCT", _CATEGORY[1]),
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if finding.status in _REVIEWED
                            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
            algorithm_identification=algorithm,
            tracking_uid=tracking_uid(series_of_source, finding.id),
            tracking_id=finding.id,
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in style.color_rgb)),
        ))
    pixel_array = _one_hot(findings, report.input.shape_zyx) if overlapping else labelmap
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid or generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=ALGORITHM_NAME,
        manufacturer_model_name="lunglesionai",
        software_versions=report.version or "unknown",
        device_serial_number="none",
        content_label="NODULES",
        content_description="Lung nodules and masses (LungLesionAI, decision support)",
        series_description="LungLesionAI nodules (SEG)",
    )


def _one_hot(findings: list[Finding], shape_zyx) -> np.ndarray:
    """(Z, Y, X, S) bool masks, for segments that overlap (a label map cannot hold them)."""
    array = np.zeros((*shape_zyx, len(findings)), bool)
    for n, finding in enumerate(findings):
        first, crop = mask_crop_in_grid(finding.mask, shape_zyx)
        box = tuple(slice(f, f + s) for f, s in zip(first, crop.shape))
        array[box + (n,)] |= crop
    return array
