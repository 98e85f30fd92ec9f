"""DICOM SEG of the lung findings (lunglesionai.io.dicom_seg): segments, terminology, geometry, dciodvfy, dcmqi."""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_out_tools import dciodvfy_errors, dcmqi_segments, mask_on_grid
from lunglesionai.io.dicom_export import synthetic_ct_datasets
from lunglesionai.io.dicom_seg import make_segmentation, segmented_findings, source_slice_indices, tracking_uid
from report_fixtures import grid_volume, make_small_report, sphere_finding

MODELS = [{"name": "densesharp-grader", "version": "lunglesionai-grader/1", "sha256": "ab" * 32}]


@pytest.fixture(scope="module")
def case():
    """A report with a mass M1 and nodules N1, N2 (masks) and N3 (no mask) on an oblique grid whose k axis points
    inferior, its synthetic CT instances, and the SEG written to a file."""
    volume = grid_volume()
    report = make_small_report(with_lesion=True)
    mass = sphere_finding("M1", "mass", (9, 14, 7), 2, volume)
    report = replace(report, findings=[mass, *report.findings], models=MODELS, version="0.1.0")
    report.findings[1] = replace(report.findings[1], status="accepted")
    source = synthetic_ct_datasets(volume)
    return report, source


@pytest.fixture(scope="module")
def seg_file(case, tmp_path_factory):
    report, source = case
    path = tmp_path_factory.mktemp("seg") / "nodules.seg.dcm"
    make_segmentation(report, source).save_as(path, enforce_file_format=True)
    return path


def test_one_segment_per_masked_lung_finding_in_report_order(case, seg_file):
    report, _ = case
    seg = pydicom.dcmread(seg_file)
    items = list(seg.SegmentSequence)
    assert [f.id for f in segmented_findings(report)] == ["M1", "N1", "N2"]  # N3 has no mask, L1 is a lesion
    assert [str(s.TrackingID) for s in items] == ["M1", "N1", "N2"]
    assert [str(s.SegmentLabel) for s in items] == ["Mass 1", "Nodule 1", "Nodule 2"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in items] == ["4147007", "27925004", "27925004"]
    assert {s.SegmentedPropertyCategoryCodeSequence[0].CodeValue for s in items} == {"49755003"}
    assert [s.SegmentAlgorithmType for s in items] == ["AUTOMATIC", "SEMIAUTOMATIC", "AUTOMATIC"]
    series = str(case[1][0].SeriesInstanceUID)
    assert [str(s.TrackingUID) for s in items] == [tracking_uid(series, f) for f in ("M1", "N1", "N2")]
    assert seg.SegmentationType == "BINARY" and seg.SeriesInstanceUID != series
    assert seg.StudyInstanceUID == case[1][0].StudyInstanceUID and seg.PatientID == case[1][0].PatientID


def test_algorithm_identification_names_the_models(seg_file):
    algorithm = pydicom.dcmread(seg_file).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "LungLesionAI" and algorithm.AlgorithmVersion == "0.1.0"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert "sha256:" + "ab" * 32 in algorithm.AlgorithmParameters and "densesharp-grader" in algorithm.AlgorithmParameters


def test_highdicom_reads_back_the_masks(case, seg_file):
    report, source = case
    seg = hd.seg.segread(seg_file)
    uids = [str(ds.SOPInstanceUID) for ds in source]  # instance n shows slice k = n of the grid
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3], combine_segments=False,
                                               skip_overlap_checks=True)
    for n, finding in enumerate(segmented_findings(report)):
        assert np.array_equal(pixels[..., n].astype(bool), mask_on_grid(finding, report.input.shape_zyx))


def test_dciodvfy_finds_no_errors(seg_file):
    assert dciodvfy_errors(seg_file) == []


def test_dcmqi_gives_back_our_masks(case, seg_file):
    report, _ = case
    masks = dcmqi_segments(seg_file, report.input)
    assert sorted(masks) == ["M1", "N1", "N2"]
    for finding in segmented_findings(report):
        expected = mask_on_grid(finding, report.input.shape_zyx)
        assert expected.any() and np.array_equal(masks[finding.id], expected), finding.id


def test_overlapping_masks_become_separate_segments(case):
    report, source = case
    n1 = report.findings[1]
    twin = replace(n1, id="N9")  # the same voxels as N1
    seg = make_segmentation(replace(report, findings=[*report.findings, twin]), source)
    assert [str(s.TrackingID) for s in seg.SegmentSequence][-1] == "N9"
    pixels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        [str(ds.SOPInstanceUID) for ds in source], segment_numbers=[2, 4], combine_segments=False,
        skip_overlap_checks=True)
    assert pixels.any() and np.array_equal(pixels[..., 0], pixels[..., 1])


@pytest.mark.parametrize("damage, message", [
    (lambda src: src[:-1], "instances"),
    (lambda src: [_with(src[0], PixelSpacing=["0.5", "0.5"]), *src[1:]], "PixelSpacing"),
    (lambda src: [_with(src[0], ImageOrientationPatient=[1, 0, 0, 0, 1, 0]), *src[1:]], "ImageOrientationPatient"),
    (lambda src: [_with(src[0], ImagePositionPatient=[float(v) + 0.3 for v in src[0].ImagePositionPatient]),
                  *src[1:]], "not a slice"),
    (lambda src: [src[1], *src[1:]], "one slice"),
])
def test_a_series_off_the_grid_is_refused(case, damage, message):
    report, source = case
    with pytest.raises(ValueError, match=message):
        source_slice_indices(report.input, damage(source))


def test_slices_map_to_their_k_in_any_order(case):
    report, source = case
    order = np.random.default_rng(0).permutation(len(source))
    assert source_slice_indices(report.input, [source[n] for n in order]).tolist() == order.tolist()


def test_no_segmented_finding_is_refused(case):
    report, source = case
    with pytest.raises(ValueError, match="no mass or nodule with a mask"):
        make_segmentation(replace(report, findings=[f for f in report.findings if f.kind == "lesion"]), source)


def test_tracking_uid_is_stable_and_distinct():
    assert tracking_uid("1.2.3", "N1") == tracking_uid("1.2.3", "N1")
    assert len({tracking_uid("1.2.3", "N1"), tracking_uid("1.2.3", "N2"), tracking_uid("1.2.4", "N1")}) == 3


def _with(ds: pydicom.Dataset, **values) -> pydicom.Dataset:
    copy = deepcopy(ds)
    for key, value in values.items():
        setattr(copy, key, value)
    return copy
