"""Tests of lunglesionai.stages.lung_mask: synthetic two-lung chests (any orientation, cropped, joined, one lung) and the
real CT crop from ../shared."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.core.volume import Volume
from lunglesionai.stages.lung_mask import (
    LEFT_LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    LungMaskConfig,
    segment_lungs,
)

SPACING = (2.0, 2.0, 2.5)  # (x, y, z) mm
SHAPE = (48, 100, 140)  # (z, y, x)
LUNG_HU, BODY_HU, AIR_HU, VESSEL_HU = -850.0, 40.0, -1000.0, 40.0


def _grid():
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING[::-1])], indexing="ij")
    return z, y, x


def synthetic_chest(gap_mm: float = 24.0, lungs: tuple[str, ...] = ("right", "left"), seed: int = 0):
    """Body cylinder with two ellipsoidal lungs, a trachea, a vessel and a juxta-pleural nodule in the right lung.

    Identity direction: +x (array i) is the patient's left, so the right lung sits at small i.
    Returns (volume, truth) with truth 1 = right lung, 2 = left lung (vessel and nodule included).
    """
    z, y, x = _grid()
    cx, cy = SHAPE[2] * SPACING[0] / 2, SHAPE[1] * SPACING[1] / 2
    hu = np.full(SHAPE, AIR_HU, np.float32)
    hu[((x - cx) / 125) ** 2 + ((y - cy) / 85) ** 2 <= 1] = BODY_HU
    truth = np.zeros(SHAPE, np.uint8)
    for side, label in (("right", RIGHT_LUNG_LABEL), ("left", LEFT_LUNG_LABEL)):
        lx = cx - (gap_mm / 2 + 45) if side == "right" else cx + (gap_mm / 2 + 45)
        lung = ((x - lx) / 45) ** 2 + ((y - cy) / 60) ** 2 + ((z - 60) / 70) ** 2 <= 1
        if side in lungs:
            hu[lung] = LUNG_HU
            truth[lung] = label
    if "right" in lungs:
        lx = cx - (gap_mm / 2 + 45)
        vessel = ((x - lx) ** 2 + (y - cy) ** 2 <= 3.0**2) & (truth == RIGHT_LUNG_LABEL)
        hu[vessel] = VESSEL_HU
        # juxta-pleural nodule: 10 mm sphere touching the lateral wall of the right lung at z = 60 mm
        wall_x = lx - 45
        nodule = (x - (wall_x + 4)) ** 2 + (y - cy) ** 2 + (z - 60) ** 2 <= 5.0**2
        hu[nodule] = BODY_HU
        truth[nodule & (x >= wall_x)] = RIGHT_LUNG_LABEL
    if len(lungs) == 2:  # trachea from the top down to the lungs' upper third
        trachea = ((x - cx) ** 2 + (y - cy) ** 2 <= 8.0**2) & (z > 85)
        hu[trachea] = AIR_HU
    hu += np.random.default_rng(seed).normal(0, 15, SHAPE).astype(np.float32)
    return Volume(hu, SPACING, (-cx, -cy, 0.0)), truth


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_two_lungs_right_left_and_contents():
    volume, truth = synthetic_chest()
    hu_before = volume.hu.copy()
    labels = segment_lungs(volume)
    assert np.array_equal(volume.hu, hu_before)  # the input is not modified
    assert labels.shape == volume.shape_zyx and labels.dtype == np.uint8
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert _dice(labels == lab, truth == lab) > 0.93
    right_x = volume.kji_to_lps(np.argwhere(labels == RIGHT_LUNG_LABEL).mean(0, keepdims=True))[0, 0]
    left_x = volume.kji_to_lps(np.argwhere(labels == LEFT_LUNG_LABEL).mean(0, keepdims=True))[0, 0]
    assert right_x < left_x  # LPS: +x is the patient's left
    vessel = (volume.hu > -300) & (truth == RIGHT_LUNG_LABEL)
    assert (labels[vessel] == RIGHT_LUNG_LABEL).mean() > 0.9  # vessels and the juxta-pleural nodule inside
    trachea_top = labels[-3:, SHAPE[1] // 2, SHAPE[2] // 2]
    assert np.all(trachea_top == 0)  # the trachea is not lung


def test_flipped_direction_keeps_anatomical_sides():
    volume, truth = synthetic_chest()
    # same anatomy stored with i running towards the patient's right (direction diag(-1, -1, 1))
    flipped = Volume(
        volume.hu[:, ::-1, ::-1].copy(),
        volume.spacing_mm,
        tuple(volume.ijk_to_lps([[SHAPE[2] - 1, SHAPE[1] - 1, 0]])[0]),
        (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    )
    labels = segment_lungs(flipped)[:, ::-1, ::-1]
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert _dice(labels == lab, truth == lab) > 0.93


def test_cropped_volume_lungs_touching_the_border():
    volume, truth = synthetic_chest()
    crop = (slice(None), slice(25, 75), slice(20, 120))  # lungs run into every face of the crop
    cropped = Volume(volume.hu[crop].copy(), volume.spacing_mm, tuple(volume.kji_to_lps([[0, 25, 20]])[0]))
    labels = segment_lungs(cropped)
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert _dice(labels == lab, truth[crop] == lab) > 0.9


def test_joined_lungs_are_split():
    volume, truth = synthetic_chest(gap_mm=0.0)  # the two ellipsoids touch at the midline
    labels = segment_lungs(volume)
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        assert _dice(labels == lab, truth == lab) > 0.9


def test_single_and_missing_lung_do_not_crash(caplog):
    volume, truth = synthetic_chest(lungs=("left",))
    with caplog.at_level(logging.INFO, logger="lunglesionai.stages.lung_mask"):
        labels = segment_lungs(volume)
    assert set(np.unique(labels)) == {0, LEFT_LUNG_LABEL}
    assert _dice(labels > 0, truth > 0) > 0.9
    assert "found 1 lung" in caplog.text  # logged at INFO; the pipeline turns it into Report.warnings
    body_only = volume.with_array(np.full(SHAPE, BODY_HU, np.float32))
    assert not segment_lungs(body_only).any()


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least 2 voxels"):
        segment_lungs(Volume(np.zeros((1, 10, 10)), (1, 1, 1), (0, 0, 0)))
    with pytest.raises(ValueError, match="working_spacing_mm"):
        LungMaskConfig(working_spacing_mm=0)
    with pytest.raises(ValueError, match="split_min_fraction"):
        LungMaskConfig(split_min_fraction=0.9)
    with pytest.raises(ValueError, match="trachea_area_mm2"):
        LungMaskConfig(trachea_area_mm2=(500.0, 100.0))


def test_real_ct_crop():
    sitk = pytest.importorskip("SimpleITK")
    path = shared_path("ct", "chest_ct_crop_1p5mm.nii.gz")
    img = sitk.ReadImage(str(path))
    volume = Volume(sitk.GetArrayFromImage(img), img.GetSpacing(), img.GetOrigin(), img.GetDirection(), str(path))
    labels = segment_lungs(volume)
    ml = {lab: (labels == lab).sum() * volume.voxel_volume_mm3 / 1000 for lab in (1, 2)}
    assert 800 < ml[RIGHT_LUNG_LABEL] < 2500 and 800 < ml[LEFT_LUNG_LABEL] < 2500
    xs = {lab: volume.kji_to_lps(np.argwhere(labels == lab).mean(0, keepdims=True))[0, 0] for lab in (1, 2)}
    assert xs[RIGHT_LUNG_LABEL] < xs[LEFT_LUNG_LABEL]
    # the mediastinum between the lungs (contrast-filled heart and vessels) is not lung
    assert (labels[volume.hu > 150] > 0).mean() < 0.05
