"""Tests of lunglesionai.stages.measurements on analytic shapes and constructed HU distributions."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.findings import Finding, FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.measurements import (
    GROUND_GLASS_MAX_FRACTION,
    SOLID_COMPONENT_MIN_HU,
    SOLID_MIN_FRACTION,
    axial_axes_mm,
    classify_texture,
    mean_diameter_mm,
    measure_mask,
    solid_component,
    with_guideline_measurements,
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


# --- guideline measurements: mean diameter, solid component, with_guideline_measurements ---------------------------

@pytest.mark.parametrize(
    "long_axis, short_axis, expected",
    [
        (8.0, 6.0, 7.0),
        (6.05, 6.0, 6.025),  # unrounded: Lung-RADS rounds to 0.1 mm, Fleischner to 1 mm, the rules do it
        (0.0, 0.0, 0.0),
    ],
)
def test_mean_diameter(long_axis, short_axis, expected):
    assert mean_diameter_mm(long_axis, short_axis) == pytest.approx(expected)


@pytest.mark.parametrize("long_axis, short_axis", [(5.0, 6.0), (-1.0, -2.0), (float("nan"), 1.0)])
def test_mean_diameter_rejects_bad_axes(long_axis, short_axis):
    with pytest.raises(ValueError, match="axis|axes"):
        mean_diameter_mm(long_axis, short_axis)


def test_measure_mask_reports_the_mean_of_the_axial_axes():
    spacing = (0.6, 0.6, 1.0)
    shape = (12, 60, 60)
    mask = _ellipsoid(shape, (6, 30, 30), (4.0, 4.0, 8.0), spacing[::-1], 30.0)
    m = measure_mask(_volume(shape, spacing), FindingMask((0, 0, 0), mask))
    assert m.mean_diameter_mm == pytest.approx((m.long_axis_mm + m.short_axis_mm) / 2)
    assert m.finding_fields()["mean_diameter_mm"] == pytest.approx(12.0, abs=spacing[0])


def _part_solid(spacing=(0.7, 0.7, 1.0), shape=(24, 50, 50), core_radius_mm=2.5, core_shift_vox=(0, 0, 0)):
    """Ground-glass ball (-650 HU, radius 6 mm) with a solid core (20 HU) and a 3-voxel dense speck apart from it."""
    spacing_zyx = spacing[::-1]
    centre = np.array(shape) // 2
    nodule = _ellipsoid(shape, centre, (6, 6, 6), spacing_zyx)
    core = _ellipsoid(shape, centre + core_shift_vox, (core_radius_mm,) * 3, spacing_zyx) & nodule
    hu = np.full(shape, -850.0, np.float32)
    hu[nodule] = -650.0
    hu[core] = 20.0
    speck = (centre[0], centre[1] + 6, slice(centre[2] + 2, centre[2] + 5))  # inside the ball, apart from the core
    hu[speck] = 20.0
    return Volume(hu, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), nodule, core


def test_solid_component_is_the_largest_dense_group():
    volume, nodule, core = _part_solid()
    part = solid_component(volume, FindingMask((0, 0, 0), nodule))
    rebuilt = np.zeros(nodule.shape, bool)
    part.mask.paste_into(rebuilt, True)
    np.testing.assert_array_equal(rebuilt, core)  # the separate dense speck is not part of it
    assert part.volume_mm3 == pytest.approx(core.sum() * volume.voxel_volume_mm3)
    assert part.long_axis_mm == pytest.approx(5.0, abs=0.7) and part.short_axis_mm == pytest.approx(5.0, abs=0.7)
    assert part.mean_diameter_mm == pytest.approx((part.long_axis_mm + part.short_axis_mm) / 2)
    assert part.finding_fields()["solid_component_volume_mm3"] == part.volume_mm3


def test_solid_component_none_without_dense_voxels():
    volume, nodule, _ = _part_solid()
    hu = volume.hu.copy()
    hu[hu >= SOLID_COMPONENT_MIN_HU] = -650.0
    assert solid_component(volume.with_array(hu), FindingMask((0, 0, 0), nodule)) is None


def test_solid_component_threshold_is_inclusive():
    volume, nodule, core = _part_solid()
    hu = volume.hu.copy()
    hu[core] = SOLID_COMPONENT_MIN_HU
    part = solid_component(volume.with_array(hu), FindingMask((0, 0, 0), nodule))
    assert part is not None and part.volume_mm3 == pytest.approx(core.sum() * volume.voxel_volume_mm3)


@pytest.mark.parametrize("texture, has_solid_component", [("part-solid", True), ("solid", False),
                                                          ("ground-glass", False), (None, False)])
def test_with_guideline_measurements(texture, has_solid_component):
    volume, nodule, _ = _part_solid()
    mask = FindingMask.cropped(nodule, (0, 0, 0))
    m = measure_mask(volume, mask)
    finding = Finding("N1", "nodule", m.center_lps_mm, m.bbox_lps_mm, long_axis_mm=m.long_axis_mm,
                      short_axis_mm=m.short_axis_mm, texture=texture, extra={"detector": "learned"}, mask=mask)
    measured = with_guideline_measurements(volume, finding)
    assert measured.mean_diameter_mm == pytest.approx((m.long_axis_mm + m.short_axis_mm) / 2)
    assert (measured.solid_component_mean_diameter_mm is not None) == has_solid_component
    assert (measured.solid_component_volume_mm3 is not None) == has_solid_component
    assert measured.calcified is False and measured.extra == {"detector": "learned", "calcification": "none"}
    assert finding.mean_diameter_mm is None and finding.extra == {"detector": "learned"}  # input not modified


def test_with_guideline_measurements_without_a_mask():
    finding = Finding("N1", "nodule", (0.0, 0.0, 0.0), ((0, 0, 0), (1, 1, 1)), long_axis_mm=9.0, short_axis_mm=7.0,
                      texture="part-solid")
    measured = with_guideline_measurements(_volume((4, 4, 4)), finding)
    assert measured.mean_diameter_mm == 8.0
    assert measured.calcified is None and measured.solid_component_mean_diameter_mm is None
