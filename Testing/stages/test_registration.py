"""Tests of lunglesionai.stages.registration: a small phantom pair with a known breathing-like deformation
(lunglesionai.datagen.followup_pairs), the identity case, the inverse mapping and the error cases."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.datagen.followup_pairs import FollowupPairConfig, make_pair
from lunglesionai.stages.registration import LungRegistration, RegistrationConfig, register_lungs
from lunglesionai.synth import PhantomConfig, make_phantom

pytestmark = pytest.mark.usefixtures("sitk_one_thread")  # SimpleITK on one thread (conftest)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig.small(n_nodules=0, seed=3))


@pytest.fixture(scope="module")
def pair(phantom):
    config = FollowupPairConfig(volume_factors=(1.0, 2.0, 0.6), deformation_mm=10.0, shift_mm=8.0)
    return make_pair(phantom.volume, phantom.lung_mask, np.random.default_rng(0), config=config)


@pytest.fixture(scope="module")
def registration(pair):
    return register_lungs(pair.prior, pair.prior_lung, pair.current, pair.current_lung)


def _truth_points(pair):
    """(prior, current) (N, 3) LPS mm of the truth nodules present in both scans."""
    both = [n for n in pair.truth["nodules"] if n["prior_lps_mm"] and n["current_lps_mm"]]
    return np.array([n["prior_lps_mm"] for n in both]), np.array([n["current_lps_mm"] for n in both])


def test_registration_maps_prior_nodules_onto_current_ones(pair, registration):
    prior, current = _truth_points(pair)
    before = np.linalg.norm(prior - current, axis=1)
    error = np.linalg.norm(registration.map_points(prior) - current, axis=1)
    assert before.mean() > 4.0  # the pair really moved the nodules
    assert error.mean() < 1.5 and error.max() < 3.0, (error, before)
    assert registration.stages == ["rigid", "affine", "bspline"]
    assert registration.seconds > 0 and np.isfinite(registration.metric_value)


def test_map_points_is_the_inverse_of_the_forward_transform(pair, registration):
    prior, _ = _truth_points(pair)
    mapped = registration.map_points(prior)
    assert mapped.shape == prior.shape
    np.testing.assert_allclose(registration.current_to_prior(mapped), prior, atol=0.05)
    np.testing.assert_allclose(registration.map_points(prior[0]), mapped[:1])  # a single (3,) point works


def test_resampled_prior_lies_on_the_current_grid_and_matches_it(pair, registration):
    resampled = registration.resample_prior(pair.prior)
    assert resampled.shape_zyx == pair.current.shape_zyx and resampled.hu.dtype == pair.prior.hu.dtype
    assert resampled.spacing_mm == pair.current.spacing_mm and resampled.origin_lps_mm == pair.current.origin_lps_mm
    lung = pair.current_lung > 0
    current = pair.current.hu.astype(float)
    aligned = np.abs(resampled.hu.astype(float) - current)[lung].mean()
    unaligned = np.abs(pair.prior.hu.astype(float) - current)[lung].mean()
    assert aligned < 0.7 * unaligned, (aligned, unaligned)


def test_identical_scans_give_the_identity(phantom):
    config = RegistrationConfig(stages=("rigid", "affine"), rigid_iterations=10, affine_iterations=10)
    result = register_lungs(phantom.volume, phantom.lung_mask, phantom.volume, phantom.lung_mask, config=config)
    points = phantom.volume.kji_to_lps(np.argwhere(phantom.lung_mask > 0)[::5000])
    assert result.stages == ["rigid", "affine"]
    np.testing.assert_allclose(result.map_points(points), points, atol=0.5)


def test_only_the_asked_stages_run(pair):
    config = RegistrationConfig(stages=("rigid",), rigid_iterations=15)
    result = register_lungs(pair.prior, pair.prior_lung, pair.current, pair.current_lung, config=config)
    assert isinstance(result, LungRegistration) and result.stages == ["rigid"]
    matrix = np.asarray(result.affine.GetMatrix()).reshape(3, 3)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-6)  # rigid: a rotation


@pytest.mark.parametrize("field, value", [
    ("working_spacing_mm", 0.0), ("margin_mm", -1.0), ("stages", ()), ("stages", ("affine", "rigid")),
    ("stages", ("rigid", "warp")), ("metric", "ncc"), ("histogram_bins", 4), ("sampling_fraction", 0.0),
    ("sampling_fraction", 1.5), ("max_metric_samples", 10), ("shrink_factors", (2, 2)),
    ("smoothing_sigmas_mm", (1.0,)), ("bspline_iterations", 0), ("bspline_mesh_spacing_mm", 0.0),
    ("inverse_tolerance_mm", 0.0),
])
def test_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        RegistrationConfig(**{field: value})


def test_bad_masks_are_refused():
    volume = Volume(np.full((20, 30, 30), -800, np.int16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), source="scan.nii.gz")
    lung = np.zeros((20, 30, 30), np.uint8)
    with pytest.raises(ValueError, match="empty"):
        register_lungs(volume, lung, volume, lung)
    with pytest.raises(ValueError, match="shape"):
        register_lungs(volume, lung[:-1], volume, lung)


def test_map_points_refuses_bad_points(registration):
    with pytest.raises(ValueError, match="N, 3"):
        registration.map_points(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        registration.map_points([[np.nan, 0.0, 0.0]])
