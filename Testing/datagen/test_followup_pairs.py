"""Tests of lunglesionai.datagen.followup_pairs: the deformation, the nodules' truth (positions, volumes, new and
resolved), determinism, the LIDC source and the pairs folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.core.output_folder import OutputExistsError
from lunglesionai.datagen.composites import NoduleSource
from lunglesionai.datagen.followup_pairs import (
    FOLLOWUP_PAIR_FILES,
    FollowupPairConfig,
    breathing_transform,
    make_pair,
    synthetic_nodule,
    write_pairs,
)
from lunglesionai.io.ct_files import load_volume
from lunglesionai.synth import PhantomConfig, make_phantom

NODULE_HU, LUNG_HU = -300.0, -500.0  # mean HU near a truth centre: above with a nodule, below without
CONFIG = FollowupPairConfig(volume_factors=(1.0, 2.0, 0.5), n_new=1, n_resolved=1, interval_days=90.0)


pytestmark = pytest.mark.usefixtures("sitk_one_thread")  # SimpleITK on one thread (conftest)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig.small(n_nodules=0, seed=3))


@pytest.fixture(scope="module")
def pair(phantom):
    return make_pair(phantom.volume, phantom.lung_mask, np.random.default_rng(5), config=CONFIG, case_id="case_a")


def _mean_hu_near(volume, centre_lps_mm, radius_mm=1.5):
    kji = np.argwhere(np.ones((7, 7, 7), bool)) - 3 + np.rint(volume.lps_to_kji([centre_lps_mm])[0]).astype(int)
    near = np.linalg.norm(volume.kji_to_lps(kji) - centre_lps_mm, axis=1) <= radius_mm
    return float(volume.hu[tuple(kji[near].T)].mean())


def _inverse(transform, prior_lps_mm):
    point = np.asarray(prior_lps_mm, float)
    for _ in range(200):
        point = point + (prior_lps_mm - np.asarray(transform.TransformPoint(tuple(point))))
    return point


def test_truth_lists_both_new_and_resolved_nodules(pair):
    truth = pair.truth
    assert truth["interval_days"] == 90.0
    nodules = truth["nodules"]
    assert len(nodules) == 5
    both, new, resolved = nodules[:3], nodules[3], nodules[4]
    assert [n["volume_factor"] for n in both] == [1.0, 2.0, 0.5]
    assert all(n["prior_lps_mm"] and n["current_lps_mm"] for n in both)
    assert new["prior_lps_mm"] is None and new["prior_volume_mm3"] is None and new["current_volume_mm3"] > 0
    assert resolved["current_lps_mm"] is None and resolved["current_volume_mm3"] is None
    assert json.loads(json.dumps(truth)) == truth  # JSON-ready


def test_truth_centres_follow_the_deformation(pair):
    for n in pair.truth["nodules"][:3]:
        mapped = pair.current_to_prior.TransformPoint(tuple(n["current_lps_mm"]))
        np.testing.assert_allclose(mapped, n["prior_lps_mm"], atol=0.01)
        assert np.linalg.norm(np.subtract(n["current_lps_mm"], n["prior_lps_mm"])) > 1.0


def test_volumes_change_by_the_asked_factor(pair):
    for n in pair.truth["nodules"][:3]:
        assert n["current_volume_mm3"] / n["prior_volume_mm3"] == pytest.approx(n["volume_factor"], rel=1e-3), n
        d1, d2 = n["prior_diameter_mm"], n["current_diameter_mm"]
        assert (d2 / d1) ** 3 == pytest.approx(n["volume_factor"], rel=1e-2)
        # the pasted masks hold about the true volumes
        for scan in ("prior", "current"):
            assert n[f"{scan}_mask_volume_mm3"] == pytest.approx(n[f"{scan}_volume_mm3"], rel=0.25), n
        mask_ratio = n["current_mask_volume_mm3"] / n["prior_mask_volume_mm3"]
        assert mask_ratio == pytest.approx(n["volume_factor"], rel=0.2), n


def test_nodules_are_in_the_images_where_the_truth_says(pair):
    transform = pair.current_to_prior
    for n in pair.truth["nodules"]:
        if n["prior_lps_mm"]:
            assert _mean_hu_near(pair.prior, n["prior_lps_mm"]) > NODULE_HU, n
        else:  # new: the same anatomy in the prior has no nodule
            prior_point = np.asarray(transform.TransformPoint(tuple(n["current_lps_mm"])))
            assert _mean_hu_near(pair.prior, prior_point) < LUNG_HU, n
        if n["current_lps_mm"]:
            assert _mean_hu_near(pair.current, n["current_lps_mm"]) > NODULE_HU, n
        else:  # resolved
            assert _mean_hu_near(pair.current, _inverse(transform, np.asarray(n["prior_lps_mm"]))) < LUNG_HU, n


def test_images_keep_the_host_grid_and_differ_by_new_noise(phantom, pair):
    for volume in (pair.prior, pair.current):
        assert volume.shape_zyx == phantom.volume.shape_zyx and volume.hu.dtype == np.int16
        assert volume.spacing_mm == phantom.volume.spacing_mm
    outside = np.zeros(phantom.lung_mask.shape, bool)
    outside[:, :20, :] = True  # anterior air and body wall: no pasted nodule
    difference = pair.prior.hu[outside].astype(float) - phantom.volume.hu[outside]
    assert 5.0 < difference.std() < 25.0  # noise_hu 12 added
    lung_ml = [np.count_nonzero(m) * phantom.volume.voxel_volume_mm3 / 1000
               for m in (pair.prior_lung, pair.current_lung)]
    assert lung_ml[1] == pytest.approx(lung_ml[0], rel=0.25)


@pytest.mark.parametrize("deformation_mm", [5.0, 15.0])
def test_deformation_reaches_the_asked_size_over_the_lungs(phantom, deformation_mm):
    config = FollowupPairConfig(deformation_mm=deformation_mm, shift_mm=0.0, max_rotation_deg=0.0)
    transform, info = breathing_transform(phantom.volume, phantom.lung_mask, np.random.default_rng(1), config)
    points = phantom.volume.kji_to_lps(np.argwhere(phantom.lung_mask > 0)[::50])
    moved = np.array([transform.TransformPoint(tuple(p)) for p in points]) - points
    largest = np.linalg.norm(moved, axis=1).max()
    assert largest == pytest.approx(deformation_mm, rel=0.15)
    assert info["deformation_mm"] == deformation_mm and info["shift_mm"] == [0.0, 0.0, 0.0]


def test_same_seed_same_pair(phantom):
    config = FollowupPairConfig(volume_factors=(1.5,), n_new=0, n_resolved=0, noise_hu=0.0)
    a, b = (make_pair(phantom.volume, phantom.lung_mask, np.random.default_rng(9), config=config) for _ in range(2))
    assert a.truth == b.truth
    np.testing.assert_array_equal(a.current.hu, b.current.hu)


def test_synthetic_nodule_has_the_asked_size():
    voi, mask = synthetic_nodule(10.0, np.random.default_rng(0))
    volume = mask.sum() * voi.voxel_volume_mm3
    assert 0.6 * np.pi / 6 * 1000 < volume < 1.6 * np.pi / 6 * 1000
    with pytest.raises(ValueError, match="diameter_mm"):
        synthetic_nodule(0.0, np.random.default_rng(0))


def test_write_pairs_writes_the_folder_format(tmp_path, pair):
    out = write_pairs(tmp_path / "pairs", [pair])
    case = out / "case_a"
    assert sorted(p.name for p in case.iterdir()) == sorted(FOLLOWUP_PAIR_FILES)
    assert json.loads((case / "truth.json").read_text()) == pair.truth
    prior = load_volume(case / "prior.nii.gz")
    np.testing.assert_array_equal(prior.hu, pair.prior.hu)
    np.testing.assert_allclose(prior.origin_lps_mm, pair.prior.origin_lps_mm, atol=1e-4)
    with pytest.raises(OutputExistsError):
        write_pairs(tmp_path / "pairs", [pair])


def test_write_pairs_refuses_bad_case_ids_and_writes_nothing(tmp_path, pair):
    bad = pair.__class__(**{**pair.__dict__, "case_id": "../escape"})
    with pytest.raises(ValueError, match="escape"):
        write_pairs(tmp_path / "pairs", [bad])
    assert not (tmp_path / "pairs").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value", [
    ("volume_factors", (1.0, 0.0)), ("n_new", -1), ("diameter_range_mm", (2.0, 8.0)),
    ("diameter_range_mm", (9.0, 8.0)), ("interval_days", 0.0), ("deformation_mm", 40.0), ("shift_mm", -1.0),
    ("max_rotation_deg", 20.0), ("noise_hu", -1.0),
])
def test_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        FollowupPairConfig(**{field: value})


def test_bad_inputs_are_refused(phantom):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no lung found in the host CT"):
        make_pair(phantom.volume, np.zeros_like(phantom.lung_mask), rng)
    with pytest.raises(ValueError, match="lung mask of shape"):
        make_pair(phantom.volume, phantom.lung_mask[1:], rng)
    with pytest.raises(ValueError, match="3 nodule VOIs given, 7 needed"):
        make_pair(phantom.volume, phantom.lung_mask, rng, nodules=[synthetic_nodule(6.0, rng)] * 3)


def test_lidc_nodules_can_be_pasted(phantom):
    source = NoduleSource(shared_path("lidc_voi"), "val")
    config = FollowupPairConfig(volume_factors=(2.0,), n_new=1, n_resolved=0, diameter_range_mm=(6.0, 12.0))
    pair = make_pair(phantom.volume, phantom.lung_mask, np.random.default_rng(2), nodules=source, config=config)
    grown, new = pair.truth["nodules"]
    assert grown["source"].endswith((".nii.gz", ".nrrd", ".mha", ".nii")) or grown["source"]
    assert grown["current_volume_mm3"] / grown["prior_volume_mm3"] == pytest.approx(2.0, rel=0.15)
    assert new["prior_lps_mm"] is None and new["texture"] in ("solid", "part-solid", "ground-glass", None)


def test_scanner_padding_becomes_air_in_both_scans(phantom):
    """A real host's padding outside the field of view (-3024 HU) must not turn into values below air."""
    hu = np.asarray(phantom.volume.hu, np.float32).copy()
    hu[:, :4, :] = -3024.0
    padded = phantom.volume.with_array(hu)
    pair = make_pair(padded, phantom.lung_mask, np.random.default_rng(5), config=CONFIG, case_id="case_p")
    for scan in (pair.prior, pair.current):
        corner = np.asarray(scan.hu)[:, :4, :]
        assert corner.min() > -1200 and abs(float(np.median(corner)) + 1024) < 30
