"""Tests of lunglesionai.core.orientation: exact reorientation to LPS axis order and its inverse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lunglesionai.core.orientation import (
    AxisPermutation,
    reorient_to_lps,
    restore_orientation,
)
from lunglesionai.core.volume import Volume

SHAPE_ZYX = (4, 5, 6)  # distinct sizes so any wrong transpose shows in the shape


def _signed_permutation(order_ijk, signs) -> np.ndarray:
    """Direction whose column n (axis n = i, j, k) is signs[n] * the LPS unit vector order_ijk[n]."""
    direction = np.zeros((3, 3))
    for axis, (lps, sign) in enumerate(zip(order_ijk, signs, strict=True)):
        direction[lps, axis] = sign
    return direction


def _rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A random rotation of at most about ``max_degrees`` (small obliquity)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _all_voxel_positions(vol: Volume) -> dict[float, np.ndarray]:
    """Map each (unique) voxel value to its LPS position."""
    kji = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape_zyx], indexing="ij"), -1).reshape(-1, 3)
    values = vol.hu[tuple(kji.T)]
    return dict(zip(values.tolist(), vol.kji_to_lps(kji), strict=True))


SIGNED_PERMUTATIONS = [
    (order, signs)
    for order in itertools.permutations(range(3))
    for signs in itertools.product((1.0, -1.0), repeat=3)
]


@pytest.mark.parametrize(("order_ijk", "signs"), SIGNED_PERMUTATIONS)
def test_every_signed_permutation_reorients_exactly(order_ijk, signs):
    rng = np.random.default_rng(0)
    hu = rng.permutation(np.prod(SHAPE_ZYX)).reshape(SHAPE_ZYX).astype(np.int32)  # unique values
    direction = _rotation(rng, 10) @ _signed_permutation(order_ijk, signs)
    vol = Volume(hu, (0.6, 0.9, 2.5), (-30.0, 12.0, 100.0), tuple(direction.reshape(-1)), "t")
    lps, perm = reorient_to_lps(vol)

    # axes now point to +L, +P, +S (nearest), and each voxel keeps its value and its LPS position
    assert np.all(np.diag(lps.direction_matrix) > 0.9)
    before, after = _all_voxel_positions(vol), _all_voxel_positions(lps)
    assert set(before) == set(after)
    for value, position in before.items():
        np.testing.assert_allclose(after[value], position, atol=1e-9)
    assert sorted(lps.spacing_mm) == sorted(vol.spacing_mm)

    # arrays (and channel-first arrays) round-trip exactly
    np.testing.assert_array_equal(perm.apply(hu), lps.hu)
    np.testing.assert_array_equal(perm.invert(lps.hu), hu)
    stacked = np.stack([hu, -hu])
    np.testing.assert_array_equal(perm.invert(perm.apply(stacked)), stacked)

    # a crop of the LPS grid maps onto the same voxels of the original grid
    crop = lps.hu[1:3, 1:4, 0:2]
    (k, j, i), crop_orig = perm.invert_crop((1, 1, 0), crop)
    kc, jc, ic = crop_orig.shape
    np.testing.assert_array_equal(hu[k:k + kc, j:j + jc, i:i + ic], crop_orig)

    # the whole volume comes back with its geometry
    back = restore_orientation(lps, perm)
    np.testing.assert_array_equal(back.hu, hu)
    np.testing.assert_allclose(back.ijk_to_lps_matrix, vol.ijk_to_lps_matrix, atol=1e-12)


def test_lps_volume_is_returned_itself():
    vol = Volume(np.zeros(SHAPE_ZYX, np.int16), (1, 1, 1), (0, 0, 0))
    lps, perm = reorient_to_lps(vol)
    assert lps is vol and perm.is_identity
    assert perm.apply(vol.hu) is vol.hu and perm.invert(vol.hu) is vol.hu
    assert restore_orientation(lps, perm) is vol


def test_ras_volume_flips_x_and_y_only():
    hu = np.arange(np.prod(SHAPE_ZYX)).reshape(SHAPE_ZYX)
    vol = Volume(hu, (0.7, 0.8, 2.0), (10.0, 20.0, -5.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    lps, perm = reorient_to_lps(vol)
    assert perm.order_kji == (0, 1, 2) and perm.flip_kji == (False, True, True)
    np.testing.assert_array_equal(lps.hu, hu[:, ::-1, ::-1])
    np.testing.assert_allclose(lps.origin_lps_mm, (10.0 - 0.7 * 5, 20.0 - 0.8 * 4, -5.0))
    np.testing.assert_allclose(lps.direction_matrix, np.eye(3))


def test_index_and_box_mapping_back_to_original_grid():
    rng = np.random.default_rng(3)
    hu = rng.permutation(np.prod(SHAPE_ZYX)).reshape(SHAPE_ZYX)
    direction = _signed_permutation((2, 0, 1), (-1.0, 1.0, -1.0))
    vol = Volume(hu, (1, 2, 3), (0, 0, 0), tuple(direction.reshape(-1)))
    lps, perm = reorient_to_lps(vol)
    kji_lps = np.stack(np.nonzero(np.ones(lps.shape_zyx, bool)), 1)
    kji_orig = perm.kji_to_original(kji_lps).astype(int)
    np.testing.assert_array_equal(hu[tuple(kji_orig.T)], lps.hu[tuple(kji_lps.T)])

    start, stop = (1, 0, 2), (4, 3, 4)
    box = lps.hu[1:4, 0:3, 2:4]
    (s0, s1, s2), (e0, e1, e2) = perm.box_to_original(start, stop)
    np.testing.assert_array_equal(np.sort(hu[s0:e0, s1:e1, s2:e2], axis=None), np.sort(box, axis=None))
    crop = np.zeros((3, 3, 2), bool)
    crop[0, 1, 1] = crop[2, 2, 0] = True
    full_lps = np.zeros(lps.shape_zyx, bool)
    full_lps[1:4, 0:3, 2:4] = crop
    offset, crop_orig = perm.invert_crop((1, 0, 2), crop)
    full_orig = np.zeros(SHAPE_ZYX, bool)
    full_orig[tuple(slice(o, o + n) for o, n in zip(offset, crop_orig.shape))] = crop_orig
    np.testing.assert_array_equal(full_orig, perm.invert(full_lps))
    back_offset, back_crop = perm.apply_crop(offset, crop_orig)  # the forward map undoes invert_crop exactly
    assert back_offset == (1, 0, 2)
    np.testing.assert_array_equal(back_crop, crop)
    with pytest.raises(ValueError, match="3-D crop"):
        perm.apply_crop((0, 0, 0), crop[0])
    with pytest.raises(ValueError, match="non-empty box"):
        perm.box_to_original((2, 0, 0), (2, 1, 1))


def test_shape_mismatch_and_bad_permutation_are_refused():
    perm = AxisPermutation((2, 0, 1), (False, True, False), SHAPE_ZYX)
    assert perm.lps_shape_zyx == (6, 4, 5)
    with pytest.raises(ValueError, match="original grid shape"):
        perm.apply(np.zeros((6, 4, 5)))
    with pytest.raises(ValueError, match="LPS grid shape"):
        perm.invert(np.zeros(SHAPE_ZYX))
    with pytest.raises(ValueError, match="permutation"):
        AxisPermutation((0, 0, 1), (False, False, False), SHAPE_ZYX)


def test_reorient_does_not_modify_input():
    hu = np.arange(np.prod(SHAPE_ZYX), dtype=np.int16).reshape(SHAPE_ZYX)
    copy = hu.copy()
    vol = Volume(hu, (1, 1, 1), (0, 0, 0), (0, 1, 0, -1, 0, 0, 0, 0, 1))
    lps, _ = reorient_to_lps(vol)
    lps.hu[...] = 0  # the result owns its memory
    np.testing.assert_array_equal(hu, copy)
