"""Tests of the learned detector: network, grid geometry, box conversion, model folders and a tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lunglesionai.core.volume import Volume
from lunglesionai.nets.model_store import ModelFileError, load_model, save_model
from lunglesionai.nets.retina_unet import DetectorConfig, build_detector
from lunglesionai.stages.retina_detector import (
    DETECTOR_FORMAT,
    DetectionGrid,
    LearnedDetector,
    boxes_to_candidates,
    combine_scores,
    detection_grid,
)
from lunglesionai.training.detector import (
    DetectorTrainConfig,
    TrainingCase,
    box_ellipsoids,
    train_detector,
)

TINY = DetectorConfig(channels=(8, 8), fpn_channels=8, patch_size=(32, 32, 32), base_anchor_shapes=((4, 4, 4),),
                      score_threshold=0.0)


def test_config_round_trip_and_validation():
    assert DetectorConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(ValueError, match="fpn_channels"):
        DetectorConfig(fpn_channels=12)
    with pytest.raises(ValueError, match="patch_size"):
        DetectorConfig(patch_size=(30, 32, 32))


def test_network_outputs_boxes_in_the_input_frame():
    torch.manual_seed(0)
    detector = build_detector(TINY).eval()
    with torch.no_grad():
        out = detector([torch.rand(1, 32, 40, 48)], use_inferer=False)[0]
    boxes = out["boxes"]
    assert boxes.shape[1] == 6 and len(boxes) == len(out["labels_scores"]) > 0
    assert torch.all(boxes[:, 3:] >= boxes[:, :3])
    assert torch.all((out["labels_scores"] >= 0) & (out["labels_scores"] <= 1))


def test_classification_loss_is_bce_or_focal():
    from monai.losses import FocalLoss

    assert isinstance(build_detector(TINY, training=True).cls_loss_func, torch.nn.BCEWithLogitsLoss)
    focal = build_detector(TINY, training=True, classification_loss="focal")
    assert isinstance(focal.cls_loss_func, FocalLoss)
    logits, target = torch.tensor([[3.0], [-3.0]]), torch.tensor([[1.0], [0.0]])
    assert float(focal.cls_loss_func(logits, target)) < 0.01 * float(torch.nn.BCEWithLogitsLoss()(logits, target))
    with pytest.raises(ValueError, match="classification_loss"):
        build_detector(TINY, classification_loss="hinge")


def _volume_with_blob(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    hu = np.full((40, 50, 60), -850, np.int16)
    hu[18:23, 23:28, 28:33] = 40  # a 5-voxel cube centred at (k, j, i) = (20, 25, 30)
    volume = Volume(hu, (0.8, 0.8, 1.25), (10.0, -20.0, 5.0), direction)
    lung = np.zeros(hu.shape, np.uint8)
    lung[5:35, 5:45, 5:55] = 1
    return volume, lung


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_detection_grid_keeps_lps_geometry(direction):
    volume, lung = _volume_with_blob(direction)
    grid = detection_grid(volume, lung, spacing_mm=1.5, margin_mm=4.0)
    assert all(s % 8 == 0 for s in grid.image.shape)
    assert grid.image.dtype == np.float32 and 0.0 <= grid.image.min() and grid.image.max() <= 1.0
    blob_lps = volume.kji_to_lps([[20.0, 25.0, 30.0]])[0]
    bright = np.argwhere(grid.image > 0.5).mean(axis=0)  # the blob's centroid on the grid (x, y, z)
    assert np.linalg.norm(grid.index_to_lps(bright[None])[0] - blob_lps) < 1.0  # under one grid voxel
    np.testing.assert_allclose(grid.lps_to_index(grid.index_to_lps(bright[None])), bright[None])
    assert detection_grid(volume, np.zeros_like(lung), 1.5) is None
    with pytest.raises(ValueError, match="shape"):
        detection_grid(volume, lung[1:], 1.5)


def test_boxes_become_candidates_on_the_volume_grid():
    volume, lung = _volume_with_blob()
    grid = DetectionGrid(np.zeros((40, 48, 56), np.float32), np.array([12.0, -18.0, 10.0]), 1.5)
    target_lps = volume.kji_to_lps([[20.0, 25.0, 30.0]])[0]
    c = grid.lps_to_index(target_lps[None])[0]
    outside = grid.lps_to_index(volume.kji_to_lps([[1.0, 1.0, 1.0]]))[0]  # 4 voxels from the lung mask
    boxes = np.array([[*(c - 2), *(c + 2)], [*(outside - 1), *(outside + 1)]])
    candidates = boxes_to_candidates(volume, grid, boxes, np.array([0.9, 0.95]), lung, [{"a": 1}, {"a": 2}])
    assert len(candidates) == 1
    np.testing.assert_allclose(candidates[0].center_kji, (20.0, 25.0, 30.0), atol=1e-6)
    assert candidates[0].radius_mm == pytest.approx(3.0)  # half of the 4-voxel box side × 1.5 mm
    assert candidates[0].details == {"a": 1} and candidates[0].method == "retinanet"
    everything = boxes_to_candidates(volume, grid, boxes, np.array([0.9, 0.95]))
    assert [round(c.score, 2) for c in everything] == [0.95, 0.9]  # no lung mask: both, best first


def test_combine_scores_needs_both_stages():
    np.testing.assert_allclose(combine_scores(np.array([1.0, 0.25, 0.9]), np.array([0.04, 1.0, 0.0])),
                               [0.2, 0.5, 0.0])


def test_model_folder_round_trip_and_errors(tmp_path):
    detector = build_detector(TINY)
    save_model(tmp_path / "m", detector.network.state_dict(), "detector.pt",
               {"format": DETECTOR_FORMAT, "network": TINY.to_dict(), "operating_point": {"min_score": 0.3}})
    loaded = LearnedDetector.load(tmp_path / "m")
    assert loaded.config == TINY and loaded.default_min_score == 0.3
    assert loaded.model_info()["sha256"] == json.loads((tmp_path / "m" / "config.json").read_text())["weights_sha256"]
    with pytest.raises(ModelFileError, match="train detector"):
        LearnedDetector.load(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="format"):
        load_model(tmp_path / "m", "other/1", "x")
    (tmp_path / "m" / "detector.pt").write_bytes(b"broken")
    with pytest.raises(ModelFileError, match="SHA-256"):
        LearnedDetector.load(tmp_path / "m")


def _synthetic_case(seed: int) -> TrainingCase:
    """A 48³ noisy lung-like image with two bright balls and their boxes."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.1, 0.02, (48, 48, 48)).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(48)] * 3, indexing="ij"), -1)
    boxes = []
    for _ in range(2):
        c, r = rng.uniform(12, 36, 3), rng.uniform(2.5, 4.5)
        image[np.linalg.norm(grid - c, axis=-1) <= r] = 0.75
        boxes.append([*(c - r - 0.5), *(c + r + 0.5)])
    return TrainingCase(f"syn{seed}", image[None], np.asarray(boxes, np.float32))


def test_tiny_training_run_learns_and_writes_a_loadable_model(tmp_path):
    cases = [_synthetic_case(s) for s in range(4)]
    config = DetectorTrainConfig(steps=40, batch_size=2, lr=3e-3, warmup_steps=5, threads=1,
                                 network=TINY)
    result = train_detector(cases, tmp_path / "det", config, progress_every=10)
    assert result.n_cases == 4 and result.n_boxes == 8
    detector = LearnedDetector.load(tmp_path / "det")
    assert json.loads((tmp_path / "det" / "config.json").read_text())["training"]["steps"] == 40
    # it learned: the top-scoring box on a new case lies on one of the balls
    case = _synthetic_case(99)
    boxes, scores = detector.predict_grid(DetectionGrid(case.image[0], np.zeros(3), 1.0))
    centre = 0.5 * (boxes[0, :3] + boxes[0, 3:])
    truth = 0.5 * (case.boxes[:, :3] + case.boxes[:, 3:])
    assert np.min(np.linalg.norm(truth - centre, axis=1)) < 4.0, (boxes[:3], scores[:3], truth)


def test_box_ellipsoids_fill_the_inscribed_ellipsoid_on_the_strided_grid():
    boxes = np.array([[10, 10, 10, 20, 20, 30]], np.float32)  # centre (15, 15, 20), semi-axes (5, 5, 10)
    full = box_ellipsoids(boxes, (32, 32, 32))
    assert full.shape == (1, 32, 32, 32)
    assert full[0, 15, 15, 20] == 1 and full[0, 15, 15, 29] == 1 and full[0, 15, 15, 31] == 0
    assert full[0, 10, 10, 20] == 0  # box corner in the axial plane lies outside the ellipsoid
    assert abs(float(full.sum()) - 4 / 3 * np.pi * 5 * 5 * 10) / (4 / 3 * np.pi * 250) < 0.1
    half = box_ellipsoids(boxes, (16, 16, 16), stride=2)
    assert half[0, 7, 7, 10] == 1 and half[0, 2, 2, 2] == 0
    tiny = box_ellipsoids(np.array([[4.0, 4.0, 4.0, 4.5, 4.5, 4.5]]), (8, 8, 8), stride=2)
    assert float(tiny.sum()) >= 1  # semi-axes are at least one output voxel: no box vanishes from the target
    assert float(box_ellipsoids(np.zeros((0, 6)), (8, 8, 8)).sum()) == 0


def test_retina_unet_training_uses_the_segmentation_head_and_checkpoints(tmp_path, caplog):
    network = DetectorConfig(channels=(8, 8), fpn_channels=8, patch_size=(32, 32, 32),
                             base_anchor_shapes=((4, 4, 4),), segmentation_head=True)
    detector = build_detector(network, training=True).train()
    detector.network(torch.rand(1, 1, 32, 32, 32))
    assert tuple(detector.network.feature_extractor.segmentation_logits.shape) == (1, 1, 16, 16, 16)
    config = DetectorTrainConfig(steps=6, batch_size=1, warmup_steps=1, threads=1, checkpoint_every=3,
                                 network=network)
    with caplog.at_level("INFO", logger="lunglesionai.training.detector"):
        train_detector([_synthetic_case(0)], tmp_path / "det", config, progress_every=3)
    assert any("segmentation" in r.getMessage() for r in caplog.records)
    saved = json.loads((tmp_path / "det" / "config.json").read_text())
    assert saved["training"]["steps_done"] == 6 and saved["network"]["segmentation_head"] is True
    loaded = LearnedDetector.load(tmp_path / "det")  # the head's weights load back; inference ignores the head
    boxes, scores = loaded.predict_grid(DetectionGrid(_synthetic_case(1).image[0], np.zeros(3), 1.0))
    assert boxes.shape[1] == 6 and len(boxes) == len(scores)


def test_training_can_start_from_a_trained_detector_of_the_same_architecture(tmp_path):
    from dataclasses import replace

    from lunglesionai.training.detector import initial_weights

    start = build_detector(TINY)
    save_model(tmp_path / "start", start.network.state_dict(), "detector.pt",
               {"format": DETECTOR_FORMAT, "network": TINY.to_dict()})
    finer = replace(TINY, spacing_mm=1.0)  # another grid spacing is allowed
    state, sha = initial_weights(tmp_path / "start", finer)
    assert set(state) == set(start.network.state_dict())
    config = DetectorTrainConfig(steps=1, batch_size=1, lr=1e-9, warmup_steps=0, threads=1, network=finer,
                                 init_from=str(tmp_path / "start"))
    train_detector([_synthetic_case(0)], tmp_path / "tuned", config)
    tuned = LearnedDetector.load(tmp_path / "tuned").network.network.state_dict()
    weights = [k for k, v in tuned.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.allclose(tuned[k], start.network.state_dict()[k], atol=1e-6) for k in weights)
    fresh = DetectorTrainConfig(steps=1, batch_size=1, lr=1e-9, warmup_steps=0, threads=1, network=finer)
    train_detector([_synthetic_case(0)], tmp_path / "fresh", fresh)  # seed 0 as above, but no starting weights
    other = LearnedDetector.load(tmp_path / "fresh").network.network.state_dict()
    assert not all(torch.allclose(other[k], start.network.state_dict()[k], atol=1e-6) for k in weights)
    training = json.loads((tmp_path / "tuned" / "config.json").read_text())["training"]
    assert training["init_from"] == str(tmp_path / "start") and training["init_sha256"] == sha
    with pytest.raises(ModelFileError, match="fpn_channels"):
        initial_weights(tmp_path / "start", replace(TINY, fpn_channels=16))


def test_luna16_scans_become_training_cases(tmp_path):
    import SimpleITK as sitk

    from lunglesionai.core.sitk_bridge import volume_to_sitk
    from lunglesionai.datasets.luna16 import write_luna16_csv
    from lunglesionai.stages.lung_mask import segment_lungs
    from lunglesionai.synth import PhantomConfig, make_phantom
    from lunglesionai.training.detector import luna16_cases

    phantom = make_phantom(PhantomConfig.small())
    (tmp_path / "subset0").mkdir()
    sitk.WriteImage(volume_to_sitk(phantom.volume), str(tmp_path / "subset0" / "1.2.3.mhd"))
    truth = phantom.truth_table()
    write_luna16_csv(tmp_path / "annotations.csv",
                     [("1.2.3", *t["center_lps_mm"], t["diameter_mm"]) for t in truth] + [("9.9", 0, 0, 0, 5)])
    cases = luna16_cases(tmp_path, tmp_path / "annotations.csv", 1.5)  # 9.9 has no image: skipped
    assert [c.case_id for c in cases] == ["1.2.3"] and cases[0].boxes.shape == (len(truth), 6)
    box = cases[0].boxes[0]
    grid = detection_grid(phantom.volume, segment_lungs(phantom.volume), 1.5)
    centre_lps = grid.index_to_lps(0.5 * (box[:3] + box[3:])[None])[0]
    np.testing.assert_allclose(centre_lps, truth[0]["center_lps_mm"], atol=1e-3)
    np.testing.assert_allclose(box[3:] - box[:3], truth[0]["diameter_mm"] / 1.5, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="no image"):
        luna16_cases(tmp_path, tmp_path / "annotations.csv", 1.5, ["9.9"])


def test_near_lung_test_equals_a_two_step_dilation():
    from scipy import ndimage

    from lunglesionai.stages.retina_detector import _near_mask

    mask = np.random.default_rng(3).random((12, 11, 10)) > 0.97
    dilated = ndimage.binary_dilation(mask, iterations=2)
    for index in np.ndindex(mask.shape):
        assert _near_mask(mask, np.array(index), 2) == dilated[index], index
