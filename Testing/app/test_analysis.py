"""analyze_input end to end with DICOM output: a phantom exported as DICOM, NRRD with --dicom-out, a real LIDC slab.

Checked with the field's tools where installed: dciodvfy (no Error lines), dcmqi (SEG voxels = our masks, SR numbers
= report.json); pydicom/highdicom read everything back.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pydicom
import pytest
import slicerio
import torch

from conftest import shared_path
from dicom_out_tools import dciodvfy_errors, dcmqi_segments, dcmqi_values, expected_values, tid1500_json
from lunglesionai.app.analysis import CT_SERIES_FOLDER, analyze_input
from lunglesionai.app.cli import main
from lunglesionai.core.findings import InputInfo
from lunglesionai.io import load_volume, save_volume
from lunglesionai.io.dicom_results import SEG_NAME, SR_NAME, export_volume_as_dicom_series
from lunglesionai.io.dicom_seg import tracking_uid
from lunglesionai.pipeline import PipelineConfig
from lunglesionai.synth import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def phantom():
    torch.set_num_threads(1)
    return make_phantom(replace(PhantomConfig.small(), seed=3))


@pytest.fixture(scope="module")
def dicom_run(phantom, tmp_path_factory):
    """The phantom exported as a DICOM series and analysed from that folder (classical detector and the grader, to
    stay fast; the LIDC test runs the default pipeline)."""
    root = tmp_path_factory.mktemp("dicom_run")
    export_volume_as_dicom_series(phantom.volume, root / "ct", patient_id="PHANTOM-3")
    paths = analyze_input(root / "ct", root / "out", indication="screening",
                          config=PipelineConfig(detector="classical", fpr=False))
    return root, paths


def _report(out):
    return json.loads((out / "report.json").read_text())


def _lung(report):
    return [f for f in report["findings"] if f["kind"] in ("nodule", "mass")]


def _seg_masks_by_id(out, info: InputInfo):
    """The .seg.nrrd's masks, {finding id: (Z, Y, X) bool}."""
    segmentation = slicerio.read_segmentation(str(out / "nodules.seg.nrrd"))
    voxels = np.asarray(segmentation["voxels"])
    layers = voxels[np.newaxis] if voxels.ndim == 3 else voxels
    return {s["id"]: (layers[int(s.get("layer", 0))] == int(s["labelValue"])).transpose(2, 1, 0)
            for s in segmentation["segments"]}


def _check_dicom_outputs(out, source_series_uid):
    """SEG and SR: dciodvfy clean, same order as report.json, dcmqi masks and values equal ours."""
    report = _report(out)
    lung = _lung(report)
    assert lung, "the check needs at least one nodule"
    info = InputInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["input"].items()
                        if k != "description"})
    seg, sr = pydicom.dcmread(out / SEG_NAME), pydicom.dcmread(out / SR_NAME)
    assert [str(s.TrackingID) for s in seg.SegmentSequence] == [f["id"] for f in lung]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_series_uid
    assert seg.StudyInstanceUID == sr.StudyInstanceUID
    assert dciodvfy_errors(out / SEG_NAME) == [] and dciodvfy_errors(out / SR_NAME) == []
    ours = _seg_masks_by_id(out, info)
    theirs = dcmqi_segments(out / SEG_NAME, info)
    for f in lung:
        assert ours[f["id"]].any() and np.array_equal(theirs[f["id"]], ours[f["id"]]), f["id"]
    groups = {g["TrackingIdentifier"]: g for g in tid1500_json(out / SR_NAME)["Measurements"]}
    assert list(groups) == ["summary", *[f["id"] for f in lung]]
    assert [str(s.TrackingUID) for s in seg.SegmentSequence] == [tracking_uid(source_series_uid, f["id"]) for f in lung]
    for number, f in enumerate(lung, start=1):
        assert groups[f["id"]]["TrackingUniqueIdentifier"] == tracking_uid(source_series_uid, f["id"])  # stable
        assert dcmqi_values(groups[f["id"]]) == pytest.approx(expected_values(f), rel=1e-9)
        assert groups[f["id"]]["ReferencedSegment"] == number
        assert groups[f["id"]]["SourceSeriesForImageSegmentation"] == source_series_uid


def test_dicom_series_input_gives_seg_and_sr(dicom_run):
    root, paths = dicom_run
    out = root / "out"
    assert paths[SEG_NAME] == out / SEG_NAME and paths[SR_NAME] == out / SR_NAME
    manifest = json.loads((out / ".lunglesionai-manifest.json").read_text())
    assert {SEG_NAME, SR_NAME} <= set(manifest["files"])
    source_uid = str(pydicom.dcmread(next((root / "ct").iterdir())).SeriesInstanceUID)
    _check_dicom_outputs(out, source_uid)
    assert pydicom.dcmread(out / SEG_NAME).PatientID == "PHANTOM-3"
    assert any(f.get("malignancy_probability") is not None for f in _lung(_report(out)))  # graded: in the SR too


def test_nrrd_with_dicom_out_exports_the_series_and_references_it(phantom, tmp_path, capsys):
    path = tmp_path / "phantom.nrrd"
    save_volume(phantom.volume, path)
    code = main(["analyze", str(path), "-o", str(tmp_path / "out"), "--dicom-out", "--detector", "classical",
                 "--no-fpr", "--no-grading", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "out"
    series = load_volume(out / CT_SERIES_FOLDER)
    assert np.array_equal(series.hu, phantom.volume.hu)  # identity direction: k along the normal, same grid
    source_uid = str(pydicom.dcmread(next((out / CT_SERIES_FOLDER).iterdir())).SeriesInstanceUID)
    _check_dicom_outputs(out, source_uid)
    assert f"{CT_SERIES_FOLDER}/CT000001.dcm" in json.loads((out / ".lunglesionai-manifest.json").read_text())["files"]


def test_existing_output_is_refused_before_the_ct_is_read(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        analyze_input(tmp_path / "missing_ct", tmp_path / "out")


def test_real_lidc_slab(tmp_path):
    slab = shared_path("lidc_slabs", "LIDC-IDRI-0001")
    torch.set_num_threads(1)
    paths = analyze_input(slab, tmp_path / "out")
    assert SEG_NAME in paths and SR_NAME in paths
    source_uid = str(pydicom.dcmread(next(slab.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID)
    _check_dicom_outputs(tmp_path / "out", source_uid)
