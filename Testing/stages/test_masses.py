"""Tests of lunglesionai.stages.masses: rays, shape measures, refusals, and synthetic lobulated tumours with spicules
(exact truth, ``mass_fixtures``) pasted into the procedural phantom and into the real 1.5 mm chest CT crop (also
resampled to 8 mm slices): exactly one mass, centre inside the tumour, size within 20 % of the truth; none without."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.lung_mask import segment_lungs
from lunglesionai.stages.masses import (
    MassConfig,
    find_mass_seeds,
    lung_fraction,
    mass_shape,
    ray_lengths_mm,
    segment_mass,
    segment_mass_with_shape,
)
from lunglesionai.stages.measurements import measure_mask
from mass_fixtures import crop_with_tumour, phantom_with_tumour, thick_slices


def _masses(volume: Volume, lung: np.ndarray) -> list[FindingMask]:
    """Every distinct mass the seeds lead to (as the pipeline does: a seed inside a found mass is skipped)."""
    found: list[FindingMask] = []
    labels = np.zeros(volume.shape_zyx, bool)
    for seed in find_mass_seeds(volume, lung):
        if labels[tuple(np.round(seed).astype(int))]:
            continue
        mask = segment_mass(volume, seed, lung)
        if mask is not None:
            mask.paste_into(labels, True)
            found.append(mask)
    return found


def _check_one_mass(volume: Volume, truth: np.ndarray, truth_diameter_mm: float) -> None:
    masses = _masses(volume, segment_lungs(volume))
    assert len(masses) == 1, f"{len(masses)} masses"
    m = measure_mask(volume, masses[0])
    centre = tuple(np.round(volume.lps_to_kji([m.center_lps_mm])[0]).astype(int))
    assert truth[centre], "the mass's centre is not inside the tumour"
    assert m.diameter_mm == pytest.approx(truth_diameter_mm, rel=0.2)
    pred = np.zeros(volume.shape_zyx, bool)
    masses[0].paste_into(pred, True)
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) >= 0.75


# ------------------------------------------------------------------------------------------------ no ../shared needed
def test_ray_lengths_are_the_distances_to_a_shell():
    spacing = np.array([1.5, 0.8, 0.8])  # (z, y, x) mm
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip((40, 70, 70), spacing)], indexing="ij")
    centre_mm = np.array([30.0, 28.0, 28.0])
    radius = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre_mm)))
    shell = (radius >= 20.0) & (radius < 22.0)
    lengths = ray_lengths_mm(shell, centre_mm / spacing, spacing, 40.0)
    # rays leaving the array (z > 58.5 mm) before the shell meet nothing; the others meet it at 20 mm
    assert np.all(np.isfinite(lengths[6:]))
    np.testing.assert_allclose(lengths[np.isfinite(lengths)], 20.0, atol=1.0)
    assert lung_fraction(lengths) == pytest.approx(1.0 - lung_fraction(np.where(np.isfinite(lengths), np.inf, 1.0)))
    assert lung_fraction(np.full((18, 36), np.inf)) == 0.0


def test_shape_measures_separate_a_ball_from_a_rod():
    volume = Volume(np.zeros((60, 60, 60), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    k, j, i = np.indices((60, 60, 60))
    ball = (k - 30) ** 2 + (j - 30) ** 2 + (i - 30) ** 2 <= 20**2
    rod = ((j - 30) ** 2 + (i - 30) ** 2 <= 16) & (k > 5) & (k < 55)
    b = mass_shape(volume, FindingMask((0, 0, 0), ball))
    r = mass_shape(volume, FindingMask((0, 0, 0), rod))
    assert b.diameter_mm == pytest.approx(40.0, rel=0.03) and b.long_axis_mm == pytest.approx(40.0, abs=2.0)
    assert b.core_radius_mm == pytest.approx(20.0, abs=1.0)
    assert b.solidity > 0.9 and b.elongation < 1.05
    assert r.elongation > 4 and r.core_radius_mm < 5
    assert not r.is_mass(MassConfig())


@pytest.mark.parametrize("field, value", [("min_diameter_mm", 0.0), ("min_solidity", 1.5), ("min_lung_contact", 0.0),
                                          ("max_elongation", 0.5), ("star_margin_mm", -1.0), ("max_seed_depth_mm", 5.0)])
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=field if field != "max_seed_depth_mm" else "max_seed_depth_mm"):
        MassConfig(**{field: value})


def test_segment_mass_refuses_bad_input():
    volume = Volume(np.zeros((10, 12, 14), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    lung = np.zeros(volume.shape_zyx, np.uint8)
    with pytest.raises(ValueError, match="not inside the volume"):
        segment_mass(volume, (10.0, 5.0, 5.0), lung)
    with pytest.raises(ValueError, match="mask shape"):
        segment_mass(volume, (5.0, 5.0, 5.0), lung[:-1])
    with pytest.raises(ValueError, match="mask shape"):
        find_mass_seeds(volume, lung[:, :-1])
    with pytest.raises(ValueError, match="empty"):
        mass_shape(volume, FindingMask((0, 0, 0), np.zeros((2, 2, 2), bool)))
    assert segment_mass(volume, (5.0, 5.0, 5.0), lung) is None  # no dense tissue


@pytest.fixture(scope="module")
def phantom_case():
    return phantom_with_tumour()


def test_phantom_tumour_is_one_mass(phantom_case):
    host, pasted = phantom_case
    _check_one_mass(pasted.volume, pasted.truth, pasted.diameter_mm)
    assert _masses(host, segment_lungs(host)) == []


def test_mass_shape_of_the_phantom_tumour_passes_the_rule_and_a_stricter_one_refuses(phantom_case):
    _, pasted = phantom_case
    lung = segment_lungs(pasted.volume)
    centre = np.argwhere(pasted.truth).mean(axis=0)
    mask, shape = segment_mass_with_shape(pasted.volume, tuple(centre), lung)
    assert shape.is_mass(MassConfig()) and 0.6 <= shape.lung_contact <= 1.0 and shape.one_lung == 1.0
    assert segment_mass(pasted.volume, tuple(centre), lung, MassConfig(min_diameter_mm=shape.diameter_mm + 1)) is None


# ------------------------------------------------------------------------------------------------ real host (../shared)
@pytest.fixture(scope="module")
def crop_case():
    return crop_with_tumour(shared_path("ct", "chest_ct_crop_1p5mm.nii.gz"))


def test_tumour_touching_the_mediastinum_in_a_real_ct_is_one_mass(crop_case):
    host, pasted = crop_case
    _check_one_mass(pasted.volume, pasted.truth, pasted.diameter_mm)
    assert _masses(host, segment_lungs(host)) == []


def test_tumour_on_8_mm_slices_is_one_mass(crop_case):
    host, pasted = crop_case
    thick, truth = thick_slices(pasted.volume, pasted.truth, 8.0)
    assert thick.spacing_mm[2] == pytest.approx(8.0)
    _check_one_mass(thick, truth, pasted.diameter_mm)
    thick_host, _ = thick_slices(host, pasted.truth, 8.0)
    assert _masses(thick_host, segment_lungs(thick_host)) == []


def test_seed_search_does_not_depend_on_body_far_from_the_lungs():
    """The search is cropped to the lungs' neighbourhood: 40 slices of abdomen-like soft tissue added below the
    scan leave the seeds where they were (shifted by the added slices)."""
    _, pasted = phantom_with_tumour()
    volume = pasted.volume
    lung = segment_lungs(volume)
    extra = 40
    hu = np.concatenate([np.full((extra, *volume.shape_zyx[1:]), 40, volume.hu.dtype), volume.hu])
    longer = Volume(hu, volume.spacing_mm,
                    tuple(np.asarray(volume.origin_lps_mm) - np.array([0.0, 0.0, extra * volume.spacing_mm[2]])),
                    volume.direction)
    longer_lung = np.concatenate([np.zeros((extra, *lung.shape[1:]), lung.dtype), lung])
    seeds = find_mass_seeds(volume, lung)
    assert seeds, "the tumour gives a seed"
    assert find_mass_seeds(longer, longer_lung) == [(k + extra, j, i) for k, j, i in seeds]
