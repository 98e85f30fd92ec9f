"""Tests of lunglesionai.stages.blob_detector: spheres of 3-30 mm (solid and ground-glass) are found, vessels are not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.stages.blob_detector import (
    BlobDetectorConfig,
    Candidate,
    blob_scales_mm,
    detect_candidates,
)

SPACING = (0.8, 0.8, 1.0)  # (x, y, z) mm
LUNG_HU, SOLID_HU, GGO_HU = -850.0, 30.0, -600.0


def _block(shape_zyx):
    hu = np.full(shape_zyx, LUNG_HU, np.float32)
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape_zyx, SPACING[::-1])], indexing="ij")
    return hu, grid


def _noisy_volume(hu, seed=0):
    hu = hu + np.random.default_rng(seed).normal(0, 20, hu.shape).astype(np.float32)
    return Volume(hu, SPACING, (10.0, -20.0, 30.0))


def _segment(grid, p0, p1, radius):
    """Boolean capsule-free cylinder between p0 and p1 (z, y, x) mm."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = (p1 - p0) / np.linalg.norm(p1 - p0)
    rel = np.stack([g - c for g, c in zip(grid, p0)], axis=-1)
    t = np.clip(rel @ d, 0, np.linalg.norm(p1 - p0))
    return np.linalg.norm(rel - t[..., None] * d, axis=-1) <= radius


SPHERES = [  # centre (z, y, x) mm, diameter mm, HU
    ((20, 20, 20), 3.0, SOLID_HU),
    ((20, 20, 60), 5.0, SOLID_HU),
    ((25, 60, 30), 8.0, SOLID_HU),
    ((55, 30, 75), 12.0, GGO_HU),
    ((70, 70, 70), 20.0, SOLID_HU),
    ((55, 85, 30), 28.0, SOLID_HU),
]


@pytest.fixture(scope="module")
def sphere_volume():
    hu, (z, y, x) = _block((110, 140, 140))
    for c, d, value in SPHERES:
        hu[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= (d / 2) ** 2] = value
    return _noisy_volume(hu)


def test_finds_spheres_of_3_to_30_mm_including_ground_glass(sphere_volume):
    lung = np.ones(sphere_volume.shape_zyx, np.uint8)
    cands = detect_candidates(sphere_volume, lung)
    assert cands == sorted(cands, key=lambda c: -c.score)
    centres_mm = np.array([c.center_kji for c in cands]) * np.array(SPACING[::-1])
    for centre, diameter, _ in SPHERES:
        dist = np.linalg.norm(centres_mm - np.array(centre), axis=1)
        hit = np.flatnonzero(dist <= max(diameter / 2, 1.5))
        assert hit.size == 1, f"{diameter} mm sphere at {centre}: {hit.size} candidates"
        found = cands[hit[0]]
        assert 0.3 <= found.score <= 1.0
        assert diameter / 2 / 1.6 <= found.radius_mm <= diameter / 2 * 1.6 + 0.5
    assert len(cands) == len(SPHERES)  # nothing in the noise


def test_tubes_are_not_blobs():
    hu, grid = _block((90, 100, 100))
    radius = 2.0  # same radius as a 4 mm nodule
    tubes = _segment(grid, (0, 30, 25), (90, 30, 25), radius)  # straight, through the volume
    centre = (45, 60, 55)  # Y-branching in the axial plane, every branch leaving the volume
    for angle in (0.3, 0.3 + 2 * np.pi / 3, 0.3 + 4 * np.pi / 3):
        tubes |= _segment(grid, centre, (45, 60 + 80 * np.sin(angle), 55 + 80 * np.cos(angle)), radius)
    hu[tubes] = SOLID_HU
    volume = _noisy_volume(hu, seed=1)
    assert detect_candidates(volume, np.ones(volume.shape_zyx, np.uint8)) == []
    # the same radius as a sphere is found
    z, y, x = grid
    hu[(z - 45) ** 2 + (y - 20) ** 2 + (x - 75) ** 2 <= radius**2] = SOLID_HU
    cands = detect_candidates(_noisy_volume(hu, seed=1), np.ones(volume.shape_zyx, np.uint8))
    assert len(cands) == 1
    assert np.allclose(np.array(cands[0].center_kji) * SPACING[::-1], (45, 20, 75), atol=1.5)


def test_candidates_only_inside_the_lung_mask(sphere_volume):
    lung = np.zeros(sphere_volume.shape_zyx, np.uint8)
    lung[:, :, : int(50 / SPACING[0])] = 1  # x < 50 mm: holds the 3, 8 and 28 mm spheres (x = 20, 30, 30)
    hu_before, lung_before = sphere_volume.hu.copy(), lung.copy()
    cands = detect_candidates(sphere_volume, lung)
    assert np.array_equal(sphere_volume.hu, hu_before) and np.array_equal(lung, lung_before)  # inputs untouched
    assert len(cands) == 3
    assert all(c.center_kji[2] * SPACING[0] < 50 for c in cands)
    assert detect_candidates(sphere_volume, np.zeros_like(lung)) == []


def test_max_candidates_and_threshold(sphere_volume):
    lung = np.ones(sphere_volume.shape_zyx, np.uint8)
    assert len(detect_candidates(sphere_volume, lung, BlobDetectorConfig(max_candidates=2))) == 2
    strict = detect_candidates(sphere_volume, lung, BlobDetectorConfig(threshold=0.99))
    assert all(c.score >= 0.99 for c in strict)


def test_scales_cover_the_diameter_range():
    scales = blob_scales_mm(BlobDetectorConfig(min_diameter_mm=3, max_diameter_mm=30))
    radii = np.array(scales) * np.sqrt(3)
    assert radii[0] == pytest.approx(1.5) and radii[-1] == pytest.approx(15.0)
    assert np.all(np.diff(scales) > 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_diameter_mm": 0},
        {"min_diameter_mm": 10, "max_diameter_mm": 5},
        {"scale_ratio": 1.0},
        {"threshold": 1.0},
        {"max_candidates": 0},
        {"hu_window": (100.0, -1000.0)},
        {"working_spacing_mm": -1.0},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        BlobDetectorConfig(**kwargs)


def test_wrong_mask_shape_and_frozen_candidate(sphere_volume):
    with pytest.raises(ValueError, match="lung_mask shape"):
        detect_candidates(sphere_volume, np.ones((3, 3, 3), np.uint8))
    cand = Candidate((1.0, 2.0, 3.0), 2.0, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cand.score = 1.0
