"""Tests of synthetic DeepLesion-class lesions: anatomy regions, drawn ranges, rendering, placement and truth."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.core.volume import Volume
from lunglesionai.datagen.lesion_regions import REGION_NAMES, anatomy_regions
from lunglesionai.datagen.synthetic_lesions import (
    LESION_CLASSES,
    LesionClass,
    draw_lesion_spec,
    estimate_noise_hu,
    paint_lesion,
    place_lesions,
)
from lunglesionai.nets.mp3d import DEEPLESION_TYPES


@pytest.fixture(scope="module")
def phantom():
    from lunglesionai.synth import PhantomConfig, make_phantom

    p = make_phantom(PhantomConfig.small(seed=3))
    return p, anatomy_regions(p.volume, p.lung_mask)


def test_every_class_has_a_deeplesion_type_and_a_reference():
    for cls in LESION_CLASSES.values():
        assert cls.lesion_type in DEEPLESION_TYPES
        assert cls.region in REGION_NAMES and cls.reference


@pytest.mark.parametrize("name", sorted(LESION_CLASSES))
def test_drawn_lesions_stay_in_their_class_ranges(name):
    cls = LESION_CLASSES[name]
    rng = np.random.default_rng(0)
    for _ in range(30):
        spec = draw_lesion_spec(cls, rng, liver_hu=70.0)
        axes = np.sort(2 * spec.semi_axes_mm)
        measured = axes[0] if cls.short_axis else axes[-1]  # nodes: the range is the short axis (RECIST)
        assert cls.diameter_range_mm[0] - 1e-6 <= measured <= cls.diameter_range_mm[1] + 1e-6
        assert axes[-1] / axes[0] <= cls.aspect_range[1] + 1e-6
        low, high = cls.hu_range
        if cls.relative_to_liver:
            assert 70.0 - high <= spec.hu <= 70.0 - low  # hypoattenuating to the liver
        else:
            assert low <= spec.hu <= high
        np.testing.assert_allclose(spec.rotation @ spec.rotation.T, np.eye(3), atol=1e-9)


def test_liver_relative_class_needs_the_liver_hu():
    with pytest.raises(ValueError, match="liver"):
        draw_lesion_spec(LESION_CLASSES["liver_metastasis"], np.random.default_rng(0), liver_hu=None)


def test_noise_estimate_recovers_a_known_sigma():
    rng = np.random.default_rng(0)
    hu = 50 + rng.normal(0, 20, (8, 64, 64)).astype(np.float32)
    assert estimate_noise_hu(hu, np.ones(hu.shape, bool), (2.0, 1.0, 1.0)) == pytest.approx(20.0, rel=0.15)


def test_regions_of_the_phantom_are_where_anatomy_puts_them(phantom):
    p, regions = phantom
    lung = p.lung_mask > 0
    for name in ("body", "bone", "mediastinum", "fat", "liver", "body_wall"):
        assert regions[name].any(), name
    assert not np.any(regions["mediastinum"] & lung) and not np.any(regions["liver"] & lung)
    x_of = lambda mask: p.volume.kji_to_lps(np.argwhere(mask).mean(axis=0)[None])[0]
    assert x_of(regions["liver"])[0] < 0  # patient's right: LPS x below the midline (phantom centred on 0)
    assert abs(x_of(regions["bone"])[0]) < 15 and x_of(regions["bone"])[1] > x_of(regions["mediastinum"])[1]
    assert regions.liver_hu == pytest.approx(58.0, abs=15)  # the phantom's liver is 58 HU plus noise
    assert not regions["kidney"].any()
    with pytest.raises(KeyError, match="unknown region"):
        regions["spleen"]


def test_placed_lesions_have_their_hu_inside_their_region(phantom):
    p, regions = phantom
    names = ["liver_cyst", "liver_metastasis", "lymph_node_mediastinal", "bone_blastic", "soft_tissue_mass"]
    before = np.array(p.volume.hu, copy=True)
    out, truths = place_lesions(p.volume, regions, names, np.random.default_rng(2))
    assert np.array_equal(p.volume.hu, before) and not np.array_equal(out.hu, before)  # a new volume
    assert out.hu.dtype == p.volume.hu.dtype and len(truths) >= 4
    for truth in truths:
        cls = LESION_CLASSES[truth.lesion_class]
        mask = np.zeros(p.volume.shape_zyx, np.uint8)
        truth.mask.paste_into(mask, 1)
        inside = mask > 0
        core = inside & (np.abs(out.hu.astype(float) - truth.hu) < 4 * truth.noise_hu + 3 * cls.texture_hu)
        assert core.mean() > 0.5 * inside.mean()  # most mask voxels carry the lesion's HU, not the host's
        region_share = regions[cls.region][inside].mean()
        assert region_share > (0.9 if cls.fit >= 0.9 else 0.2), (truth.lesion_class, region_share)
        (x0, y0, z0), (x1, y1, z1) = truth.bbox_lps_mm
        cx, cy, cz = truth.center_lps_mm
        assert x0 < cx < x1 and y0 < cy < y1 and z0 < cz < z1 and z0 <= truth.key_slice_z_mm <= z1
        assert not np.any(inside & (p.lung_mask > 0)), truth.lesion_class


def test_unknown_class_and_missing_region_are_reported(phantom):
    p, regions = phantom
    with pytest.raises(KeyError, match="unknown lesion classes"):
        place_lesions(p.volume, regions, ["liver_cyst", "brain_tumour"], np.random.default_rng(0))
    out, truths = place_lesions(p.volume, regions, ["kidney_cyst"], np.random.default_rng(0))
    assert truths == [] and np.array_equal(out.hu, p.volume.hu)  # no kidney in the phantom: skipped


def test_paint_lesion_blends_partial_volume_at_the_edge():
    hu = np.full((20, 40, 40), 60.0, np.float32)
    volume = Volume(hu.copy(), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    cls = LesionClass("disc", "liver", "liver", (10.0, 10.0), (1.0, 1.0), (0.0, 0.0), 0.0, 0.0, 0.0)
    spec = draw_lesion_spec(cls, np.random.default_rng(0))
    truth = paint_lesion(hu, volume, spec, np.array([10.0, 20.0, 20.0]), np.random.default_rng(1), noise_hu=0.0)
    assert hu[10, 20, 20] == pytest.approx(0.0, abs=1e-3) and hu[10, 20, 35] == pytest.approx(60.0)
    edge = hu[10, 20, 24:27]  # the 5 mm radius crosses voxel 25: a partial-volume value in between
    assert 0.0 < edge[1] < 60.0
    assert truth.mask.voxel_count == pytest.approx(4 / 3 * np.pi * 5**3, rel=0.15)


def test_regions_of_the_real_abdomen_series():
    from lunglesionai.io.ct_files import load_volume
    from lunglesionai.stages.lung_mask import segment_lungs

    volume = load_volume(shared_path("ct", "abdomen_lung_base_dicom"))
    regions = anatomy_regions(volume, segment_lungs(volume))
    assert regions.volumes_ml["liver"] > 300 and 60 < regions.liver_hu < 150  # portal-venous liver
    assert regions["bone"].any() and regions["retroperitoneum"].any() and regions["body_wall"].any()
    liver_x = volume.kji_to_lps(np.argwhere(regions["liver"]).mean(axis=0)[None])[0][0]
    bone_x = volume.kji_to_lps(np.argwhere(regions["bone"]).mean(axis=0)[None])[0][0]
    assert liver_x < bone_x  # the liver lies on the patient's right of the spine
