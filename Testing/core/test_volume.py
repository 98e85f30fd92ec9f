"""Tests of lunglesionai.core.volume: geometry conversions between (i, j, k), (k, j, i) and LPS mm."""

import numpy as np
import pytest

from lunglesionai import Volume

# direction with i -> -x (R), j -> -y (A), k -> +z: an RAS-ordered array described in LPS
FLIP_XY = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
# a permutation: i -> +z, j -> +x, k -> +y
PERMUTED = (0, 1, 0, 0, 0, 1, 1, 0, 0)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), FLIP_XY, PERMUTED])
def test_ijk_lps_round_trip(direction):
    v = Volume(np.zeros((5, 6, 7), np.int16), (0.7, 0.8, 2.5), (-10.0, 20.0, 30.0), direction)
    ijk = np.array([[0, 0, 0], [6, 5, 4], [1.5, 2.25, 3.0]])
    np.testing.assert_allclose(v.lps_to_ijk(v.ijk_to_lps(ijk)), ijk, atol=1e-9)
    np.testing.assert_allclose(v.kji_to_lps(ijk[:, ::-1]), v.ijk_to_lps(ijk))
    np.testing.assert_allclose(v.lps_to_kji(v.kji_to_lps(ijk)), ijk, atol=1e-9)


def test_ijk_to_lps_uses_columns_of_direction():
    v = Volume(np.zeros((3, 3, 3)), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), PERMUTED)
    # one step along j (spacing 2 mm) moves +x by 2 mm because column 1 of the direction is (1, 0, 0)
    np.testing.assert_allclose(v.ijk_to_lps([[0, 1, 0]]), [[2.0, 0.0, 0.0]])
    np.testing.assert_allclose(v.ijk_to_lps_matrix @ [0, 0, 1, 1], [0.0, 3.0, 0.0, 1.0])


def test_flip_xy_moves_towards_right_anterior():
    v = Volume(np.zeros((2, 2, 2)), (0.5, 0.5, 1.0), (100.0, 50.0, -20.0), FLIP_XY)
    np.testing.assert_allclose(v.ijk_to_lps([[1, 1, 1]]), [[99.5, 49.5, -19.0]])
    assert v.voxel_volume_mm3 == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hu": np.zeros((4, 4))}, "3-D"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, 1.0)}, "spacing_mm"),
        ({"origin_lps_mm": (0.0, 0.0)}, "origin_lps_mm"),
        ({"direction": (1, 0, 0, 1)}, "direction"),
    ],
)
def test_invalid_volume_raises(kwargs, message):
    args = {"hu": np.zeros((2, 2, 2)), "spacing_mm": (1.0, 1.0, 1.0), "origin_lps_mm": (0.0, 0.0, 0.0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Volume(**args)


def test_with_array_keeps_geometry_and_checks_shape():
    v = Volume(np.zeros((2, 3, 4)), (0.7, 0.7, 1.0), (1.0, 2.0, 3.0), FLIP_XY, source="x.nii.gz")
    w = v.with_array(np.ones((2, 3, 4)))
    assert (w.spacing_mm, w.origin_lps_mm, w.direction, w.source) == (v.spacing_mm, v.origin_lps_mm, v.direction, v.source)
    assert w.hu.sum() == 24
    with pytest.raises(ValueError, match="shape"):
        v.with_array(np.ones((3, 3, 4)))
