"""Tests of lunglesionai.stages.paired_volumetry on blurred spheres of known volume (no data needed)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from lunglesionai import Volume
from lunglesionai.stages.paired_volumetry import (
    PAIRED_METHOD,
    PairedVolumetryConfig,
    measure_pair,
    partial_volume_mm3,
)
from lunglesionai.stages.segmentation import segment_nodule

LUNG_HU, NODULE_HU, RIM_HU = -850.0, 30.0, -520.0


def _scan(diameter_mm, spacing_xyz, slice_blur_mm, *, core_hu=None, noise_hu=0.0, seed=0, vessel=False,
          rim_mm=0.0):
    """A lung-density cube with one solid sphere at its centre, sampled on a fine grid, blurred in z as a thick
    slice does (Gaussian, FWHM ``slice_blur_mm``) and in-plane by 0.6 mm, then resampled to ``spacing_xyz``;
    ``rim_mm`` > 0 wraps the sphere in a ground-glass rim (``RIM_HU``) that thick. Returns (Volume, centre kji,
    true volume mm³ of the solid sphere)."""
    fine = 0.25
    side_mm = 40.0
    n = int(side_mm / fine)
    grid = (np.arange(n) + 0.5) * fine - side_mm / 2
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    r2 = x**2 + y**2 + z**2
    hu = np.full((n, n, n), LUNG_HU, np.float32)
    hu[r2 <= (diameter_mm / 2 + rim_mm) ** 2] = RIM_HU
    hu[r2 <= (diameter_mm / 2) ** 2] = NODULE_HU
    if core_hu is not None:  # a calcified centre
        hu[r2 <= (diameter_mm / 5) ** 2] = core_hu
    if vessel:  # a 2 mm vessel passing 1 mm beside the nodule's surface
        hu[((x - diameter_mm / 2 - 2.0) ** 2 + y**2) <= 1.0] = NODULE_HU
    sigma = [slice_blur_mm / 2.355 / fine, 0.6 / 2.355 / fine, 0.6 / 2.355 / fine]
    hu = ndimage.gaussian_filter(hu, sigma, mode="nearest")
    sx, sy, sz = spacing_xyz
    step = [sz / fine, sy / fine, sx / fine]
    zoomed = ndimage.zoom(hu, [1 / s for s in step], order=1, mode="nearest", grid_mode=True)
    if noise_hu:
        zoomed = zoomed + np.random.default_rng(seed).normal(0, noise_hu, zoomed.shape).astype(np.float32)
    volume = Volume(zoomed.astype(np.float32), spacing_xyz, (0.0, 0.0, 0.0))
    centre = (np.asarray(zoomed.shape) - 1) / 2.0
    return volume, centre, math.pi / 6 * diameter_mm**3


def _ratio(pair):
    return pair.current_volume_mm3 / pair.prior_volume_mm3


def test_partial_volume_gives_the_true_volume_whatever_the_slice_blur():
    for blur_mm in (1.0, 3.0):
        volume, centre, truth = _scan(8.0, (0.7, 0.7, 1.0), blur_mm)
        mask = segment_nodule(volume, tuple(centre), 4.0, threshold_hu=(LUNG_HU + NODULE_HU) / 2)
        measured = partial_volume_mm3(volume, mask, LUNG_HU, NODULE_HU, 2.0 * blur_mm)
        assert measured == pytest.approx(truth, rel=0.08), blur_mm


def test_growth_on_a_thin_prior_and_a_thick_current_scan_keeps_its_ratio():
    """Prior 1 mm sections, current 2.5 mm sections: the volume ratio stays near the true ×2.2, where cutting
    each scan at its own adaptive threshold does not; the thick scan marks the pair unreliable."""
    d1 = 7.0
    d2 = d1 * 2.2 ** (1 / 3)
    prior, c1, v1 = _scan(d1, (0.7, 0.7, 1.0), 1.0)
    current, c2, v2 = _scan(d2, (0.7, 0.7, 2.5), 2.5)
    pair = measure_pair(prior, c1, d1 / 2, current, c2, d2 / 2)
    assert pair.method == PAIRED_METHOD and pair.measured
    assert _ratio(pair) == pytest.approx(v2 / v1, rel=0.12)
    own = [segment_nodule(v, tuple(c), d / 2) for v, c, d in ((prior, c1, d1), (current, c2, d2))]
    own_ratio = (own[1].voxel_count * current.voxel_volume_mm3) / (own[0].voxel_count * prior.voxel_volume_mm3)
    assert abs(math.log(_ratio(pair) / 2.2)) < abs(math.log(own_ratio / 2.2))
    assert not pair.reliable
    assert any("2.5 mm voxels on the current scan" in r for r in pair.reasons)
    assert pair.threshold_hu[0] == pytest.approx(pair.threshold_hu[1], abs=5.0)  # one cut for both


def test_a_stable_nodule_in_new_noise_measures_stable_and_reliable():
    prior, c1, _ = _scan(8.0, (0.7, 0.7, 1.0), 1.0, noise_hu=25.0, seed=1)
    current, c2, _ = _scan(8.0, (0.7, 0.7, 1.0), 1.0, noise_hu=25.0, seed=2)
    pair = measure_pair(prior, c1, 4.0, current, c2, 4.0)
    assert pair.reliable and pair.reasons == ()
    assert _ratio(pair) == pytest.approx(1.0, abs=0.05)


def test_a_calcified_core_does_not_move_the_cut():
    prior, c1, v1 = _scan(8.0, (0.7, 0.7, 1.0), 1.0, core_hu=900.0)
    current, c2, v2 = _scan(8.0 * 1.7 ** (1 / 3), (0.7, 0.7, 1.0), 1.0, core_hu=900.0)
    pair = measure_pair(prior, c1, 4.0, current, c2, 4.0 * 1.7 ** (1 / 3))
    assert pair.foreground_hu == PairedVolumetryConfig().max_foreground_hu
    assert pair.prior_volume_mm3 == pytest.approx(v1, rel=0.1)
    assert _ratio(pair) == pytest.approx(1.7, rel=0.1)


def test_a_vessel_beside_the_nodule_is_not_counted():
    plain, c, truth = _scan(8.0, (0.7, 0.7, 1.0), 1.0)
    touched, c_touched, _ = _scan(8.0, (0.7, 0.7, 1.0), 1.0, vessel=True)
    pair = measure_pair(plain, c, 4.0, touched, c_touched, 4.0)
    assert pair.measured
    assert pair.current_volume_mm3 == pytest.approx(pair.prior_volume_mm3, rel=0.1)


def test_a_solid_nodule_measures_alike_at_every_cut_and_reports_the_median():
    prior, c1, v1 = _scan(8.0, (0.7, 0.7, 1.0), 1.0, noise_hu=15.0, seed=3)
    current, c2, v2 = _scan(8.0 * 1.7 ** (1 / 3), (0.7, 0.7, 1.0), 1.0, noise_hu=15.0, seed=4)
    pair = measure_pair(prior, c1, 4.0, current, c2, 4.0 * 1.7 ** (1 / 3))
    ratios = pair.ratio_by_cut
    assert sorted(ratios) == sorted(PairedVolumetryConfig().threshold_fractions)
    assert max(ratios.values()) / min(ratios.values()) < 1.1
    assert _ratio(pair) == pytest.approx(sorted(ratios.values())[1])  # the median cut's volumes are reported
    assert ratios[pair.threshold_fraction] == pytest.approx(_ratio(pair))
    assert _ratio(pair) == pytest.approx(1.7, rel=0.1) and pair.reliable
    assert [c["fraction"] for c in pair.to_dict()["ratio_by_cut"]] == [0.5, 0.35, 0.25]


def test_a_part_solid_nodule_whose_core_grew_inside_an_unchanged_rim_is_unreliable():
    """Solid core ×2.2 within a ground-glass rim of the same outer size: the half-way cut sees the core grow, the
    low cuts see the whole nodule stay; the cuts disagree and the measurement says so."""
    outer = 12.0
    d1, d2 = 5.0, 5.0 * 2.2 ** (1 / 3)
    prior, c1, _ = _scan(d1, (0.7, 0.7, 1.0), 1.0, rim_mm=(outer - d1) / 2)
    current, c2, _ = _scan(d2, (0.7, 0.7, 1.0), 1.0, rim_mm=(outer - d2) / 2)
    pair = measure_pair(prior, c1, outer / 2, current, c2, outer / 2)
    ratios = pair.ratio_by_cut
    assert ratios[0.5] > 1.5 and ratios[0.25] < 1.3
    assert not pair.reliable
    assert any(r.startswith("the volume ratio depends on the density cut") for r in pair.reasons)


def test_nothing_to_outline_is_said_and_unreliable():
    prior, c1, _ = _scan(8.0, (0.7, 0.7, 1.0), 1.0)
    empty = Volume(np.full(prior.shape_zyx, LUNG_HU, np.float32), prior.spacing_mm, (0.0, 0.0, 0.0))
    pair = measure_pair(prior, c1, 4.0, empty, c1, 4.0)
    assert not pair.measured and not pair.reliable
    assert pair.prior_volume_mm3 is not None and pair.current_volume_mm3 is None
    assert any("on the current scan" in r for r in pair.reasons)
    assert pair.to_dict()["method"] == "no paired measurement"
    assert pair.threshold_fraction is None and pair.ratio_by_cut == {}


def test_small_and_sub_solid_nodules_are_marked():
    prior, c1, _ = _scan(3.0, (0.7, 0.7, 1.25), 1.25)
    pair = measure_pair(prior, c1, 1.5, prior, c1, 1.5)
    assert any("across on 1.2 mm voxels" in r for r in pair.reasons)
    big, c2, _ = _scan(9.0, (0.7, 0.7, 1.0), 1.0)
    ggn_big = Volume(np.clip(big.hu, None, -500.0), big.spacing_mm, (0.0, 0.0, 0.0))
    pair = measure_pair(ggn_big, c2, 4.5, ggn_big, c2, 4.5)
    assert any(r.startswith("not solid") for r in pair.reasons) and not pair.reliable


@pytest.mark.parametrize("field, value", [("threshold_fractions", (0.0,)), ("threshold_fractions", (0.5, 1.0)),
                                          ("threshold_fractions", ()), ("max_cut_spread", 0.9),
                                          ("shell_mm", 0.0), ("min_voxels_across", -1.0)])
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        PairedVolumetryConfig(**{field: value})


def test_partial_volume_refuses_reversed_levels():
    volume, centre, _ = _scan(6.0, (0.7, 0.7, 1.0), 1.0)
    mask = segment_nodule(volume, tuple(centre), 3.0)
    with pytest.raises(ValueError, match="foreground"):
        partial_volume_mm3(volume, mask, 0.0, -800.0, 1.0)
    with pytest.raises(ValueError, match="shell_mm"):
        partial_volume_mm3(volume, mask, -800.0, 0.0, 0.0)
