"""Tests of lunglesionai.stages.segmentation: nodules attached to a vessel or to the chest wall, ground-glass, refusals,
and the Dice on a few real LIDC-IDRI nodules from ../shared."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.segmentation import NoduleSegmentationConfig, segment_nodule

SPACING = (0.7, 0.7, 1.25)  # (x, y, z) mm
SHAPE = (48, 90, 90)  # (z, y, x)
LUNG_HU, SOLID_HU, GGO_HU = -850.0, 20.0, -620.0
CENTRE_MM = np.array([30.0, 31.5, 31.5])  # (z, y, x)


def _grid():
    return np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING[::-1])], indexing="ij")


def _sphere(radius_mm, centre_mm=CENTRE_MM):
    z, y, x = _grid()
    return (z - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (x - centre_mm[2]) ** 2 <= radius_mm**2


def _volume(hu, seed=0):
    hu = hu + np.random.default_rng(seed).normal(0, 15, hu.shape).astype(np.float32)
    return Volume(hu, SPACING, (-20.0, 15.0, -100.0))


def _dice(mask: FindingMask, truth: np.ndarray) -> float:
    pred = np.zeros(truth.shape, np.uint8)
    mask.paste_into(pred, 1)
    return 2 * np.logical_and(pred > 0, truth).sum() / ((pred > 0).sum() + truth.sum())


def _centre_kji():
    return tuple(CENTRE_MM / np.array(SPACING[::-1]))


def test_sphere_attached_to_a_vessel():
    z, y, _x = _grid()
    nodule = _sphere(5.0)
    vessel = (y - CENTRE_MM[1] - 3.0) ** 2 + (z - CENTRE_MM[0]) ** 2 <= 1.5**2  # 3 mm vessel through its edge
    hu = np.full(SHAPE, LUNG_HU, np.float32)
    hu[vessel | nodule] = SOLID_HU
    mask = segment_nodule(_volume(hu), _centre_kji(), 5.0)
    assert mask is not None
    assert _dice(mask, nodule) > 0.9
    crop_x = np.arange(mask.array.shape[2]) + mask.offset_kji[2]
    assert crop_x.min() > 0 and crop_x.max() < SHAPE[2] - 1  # the vessel is cut off


def test_sphere_touching_a_thick_vessel_is_split_off_when_asked():
    """A 4 mm-radius nodule against a 10 mm-wide vessel (too thick for the largest opening): the default outline
    gives up; with ``separate_touching`` the watershed split keeps the nodule and leaves the vessel."""
    z, y, _x = _grid()
    nodule = _sphere(4.0)
    vessel = (y - CENTRE_MM[1] - 8.5) ** 2 + (z - CENTRE_MM[0]) ** 2 <= 5.0**2
    hu = np.full(SHAPE, LUNG_HU, np.float32)
    hu[vessel | nodule] = SOLID_HU
    volume = _volume(hu)
    assert segment_nodule(volume, _centre_kji(), 4.0) is None
    mask = segment_nodule(volume, _centre_kji(), 4.0, None, NoduleSegmentationConfig(separate_touching=True))
    assert mask is not None
    assert _dice(mask, nodule) > 0.8
    pasted = np.zeros(SHAPE, bool)
    mask.paste_into(pasted, True)
    assert (pasted & vessel & ~nodule).sum() < 0.1 * nodule.sum()


@pytest.mark.parametrize("with_lung_mask", [True, False])
def test_sphere_attached_to_the_chest_wall(with_lung_mask):
    _z, _y, x = _grid()
    wall_x = CENTRE_MM[2] + 4.0  # 10 mm nodule sitting on a wall that starts 4 mm right of its centre
    wall = x >= wall_x
    nodule = _sphere(5.0) & ~wall
    hu = np.full(SHAPE, LUNG_HU, np.float32)
    hu[wall | nodule] = SOLID_HU
    lung_mask = (~wall).astype(np.uint8) if with_lung_mask else None
    mask = segment_nodule(_volume(hu), _centre_kji(), 5.0, lung_mask)
    assert mask is not None
    assert _dice(mask, nodule) > 0.9


def test_ground_glass_nodule():
    nodule = _sphere(6.0)
    hu = np.full(SHAPE, LUNG_HU, np.float32)
    hu[nodule] = GGO_HU
    mask = segment_nodule(_volume(hu), _centre_kji(), 6.0)
    assert mask is not None and _dice(mask, nodule) > 0.95
    assert mask.array.dtype == bool


def test_nothing_to_segment_returns_none():
    flat = _volume(np.full(SHAPE, LUNG_HU, np.float32))
    assert segment_nodule(flat, _centre_kji(), 4.0) is None


@pytest.mark.parametrize(
    "centre, radius, lung_shape, message",
    [
        ((-5.0, 10.0, 10.0), 3.0, None, "outside the volume"),
        ((10.0, 10.0), 3.0, None, "3 finite numbers"),
        ((10.0, 10.0, 10.0), 0.0, None, "radius_mm"),
        ((10.0, 10.0, 10.0), 3.0, (2, 2, 2), "lung_mask shape"),
    ],
)
def test_invalid_inputs(centre, radius, lung_shape, message):
    volume = _volume(np.full(SHAPE, LUNG_HU, np.float32))
    lung = None if lung_shape is None else np.ones(lung_shape, np.uint8)
    with pytest.raises(ValueError, match=message):
        segment_nodule(volume, centre, radius, lung)


def test_config_validation():
    with pytest.raises(ValueError, match="threshold_fraction"):
        NoduleSegmentationConfig(threshold_fraction=1.5)
    with pytest.raises(ValueError, match="watershed_h_mm"):
        NoduleSegmentationConfig(watershed_h_mm=0.0)
    with pytest.raises(ValueError, match="min_opening_mm"):
        NoduleSegmentationConfig(min_opening_mm=3.0, max_opening_mm=1.0)


def test_lidc_nodules_dice():
    """The first 12 validation nodules of ../shared/data/lidc_voi (real CT, consensus masks)."""
    sitk = pytest.importorskip("SimpleITK")
    root = shared_path("lidc_voi")
    with open(root / "nodules.csv", newline="") as table:
        rows = [r for r in csv.DictReader(table) if r["split"] == "val"][:12]
    dice = []
    for row in rows:
        img = sitk.ReadImage(str(root / "images" / row["file"]))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "masks" / row["file"]))) > 0
        volume = Volume(sitk.GetArrayFromImage(img), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
        mask = segment_nodule(volume, tuple(np.argwhere(truth).mean(0)), float(row["diameter_mm"]) / 2)
        dice.append(0.0 if mask is None else _dice(mask, truth))
    assert np.mean(dice) > 0.65


def test_ball_mask_stands_in_where_a_nodule_cannot_be_separated():
    from lunglesionai.pipeline import _segment_candidate
    from lunglesionai.stages.blob_detector import LEARNED_METHOD_NAME, Candidate
    from lunglesionai.stages.segmentation import ball_mask

    z, y, _x = _grid()
    nodule = _sphere(5.0)
    vessel = (y - CENTRE_MM[1]) ** 2 + (z - CENTRE_MM[0]) ** 2 <= 4.0**2  # an 8 mm vessel through its centre
    hu = np.full(SHAPE, LUNG_HU, np.float32)
    hu[vessel | nodule] = SOLID_HU
    volume = _volume(hu)
    assert segment_nodule(volume, _centre_kji(), 5.0) is None  # no opening separates it
    mask = ball_mask(volume, _centre_kji(), 5.0)
    assert _dice(mask, nodule) > 0.9  # the dense part of the ball: here the nodule itself
    lung_only = ball_mask(volume, _centre_kji(), 5.0, lung_mask=np.zeros(SHAPE, np.uint8))
    assert lung_only is None  # nothing of the ball lies in (or near) the lung mask
    air = ball_mask(_volume(np.full(SHAPE, LUNG_HU, np.float32)), _centre_kji(), 5.0)
    assert air is None  # parenchyma only: no mask
    learned = Candidate(_centre_kji(), 5.0, 0.9, LEARNED_METHOD_NAME)
    blob = Candidate(_centre_kji(), 5.0, 0.9)
    lung = np.ones(SHAPE, np.uint8)
    found, source = _segment_candidate(volume, learned, lung)
    assert source == "detector box" and _dice(found, nodule) > 0.9
    assert _segment_candidate(volume, blob, lung) == (None, "none")  # a blob candidate is dropped
    clean = _volume(np.where(nodule, SOLID_HU, LUNG_HU).astype(np.float32))
    assert _segment_candidate(clean, learned, lung)[1] == "classical"
