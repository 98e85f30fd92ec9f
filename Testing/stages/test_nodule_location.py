"""Tests of lunglesionai.stages.nodule_location: side, craniocaudal zone (not lobe) and pleural attachment."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.findings import Finding, FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.lung_mask import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from lunglesionai.stages.nodule_location import (
    PLEURA_CONTACT_MM,
    finding_side,
    finding_zone,
    lung_extents,
    pleural_attachment,
    pleural_lung_mask,
    with_location,
)

_SHAPE = (32, 30, 50)  # (Z, Y, X)
_IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
#: Two box "lungs": right lung (smaller x) i 3..21, left lung i 28..46; both j 4..25, k 2..29 (28 slices).
_K0, _K1 = 2, 29


def _lungs() -> np.ndarray:
    labels = np.zeros(_SHAPE, np.uint8)
    labels[_K0:_K1 + 1, 4:26, 3:22] = RIGHT_LUNG_LABEL
    labels[_K0:_K1 + 1, 4:26, 28:47] = LEFT_LUNG_LABEL
    return labels


def _volume(spacing=(1.0, 1.0, 1.0), direction=_IDENTITY) -> Volume:
    return Volume(np.full(_SHAPE, -850.0, np.float32), spacing, (0.0, 0.0, 0.0), direction)


def _finding(volume: Volume, lo_kji, size_kji=(3, 3, 3), with_mask=True) -> Finding:
    array = np.ones(size_kji, bool)
    centre_kji = np.asarray(lo_kji, float) + (np.asarray(size_kji) - 1) / 2.0
    centre = tuple(float(c) for c in volume.kji_to_lps(centre_kji[None])[0])
    return Finding("N1", "nodule", centre, (centre, centre),
                   mask=FindingMask(tuple(lo_kji), array) if with_mask else None)


def test_lung_extents():
    extents = lung_extents(_lungs())
    assert extents == {RIGHT_LUNG_LABEL: ((_K0, _K1), (3, 21)), LEFT_LUNG_LABEL: ((_K0, _K1), (28, 46))}
    assert lung_extents(np.zeros(_SHAPE, np.uint8)) == {}
    with pytest.raises(ValueError, match="Z, Y, X"):
        lung_extents(np.zeros((3, 3), np.uint8))


@pytest.mark.parametrize(
    "lo_kji, with_mask, expected",
    [
        ((10, 10, 8), True, "right"),    # inside the right lung (smaller LPS x)
        ((10, 10, 35), True, "left"),
        ((10, 10, 20), True, "right"),   # straddles the right lung's edge: most voxels outside, labels decide
        ((10, 10, 22), True, "right"),   # in the gap between the lungs, right of the midline (i < 24.5)
        ((10, 10, 25), True, "left"),    # in the gap, left of the midline
        ((10, 10, 35), False, "left"),   # no mask: the centre's side of the midline
    ],
)
def test_side(lo_kji, with_mask, expected):
    volume = _volume()
    assert finding_side(volume, _lungs(), _finding(volume, lo_kji, with_mask=with_mask)) == expected


def test_side_follows_lps_x_not_the_array_index():
    # i runs towards -x (patient right): the lung at small i is now on the patient's left; labels carry this
    volume = _volume(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    labels = np.zeros(_SHAPE, np.uint8)
    labels[_K0:_K1 + 1, 4:26, 3:22] = LEFT_LUNG_LABEL
    labels[_K0:_K1 + 1, 4:26, 28:47] = RIGHT_LUNG_LABEL
    assert finding_side(volume, labels, _finding(volume, (10, 10, 8))) == "left"
    assert finding_side(volume, labels, _finding(volume, (10, 10, 22), with_mask=False)) == "left"
    assert finding_side(volume, labels, _finding(volume, (10, 10, 26), with_mask=False)) == "right"


def test_side_without_lungs():
    volume = _volume()
    assert finding_side(volume, np.zeros(_SHAPE, np.uint8), _finding(volume, (10, 10, 8))) is None


# The lung spans k 1.5 .. 29.5 (voxel edges): thirds at k 10.83 and 20.17.
@pytest.mark.parametrize(
    "centre_k, z_up, expected",
    [
        (3, True, "lower"), (10, True, "lower"), (12, True, "middle"), (19, True, "middle"), (21, True, "upper"),
        (28, True, "upper"), (0, True, "lower"), (31, True, "upper"),  # beyond the lung: nearest zone
        (3, False, "upper"), (28, False, "lower"), (15, False, "middle"),  # k runs superior -> inferior
    ],
)
def test_zone_is_a_third_of_the_lungs_craniocaudal_extent(centre_k, z_up, expected):
    direction = _IDENTITY if z_up else (1, 0, 0, 0, 1, 0, 0, 0, -1)
    volume = _volume(spacing=(0.8, 0.8, 2.5), direction=direction)
    finding = _finding(volume, (centre_k, 10, 8), size_kji=(1, 3, 3))
    assert finding_zone(volume, finding, "right", lung_extents(_lungs())) == expected


def test_zone_uses_that_lungs_own_extent():
    labels = _lungs()
    labels[20:, :, 28:] = 0  # left lung only reaches k 19: k 14 is in its upper third, the right lung's middle
    volume = _volume()
    finding = _finding(volume, (14, 10, 35), size_kji=(1, 3, 3))
    assert finding_zone(volume, finding, "left", lung_extents(labels)) == "upper"
    assert finding_zone(volume, finding, "right", lung_extents(labels)) == "middle"
    assert finding_zone(volume, finding, "left", {}) is None
    with pytest.raises(ValueError, match="side"):
        finding_zone(volume, finding, "middle", lung_extents(labels))


@pytest.mark.parametrize(
    "lo_kji, spacing, expected",
    [
        ((10, 10, 10), (1.0, 1.0, 1.0), "none"),           # deep in the lung
        ((10, 4, 10), (1.0, 1.0, 1.0), "juxta-pleural"),   # on the lung's boundary row
        ((10, 5, 10), (1.0, 1.0, 1.0), "juxta-pleural"),   # 1 mm of lung between it and the pleura
        ((10, 6, 10), (1.0, 1.0, 1.0), "none"),            # 2 mm > PLEURA_CONTACT_MM
        ((10, 6, 10), (0.7, 0.7, 1.0), "juxta-pleural"),   # 1.4 mm
        ((10, 7, 10), (0.7, 0.7, 1.0), "none"),            # 2.1 mm
        ((2, 10, 10), (1.0, 1.0, 2.5), "juxta-pleural"),   # on the lowest lung slice (2.5 mm thick): next to it
        ((3, 10, 10), (1.0, 1.0, 2.5), "none"),            # one 2.5 mm slice of lung below it
        ((10, 10, 1), (1.0, 1.0, 1.0), "juxta-pleural"),   # partly outside the lung mask
    ],
)
def test_pleural_attachment(lo_kji, spacing, expected):
    volume = _volume(spacing)
    assert pleural_attachment(volume, _lungs(), _finding(volume, lo_kji).mask) == expected


def test_the_volume_edge_is_not_pleura():
    labels = np.zeros(_SHAPE, np.uint8)
    labels[:, :, :25] = RIGHT_LUNG_LABEL  # lung cut by the volume's edges (a cropped scan)
    volume = _volume()
    assert PLEURA_CONTACT_MM < 2.0
    assert pleural_attachment(volume, labels, _finding(volume, (0, 0, 0)).mask) == "none"
    assert pleural_attachment(volume, labels, _finding(volume, (10, 10, 22)).mask) == "juxta-pleural"
    assert pleural_attachment(volume, np.zeros(_SHAPE, np.uint8), _finding(volume, (10, 10, 10)).mask) is None
    assert pleural_attachment(volume, labels, FindingMask((1, 1, 1), np.zeros((2, 2, 2), bool))) is None


def test_with_location_sets_side_zone_no_lobe_and_attachment():
    volume = _volume()
    findings = [_finding(volume, (24, 4, 35)), _finding(volume, (12, 12, 8)),
                _finding(volume, (5, 12, 8), with_mask=False)]
    located = with_location(volume, _lungs(), findings)
    assert [f.location for f in located] == [
        {"side": "left", "lobe": None, "zone": "upper"},
        {"side": "right", "lobe": None, "zone": "middle"},
        {"side": "right", "lobe": None, "zone": "lower"},
    ]
    assert [f.attachment for f in located] == ["juxta-pleural", "none", None]
    assert all(f.location is None for f in findings)  # inputs not modified
    no_lung = with_location(volume, np.zeros(_SHAPE, np.uint8), findings[:1])
    assert no_lung[0].location is None and no_lung[0].attachment is None


def test_vessels_left_out_of_the_lung_mask_are_not_pleura():
    labels = _lungs()
    labels[:, 14:17, 12:15] = 0  # a vessel running craniocaudally through the right lung, left out of the mask
    labels[10:13, 14:17, 15:28] = 0  # a hilar vessel reaching the mediastinum in-plane (slices 10-12)
    filled = pleural_lung_mask(labels)
    assert filled[20, 15, 13] and not filled[11, 15, 13] and not filled[11, 15, 20]
    assert not filled[0, 0, 0] and not filled[15, 15, 24]  # outside the lungs stays outside
    volume = _volume()
    beside_vessel = _finding(volume, (20, 14, 15)).mask  # touches the vessel at i = 14
    assert pleural_attachment(volume, labels, beside_vessel) == "juxta-pleural"  # unfilled: the vessel is boundary
    assert pleural_attachment(volume, filled, beside_vessel) == "none"
    assert with_location(volume, labels, [_finding(volume, (20, 14, 15))])[0].attachment == "none"
    at_hilum = _finding(volume, (13, 14, 16)).mask  # on the hilar vessel's upper wall
    assert pleural_attachment(volume, filled, at_hilum) == "juxta-pleural"
    with pytest.raises(ValueError, match="Z, Y, X"):
        pleural_lung_mask(np.zeros((3, 3), np.uint8))


def test_grid_mismatch():
    volume = _volume()
    with pytest.raises(ValueError, match="not on the volume's grid"):
        with_location(volume, np.zeros((3, 3, 3), np.uint8), [])
    with pytest.raises(ValueError, match="not on the volume's grid"):
        pleural_attachment(volume, np.zeros((3, 3, 3), np.uint8), FindingMask((0, 0, 0), np.ones((1, 1, 1), bool)))
