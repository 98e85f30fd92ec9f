"""Tests of lunglesionai.stages.calcification on synthetic nodules with and without dense parts."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.calcification import (
    CALCIFICATION_MIN_HU,
    CALCIFICATION_PATTERNS,
    calcification_pattern,
    is_calcified,
)

_SHAPE = (24, 40, 40)


def _ball(shape, centre_kji, radius_mm, spacing_xyz):
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    sz, sy, sx = spacing_xyz[::-1]
    d2 = ((k - centre_kji[0]) * sz) ** 2 + ((j - centre_kji[1]) * sy) ** 2 + ((i - centre_kji[2]) * sx) ** 2
    return d2 <= radius_mm**2


def _nodule(dense: str, spacing=(0.7, 0.7, 1.0), noise_sd=0.0, nodule_hu=40.0, dense_hu=600.0):
    """A 6 mm-radius soft-tissue nodule in lung (-850 HU) with a dense part: "none", "core" (3 mm radius ball at
    the centre), "all", "cap" (3 mm ball at the nodule's edge) or "speck" (3×3×3 voxels at the centre)."""
    centre = np.array(_SHAPE) // 2
    nodule = _ball(_SHAPE, centre, 6.0, spacing)
    radius_vox = np.array([6.0 / s for s in spacing[::-1]])
    parts = {
        "none": np.zeros(_SHAPE, bool),
        "core": _ball(_SHAPE, centre, 3.0, spacing),
        "all": nodule,
        "cap": _ball(_SHAPE, centre + np.array([0, 0, int(radius_vox[2]) - 2]), 3.0, spacing) & nodule,
        "speck": np.zeros(_SHAPE, bool),
    }
    parts["speck"][tuple(slice(c - 1, c + 2) for c in centre)] = True
    hu = np.full(_SHAPE, -850.0, np.float32)
    hu[nodule] = nodule_hu
    hu[parts[dense]] = dense_hu
    if noise_sd:
        hu = hu + np.random.default_rng(0).normal(0.0, noise_sd, _SHAPE).astype(np.float32)
    volume = Volume(hu, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return volume, FindingMask.cropped(nodule, (0, 0, 0))


@pytest.mark.parametrize(
    "dense, spacing, expected",
    [
        ("none", (0.7, 0.7, 1.0), "none"),
        ("core", (0.7, 0.7, 1.0), "central"),     # central calcified core (granuloma): benign
        ("core", (0.7, 0.7, 2.5), "central"),     # thick slices: the median is in-plane only
        ("all", (0.7, 0.7, 1.0), "diffuse"),      # completely calcified: benign
        ("cap", (0.7, 0.7, 1.0), "eccentric"),    # dense part at the edge: not a benign pattern
        ("speck", (0.7, 0.7, 1.0), "punctate"),   # too small a share to call benign
    ],
)
def test_patterns(dense, spacing, expected):
    volume, mask = _nodule(dense, spacing)
    assert calcification_pattern(volume, mask) == expected
    assert is_calcified(volume, mask) == (expected in ("central", "diffuse"))
    assert expected in CALCIFICATION_PATTERNS


def test_noise_alone_is_not_calcification():
    volume, mask = _nodule("none", noise_sd=80.0)  # single voxels over 200 HU, as on low-dose CT
    array = np.zeros(_SHAPE, bool)
    mask.paste_into(array, True)
    assert np.count_nonzero(volume.hu[array] >= CALCIFICATION_MIN_HU) > 10  # the median is what removes them
    assert calcification_pattern(volume, mask) == "none"


def test_threshold():
    just_below = _nodule("core", dense_hu=CALCIFICATION_MIN_HU - 1.0)
    at_threshold = _nodule("core", dense_hu=CALCIFICATION_MIN_HU)
    assert calcification_pattern(*just_below) == "none"
    assert calcification_pattern(*at_threshold) == "central"


def test_mask_at_the_volume_edge():
    hu = np.full((4, 6, 6), 400.0, np.float32)
    volume = Volume(hu, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert calcification_pattern(volume, FindingMask((0, 0, 0), np.ones((4, 6, 6), bool))) == "diffuse"


def test_invalid_masks():
    volume, _ = _nodule("none")
    with pytest.raises(ValueError, match="non-empty 3-D"):
        calcification_pattern(volume, FindingMask((0, 0, 0), np.zeros((2, 2, 2), bool)))
    with pytest.raises(ValueError, match="non-empty 3-D"):
        calcification_pattern(volume, FindingMask((0, 0, 0), np.ones((2, 2), bool)))
    with pytest.raises(ValueError, match="outside the volume"):
        is_calcified(volume, FindingMask((22, 0, 0), np.ones((3, 2, 2), bool)))
