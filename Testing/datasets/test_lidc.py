"""Tests of lunglesionai.datasets.lidc: the lidc_voi table, label mapping, isotropic crops and their inverse, augmentation.

``make_lidc_folder`` builds a tiny synthetic folder in the lidc_voi layout; the grader and evaluation tests
import it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from lidc_fixtures import make_lidc_folder
from lunglesionai.core.hu_windows import window_hu
from lunglesionai.core.vocabulary import INVASIVENESS_CLASSES, TEXTURE_CLASSES
from lunglesionai.core.volume import Volume
from lunglesionai.datasets.lidc import HU_WINDOW, LidcTableError, load_voi, read_nodule_table, texture_class
from lunglesionai.datasets.lidc_crops import (
    PAD_HU,
    AugmentationConfig,
    build_crop_set,
    crop_geometry,
    crop_to_volume,
    extract_crop,
    training_transforms,
)


def _write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "nodules.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


# ----------------------------------------------------------------------------------------------- table


def test_read_table_labels_and_splits(tmp_path):
    folder = make_lidc_folder(tmp_path / "d", n=6)
    records = read_nodule_table(folder)
    assert len(records) == 6
    assert [r.texture for r in records] == [0, 1, 2, 0, 1, 2]
    assert [r.malignant for r in records] == [0, 0, 0, 1, 1, 1]
    assert [r.rating for r in records] == [2, 2, 2, 4, 4, 4]
    assert records[1].invasiveness == records[1].texture
    # not calcified (6 -> -1), spiculation 4 -> 0.5, the other ratings absent from the table
    np.testing.assert_allclose(records[4].attributes, [-1.0, np.nan, np.nan, np.nan, 0.5, np.nan])
    assert [r.file for r in read_nodule_table(folder, "val")] == [records[4].file, records[5].file]


def test_read_table_attribute_ratings(tmp_path):
    header = ["file", "coordX", "coordY", "coordZ", "diameter_mm", "Spiculation_value", "Lobulation_value",
              "Margin_value", "Sphericity_value", "Calcification_value"]
    folder = _write_table(tmp_path / "t", header, [["a", 1, 2, 3, 5, 4, 1, 2, 5, 3], ["b", 1, 2, 3, 5, "", 2, 5, 3, ""]])
    first, second = read_nodule_table(folder)
    assert first.attribute_ratings == (4, 1, 2, 5)  # spiculation, lobulation, margin, sphericity
    assert first.calcification == 3
    assert second.attribute_ratings == (None, 2, 5, 3) and second.calcification is None


def test_table_without_split_column_uses_all_rows(tmp_path):
    folder = make_lidc_folder(tmp_path / "d", n=4, with_split=False)
    assert len(read_nodule_table(folder, "val")) == 4


@pytest.mark.parametrize(
    "header, row, message",
    [
        (["file", "coordX", "coordY", "coordZ"], ["a.nii.gz", 1, 2, 3], "missing column"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm"], ["a.nii.gz", "x", 2, 3, 5], "column coordX"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm"], ["a.nii.gz", 1, 2, 3, -5], "diameter_mm"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm", "Texture"], ["a", 1, 2, 3, 5, "Glassy"], "Glassy"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm", "Diagnosis_value"], ["a", 1, 2, 3, 5, 2],
         "Diagnosis_value"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm"], ["", 1, 2, 3, 5], "column file"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm", "Margin_value"], ["a", 1, 2, 3, 5, 2.5], "Margin"),
        (["file", "coordX", "coordY", "coordZ", "diameter_mm", "Spiculation_value"], ["a", 1, 2, 3, 5, 6],
         "Spiculation_value"),  # 1-5 rating
        (["file", "coordX", "coordY", "coordZ", "diameter_mm", "Calcification_value"], ["a", 1, 2, 3, 5, 7],
         "Calcification_value"),  # 1-6 rating
    ],
)
def test_table_errors_name_the_problem(tmp_path, header, row, message):
    folder = _write_table(tmp_path / "t", header, [row])
    with pytest.raises(LidcTableError, match=message):
        read_nodule_table(folder)


def test_missing_table_and_empty_split(tmp_path):
    with pytest.raises(LidcTableError, match="nodules.csv"):
        read_nodule_table(tmp_path)
    folder = make_lidc_folder(tmp_path / "d", n=3)
    with pytest.raises(LidcTableError, match="split == 'test'"):
        read_nodule_table(folder, "test")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Non-Solid/GGO", "ground-glass"),
        ("Non-Solid/Mixed", "ground-glass"),
        ("Part Solid/Mixed", "part-solid"),
        ("Solid/Mixed", "part-solid"),
        ("Solid", "solid"),
        ("  solid ", "solid"),
    ],
)
def test_texture_mapping(text, expected):
    assert TEXTURE_CLASSES[texture_class(text)] == expected
    assert INVASIVENESS_CLASSES[texture_class(text)] == {
        "ground-glass": "pre-invasive", "part-solid": "minimally-invasive", "solid": "invasive"}[expected]


def test_load_voi_missing_file(tmp_path):
    folder = make_lidc_folder(tmp_path / "d", n=3)
    (folder / "masks" / read_nodule_table(folder)[0].file).unlink()
    with pytest.raises(LidcTableError, match="no such file"):
        load_voi(folder, read_nodule_table(folder)[0])


# ----------------------------------------------------------------------------------------------- crops


def _sphere_volume(shape_zyx, spacing_mm, radius_mm, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    zz, yy, xx = np.indices(shape_zyx).astype(float)
    centre = (np.array(shape_zyx) - 1) / 2.0
    dist = np.sqrt(((zz - centre[0]) * spacing_mm[2]) ** 2 + ((yy - centre[1]) * spacing_mm[1]) ** 2
                   + ((xx - centre[2]) * spacing_mm[0]) ** 2)
    volume = Volume(np.where(dist <= radius_mm, 0, -900).astype(np.int16), spacing_mm, (10.0, -5.0, 3.0), direction)
    return volume, dist <= radius_mm, centre


@pytest.mark.parametrize(
    "shape_zyx, spacing_mm, crop_spacing, size, direction",
    [
        ((10, 40, 40), (0.7, 0.7, 2.5), 1.0, 24, (1, 0, 0, 0, 1, 0, 0, 0, 1)),  # thick slices
        ((30, 30, 30), (0.5, 0.5, 0.5), 0.8, 16, (1, 0, 0, 0, 1, 0, 0, 0, 1)),  # fine isotropic
        ((12, 36, 30), (0.8, 0.7, 1.25), 1.0, 20, (-1, 0, 0, 0, -1, 0, 0, 0, 1)),  # RAS-like axes
    ],
)
def test_crop_and_inverse_round_trip(shape_zyx, spacing_mm, crop_spacing, size, direction):
    volume, truth, centre = _sphere_volume(shape_zyx, spacing_mm, 4.0, direction)
    geometry = crop_geometry(volume, volume.kji_to_lps([centre])[0], crop_spacing, size)
    crop = extract_crop(volume, geometry)
    assert crop.shape == (size,) * 3 and crop.dtype == np.float32
    soft = extract_crop(volume.with_array(truth.astype(np.float32)), geometry, pad_hu=0.0)
    mid = size // 2
    assert soft[mid - 1 : mid + 1, mid - 1 : mid + 1, mid - 1 : mid + 1].min() > 0.9  # nodule at the centre
    offset, back = crop_to_volume(soft, geometry, volume)
    restored = np.zeros(shape_zyx, bool)
    restored[tuple(slice(o, o + n) for o, n in zip(offset, back.shape))] = back >= 0.5
    dice = 2 * (restored & truth).sum() / (restored.sum() + truth.sum())
    assert dice > 0.9


def test_crop_pads_outside_the_volume_with_air():
    volume, _, _ = _sphere_volume((6, 10, 10), (1.0, 1.0, 1.0), 2.0)
    corner = volume.kji_to_lps([[0, 0, 0]])[0]
    crop = extract_crop(volume, crop_geometry(volume, corner, 1.0, 8))
    assert crop[0, 0, 0] == PAD_HU
    far = extract_crop(volume, crop_geometry(volume, corner - 500.0, 1.0, 8))
    assert np.all(far == PAD_HU)
    offset, back = crop_to_volume(far, crop_geometry(volume, corner - 500.0, 1.0, 8), volume)
    assert back.size == 0


@pytest.mark.parametrize("bad", [dict(spacing_mm=0.0, size=8), dict(spacing_mm=1.0, size=0)])
def test_crop_geometry_errors(bad):
    volume, _, _ = _sphere_volume((6, 10, 10), (1.0, 1.0, 1.0), 2.0)
    with pytest.raises(ValueError):
        crop_geometry(volume, (0.0, 0.0, 0.0), **bad)
    with pytest.raises(ValueError, match="3 finite"):
        crop_geometry(volume, (0.0, np.nan, 0.0), 1.0, 8)


def test_crop_to_volume_shape_check():
    volume, _, _ = _sphere_volume((6, 10, 10), (1.0, 1.0, 1.0), 2.0)
    geometry = crop_geometry(volume, (0.0, 0.0, 0.0), 1.0, 8)
    with pytest.raises(ValueError, match="shape"):
        crop_to_volume(np.zeros((7, 8, 8)), geometry, volume)


def test_window_hu():
    out = window_hu(np.array([-2000.0, HU_WINDOW[0], -300.0, HU_WINDOW[1], 3000.0]))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="low < high"):
        window_hu(np.zeros(3), (100.0, -100.0))


@pytest.mark.parametrize("cache, crop", [(24, 16), (32, 16), (40, 32)])
def test_training_transforms_shapes(cache, crop):
    rng = np.random.default_rng(0)
    transform = training_transforms(AugmentationConfig(), crop, 1.0)
    transform.set_random_state(seed=1)
    sample = {"image": rng.random((1, cache, cache, cache), np.float32),
              "mask": (rng.random((1, cache, cache, cache)) > 0.5).astype(np.float32)}
    out = transform(sample)
    assert tuple(out["image"].shape) == (1, crop, crop, crop)
    assert tuple(out["mask"].shape) == (1, crop, crop, crop)
    assert float(out["mask"].min()) >= -1e-5 and float(out["mask"].max()) <= 1 + 1e-5
    assert sample["image"].shape == (1, cache, cache, cache)  # input untouched


def test_augmentation_config_errors():
    with pytest.raises(ValueError):
        AugmentationConfig(flip_prob=1.5)
    with pytest.raises(ValueError):
        AugmentationConfig(shift_mm=-1.0)


def test_build_crop_set_and_cache(tmp_path):
    folder = make_lidc_folder(tmp_path / "d", n=6)
    records = read_nodule_table(folder)
    crops = build_crop_set(folder, records, 1.0, 16, cache_dir=tmp_path / "cache")
    assert crops.images.shape == (6, 16, 16, 16) and crops.masks.shape == (6, 16, 16, 16)
    assert crops.texture.tolist() == [0, 1, 2, 0, 1, 2]
    assert crops.rating.tolist() == [1, 1, 1, 3, 3, 3]  # 0-based
    big, small = crops.masks[3].astype(float).sum(), crops.masks[0].astype(float).sum()
    assert big > 5 * small  # 11 mm vs 5 mm spheres
    assert crops.images[2, 8, 8, 8] > crops.images[0, 8, 8, 8]  # solid brighter than ground-glass
    again = build_crop_set(folder, records, 1.0, 16, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, crops.images)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


# ----------------------------------------------------------------------------------------------- real data


def test_real_table_counts():
    folder = shared_path("lidc_voi")
    records = read_nodule_table(folder)
    assert len(records) == 718
    assert len([r for r in records if r.split == "train"]) == 567
    counts = np.bincount([r.texture for r in records], minlength=3)
    assert counts.tolist() == [66, 66, 586]  # ground-glass, part-solid, solid


def test_real_vois_crop_around_the_mask():
    folder = shared_path("lidc_voi")
    records = read_nodule_table(folder, "val")[:3]
    crops = build_crop_set(folder, records, 1.0, 32)
    for n, record in enumerate(records):
        volume, mask = load_voi(folder, record)
        assert mask.shape == volume.shape_zyx and mask.any()
        soft = crops.masks[n].astype(float)
        centroid = np.argwhere(soft > 0.5).mean(axis=0)
        assert np.all(np.abs(centroid - 15.5) < 3.0)  # nodule centred in the crop
        volume_mm3 = mask.sum() * volume.voxel_volume_mm3
        assert abs(soft.sum() - volume_mm3) < 0.25 * volume_mm3 + 10
