"""Tests of lunglesionai.stages.scan_coverage.lungs_fully_covered (Lung-RADS category 0 when it is False)."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.stages.scan_coverage import LUNG_CUT_MIN_AREA_MM2, lungs_fully_covered, scan_warnings

_SHAPE = (40, 60, 80)


def _volume(spacing=(1.0, 1.0, 2.0)) -> Volume:
    return Volume(np.zeros(_SHAPE, np.int16), spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _lungs(k=(2, 38), j=(5, 55), right_i=(5, 38), left_i=(42, 75)) -> np.ndarray:
    labels = np.zeros(_SHAPE, np.uint8)
    labels[k[0]:k[1], j[0]:j[1], right_i[0]:right_i[1]] = 1
    labels[k[0]:k[1], j[0]:j[1], left_i[0]:left_i[1]] = 2
    return labels


@pytest.mark.parametrize(
    "labels, expected",
    [
        (_lungs(), True),
        (_lungs(k=(0, 38)), False),             # lung bases on the first slice: cut
        (_lungs(k=(2, 40)), False),             # apices on the last slice
        (_lungs(right_i=(0, 38)), False),       # field of view narrower than the chest
        (_lungs(j=(5, 60)), False),
        (np.where(_lungs() == 2, 0, _lungs()).astype(np.uint8), False),  # one lung missing
        (np.zeros(_SHAPE, np.uint8), False),    # no lung
    ],
)
def test_lungs_fully_covered(labels, expected):
    assert lungs_fully_covered(_volume(), labels) is expected


def test_a_sliver_on_the_edge_is_not_a_cut():
    labels = _lungs()
    labels[0, 10:19, 10:19] = 1  # 81 mm² on the first slice, below the cut threshold
    assert 81.0 < LUNG_CUT_MIN_AREA_MM2
    assert lungs_fully_covered(_volume(), labels)
    labels[0, 10:21, 10:21] = 1  # 121 mm²
    assert not lungs_fully_covered(_volume(), labels)


def test_agrees_with_the_warnings_and_checks_the_grid():
    one_lung = np.where(_lungs() == 1, 1, 0).astype(np.uint8)
    assert any("only one lung" in w for w in scan_warnings(_volume(), one_lung))
    with pytest.raises(ValueError, match="not on the volume's grid"):
        lungs_fully_covered(_volume(), np.zeros((3, 3, 3), np.uint8))


@pytest.mark.parametrize("labels, face", [(_lungs(k=(0, 38)), "inferior"), (_lungs(k=(2, 40)), "superior"),
                                          (_lungs(right_i=(0, 38)), "right"), (_lungs(j=(5, 60)), "posterior")])
def test_a_cut_lung_is_named_in_the_warnings(labels, face):
    cut = [w for w in scan_warnings(_volume(), labels) if w.startswith("lungs cut by the scan's edge")]
    assert len(cut) == 1 and f"({face})" in cut[0] and "category 0" in cut[0]
    assert not any("lungs cut" in w for w in scan_warnings(_volume(), _lungs()))
