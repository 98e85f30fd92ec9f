"""Tests of the ULD grid: LPS geometry kept through resampling, padding, slabs, label maps and per-slice boxes."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.nets.mp3d import ULDConfig
from lunglesionai.stages.universal_lesions.grid import (
    SliceGrid,
    label_grid,
    mask_boxes_per_slice,
    slice_grid,
)

CONFIG = ULDConfig(n_slices=3, z_kernels=(3, 1, 1, 1))


def _volume_with_cube(direction):
    hu = np.full((40, 60, 70), 40, np.int16)
    hu[18:23, 28:33, 33:38] = 1000  # 5-voxel cube centred at (k, j, i) = (20, 30, 35)
    return Volume(hu, (0.7, 0.7, 1.0), (12.0, -30.0, 100.0), direction)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_slice_grid_keeps_lps_positions(direction):
    volume = _volume_with_cube(direction)
    grid = slice_grid(volume, CONFIG)
    assert grid.spacing_mm == (CONFIG.pixel_spacing_mm, CONFIG.pixel_spacing_mm, CONFIG.slice_spacing_mm)
    assert grid.shape_zyx[1] % 32 == 0 and grid.shape_zyx[2] % 32 == 0
    assert grid.shape_zyx[0] == 20  # 39 mm of slice centres at 2 mm: 20 slices, no z padding
    cube_lps = volume.kji_to_lps([[20.0, 30.0, 35.0]])[0]
    bright = np.argwhere(grid.hu > 300).mean(axis=0)[::-1]  # (x, y, z) centroid on the grid
    assert np.linalg.norm(grid.xyz_to_lps(bright)[0] - cube_lps) < 1.0
    np.testing.assert_allclose(grid.lps_to_xyz(grid.xyz_to_lps(bright)), bright[None])
    assert grid.hu[0, 0, 0] == pytest.approx(-1024.0)  # padding is air


def test_slab_layout_is_window_major_and_transposed():
    hu = np.zeros((4, 32, 64), np.float32)
    hu[2, 5, 40] = 1024.0  # slice 2, row 5, column 40
    grid = SliceGrid(hu, np.zeros(3), (1.4, 1.4, 2.0))
    slab = grid.slab(2, CONFIG)
    assert slab.shape == (2 * 3, 64, 32)  # (C·n, X, Y)
    assert slab[1, 40, 5] == pytest.approx(1.0)  # window 0 (wide), centre slice s = 1 → channel 0·3 + 1
    assert slab[0, 40, 5] == pytest.approx(0.5)  # slice 1 is 0 HU: the middle of (−1024, 1024)
    np.testing.assert_array_equal(grid.slab_indices(0, 3), [0, 0, 1])  # the first slice repeats
    assert grid.windowed_volume(CONFIG).shape == (2, 4, 64, 32)


def test_label_grid_and_boxes_per_slice():
    volume = _volume_with_cube((1, 0, 0, 0, 1, 0, 0, 0, 1))
    grid = slice_grid(volume, CONFIG)
    labels = label_grid((np.asarray(volume.hu) > 500).astype(np.uint16) * 3, volume, grid)
    assert labels.dtype == np.uint16 and set(np.unique(labels).tolist()) == {0, 3}
    boxes = mask_boxes_per_slice(labels == 3)
    assert boxes, "the cube must cross some slice"
    for k, (box, area) in boxes.items():
        rows, cols = np.nonzero(labels[k] == 3)
        np.testing.assert_allclose(box, [cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
        assert area == len(rows)
    with pytest.raises(ValueError, match="label map shape"):
        label_grid(np.zeros((3, 3, 3)), volume, grid)


def test_boxes_per_slice_leave_out_small_tips():
    mask = np.zeros((5, 20, 20), bool)
    mask[1, 5:15, 5:15] = True  # 100 px
    mask[2, 9:11, 9:11] = True  # 4 px: a tip, under 25 % of the largest section
    assert set(mask_boxes_per_slice(mask, 0.25)) == {1}
    assert mask_boxes_per_slice(np.zeros((2, 3, 3), bool)) == {}
