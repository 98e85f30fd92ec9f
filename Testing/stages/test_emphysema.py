"""Tests of lunglesionai.stages.emphysema: LAA-950 on constructed HU distributions."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.stages.emphysema import EMPHYSEMA_MAX_HU, emphysema_index_pct

_IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)


def _volume(hu: np.ndarray, spacing=(0.7, 0.7, 1.25)) -> Volume:
    return Volume(hu.astype(np.float32), spacing, (0.0, 0.0, 0.0), _IDENTITY)


@pytest.mark.parametrize("n_low, n_lung, expected", [(0, 400, 0.0), (100, 400, 25.0), (37, 200, 18.5),
                                                     (400, 400, 100.0)])
def test_percentage_of_lung_voxels_below_minus_950(n_low, n_lung, expected):
    rng = np.random.default_rng(n_low)
    hu = np.full(1000, 40.0)  # outside the lung: soft tissue, and air that must not count
    hu[900:] = -1000.0
    lung_values = np.r_[rng.uniform(-1020, EMPHYSEMA_MAX_HU - 0.5, n_low), rng.uniform(-950, -700, n_lung - n_low)]
    hu[:n_lung] = rng.permutation(lung_values)
    labels = np.zeros(1000, np.uint8)
    labels[: n_lung // 2], labels[n_lung // 2: n_lung] = 1, 2  # both lungs count
    shape = (10, 10, 10)
    assert emphysema_index_pct(_volume(hu.reshape(shape)), labels.reshape(shape)) == pytest.approx(expected)


def test_threshold_is_strict():
    hu = np.full((2, 2, 2), EMPHYSEMA_MAX_HU)
    hu[0, 0, 0] = EMPHYSEMA_MAX_HU - 1.0
    assert emphysema_index_pct(_volume(hu), np.ones((2, 2, 2), bool)) == pytest.approx(12.5)


def test_no_lung_is_not_measured():
    assert emphysema_index_pct(_volume(np.full((3, 3, 3), -1000.0)), np.zeros((3, 3, 3), np.uint8)) is None


def test_grid_mismatch():
    with pytest.raises(ValueError, match="not on the volume's grid"):
        emphysema_index_pct(_volume(np.zeros((3, 3, 3))), np.ones((3, 3, 2), np.uint8))
