"""Tests of lunglesionai.core.volume: geometry conversions between (i, j, k), (k, j, i) and LPS mm."""

import numpy as np
import pytest

from lunglesionai import Volume
from lunglesionai.core.findings import InputInfo
from lunglesionai.core.segments import ijk_to_ras_matrix
from lunglesionai.core.volume import ijk_to_lps_matrix

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


def _oblique_direction() -> tuple[float, ...]:
    """Rotated about S by 30° and about L by 20°, k flipped (left-handed): no axis along a world axis."""
    a, b = np.deg2rad(30.0), np.deg2rad(20.0)
    about_s = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    about_l = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    return tuple((about_s @ about_l @ np.diag([1.0, 1.0, -1.0])).ravel())


def test_ijk_to_lps_matrix_is_one_for_the_volume_its_input_info_and_ras():
    v = Volume(np.zeros((4, 5, 6), np.int16), (0.8, 0.9, 1.5), (12.0, -30.0, 55.0), _oblique_direction())
    info = InputInfo.from_volume(v)
    d, spacing, origin = np.reshape(v.direction, (3, 3)), np.array(v.spacing_mm), np.array(v.origin_lps_mm)
    ijk = np.array([2.0, 3.0, 1.0])
    expected_lps = origin + d @ (spacing * ijk)  # written out: columns of the direction are the axes
    for matrix in (v.ijk_to_lps_matrix, ijk_to_lps_matrix(info.spacing_mm, info.origin_lps_mm, info.direction),
                   ijk_to_lps_matrix(v.spacing_mm, v.origin_lps_mm, np.reshape(v.direction, (3, 3)))):
        np.testing.assert_allclose(matrix @ [*ijk, 1.0], [*expected_lps, 1.0], atol=1e-12)
    np.testing.assert_allclose(v.ijk_to_lps([ijk])[0], expected_lps, atol=1e-12)
    np.testing.assert_allclose(v.lps_to_ijk([expected_lps])[0], ijk, atol=1e-12)
    ras = ijk_to_ras_matrix(info) @ [*ijk, 1.0]
    np.testing.assert_allclose(ras, [-expected_lps[0], -expected_lps[1], expected_lps[2], 1.0], atol=1e-12)


def test_ijk_to_lps_matrix_refuses_a_wrong_direction():
    with pytest.raises(ValueError):
        ijk_to_lps_matrix((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 1))
