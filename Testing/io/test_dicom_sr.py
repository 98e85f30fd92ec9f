"""TID 1500 SR of the measurements (lunglesionai.io.dicom_sr): layout, values, dciodvfy, dcmqi tid1500reader."""

from __future__ import annotations

from dataclasses import replace

import highdicom as hd
import pydicom
import pytest

from dicom_out_tools import dciodvfy_errors, dcmqi_values, expected_values, tid1500_json
from lunglesionai.core.vocabulary import NO_LUNG_WARNING
from lunglesionai.io.dicom_export import synthetic_ct_datasets
from lunglesionai.io.dicom_seg import make_segmentation, tracking_uid
from lunglesionai.io.dicom_sr import make_measurement_report
from report_fixtures import grid_volume, make_small_report

MEASURED = dict(long_axis_mm=7.5, short_axis_mm=5.25, mean_diameter_mm=6.375, mean_hu=-20.5,
                malignancy_probability=0.31, texture="part-solid", lung_rads="4A", brock_risk=0.0712345678,
                status="rejected", location={"side": "left", "lobe": None, "zone": "upper"})


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """N1 fully measured and rejected, N2 (mask, volume only), N3 (no mask), L1 (lesion: not in the SR)."""
    report = make_small_report(with_lesion=True)
    report.findings[0] = replace(report.findings[0], **MEASURED)
    source = synthetic_ct_datasets(grid_volume())
    seg = make_segmentation(report, source)
    folder = tmp_path_factory.mktemp("sr")
    make_measurement_report(report, source, seg).save_as(folder / "report.sr.dcm", enforce_file_format=True)
    return report, source, seg, folder / "report.sr.dcm"


def _groups(path):
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))
    return sr, sr.content.get_volumetric_roi_measurement_groups()


def test_one_volumetric_group_per_segmented_finding_referencing_its_segment(case):
    report, source, seg, path = case
    sr, groups = _groups(path)
    assert [g.tracking_identifier for g in groups] == ["N1", "N2"]
    series = str(source[0].SeriesInstanceUID)
    assert [g.tracking_uid for g in groups] == [tracking_uid(series, "N1"), tracking_uid(series, "N2")]
    for number, group in enumerate(groups, start=1):
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.referenced_segment_numbers == [number]
        assert segment.source_series_for_segmentation.value == series
    assert sr.StudyInstanceUID == source[0].StudyInstanceUID and sr.Modality == "SR"


def test_measurements_and_evaluations_hold_the_report_values(case):
    report, _, _, path = case
    _, groups = _groups(path)
    values = {m.name.meaning: (m.value, m.unit.value) for m in groups[0].get_measurements()}
    finding = report.findings[0].to_dict()
    assert {name: v for name, (v, _) in values.items()} == pytest.approx(expected_values(finding), rel=1e-12)
    assert values["Volume"][1] == "mm3" and values["Attenuation Coefficient"][1] == "[hnsf'U]"
    assert values["Long axis"][1] == "mm" and values["Probability of cancer"][1] == "1"
    evaluations = {q.name.meaning: q.value.meaning for q in groups[0].get_qualitative_evaluations()}
    assert evaluations["Nodule texture"] == "Part-solid" and evaluations["Lung-RADS v2022 category"] == "Lung-RADS 4A"
    assert evaluations["Review status"] == "Rejected by reader"
    n2 = {m.name.meaning for m in groups[1].get_measurements()}
    assert n2 == {"Volume"}  # only what report.json has; nothing invented


def test_a_finding_without_mask_gets_a_group_without_segment(case):
    _, _, _, path = case
    sr, _ = _groups(path)
    assert sr.content.get_planar_roi_measurement_groups() == []
    plain = sr.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in plain] == ["summary", "N3"]
    assert {m.name.meaning for m in plain[1].get_measurements()} == {"Volume"}


def test_dciodvfy_finds_no_errors(case):
    assert dciodvfy_errors(case[3]) == []


def test_dcmqi_reads_the_values_of_report_json(case):
    report, source, seg, path = case
    groups = {g["TrackingIdentifier"]: g for g in tid1500_json(path)["Measurements"]}
    assert list(groups) == ["summary", "N1", "N2", "N3"]
    for finding in report.lung_findings():
        assert dcmqi_values(groups[finding.id]) == pytest.approx(expected_values(finding.to_dict()), rel=1e-9)
    assert groups["N1"]["ReferencedSegment"] == 1 and groups["N2"]["ReferencedSegment"] == 2
    assert groups["N1"]["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
    assert groups["N1"]["SourceSeriesForImageSegmentation"] == source[0].SeriesInstanceUID
    assert groups["N1"]["Laterality"]["CodeMeaning"] == "Left"


@pytest.mark.parametrize("warnings, summary", [([], "111241"), ([f"{NO_LUNG_WARNING} (…)"], "111245")])
def test_without_findings_the_sr_says_so(case, warnings, summary):
    report, source, _, _ = case
    empty = replace(report, findings=[f for f in report.findings if f.kind == "lesion"], warnings=warnings)
    sr = hd.sr.Comprehensive3DSR.from_dataset(make_measurement_report(empty, source, None))
    assert sr.content.get_volumetric_roi_measurement_groups() == []
    groups = sr.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["summary"]
    (evaluation,) = groups[0].get_qualitative_evaluations()
    assert evaluation.name.value == "111017" and evaluation.value.value == summary


def test_a_masked_finding_missing_from_the_seg_is_refused(case):
    report, source, seg, _ = case
    renamed = replace(report, findings=[replace(report.findings[0], id="N7"), *report.findings[1:]])
    with pytest.raises(ValueError, match="N7 has a mask but no segment"):
        make_measurement_report(renamed, source, seg)
