"""Tests of the detector's host composites: LIDC train nodules pasted at a host's own grid, scanner-augmented,
boxes on the detector grid where the pasted nodules are; per-host cache."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lidc_fixtures import make_lidc_folder
from lunglesionai.datagen.composite_sets import phantom_host
from lunglesionai.datagen.composites import NoduleSource
from lunglesionai.datagen.scanner_augmentation import ScannerAugmentation
from lunglesionai.training import detector_hosts
from lunglesionai.training.detector_hosts import host_cases, hosts_training_cases, mark_boxes_lps


@pytest.fixture(scope="module")
def host_file(tmp_path_factory):
    """A small phantom written as a plain CT file: a "real" host without marks."""
    volume = phantom_host(1, "small").volume
    image = sitk.GetImageFromArray(np.asarray(volume.hu, np.int16))
    image.SetSpacing(volume.spacing_mm)
    image.SetOrigin(volume.origin_lps_mm)
    path = tmp_path_factory.mktemp("host") / "host.nii.gz"
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture(scope="module")
def lidc_dir(tmp_path_factory):
    return make_lidc_folder(tmp_path_factory.mktemp("lidc") / "lidc_voi", n=12)


def test_mark_boxes_keep_nodules_only():
    marks = np.array([[10.0, 20.0, 30.0, 4.0, 1.0], [0.0, 0.0, 0.0, 2.0, 0.0]])
    assert mark_boxes_lps(marks) == [[[6.0, 16.0, 26.0], [14.0, 24.0, 34.0]]]
    assert mark_boxes_lps(np.zeros((0, 5))) == []


def test_cases_have_one_box_per_pasted_nodule_on_dense_tissue(host_file, lidc_dir):
    source = NoduleSource(lidc_dir, "train")
    no_aug = ScannerAugmentation(kernel_probability=0.0, noise_probability=0.0, thickness_probability=0.0,
                                 in_plane_probability=0.0, contrast_probability=0.0, crop_to_lungs_margin_mm=20.0)
    cases = host_cases(host_file, source, 2, 1.5, nodules_per_case=2, seed=3, augmentation=no_aug, name="h")
    assert [c.case_id for c in cases] == ["h-0", "h-1"]
    for case in cases:
        image, boxes = case.image[0], case.boxes
        assert image.ndim == 3 and 0.0 <= image.min() and image.max() <= 1.0
        assert len(boxes) == 2 and (boxes[:, 3:] > boxes[:, :3]).all()
        assert (boxes[:, :3] >= -1).all() and (boxes[:, 3:] <= np.array(image.shape) + 1).all()
        for box in boxes:  # the box centre is nodule tissue (ground glass -600 HU or denser), not lung
            x, y, z = np.round(0.5 * (box[:3] + box[3:])).astype(int)
            assert image[x, y, z] > 0.2, (box, image[x, y, z])  # > -720 HU; lung -850 HU = 0.11


def test_augmentation_changes_the_rendering_not_the_boxes(host_file, lidc_dir):
    source = NoduleSource(lidc_dir, "train")
    plain = ScannerAugmentation(kernel_probability=0.0, noise_probability=0.0, thickness_probability=0.0,
                                in_plane_probability=0.0, contrast_probability=0.0, crop_to_lungs_margin_mm=20.0)
    noisy = ScannerAugmentation(kernel_probability=0.0, noise_probability=1.0, noise_sd_hu_range=(30.0, 30.0),
                                thickness_probability=0.0, in_plane_probability=0.0, contrast_probability=0.0,
                                crop_to_lungs_margin_mm=20.0)
    a = host_cases(host_file, source, 1, 1.5, nodules_per_case=2, seed=5, augmentation=plain)[0]
    b = host_cases(host_file, source, 1, 1.5, nodules_per_case=2, seed=5, augmentation=noisy)[0]
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    assert not np.allclose(a.image, b.image)


def test_val_split_is_refused(host_file, lidc_dir):
    with pytest.raises(ValueError, match="train-split"):
        host_cases(host_file, NoduleSource(lidc_dir, "val"), 1, 1.5)


def test_hosts_are_cached_and_read_back(host_file, lidc_dir, tmp_path, monkeypatch):
    first = hosts_training_cases([("h", host_file)], lidc_dir, 1, 1.5, cache_dir=tmp_path, nodules_per_case=2)
    assert len(list(tmp_path.glob("detector-host-h-*.npz"))) == 1

    def not_again(*args, **kwargs):
        raise AssertionError("a cached host must not be rebuilt")

    monkeypatch.setattr(detector_hosts, "host_cases", not_again)
    again = hosts_training_cases([("h", host_file)], lidc_dir, 1, 1.5, cache_dir=tmp_path, nodules_per_case=2)
    np.testing.assert_allclose(again[0].image, first[0].image, atol=1e-3)  # float16 in the cache
    np.testing.assert_array_equal(again[0].boxes, first[0].boxes)
    with pytest.raises(ValueError, match="--host"):
        hosts_training_cases([], lidc_dir, 1, 1.5)


def test_train_detector_cli_host_needs_lidc(tmp_path, capsys):
    from lunglesionai.app.cli import main

    status = main(["train", "detector", "--n-real", "0", "--n-phantom", "0", "--host", "h=phantom:0",
                   "--out", str(tmp_path / "model")])
    assert status == 2
    assert "--host needs --lidc" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
    with pytest.raises(SystemExit):
        main(["train", "detector", "--lidc", "x", "--host", "no-equals-sign", "--out", str(tmp_path / "m")])
