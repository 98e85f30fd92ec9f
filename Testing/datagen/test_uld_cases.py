"""Tests of ULD training / validation cases: determinism, held-out seeds, cache, boxes and slab sampling."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.datagen.uld_cases import (
    ULDDataConfig,
    build_case,
    build_cases,
    sample_slabs,
    validation_config,
)

PHANTOM_ONLY = ULDDataConfig(n_cases=1, hosts=("phantom",), lesions_per_case=3, nodules_per_case=0, seed=5)


@pytest.mark.parametrize("field, value", [("split", "test"), ("hosts", ("pelvis",)), ("n_cases", 0),
                                          ("min_area_fraction", 0.0)])
def test_config_rejects_out_of_range_fields(field, value):
    with pytest.raises(ValueError, match=field):
        ULDDataConfig(**{field: value})


def test_cache_key_depends_on_what_decides_the_cases():
    base = ULDDataConfig()
    assert base.key() == ULDDataConfig(n_cases=7, negatives_per_case=1).key()  # sampling and count do not
    assert base.key() != ULDDataConfig(seed=1).key() and base.key() != validation_config(base).key()


def test_phantom_cases_are_deterministic_cached_and_held_out(tmp_path):
    first = build_cases(PHANTOM_ONLY, tmp_path, cache_dir=tmp_path / "cache")[0]
    cached = build_cases(PHANTOM_ONLY, tmp_path, cache_dir=tmp_path / "cache")[0]
    fresh = build_cases(PHANTOM_ONLY, tmp_path)[0]
    for other in (cached, fresh):
        np.testing.assert_array_equal(other.grid.hu, first.grid.hu)
        assert [(les.lesion_class, les.key_slice) for les in other.lesions] == \
            [(les.lesion_class, les.key_slice) for les in first.lesions]
        for a, b in zip(other.lesions, first.lesions):
            assert a.boxes.keys() == b.boxes.keys()
    assert any(les.lesion_class == "phantom_nodule" and les.lesion_type == "lung" for les in first.lesions)
    held_out = build_cases(validation_config(PHANTOM_ONLY), tmp_path)[0]
    assert held_out.case_id != first.case_id and "-val-" in held_out.case_id
    assert held_out.grid.hu.shape != first.grid.hu.shape or not np.array_equal(held_out.grid.hu, first.grid.hu)


def test_chest_case_boxes_and_slab_sampling():
    data_ct, lidc = shared_path("ct"), shared_path("lidc_voi")
    from lunglesionai.datagen.composites import NoduleSource

    config = ULDDataConfig(n_cases=1, hosts=("chest",), lesions_per_case=4, nodules_per_case=2, seed=3,
                           positives_per_lesion=2, negatives_per_case=3)
    case = build_case("t-chest", "chest", np.random.SeedSequence(3), config, data_ct, NoduleSource(lidc, "train"), {})
    classes = [les.lesion_class for les in case.lesions]
    assert classes.count("lidc_nodule") >= 1 and len(classes) >= 3
    types = config.network.lesion_types
    for lesion in case.lesions:
        assert types[lesion.label] == lesion.lesion_type
        areas = {k: (b[2] - b[0]) * (b[3] - b[1]) for k, b in lesion.boxes.items()}
        assert areas[lesion.key_slice] == max(areas.values())  # the key slice has the largest box
        assert case.touched[list(lesion.boxes)].all()
        for box in lesion.boxes.values():
            assert 0 <= box[0] < box[2] <= case.grid.shape_zyx[2] and 0 <= box[1] < box[3] <= case.grid.shape_zyx[1]
    samples = sample_slabs([case], config, np.random.default_rng(0))
    positives = [s for s in samples if s.positive]
    negatives = [s for s in samples if not s.positive]
    assert len(positives) <= 2 * len(case.lesions) and len(negatives) == 3
    for s in positives:
        assert len(case.targets(s.slice_index)[0]) >= 1
    for s in negatives:
        assert len(case.targets(s.slice_index)[0]) == 0 and not case.touched[s.slice_index]


def test_missing_real_host_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="chest_ct_crop"):
        build_cases(ULDDataConfig(n_cases=1, hosts=("chest",)), tmp_path)


def test_new_options_keep_first_release_cache_keys_and_are_checked():
    base = ULDDataConfig()
    assert base.hosts == ("chest", "abdomen", "phantom")  # the first release's hosts stay the default
    assert base.key() == ULDDataConfig(host_window_mm=None, scanner_augmentation=False, real_texture=False).key()
    assert len({base.key(), ULDDataConfig(host_window_mm=160.0).key(), ULDDataConfig(real_texture=True).key(),
                ULDDataConfig(scanner_augmentation=True).key()}) == 4
    ULDDataConfig(hosts=("whole_body", "pancreas"))
    with pytest.raises(ValueError, match="host_window_mm"):
        ULDDataConfig(host_window_mm=5.0)


def test_z_window_cuts_volume_lung_and_regions_alike():
    from lunglesionai.core.volume import Volume
    from lunglesionai.datagen.lesion_regions import AnatomyRegions
    from lunglesionai.datagen.uld_cases import _z_window

    volume = Volume(np.arange(100, dtype=np.int16)[:, None, None] * np.ones((1, 8, 8), np.int16), (1.0, 1.0, 2.5),
                    (0.0, 0.0, -50.0))
    liver = np.zeros((100, 8, 8), bool)
    liver[:10] = True  # only in the first 25 mm
    regions = AnatomyRegions({"liver": liver, "lung": np.zeros_like(liver)}, 55.0, (2.5, 1.0, 1.0))
    lung = np.zeros((100, 8, 8), np.uint8)
    cut, cut_lung, cut_regions = _z_window(volume, lung, regions, 50.0, np.random.default_rng(4))
    k0 = int(cut.hu[0, 0, 0])
    assert cut.shape_zyx == (20, 8, 8) and np.array_equal(cut.hu[:, 0, 0], np.arange(k0, k0 + 20))
    assert cut.origin_lps_mm[2] == pytest.approx(-50.0 + 2.5 * k0) and cut_lung.shape == cut.shape_zyx
    assert np.array_equal(cut_regions["liver"], liver[k0:k0 + 20])
    assert cut_regions.liver_hu == (55.0 if liver[k0:k0 + 20].any() else None)
    same = _z_window(volume, lung, regions, 400.0, np.random.default_rng(4))
    assert same[0] is volume  # a host shorter than the window stays whole


@pytest.mark.slow
def test_augmented_textured_phantom_case_keeps_its_boxes(tmp_path):
    config = ULDDataConfig(n_cases=1, hosts=("phantom",), lesions_per_case=3, nodules_per_case=0, seed=5,
                           scanner_augmentation=True, real_texture=True)
    plain = build_cases(PHANTOM_ONLY, tmp_path)[0]
    case = build_cases(config, tmp_path)[0]
    assert case.lesions and all(les.key_slice in les.boxes for les in case.lesions)
    assert case.grid.hu.shape != plain.grid.hu.shape or not np.array_equal(case.grid.hu, plain.grid.hu)
