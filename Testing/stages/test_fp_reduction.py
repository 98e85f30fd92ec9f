"""Tests of the false-positive-reduction classifier: crops, labels, a tiny training run, the model folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crop_fixtures import _crops
from lunglesionai.nets.model_store import ModelFileError
from lunglesionai.stages.fp_reduction import (
    FalsePositiveReducer,
    FprConfig,
    FprNet,
    context_crops,
    grid_crops,
    network_input,
)
from lunglesionai.training.fp_reduction import (
    FprTrainConfig,
    candidate_labels,
    train_fpr,
)


def test_grid_crops_are_centred_and_padded_with_air():
    image = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    crops = grid_crops(image, np.array([[5.2, 6.0, 6.8], [0.0, 0.0, 0.0]]), 4)
    assert crops.shape == (2, 4, 4, 4)
    np.testing.assert_array_equal(crops[0], image[3:7, 4:8, 5:9])  # centre (5, 6, 7) at index 2 of 4
    assert np.all(crops[1][:2] == 0) and crops[1][2, 2, 2] == image[0, 0, 0]
    far = grid_crops(image, np.array([[100.0, -50.0, 7.0]]), 4)  # far outside: clipped, still a valid crop
    assert far.shape == (1, 4, 4, 4)


def test_candidate_labels_use_grown_truth_boxes():
    boxes = np.array([[10, 10, 10, 14, 14, 14]], float)
    centres = np.array([[12, 12, 12], [14.9, 12, 12], [16, 12, 12], [30, 30, 30]], float)
    np.testing.assert_array_equal(candidate_labels(centres, boxes), [1, 1, 0, 0])
    np.testing.assert_array_equal(candidate_labels(centres, np.zeros((0, 6))), [0, 0, 0, 0])


def test_context_crops_see_twice_as_far_at_half_the_resolution():
    image = np.zeros((40, 40, 40), np.float32)
    image[20, 20, 20] = 8.0  # the centre voxel
    image[20, 20, 33] = 8.0  # 13 voxels away along z: outside a 16-voxel crop, inside the 32-voxel context
    centre = np.array([[20.0, 20.0, 20.0]])
    crop, context = grid_crops(image, centre, 16), context_crops(image, centre, 16)
    assert context.shape == crop.shape == (1, 16, 16, 16)
    assert crop.sum() == 8.0  # only the centre voxel
    assert context.sum() == 2.0  # both voxels, each averaged over a 2x2x2 block (8 / 8)
    assert context[0, 8, 8, 8] == 1.0 and context[0, 8, 8, 14] == 1.0  # (20 - 4) // 2 and (33 - 4) // 2 = 14
    both = network_input(image, centre, FprConfig(crop_size=16, context=True))
    assert both.shape == (1, 2, 16, 16, 16)
    np.testing.assert_array_equal(both[:, 1], context)
    assert network_input(image, centre, FprConfig(crop_size=16), margin=1).shape == (1, 1, 18, 18, 18)


def test_network_shape_and_config():
    net = FprNet(FprConfig(crop_size=16, channels=(4, 8, 8)))
    assert net(torch.rand(3, 1, 16, 16, 16)).shape == (3,)
    assert FprNet(FprConfig(crop_size=16, channels=(4, 8, 8), context=True))(torch.rand(3, 2, 16, 16, 16)).shape == (3,)
    assert FprConfig.from_dict({"crop_size": 24, "channels": [8, 16, 32], "dropout": 0.2}).context is False
    with pytest.raises(ValueError, match="crop_size"):
        FprConfig(crop_size=18)


def test_tiny_training_run_separates_balls_from_tubes(tmp_path):
    rng = np.random.default_rng(0)
    crops = np.concatenate([_crops(40, "ball", rng), _crops(80, "tube", rng)])[:, None]
    labels = np.array([1] * 40 + [0] * 80)
    config = FprTrainConfig(steps=60, batch_size=16, threads=1, network=FprConfig(crop_size=16, channels=(4, 8, 8)))
    result = train_fpr(crops, labels, tmp_path / "fpr", config, extra={"operating_point": {"min_score": 0.4}})
    assert (result.n_positive, result.n_negative) == (40, 80)
    reducer = FalsePositiveReducer.load(tmp_path / "fpr")
    assert reducer.default_min_score == 0.4
    assert json.loads((tmp_path / "fpr" / "config.json").read_text())["mined"] == {"positive": 40, "negative": 80}
    test_rng = np.random.default_rng(1)
    image = np.zeros((40, 20, 20), np.float32) + 0.1
    image[0:18, 1:19, 1:19] = _crops(1, "ball", test_rng)[0]
    image[20:38, 1:19, 1:19] = _crops(1, "tube", test_rng)[0]
    p_ball, p_tube = reducer.probabilities(image, np.array([[9.0, 10.0, 10.0], [29.0, 10.0, 10.0]]))
    assert p_ball > p_tube, (p_ball, p_tube)
    assert reducer.probabilities(image, np.zeros((0, 3))).shape == (0,)


def test_training_needs_both_classes_and_loading_checks_the_folder(tmp_path):
    with pytest.raises(ValueError, match="positive and negative"):
        train_fpr(np.zeros((4, 1, 18, 18, 18), np.float32), np.ones(4, int), tmp_path / "x", FprTrainConfig(steps=1))
    with pytest.raises(ValueError, match="crops must be"):  # no channel axis, or channels the network lacks
        train_fpr(np.zeros((4, 18, 18, 18), np.float32), np.array([0, 1, 0, 1]), tmp_path / "x", FprTrainConfig(steps=1))
    with pytest.raises(ModelFileError, match="train fpr"):
        FalsePositiveReducer.load(tmp_path / "none")


def test_mining_labels_proposals_truth_and_random_negatives():
    from lunglesionai.training.detector import TrainingCase
    from lunglesionai.training.fp_reduction import mine_candidates

    rng = np.random.default_rng(3)
    image = np.full((40, 40, 40), 0.1, np.float32)
    image[8:26, 8:26, 8:26] = _crops(1, "ball", rng)[0]
    boxes = np.array([[13.0, 13.0, 13.0, 21.0, 21.0, 21.0]], np.float32)  # the ball, centred at (17, 17, 17)
    case = TrainingCase("c", image[None], boxes)
    proposals = np.array([[17.0, 17.0, 17.0], [33.0, 33.0, 33.0]])
    crops, labels = mine_candidates(lambda c: proposals, [case], FprConfig(crop_size=8), n_random=5, seed=0)
    assert crops.shape[1:] == (1, 10, 10, 10) and crops.dtype == np.float16
    assert labels[:3].tolist() == [1, 0, 1]  # proposal on the ball, proposal elsewhere, the truth centre
    assert len(labels) <= 3 + 5 and labels[3:].sum() == 0  # random lung-density voxels are negatives
    assert crops[0][0, 5, 5, 5] > 0.5 and crops[1][0, 5, 5, 5] < 0.2
    with_context, _ = mine_candidates(lambda c: proposals, [case], FprConfig(crop_size=8, context=True), n_random=5,
                                      seed=0)
    assert with_context.shape[1:] == (2, 10, 10, 10)
    np.testing.assert_array_equal(with_context[:, :1], crops)  # channel 0 is the plain crop


def test_classical_proposer_finds_phantom_nodules():
    from lunglesionai.stages.retina_detector import detection_grid
    from lunglesionai.synth import PhantomConfig, make_phantom
    from lunglesionai.training.detector import TrainingCase
    from lunglesionai.training.fp_reduction import candidate_labels, classical_proposer

    phantom = make_phantom(PhantomConfig.small())
    grid = detection_grid(phantom.volume, phantom.lung_mask, 1.5)
    truth = [t for t in phantom.truth_table() if t["diameter_mm"] >= 6]
    centres = grid.lps_to_index(np.array([t["center_lps_mm"] for t in truth]))
    half = np.array([t["diameter_mm"] for t in truth])[:, None] / 2 / 1.5
    case = TrainingCase("p", grid.image[None], np.hstack([centres - half, centres + half]).astype(np.float32))
    proposals = classical_proposer(1.5)(case)
    assert proposals.shape[1] == 3 and len(proposals) > len(truth)
    hits = candidate_labels(proposals, case.boxes)
    assert hits.sum() >= len(truth) // 2, (hits.sum(), len(truth))


def test_combined_proposer_concatenates_in_order():
    from lunglesionai.training.fp_reduction import combined_proposer

    a = lambda case: np.array([[1.0, 2.0, 3.0]])  # noqa: E731
    b = lambda case: np.zeros((0, 3))  # noqa: E731
    c = lambda case: [[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]  # noqa: E731
    np.testing.assert_array_equal(combined_proposer(a, b, c)(None), [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert combined_proposer(b)(None).shape == (0, 3)


def test_learned_proposer_runs_the_detector_on_its_own_spacing_and_maps_centres_back():
    from lunglesionai.nets.retina_unet import DetectorConfig, build_detector
    from lunglesionai.stages.retina_detector import DetectionGrid, LearnedDetector
    from lunglesionai.training.detector import TrainingCase
    from lunglesionai.training.fp_reduction import _resampled, learned_proposer

    image = np.zeros((24, 24, 16), np.float32)
    image[10, 12, 6] = 1.0  # one bright voxel on a 1.5 mm grid
    finer = _resampled(image, 1.5, 1.0)
    assert finer.shape == (40, 40, 24)  # 24·1.5 = 36 → 40 and 16·1.5 = 24 voxels (multiples of 8)
    assert np.unravel_index(np.argmax(finer), finer.shape) == (15, 18, 9)  # same point: index × 1.5 / 1.0
    config = DetectorConfig(channels=(8, 8), fpn_channels=8, patch_size=(32, 32, 32), base_anchor_shapes=((4, 4, 4),),
                            score_threshold=0.0, spacing_mm=1.0)
    detector = LearnedDetector(config, build_detector(config).network.state_dict(), "0" * 64, {})
    case = TrainingCase("c", np.random.default_rng(0).random((1, 32, 32, 32), np.float32), np.zeros((0, 6)))
    centres = learned_proposer(detector, 1.5)(case)
    boxes, _ = detector.predict_grid(DetectionGrid(_resampled(case.image[0], 1.5, 1.0), np.zeros(3), 1.0))
    assert len(centres) == len(boxes) > 0
    np.testing.assert_allclose(centres, 0.5 * (boxes[:, :3] + boxes[:, 3:]) / 1.5, rtol=1e-5)
    same = learned_proposer(detector, 1.0)(case)  # same spacing: no resampling
    boxes, _ = detector.predict_grid(DetectionGrid(case.image[0], np.zeros(3), 1.0))
    np.testing.assert_allclose(same, 0.5 * (boxes[:, :3] + boxes[:, 3:]))
