"""Tests of lunglesionai.synth, the procedural chest-CT phantom, on its small preset."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from lunglesionai import Volume
from lunglesionai.synth import (
    ATTACHMENTS,
    SHAPES,
    TEXTURES,
    PhantomConfig,
    make_phantom,
)
from lunglesionai.synth.grid import Grid
from lunglesionai.synth.noise import add_correlated_noise
from lunglesionai.synth.tubes import OCCUPANCY_SCALE, Tubes, render_tubes

SOLID_CENTRE_HU = (-60.0, 120.0)  # 0…60 HU widened by noise and partial volume
GROUND_GLASS_CENTRE_HU = (-800.0, -300.0)  # −750…−350 HU widened likewise


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig.small())


def _ball(volume: Volume, center_lps, radius_mm: float) -> np.ndarray:
    """HU values of the voxels within radius_mm of an LPS point."""
    k, j, i = np.round(volume.lps_to_kji([center_lps])[0]).astype(int)
    n = int(np.ceil(radius_mm / min(volume.spacing_mm))) + 1
    sl = tuple(slice(max(c - n, 0), c + n + 1) for c in (k, j, i))
    zz, yy, xx = np.meshgrid(*(np.arange(s.start, s.stop) for s in sl), indexing="ij")
    pts = volume.kji_to_lps(np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1))
    near = np.linalg.norm(pts - np.asarray(center_lps), axis=1) <= radius_mm
    return volume.hu[sl].ravel()[near].astype(float)


def _full_mask(nodule, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    nodule.mask.paste_into(out, 1)
    return out.astype(bool)


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_phantom_different_seed_differs(phantom):
    again = make_phantom(PhantomConfig.small())
    assert np.array_equal(again.volume.hu, phantom.volume.hu)
    assert np.array_equal(again.lung_mask, phantom.lung_mask)
    assert again.truth_table() == phantom.truth_table()
    other = make_phantom(PhantomConfig.small(seed=1))
    assert np.mean(other.volume.hu != phantom.volume.hu) > 0.5
    assert [n["center_lps_mm"] for n in other.truth_table()] != [n["center_lps_mm"] for n in phantom.truth_table()]


# ---------------------------------------------------------------------------------------------- geometry, HU
def test_volume_geometry(phantom):
    v = phantom.volume
    assert v.hu.dtype == np.int16 and v.shape_zyx == phantom.config.shape_zyx
    assert v.spacing_mm == phantom.config.spacing_mm
    assert v.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    centre = v.ijk_to_lps([[(n - 1) / 2 for n in v.shape_zyx[::-1]]])[0]
    np.testing.assert_allclose(centre, 0.0, atol=1e-6)
    body = v.hu > -500
    y, x = np.nonzero(body[v.shape_zyx[0] // 2])  # one axial slice
    xs = v.kji_to_lps(np.stack([np.zeros_like(y), y, x], axis=1))[:, :2]
    assert abs(xs[:, 0].mean()) < 3.0 and abs(xs[:, 1].mean()) < 6.0  # the body is centred


def test_hu_ranges_in_the_right_places(phantom):
    v, anat = phantom.volume, phantom.anatomy
    hu = v.hu
    corners = np.concatenate([hu[:, :6, :6].ravel(), hu[:, -6:, -6:].ravel()])
    assert abs(np.mean(corners) + 1000) < 15  # air outside the body
    parenchyma = (phantom.lung_mask > 0) & ~ndimage.binary_dilation(phantom.vessel_mask | (hu > -500), iterations=2)
    assert -900 < np.median(hu[parenchyma]) < -800
    ax = anat.body_semi[0] - anat.fat_mm / 2  # subcutaneous fat, left and right flanks
    fat = np.concatenate([_ball(v, (s * ax, 0.0, z), 1.5) for s in (-1, 1) for z in (-30.0, 0.0, 30.0)])
    assert -140 < np.median(fat) < -60
    hc = anat.heart_center
    assert 0 < np.median(_ball(v, hc, 6.0)) < 80  # heart (blood and myocardium, unenhanced)
    vb = anat.vertebra_center
    spine = np.concatenate([_ball(v, (vb[0], vb[1], z), anat.vertebra_radius) for z in (-20.0, 0.0, 20.0)])
    assert np.percentile(spine, 99) > 450 and np.median(spine) > 120  # cortical rim, marrow and discs


def test_lung_labels_follow_lps(phantom):
    v = phantom.volume
    for label, sign in ((1, -1), (2, 1)):
        kji = np.argwhere(phantom.lung_mask == label)
        assert len(kji) > 10000
        x = v.kji_to_lps(kji[:: max(len(kji) // 2000, 1)])[:, 0]
        assert np.all(np.sign(x) == sign)  # right lung at negative x (patient's right), left at positive x
    assert np.median(v.hu[phantom.lung_mask > 0]) < -700


def test_noise_level_and_correlation():
    hu = np.zeros((40, 64, 64), np.float32)
    out = add_correlated_noise(hu, (0.7, 0.7, 1.25), 25.0, 0.6, np.random.default_rng(3))
    assert np.all(hu == 0)
    assert 23.0 < out.std() < 27.0
    corr = np.corrcoef(out[:, :, :-1].ravel(), out[:, :, 1:].ravel())[0, 1]
    assert 0.2 < corr < 0.9  # spatially correlated, not white


# ---------------------------------------------------------------------------------------------- nodules
def test_nodule_mix(phantom):
    nodules = phantom.nodules
    assert len(nodules) == phantom.config.n_nodules
    assert [n.id for n in nodules] == [f"GT{i}" for i in range(1, len(nodules) + 1)]
    assert {n.texture for n in nodules} == set(TEXTURES)
    assert {n.attachment for n in nodules} == set(ATTACHMENTS)
    assert {n.shape for n in nodules} <= set(SHAPES)
    volumes = [n.volume_mm3 for n in nodules]
    assert volumes == sorted(volumes, reverse=True)  # GT1 is the largest
    for n in nodules:
        assert 3.0 <= n.diameter_mm <= 30.0
        assert n.volume_mm3 == pytest.approx(np.pi / 6 * n.diameter_mm**3, rel=1e-6)
        assert n.mask.voxel_count * phantom.volume.voxel_volume_mm3 == pytest.approx(n.volume_mm3, rel=0.35)


def test_nodules_inside_their_lung_and_apart(phantom):
    shape = phantom.lung_mask.shape
    union = np.zeros(shape, dtype=int)
    for n in phantom.nodules:
        mask = _full_mask(n, shape)
        label = 1 if n.lung == "right" else 2
        assert np.all(phantom.lung_mask[mask] == label)
        union += mask
    assert union.max() == 1  # no two nodules share a voxel


def test_nodule_centre_has_its_texture_hu(phantom):
    for n in phantom.nodules:
        if n.nominal_diameter_mm < 5.0:
            continue  # too small for a clean centre at 1.25 mm slices
        core = np.mean(_ball(phantom.volume, n.center_lps_mm, max(1.0, 0.2 * n.nominal_diameter_mm)))
        lo, hi = GROUND_GLASS_CENTRE_HU if n.texture == "ground-glass" else SOLID_CENTRE_HU
        assert lo < core < hi, (n.id, n.texture, core)
        if n.texture == "part-solid":
            assert -800 < n.mean_hu < -100  # ground glass around the solid core


def test_attachments_touch_what_they_should(phantom):
    shape = phantom.lung_mask.shape
    for n in phantom.nodules:
        grown = ndimage.binary_dilation(_full_mask(n, shape), iterations=1)
        touches_wall = np.any(phantom.lung_mask[grown] == 0)
        if n.attachment == "juxta-pleural":
            assert touches_wall, n.id
        if n.attachment == "juxta-vascular":
            assert np.any(phantom.vessel_mask[grown]), n.id
            assert not touches_wall, n.id


def test_truth_table_is_json(phantom):
    table = phantom.truth_table()
    text = json.dumps(table)
    assert json.loads(text) == table
    keys = {"id", "center_lps_mm", "diameter_mm", "texture", "attachment", "shape", "mean_hu", "volume_mm3"}
    assert all(keys <= set(row) for row in table)
    assert all("mask" not in row for row in table)


# ---------------------------------------------------------------------------------------------- vessels
def test_vessel_trees_connected_and_tapering(phantom):
    assert len(phantom.vessel_trees) == 4
    for tree in phantom.vessel_trees:
        tubes, parent = tree.tubes, tree.parent
        child = np.flatnonzero(parent >= 0)
        np.testing.assert_allclose(tubes.start_lps_mm[child], tubes.end_lps_mm[parent[child]], atol=1e-9)
        assert np.all(tubes.radius_start_mm[child] <= tubes.radius_end_mm[parent[child]] + 1e-9)
        depth = tree.path_length_mm()
        near, far = depth <= np.quantile(depth, 0.1), depth >= np.quantile(depth, 0.9)
        assert tubes.radius_start_mm[near].mean() > 2 * tubes.radius_start_mm[far].mean()
        assert tubes.radius_start_mm.max() >= phantom.config.resolved_vessel_root_radius_mm
        assert tubes.radius_end_mm.min() == pytest.approx(phantom.config.vessel_min_radius_mm)
        d = tubes.end_lps_mm - tubes.start_lps_mm
        cos_z = np.abs(d[:, 2]) / np.linalg.norm(d, axis=1)
        assert np.mean(cos_z < 0.3) > 0.15 and np.mean(cos_z > 0.7) > 0.15  # in-plane and through-plane


def test_vessel_mask_is_a_few_connected_trees(phantom):
    vm = phantom.vessel_mask
    assert 0.01 < vm[phantom.lung_mask > 0].mean() < 0.2
    labels, _ = ndimage.label(vm, structure=np.ones((3, 3, 3)))
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    assert sizes[:4].sum() > 0.7 * sizes.sum()
    assert np.median(phantom.volume.hu[vm]) > -400  # vessels are bright


def test_render_tubes_partial_volume_matches_analytic_volume():
    grid = Grid((40, 60, 60), (0.7, 0.7, 1.25))
    tube = Tubes([[-10.0, -3.0, -12.0]], [[12.0, 4.0, 14.0]], [0.6], [0.6])
    layer = render_tubes(tube, grid, supersample=4)
    length = float(tube.length_mm[0])
    expected = np.pi * 0.6**2 * length + 4 / 3 * np.pi * 0.6**3
    measured = layer.sum() / OCCUPANCY_SCALE * np.prod(grid.spacing_mm)
    assert measured == pytest.approx(expected, rel=0.05)
    assert 0 < np.mean((layer > 0) & (layer < OCCUPANCY_SCALE)) and layer.max() <= OCCUPANCY_SCALE


# ---------------------------------------------------------------------------------------------- spacing
def test_same_patient_at_two_spacings(phantom):
    cfg = phantom.config
    width = cfg.resolved_body_width_mm
    other = make_phantom(replace(cfg, shape_zyx=(64, 208, 208), spacing_mm=(0.65, 0.65, 2.0), body_width_mm=width))
    width, lung_ml = [], []
    for p in (phantom, other):
        mid = p.volume.hu[:, p.volume.shape_zyx[1] // 2, :] > -500
        width.append(mid.sum(axis=1).max() * p.volume.spacing_mm[0])  # widest body row in the coronal plane
        lung_ml.append(np.count_nonzero(p.lung_mask) * p.volume.voxel_volume_mm3 / 1000)
    assert width[1] == pytest.approx(width[0], abs=2.0)
    assert lung_ml[1] == pytest.approx(lung_ml[0], rel=0.05)
    for a, b in zip(phantom.nodules, other.nodules):
        np.testing.assert_allclose(a.center_lps_mm, b.center_lps_mm, atol=0.6)
        assert a.diameter_mm == pytest.approx(b.diameter_mm, rel=0.1)


# ---------------------------------------------------------------------------------------------- config
def test_presets():
    clinical = PhantomConfig.clinical()
    assert clinical.shape_zyx[1:] == (512, 512) and 240 <= clinical.shape_zyx[0] <= 300
    assert clinical.spacing_mm == (0.7, 0.7, 1.25)
    assert PhantomConfig.clinical(seed=4).seed == 4
    small = PhantomConfig.small()
    assert small.shape_zyx == (100, 160, 160) and small.n_nodules >= 3


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"spacing_mm": (0.5, 0.7, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (0.7, 0.95, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (0.7, 0.7, 3.0)}, "spacing_mm"),
        ({"shape_zyx": (301, 512, 512)}, "shape_zyx"),
        ({"shape_zyx": (100, 600, 512)}, "shape_zyx"),
        ({"noise_sigma_hu": 10.0}, "noise_sigma_hu"),
        ({"noise_sigma_hu": 45.0}, "noise_sigma_hu"),
        ({"supersample": 0}, "supersample"),
        ({"n_nodules": -1}, "n_nodules"),
        ({"seed": -3}, "seed"),
        ({"body_width_mm": 500.0}, "body_width_mm"),
        ({"nodule_diameter_range_mm": (2.0, 10.0)}, "nodule_diameter_range_mm"),
        ({"nodule_diameter_range_mm": (12.0, 10.0)}, "nodule_diameter_range_mm"),
        ({"vessel_min_radius_mm": 6.0}, "vessel_min_radius_mm"),
    ],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        replace(PhantomConfig(), **changes)
