"""Tests of whole-scan universal lesion detection: linking, LPS boxes, known-finding removal, model folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lunglesionai.core.findings import Finding
from lunglesionai.core.volume import Volume
from lunglesionai.nets.model_store import ModelFileError, save_model
from lunglesionai.stages.universal_lesions.detector import (
    ULD_FORMAT,
    WEIGHTS_FILE,
    InferenceSettings,
    LinkedLesion,
    UniversalLesionDetector,
    drop_known_findings,
    lesions_to_findings,
    link_slices,
)
from lunglesionai.stages.universal_lesions.grid import SliceGrid
from uld_fixtures import TOY_NET, toy_case, train_toy_model


def _slice(*boxes_scores):
    boxes = np.array([b for b, _ in boxes_scores], float).reshape(-1, 4)
    return {"boxes": boxes, "scores": np.array([s for _, s in boxes_scores], float),
            "labels": np.zeros(len(boxes), int)}


def test_link_slices_joins_overlapping_boxes_on_consecutive_slices():
    a, b = [10, 10, 20, 20], [40, 40, 50, 52]
    per_slice = [_slice((a, 0.9)), _slice(([11, 10, 21, 20], 0.8), (b, 0.7)), _slice((b, 0.95)),
                 _slice(([60, 60, 70, 70], 0.1)),  # below min_score: ignored
                 _slice(), _slice(), _slice((a, 0.6))]  # a box far below the others in z: a new lesion
    lesions = link_slices(per_slice, list(range(7)), InferenceSettings(min_score=0.3, max_gap=1))
    assert [les.slices for les in lesions] == [[1, 2], [0, 1], [6]]  # by decreasing best score
    assert lesions[0].score == pytest.approx(0.95) and lesions[0].key == 1
    gap = link_slices([_slice((a, 0.9)), _slice(), _slice((a, 0.8))], [0, 1, 2], InferenceSettings(max_gap=1))
    assert [les.slices for les in gap] == [[0, 2]]  # one empty slice is bridged


def test_lesions_become_findings_in_lps():
    grid = SliceGrid(np.zeros((10, 64, 64), np.int16), np.array([-50.0, -60.0, 100.0]), (1.4, 1.4, 2.0))
    lesion = LinkedLesion([3, 4, 5], [np.array([10.0, 20, 20, 30])] * 3, [0.5, 0.8, 0.6], [0, 3, 3])
    finding = lesions_to_findings([lesion], grid, TOY_NET.__class__(), stride=1)[0]
    assert finding.kind == "lesion" and finding.id == "L1" and finding.detection_score == pytest.approx(0.8)
    (x0, y0, z0), (x1, y1, z1) = finding.bbox_lps_mm
    assert (x0, x1) == pytest.approx((-50 + 14.0, -50 + 28.0)) and (y0, y1) == pytest.approx((-60 + 28.0, -60 + 42.0))
    assert (z0, z1) == pytest.approx((100 + 2.5 * 2.0, 100 + 5.5 * 2.0))  # slices 3–5 ± half a slice
    assert finding.extra["lesion_type"] == "liver" and finding.extra["slices"] == 3  # class 3 = liver
    assert finding.extra["key_slice_z_mm"] == pytest.approx(108.0)
    Finding.from_dict(json.loads(json.dumps(finding.to_dict())))  # JSON round trip


def test_lesions_at_reported_nodules_are_dropped():
    grid = SliceGrid(np.zeros((10, 64, 64), np.int16), np.zeros(3), (1.0, 1.0, 1.0))
    near = LinkedLesion([4, 5], [np.array([10.0, 10, 20, 20])] * 2, [0.9, 0.9], [4, 4])
    far = LinkedLesion([4], [np.array([40.0, 40, 50, 50])], [0.7], [0])
    nodule = Finding("N1", "nodule", (15.0, 15.0, 4.5), ((12.0, 12.0, 2.0), (18.0, 18.0, 7.0)))
    assert drop_known_findings([near, far], grid, [nodule]) == [far]
    assert drop_known_findings([near, far], grid, []) == [near, far]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    result = train_toy_model()
    folder = tmp_path_factory.mktemp("uld")
    save_model(folder, result.detector.network.state_dict(), WEIGHTS_FILE,
               {"format": ULD_FORMAT, "network": TOY_NET.to_dict(), "operating_point": {"min_score": 0.3}})
    return folder


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_detect_lesions_finds_the_disc_in_lps(model_folder, direction):
    model = UniversalLesionDetector.load(model_folder)
    assert model.model_info()["version"] == ULD_FORMAT and model.settings().min_score == pytest.approx(0.3)
    case = toy_case(200)
    hu = np.asarray(case.grid.hu)
    if direction[0] < 0:  # the same anatomy stored with i → right and j → anterior
        hu = hu[:, ::-1, ::-1]
    volume = Volume(np.ascontiguousarray(hu), (1.4, 1.4, 2.0), (0.0, 0.0, 0.0), direction)
    box = case.lesions[0].boxes[5]
    centre_kji = [5.5, 0.5 * (box[1] + box[3]), 0.5 * (box[0] + box[2])]
    if direction[0] < 0:
        centre_kji[1:] = [63 - centre_kji[1], 63 - centre_kji[2]]
    disc_lps = volume.kji_to_lps([centre_kji])[0]
    findings = model.detect_lesions(volume, lung_mask=np.zeros(volume.shape_zyx, np.uint8))
    assert findings and findings[0].extra["lesion_type"] == "liver" and findings[0].extra["in_lung"] is False
    best = findings[0]
    radius_mm = 0.5 * (box[2] - box[0]) * 1.4
    assert np.linalg.norm(np.subtract(best.center_lps_mm[:2], disc_lps[:2])) < 0.5 * radius_mm
    lo, hi = np.asarray(best.bbox_lps_mm)
    assert np.all(lo[:2] <= disc_lps[:2]) and np.all(disc_lps[:2] <= hi[:2])
    nodule = Finding("N1", "nodule", tuple(best.center_lps_mm), tuple(map(tuple, best.bbox_lps_mm)))
    remaining = model.detect_lesions(volume, exclude_findings=[nodule])
    assert all(np.linalg.norm(np.subtract(f.center_lps_mm, best.center_lps_mm)) > 1.0 for f in remaining)
    with pytest.raises(ValueError, match="lung mask shape"):
        model.detect_lesions(volume, lung_mask=np.zeros((1, 2, 3)))


def test_model_folder_errors_name_the_problem(tmp_path, model_folder):
    with pytest.raises(ModelFileError, match="train uld"):
        UniversalLesionDetector.load(tmp_path / "missing")
    wrong = tmp_path / "wrong"
    save_model(wrong, {}, WEIGHTS_FILE, {"format": "lunglesionai-detector/1", "network": TOY_NET.to_dict()})
    with pytest.raises(ModelFileError, match="format"):
        UniversalLesionDetector.load(wrong)
    bad = tmp_path / "bad"
    config = json.loads((model_folder / "config.json").read_text())
    save_model(bad, {"nothing": torch.zeros(1)}, WEIGHTS_FILE, {"format": ULD_FORMAT, "network": config["network"]})
    with pytest.raises(ModelFileError, match="do not fit"):
        UniversalLesionDetector.load(bad)


def test_inference_settings_validation():
    with pytest.raises(ValueError, match="stride"):
        InferenceSettings(stride=0)
    with pytest.raises(ValueError, match="link_iou"):
        InferenceSettings(link_iou=0.0)


def test_lesion_findings_export_as_report_and_roi_markups(model_folder, tmp_path):
    from lunglesionai.core.findings import InputInfo, Report
    from lunglesionai.io.outputs import write_outputs

    model = UniversalLesionDetector.load(model_folder)
    volume = Volume(np.ascontiguousarray(toy_case(201).grid.hu), (1.4, 1.4, 2.0), (0.0, 0.0, 0.0))
    lesions = model.detect_lesions(volume)
    assert lesions
    report = Report(InputInfo.from_volume(volume), findings=lesions, models=[model.model_info()])
    report.stages["uld"] = "MP3D-style 2.5-D RetinaNet"
    paths = write_outputs(report, tmp_path / "out")
    markups = json.loads(paths["lesions_markups"].read_text())["markups"]
    assert [m["name"] for m in markups] == [f.id for f in lesions] and all(m["roiType"] == "Box" for m in markups)
    written = json.loads(paths["report"].read_text())  # validated against lunglesionai-report/1 before writing
    assert written["findings"][0]["kind"] == "lesion" and written["findings"][0]["lesion_type"] == "liver"
    schema_path = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "markups-schema-v1.0.3.json"
    if schema_path.is_file():
        import jsonschema

        jsonschema.validate(json.loads(paths["lesions_markups"].read_text()), json.loads(schema_path.read_text()))


def test_pipeline_runs_uld_and_reports_lesions_beside_nodules(model_folder):
    from lunglesionai.core.findings import NOT_RUN
    from lunglesionai.pipeline import PipelineConfig, analyze_volume

    case = toy_case(200)
    volume = Volume(np.ascontiguousarray(case.grid.hu), (1.4, 1.4, 2.0), (0.0, 0.0, 0.0))
    report = analyze_volume(volume, PipelineConfig(uld=True, uld_model_dir=str(model_folder), fpr=False, grade=False))
    assert report.stages["uld"].startswith("MP3D") and "uld-mp3d" in [m["name"] for m in report.models]
    lesions = report.lesions()
    assert lesions and lesions[0].id == "L1" and lesions[0].extra["lesion_type"] == "liver"
    assert report.timings_s["uld"] >= 0
    off = analyze_volume(volume, PipelineConfig(uld=False, fpr=False, grade=False))
    assert off.stages["uld"] == NOT_RUN and off.lesions() == []
