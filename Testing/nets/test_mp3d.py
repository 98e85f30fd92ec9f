"""Tests of the MP3D-style ULD network: config, shapes, boxes in the slab frame, and whole-scan = slab-by-slab."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lunglesionai.nets.mp3d import (
    ULDConfig,
    build_uld_detector,
    merge_classes,
    predict_slices,
)
from lunglesionai.nets.mp3d import (
    window_hu_channels as window_hu,
)

TINY = ULDConfig(n_slices=5, channels=(8, 8, 8, 8), z_kernels=(3, 1, 1, 1), fpn_channels=8,
                 base_anchor_shapes=((6, 6),), lesion_types=("liver", "lung"), score_threshold=0.0)


def test_config_round_trip_and_derived_sizes():
    assert ULDConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    default = ULDConfig()
    assert default.in_channels == 2 * 9  # two HU windows × 9 slices
    assert default.level_depths == (7, 5, 5, 5)  # 9 − 2 − 2, then in-plane only
    assert TINY.plane_depths == (3, 3, 3)


@pytest.mark.parametrize("field, value", [
    ("n_slices", 8),  # even: no centre slice
    ("n_slices", 1),
    ("z_kernels", (5, 5, 3, 1)),  # consumes 10 slices of 9
    ("fpn_channels", 12),  # not a multiple of 8 (GroupNorm in the heads)
    ("hu_windows", ((100.0, -100.0),)),
    ("lesion_types", ("liver", "liver")),
    ("nms_iou", 0.0),
])
def test_config_rejects_out_of_range_fields(field, value):
    with pytest.raises(ValueError, match=field):
        ULDConfig(**{field: value})


def test_window_hu_maps_each_window_to_unit_range():
    out = window_hu(np.array([-2000.0, -160.0, 40.0, 240.0, 5000.0]), ((-1024.0, 1024.0), (-160.0, 240.0)))
    assert out.shape == (2, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[1], [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(out[0, [0, 4]], [0.0, 1.0])


def test_slab_forward_gives_boxes_inside_the_slab_frame():
    torch.manual_seed(0)
    detector = build_uld_detector(TINY).eval()
    with torch.no_grad():  # (B, C·n, X, Y) = (2, 2·5, 64, 96)
        outputs = detector(torch.rand(2, TINY.in_channels, 64, 96))
    assert len(outputs) == 2
    boxes = outputs[0]["boxes"]
    assert boxes.shape[1] == 4 and len(boxes) == len(outputs[0]["labels_scores"]) > 0
    assert torch.all(boxes[:, 2:] >= boxes[:, :2])
    assert torch.all(boxes[:, [0, 2]] <= 64) and torch.all(boxes[:, [1, 3]] <= 96)  # x along the first axis
    assert set(outputs[0]["labels"].tolist()) <= {0, 1}


def test_whole_scan_backbone_equals_slab_by_slab():
    """The z convolutions have no padding, so running the backbone once over the volume gives each slab's boxes."""
    torch.manual_seed(1)
    detector = build_uld_detector(TINY).eval()
    volume = torch.rand(2, 11, 64, 64)  # (C, Z, X, Y)
    whole = predict_slices(detector, volume, chunk=4)
    assert len(whole) == 11
    half = TINY.n_slices // 2
    for k in (0, 5, 10):  # the first and last slabs repeat the edge slices
        index = np.clip(np.arange(k - half, k + half + 1), 0, 10)
        slab = volume[:, index].reshape(1, TINY.in_channels, 64, 64)
        with torch.no_grad():
            single = merge_classes(detector(slab)[0], TINY.nms_iou)
        np.testing.assert_allclose(whole[k]["boxes"], single["boxes"], atol=1e-3)
        np.testing.assert_allclose(whole[k]["scores"], single["scores"], atol=1e-5)
    subset = predict_slices(detector, volume, centres=np.array([2, 7]), chunk=1)
    np.testing.assert_allclose(subset[1]["scores"], whole[7]["scores"], atol=1e-5)


def test_predict_slices_rejects_wrong_shapes():
    detector = build_uld_detector(TINY).eval()
    with pytest.raises(ValueError, match="C=2"):
        predict_slices(detector, torch.rand(3, 6, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        predict_slices(detector, torch.rand(2, 6, 64, 40))


def test_merge_classes_keeps_one_box_per_lesion_across_types():
    out = {"boxes": torch.tensor([[0.0, 0, 10, 10], [0.5, 0, 10, 10], [30.0, 30, 40, 40]]),
           "labels_scores": torch.tensor([0.6, 0.9, 0.5]), "labels": torch.tensor([0, 1, 0])}
    merged = merge_classes(out, nms_iou=0.3)
    np.testing.assert_allclose(merged["scores"], [0.9, 0.5])
    assert merged["labels"].tolist() == [1, 0]


def test_training_mode_returns_focal_and_box_losses():
    torch.manual_seed(0)
    detector = build_uld_detector(TINY, training=True).train()
    images = [torch.rand(TINY.in_channels, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 24.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}]  # a negative slab
    losses = detector(images, targets)
    total = losses[detector.cls_key] + losses[detector.box_reg_key]
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in detector.network.parameters())
