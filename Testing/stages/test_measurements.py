"""Tests of lunglesionai.stages.measurements on analytic shapes and constructed HU distributions."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.measurements import (
    GROUND_GLASS_MAX_FRACTION,
    SOLID_COMPONENT_MIN_HU,
    SOLID_MIN_FRACTION,
    axial_axes_mm,
    classify_texture,
    measure_mask,
)


def _volume(shape=(40, 80, 80), spacing=(0.5, 0.5, 0.5), origin=(0.0, 0.0, 0.0), direction=None, hu=-850.0):
    direction = direction if direction is not None else (1, 0, 0, 0, 1, 0, 0, 0, 1)
    return Volume(np.full(shape, hu, np.float32), spacing, origin, direction)


def _ellipsoid(shape, centre_kji, semi_axes_mm, spacing_zyx, angle_deg=0.0):
    """Boolean ellipsoid; semi-axes (z, y', x') mm with (y', x') rotated by ``angle_deg`` in the axial plane."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    z = (k - centre_kji[0]) * spacing_zyx[0]
    y = (j - centre_kji[1]) * spacing_zyx[1]
    x = (i - centre_kji[2]) * spacing_zyx[2]
    a = np.deg2rad(angle_deg)
    xr, yr = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
    return (z / semi_axes_mm[0]) ** 2 + (yr / semi_axes_mm[1]) ** 2 + (xr / semi_axes_mm[2]) ** 2 <= 1


def test_sphere_volume_diameter_and_centre():
    spacing = (0.5, 0.5, 0.5)
    shape = (40, 40, 40)
    ball = _ellipsoid(shape, (20, 20, 20), (6, 6, 6), spacing[::-1])
    volume = _volume(shape, spacing, origin=(-10.0, 5.0, 100.0))
    m = measure_mask(volume, FindingMask((0, 0, 0), ball))
    assert m.volume_mm3 == pytest.approx(4 / 3 * np.pi * 6**3, rel=0.02)
    assert m.diameter_mm == pytest.approx(12.0, rel=0.01)
    assert np.allclose(m.center_lps_mm, (-10 + 10, 5 + 10, 100 + 10), atol=1e-9)
    assert m.long_axis_mm == pytest.approx(12.0, abs=0.5) and m.short_axis_mm == pytest.approx(12.0, abs=0.5)
    assert m.mean_hu == pytest.approx(-850.0)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_rotated_ellipse_axes_within_a_voxel(angle):
    spacing = (0.6, 0.6, 1.5)
    shape = (12, 80, 80)
    mask = _ellipsoid(shape, (6, 40, 40), (4.0, 6.0, 14.0), spacing[::-1], angle)
    long_axis, short_axis = axial_axes_mm(mask, spacing[:2])
    assert abs(long_axis - 28.0) <= spacing[0]
    assert abs(short_axis - 12.0) <= spacing[0]


def test_centre_and_bbox_with_non_identity_direction():
    # i runs towards -x (patient right), j towards -y, k towards +z; anisotropic spacing
    direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    volume = _volume((10, 20, 30), (0.8, 0.7, 2.0), origin=(50.0, 40.0, -30.0), direction=direction)
    box = np.zeros((2, 3, 4), bool)
    box[:] = True
    offset = (4, 5, 6)  # voxels k 4-5, j 5-7, i 6-9
    m = measure_mask(volume, FindingMask(offset, box))
    centre_ijk = np.array([6 + 1.5, 5 + 1.0, 4 + 0.5])
    expected_centre = np.array([50.0, 40.0, -30.0]) + np.array([-1, -1, 1]) * centre_ijk * (0.8, 0.7, 2.0)
    assert np.allclose(m.center_lps_mm, expected_centre)
    lo_ijk, hi_ijk = np.array([5.5, 4.5, 3.5]), np.array([9.5, 7.5, 5.5])
    a = np.array([50.0, 40.0, -30.0]) + np.array([-1, -1, 1]) * lo_ijk * (0.8, 0.7, 2.0)
    b = np.array([50.0, 40.0, -30.0]) + np.array([-1, -1, 1]) * hi_ijk * (0.8, 0.7, 2.0)
    assert np.allclose(m.bbox_lps_mm[0], np.minimum(a, b)) and np.allclose(m.bbox_lps_mm[1], np.maximum(a, b))
    assert m.volume_mm3 == pytest.approx(24 * 0.8 * 0.7 * 2.0)


def test_bbox_of_an_oblique_volume_uses_all_corners():
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    direction = (c, -s, 0, s, c, 0, 0, 0, 1)  # axes rotated 30° about z
    volume = _volume((4, 4, 4), (1.0, 1.0, 1.0), direction=direction)
    m = measure_mask(volume, FindingMask((1, 1, 1), np.ones((1, 1, 1), bool)))
    # the unit voxel centred at ijk (1, 1, 1), rotated 30°: its x extent is (cos + sin) = 1.366 mm
    assert m.bbox_lps_mm[1][0] - m.bbox_lps_mm[0][0] == pytest.approx(c + s)
    assert m.bbox_lps_mm[1][2] - m.bbox_lps_mm[0][2] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "values, expected",
    [
        (np.full(200, 30.0), "solid"),
        (np.full(200, -650.0), "ground-glass"),
        (np.r_[np.full(60, 20.0), np.full(140, -650.0)], "ground-glass"),  # 30 % solid
        (np.r_[np.full(80, 20.0), np.full(120, -650.0)], "part-solid"),  # 40 % solid
        (np.r_[np.full(120, 20.0), np.full(80, -650.0)], "solid"),  # 60 % solid
    ],
)
def test_texture_classes(values, expected):
    assert classify_texture(values) == expected


def test_texture_thresholds_are_consistent():
    assert GROUND_GLASS_MAX_FRACTION < SOLID_MIN_FRACTION
    just_solid = np.r_[np.full(44, SOLID_COMPONENT_MIN_HU), np.full(56, SOLID_COMPONENT_MIN_HU - 1)]
    assert classify_texture(just_solid) == "solid"


def test_texture_measured_on_the_interior():
    volume = _volume((20, 40, 40), (0.7, 0.7, 1.0))
    ball = _ellipsoid((20, 40, 40), (10, 20, 20), (5, 5, 5), (1.0, 0.7, 0.7))
    hu = volume.hu.copy()
    hu[ball] = -650.0
    hu[ball & ~_ellipsoid((20, 40, 40), (10, 20, 20), (4, 4, 4), (1.0, 0.7, 0.7))] = 20.0  # bright rim only
    m = measure_mask(volume.with_array(hu), FindingMask((0, 0, 0), ball))
    assert m.texture == "ground-glass"  # a one-voxel rim does not make it solid


def test_invalid_masks():
    volume = _volume((10, 10, 10))
    with pytest.raises(ValueError, match="empty"):
        measure_mask(volume, FindingMask((0, 0, 0), np.zeros((2, 2, 2), bool)))
    with pytest.raises(ValueError, match="outside the volume"):
        measure_mask(volume, FindingMask((8, 0, 0), np.ones((3, 2, 2), bool)))
    with pytest.raises(ValueError, match="3-D"):
        measure_mask(volume, FindingMask((0, 0, 0), np.ones((2, 2), bool)))
    with pytest.raises(ValueError, match="empty"):
        classify_texture(np.array([]))
    with pytest.raises(ValueError, match="3-D"):
        axial_axes_mm(np.ones((3, 3), bool), (1.0, 1.0))
