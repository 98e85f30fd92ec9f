"""The measurements as a DICOM Comprehensive 3D SR, TID 1500 "Measurement Report" laid out as dcmqi writes it
(highdicom), so that 3D Slicer's QuantitativeReporting, OHIF and dcmqi's ``tid1500reader`` read it.

Content tree (``dsrdump`` shows it)::

    Imaging Measurement Report (TID 1500)
      Language, Observer device (LungLesionAI, its version), Procedure reported: SCT 77477000 Computed tomography
      Imaging Measurements
        Measurement Group (TID 1501): Tracking Identifier "summary", CAD Processing and Findings Summary
            (DCM 111017) = DCM 111242 with findings / 111241 without findings / 111245 not searched (no lung)
        Measurement Group (TID 1411), one per mass or nodule in report order:
          Tracking Identifier = finding id; Tracking Unique Identifier (:func:`lunglesionai.io.dicom_seg.tracking_uid`)
          Finding category SCT 49755003, Finding SCT 27925004 Nodule / SCT 4147007 Mass, Finding Site SCT 39607008
            Lung with laterality; Referenced Segment (segment n of the SEG) and its source series
          Long axis SCT 103339001, Short axis SCT 103340004, Diameter SCT 81827009 (derivation Mean: the
            Lung-RADS mean of long and short axis) [mm]; Volume SCT 118565006 [mm3];
            Attenuation Coefficient DCM 112031 (derivation Mean) [hnsf'U]; Probability of cancer DCM 111047 [1]
            (the DenseSharp grader's malignancy probability, 0-1); 99LLAI BROCK Brock (PanCan) malignancy risk [1]
          Qualitative evaluations (local codes, scheme 99LLAI): Nodule texture, Lung-RADS v2022 category,
            Review status (accepted / rejected / not reviewed)

A finding without a mask gets a TID 1501 group (no segment reference) with the same items. Values are
``report.json``'s, unrounded; a field that is ``None`` there is left out. Concepts without a standard code
(texture classes, Lung-RADS category, review status, the Brock risk) use the local coding scheme
:data:`LOCAL_SCHEME` (declared in the Coding Scheme Identification Sequence). Lung-RADS and Brock are decision
support (American College of Radiology Lung-RADS v2022; McWilliams et al., NEJM 2013,
doi:10.1056/NEJMoa1214726). DICOM PS3.16 TID 1500; Herz et al., Cancer Res 2017, doi:10.1158/0008-5472.CAN-17-0336.
"""

from __future__ import annotations

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lunglesionai.core.findings import Finding, Report
from lunglesionai.core.vocabulary import NO_LUNG_WARNING
from lunglesionai.io.dicom_seg import ALGORITHM_NAME, tracking_uid

__all__ = ["LOCAL_SCHEME", "SR_SERIES_NUMBER", "make_measurement_report"]

LOCAL_SCHEME = "99LLAI"
"""Coding Scheme Designator of the project's local codes (DICOM PS3.16 8.2: private schemes start with "99")."""
SR_SERIES_NUMBER = 9102
_TYPE_CODES = {"nodule": ("27925004", "Nodule"), "mass": ("4147007", "Mass")}
_TEXTURES = {"solid": ("SOLID", "Solid"), "part-solid": ("PARTSOLID", "Part-solid"),
             "ground-glass": ("GGO", "Ground-glass")}
_REVIEW = {"accepted": ("ACCEPTED", "Accepted by reader"), "rejected": ("REJECTED", "Rejected by reader"),
           "proposed": ("PROPOSED", "Not reviewed")}
_LATERALITY = {"right": codes.SCT.Right, "left": codes.SCT.Left}
_SUMMARY = {"with": ("111242", "All algorithms succeeded; with findings"),
            "without": ("111241", "All algorithms succeeded; without findings"),
            "not searched": ("111245", "No algorithms succeeded; without findings")}


def _local(value: str, meaning: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value, LOCAL_SCHEME, meaning)


def make_measurement_report(report: Report, source: list[pydicom.Dataset], segmentation: Dataset | None = None, *,
                            series_uid: str | None = None, sop_instance_uid: str | None = None):
    """The TID 1500 SR of the report's masses and nodules (layout in the module docstring).

    Args:
        report: the analysis; its lung findings become measurement groups in report order.
        source: the analysed CT instances (headers suffice), the SR's evidence.
        segmentation: the SEG of :func:`lunglesionai.io.dicom_seg.make_segmentation` (segment n = the n-th lung
            finding with a mask); None when no finding has a mask.
        series_uid, sop_instance_uid: UIDs of the SR (None: new ones).

    Returns:
        ``highdicom.sr.Comprehensive3DSR`` (a pydicom Dataset), complete, unverified.

    Raises:
        ValueError: a masked finding has no segment in ``segmentation`` (tracking ids differ).
    """
    import highdicom as hd

    series_of_source = str(source[0].SeriesInstanceUID)
    segments = _segment_numbers(segmentation)
    groups = [_summary_group(report, series_of_source)]
    for finding in report.lung_findings():
        if finding.mask is not None and finding.id not in segments:
            raise ValueError(f"finding {finding.id} has a mask but no segment in the SEG")
        groups.append(_finding_group(finding, series_of_source, segmentation, segments.get(finding.id)))
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[ALGORITHM_NAME, report.version]), name=ALGORITHM_NAME,
        manufacturer_name=ALGORITHM_NAME, model_name=f"lunglesionai {report.version}".strip())
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    content = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("77477000", "SCT", "Computed tomography"),
        imaging_measurements=groups,
    )
    evidence = list(source) + ([segmentation] if segmentation is not None else [])
    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=content[0], series_instance_uid=series_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1,
        manufacturer=ALGORITHM_NAME, is_complete=True, series_description="LungLesionAI measurements (SR)",
        coding_schemes=[_local_scheme()], manufacturer_model_name="lunglesionai",
        software_versions=report.version or "unknown",
    )


def _segment_numbers(segmentation: Dataset | None) -> dict[str, int]:
    if segmentation is None:
        return {}
    return {str(item.TrackingID): int(item.SegmentNumber) for item in segmentation.SegmentSequence}


def _local_scheme():
    import highdicom as hd

    return hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME, name="LungLesionAI local codes", responsible_organization="LungLesionAI project")


def _summary_group(report: Report, series_of_source: str):
    import highdicom as hd

    not_searched = any(w.startswith(NO_LUNG_WARNING) for w in report.warnings)
    key = "not searched" if not_searched and not report.lung_findings() else (
        "with" if report.lung_findings() else "without")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid(series_of_source, "summary"),
                                                     identifier="summary"),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            hd.sr.CodedConcept("111017", "DCM", "CAD Processing and Findings Summary"),
            hd.sr.CodedConcept(_SUMMARY[key][0], "DCM", _SUMMARY[key][1]))],
    )


def _finding_group(finding: Finding, series_of_source: str, segmentation: Dataset | None, segment: int | None):
    import highdicom as hd

    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid(series_of_source, finding.id),
                                                     identifier=finding.id),
        finding_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        finding_type=hd.sr.CodedConcept(_TYPE_CODES[finding.kind][0], "SCT", _TYPE_CODES[finding.kind][1]),
        finding_sites=_finding_sites(finding),
        measurements=_measurements(finding),
        qualitative_evaluations=_evaluations(finding),
    )
    if segment is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    referenced = hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=segment, source_series=hd.sr.SourceSeriesForSegmentation(series_of_source))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=referenced, **common)


def _finding_sites(finding: Finding):
    import highdicom as hd

    side = (finding.location or {}).get("side")
    if side is None:
        return None
    return [hd.sr.FindingSite(anatomic_location=hd.sr.CodedConcept("39607008", "SCT", "Lung"),
                              laterality=_LATERALITY[side])]


def _measurements(finding: Finding) -> list:
    import highdicom as hd

    mm, mm3 = codes.UCUM.Millimeter, hd.sr.CodedConcept("mm3", "UCUM", "cubic millimeter")
    hu, one = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"), hd.sr.CodedConcept("1", "UCUM", "no units")
    mean = hd.sr.CodedConcept("373098007", "SCT", "Mean")
    cancer = hd.sr.CodedConcept("111047", "DCM", "Probability of cancer")
    rows = [
        (finding.long_axis_mm, hd.sr.CodedConcept("103339001", "SCT", "Long axis"), mm, {}),
        (finding.short_axis_mm, hd.sr.CodedConcept("103340004", "SCT", "Short axis"), mm, {}),
        (finding.mean_diameter_mm, hd.sr.CodedConcept("81827009", "SCT", "Diameter"), mm, {"derivation": mean}),
        (finding.volume_mm3, hd.sr.CodedConcept("118565006", "SCT", "Volume"), mm3, {}),
        (finding.mean_hu, hd.sr.CodedConcept("112031", "DCM", "Attenuation Coefficient"), hu,
         {"derivation": mean}),
        (finding.malignancy_probability, cancer, one, {}),
        (finding.brock_risk, _local("BROCK", "Brock (PanCan) malignancy risk"), one, {}),
    ]
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit, **extra)
            for value, name, unit, extra in rows if value is not None]


def _evaluations(finding: Finding) -> list:
    import highdicom as hd

    items = []
    if finding.texture in _TEXTURES:
        items.append((_local("TEXTURE", "Nodule texture"), _local(*_TEXTURES[finding.texture])))
    if finding.lung_rads is not None:
        items.append((_local("LUNGRADS", "Lung-RADS v2022 category"),
                      _local(f"LR{finding.lung_rads}", f"Lung-RADS {finding.lung_rads}")))
    items.append((_local("REVIEW", "Review status"), _local(*_REVIEW[finding.status])))
    return [hd.sr.QualitativeEvaluation(name, value) for name, value in items]
