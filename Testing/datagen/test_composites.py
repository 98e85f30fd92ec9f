"""Composites: real LIDC nodules pasted into phantom / real lungs (lunglesionai.datagen.composites)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy import ndimage

from conftest import shared_path
from lunglesionai.app.data_commands import add_make_composites_parser
from lunglesionai.core.volume import Volume
from lunglesionai.datagen.composite_sets import COMPOSITES_SCHEMA_ID, phantom_host, real_host, write_composite_set
from lunglesionai.datagen.composites import Composite, CompositeConfig, NoduleSource, compose
from lunglesionai.datasets.lidc import load_voi, read_nodule_table
from lunglesionai.datasets.luna16 import read_annotations, read_seriesuids

LUNG_HU = -850


@pytest.fixture(scope="module")
def lidc_dir():
    return shared_path("lidc_voi")


@pytest.fixture(scope="module")
def val_source(lidc_dir):
    return NoduleSource(lidc_dir, "val")


@pytest.fixture(scope="module")
def host():
    return phantom_host(1, "small")


def _compose(host, source, **config):
    return compose(host.volume, host.lung_mask, source, CompositeConfig(**config),
                   existing_truth=host.truth, existing_masks=host.masks)


def _mask_array(mask, shape):
    out = np.zeros(shape, bool)
    mask.paste_into(out, 1)
    return out


def _pasted(composite):
    return [(t, m) for t, m in zip(composite.truth, composite.masks) if t["origin"] == "lidc-voi"]


@pytest.mark.parametrize(
    "field, value",
    [("n_nodules", -1), ("min_distance_mm", -1.0), ("juxta_pleural_fraction", 1.5), ("diameter_range_mm", (5, 3)),
     ("feather_mm", 0.0), ("blend", "add"), ("max_dense_fraction", 2.0), ("textures", ("solid", "calcified")),
     ("max_attempts", 0), ("split", "")],
)
def test_config_rejects_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        CompositeConfig(**{field: value})


def test_source_split_must_match_config(host, val_source):
    with pytest.raises(ValueError, match="split"):
        compose(host.volume, host.lung_mask, val_source, CompositeConfig(split="train"))
    with pytest.raises(ValueError, match="shape"):
        compose(host.volume, host.lung_mask[1:], val_source, CompositeConfig())


def test_val_split_never_uses_train_nodules(lidc_dir, val_source, host):
    table = read_nodule_table(lidc_dir)
    train_patients = {r.patient_id for r in table if r.split == "train"}
    split_of = {r.file: r.split for r in table}
    assert val_source.records and all(r.split == "val" for r in val_source.records)
    files = set()
    for seed in range(3):
        composite = _compose(host, val_source, n_nodules=4, seed=seed)
        for truth, _ in _pasted(composite):
            files.add(truth["source"])
            assert split_of[truth["source"]] == "val" and truth["split"] == "val"
            assert truth["patient_id"] not in train_patients
    assert len(files) >= 6


@pytest.mark.parametrize("texture, blend", [("solid", "max"), ("solid", "alpha"), ("ground-glass", "max")])
def test_pasted_nodule_sits_at_truth_with_source_hu(host, val_source, texture, blend):
    composite = _compose(host, val_source, n_nodules=3, seed=5, textures=(texture,), diameter_range_mm=(6.0, 20.0),
                         blend=blend)
    pasted = _pasted(composite)
    assert len(pasted) == 3
    shape = host.volume.shape_zyx
    for truth, mask in pasted:
        labels = _mask_array(mask, shape)
        centre = tuple(np.rint(host.volume.lps_to_kji([truth["center_lps_mm"]])[0]).astype(int))
        assert labels[centre], "truth centre outside the pasted mask"
        record = next(r for r in val_source.records if r.file == truth["source"])
        voi, voi_mask = load_voi(val_source.data_dir, record)
        source_core = ndimage.binary_erosion(voi_mask, np.ones((1, 3, 3))) if voi_mask.sum() > 30 else voi_mask
        core = ndimage.binary_erosion(labels, np.ones((1, 3, 3)))
        source_hu = float(voi.hu[source_core].mean())
        pasted_hu = float(composite.volume.hu[core].mean())
        assert abs(pasted_hu - source_hu) < 100, (truth["source"], source_hu, pasted_hu)
        min_contrast = 100 if texture == "ground-glass" else 300
        assert pasted_hu - float(host.volume.hu[core].mean()) > min_contrast  # the nodule is really there
        if texture == "ground-glass":
            assert pasted_hu < -300  # stays faint
        lo, hi = np.asarray(truth["bbox_lps_mm"])
        assert np.all(lo < truth["center_lps_mm"]) and np.all(np.asarray(truth["center_lps_mm"]) < hi)
        assert truth["diameter_source"] == "lidc-table" and truth["diameter_mm"] == pytest.approx(record.diameter_mm, abs=1e-3)


def test_changes_stay_near_the_nodule_no_box_edges(host, val_source):
    spacing_zyx = host.volume.spacing_mm[::-1]
    reach_mm = CompositeConfig().feather_mm + 2 * float(np.linalg.norm(spacing_zyx))
    for seed in range(4):
        composite = _compose(host, val_source, n_nodules=1, seed=seed)
        (truth, mask), = _pasted(composite)
        changed = composite.volume.hu != host.volume.hu
        distance = ndimage.distance_transform_edt(~_mask_array(mask, host.volume.shape_zyx), sampling=spacing_zyx)
        assert changed.any()
        assert distance[changed].max() <= reach_mm, (truth["source"], distance[changed].max())


@pytest.mark.parametrize("blend", ["max", "alpha"])
def test_no_seam_on_a_flat_host(val_source, blend):
    """The pasted patch fades into the host: beyond the feather ramp the change is ~0 (no step, no box edge)."""
    flat = Volume(np.full((40, 80, 80), LUNG_HU, np.int16), (0.8, 0.8, 1.0), (0.0, 0.0, 0.0))
    lung = np.zeros(flat.shape_zyx, np.uint8)
    lung[2:-2, 2:-2, 2:-2] = 1
    feather = CompositeConfig().feather_mm
    for seed in range(3):
        composite = compose(flat, lung, val_source, CompositeConfig(n_nodules=1, seed=seed, blend=blend,
                                                                     diameter_range_mm=(4.0, 15.0)))
        change = np.abs(composite.volume.hu.astype(float) - LUNG_HU)
        outside = ~_mask_array(composite.masks[0], flat.shape_zyx)
        distance = ndimage.distance_transform_edt(outside, sampling=(1.0, 0.8, 0.8))
        assert change.max() > 150
        assert distance[change > 0].max() >= 1.0  # a ramp outside the mask, not a cut at its edge
        assert change[distance >= feather].max() <= 60  # <= ~7 % of the nodule's contrast past the ramp
        assert change[distance >= feather + 1.0].max() <= 5  # and nothing further out: no patch edge


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 1, 0, 1, 0, 0, 0, 0, -1)])
def test_truth_geometry_on_any_host_direction(val_source, direction):
    host = Volume(np.full((40, 80, 80), LUNG_HU, np.int16), (0.8, 0.8, 1.0), (10.0, -20.0, 5.0), direction)
    lung = np.zeros(host.shape_zyx, np.uint8)
    lung[2:-2, 2:-2, 2:-2] = 1
    composite = compose(host, lung, val_source, CompositeConfig(n_nodules=2, seed=1, diameter_range_mm=(6, 12)))
    assert len(composite.truth) == 2
    for truth, mask in zip(composite.truth, composite.masks):
        labels = _mask_array(mask, host.shape_zyx)
        centroid = host.kji_to_lps([np.argwhere(labels).mean(axis=0)])[0]
        assert np.linalg.norm(centroid - truth["center_lps_mm"]) < 0.5
        lo, hi = np.asarray(truth["bbox_lps_mm"])
        corners = host.kji_to_lps(np.argwhere(labels))
        assert np.all(lo < corners.min(axis=0)) and np.all(corners.max(axis=0) < hi)


def test_nodules_inside_lungs_apart_and_not_on_existing_truth(host, val_source):
    composite = _compose(host, val_source, n_nodules=5, seed=11)
    shape = host.volume.shape_zyx
    assert composite.truth[: len(host.truth)] == [dict(t) for t in host.truth]
    pasted = _pasted(composite)
    assert len(pasted) == 5
    lung = host.lung_mask > 0
    for truth, mask in pasted:
        assert lung[_mask_array(mask, shape)].all()
    labels = composite.labelmap()
    assert labels.max() == len(composite.truth)
    counts = np.bincount(labels.ravel(), minlength=len(composite.truth) + 1)[1:]
    expected = [m.voxel_count for m in composite.masks]
    assert counts.tolist() == expected  # no overlap between any two truth nodules
    centres = np.array([t["center_lps_mm"] for t, _ in pasted])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[np.triu_indices(len(centres), 1)]
    assert gaps.min() > CompositeConfig().min_distance_mm


def test_deterministic_per_seed(host, val_source):
    before = host.volume.hu.copy()
    a = _compose(host, val_source, n_nodules=3, seed=7)
    b = _compose(host, val_source, n_nodules=3, seed=7)
    c = _compose(host, val_source, n_nodules=3, seed=8)
    assert np.array_equal(a.volume.hu, b.volume.hu) and a.truth == b.truth
    assert not np.array_equal(a.volume.hu, c.volume.hu)
    assert np.array_equal(host.volume.hu, before)  # the host is not modified


def test_real_host(val_source):
    real = real_host(shared_path("ct", "chest_ct_crop_1p5mm.nii.gz"))
    composite = compose(real.volume, real.lung_mask, val_source, CompositeConfig(n_nodules=4, seed=2))
    assert len(composite.truth) == 4 and composite.volume.hu.dtype == real.volume.hu.dtype
    for truth, mask in zip(composite.truth, composite.masks):
        labels = _mask_array(mask, real.volume.shape_zyx)
        assert (real.lung_mask[labels] > 0).all()
        assert composite.volume.hu[labels].mean() > real.volume.hu[labels].mean() + 100


def _small_set(host, source, n=2):
    out = []
    for i in range(n):
        c = _compose(host, source, n_nodules=2, seed=i)
        out.append(Composite(f"case-{i}", c.volume, c.truth, c.masks, host.name, c.config))
    return out


def test_write_composite_set(tmp_path, host, val_source):
    cases = _small_set(host, val_source)
    out = write_composite_set(tmp_path / "set", iter(cases))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folder left
    assert {p.name for p in out.iterdir()} == {"case-0.nii.gz", "case-1.nii.gz", "masks", "annotations.csv",
                                               "seriesuids.csv", "truth.json", ".lunglesionai-manifest.json"}
    annotations = read_annotations(out / "annotations.csv")
    assert read_seriesuids(out / "seriesuids.csv") == ["case-0", "case-1"]
    for case in cases:
        table = annotations[case.case_id]
        assert np.allclose(table[:, :3], [t["center_lps_mm"] for t in case.truth])
        assert np.allclose(table[:, 3], [t["diameter_mm"] for t in case.truth])
    document = json.loads((out / "truth.json").read_text())
    assert document["schema"] == COMPOSITES_SCHEMA_ID and "Not clinical" in document["note"]
    assert document["cases"]["case-1"]["nodules"] == json.loads(json.dumps(cases[1].truth))
    from lunglesionai.io.ct_files import load_volume

    assert np.array_equal(load_volume(out / "case-0.nii.gz").hu, cases[0].volume.hu)
    with pytest.raises(FileExistsError):
        write_composite_set(out, cases)


def test_write_composite_set_is_atomic(tmp_path, host, val_source):
    cases = _small_set(host, val_source, n=1)

    def failing():
        yield cases[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_composite_set(tmp_path / "set", failing())
    assert list(tmp_path.iterdir()) == []
    write_composite_set(tmp_path / "set", cases)
    with pytest.raises(ValueError, match="repeated"):
        write_composite_set(tmp_path / "set", cases + cases, overwrite=True)
    assert read_seriesuids(tmp_path / "set" / "seriesuids.csv") == ["case-0"]  # the old set is intact
    renamed = [Composite("other", c.volume, c.truth, c.masks) for c in cases]
    write_composite_set(tmp_path / "set", renamed, overwrite=True)
    assert read_seriesuids(tmp_path / "set" / "seriesuids.csv") == ["other"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_make_composites_cli(tmp_path, lidc_dir):
    parser = argparse.ArgumentParser()
    add_make_composites_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-composites", "--out", str(tmp_path / "c"), "--lidc", str(lidc_dir), "--split",
                              "val", "--n-cases", "1", "--host", "phantom", "--phantom-preset", "small", "--seed", "3",
                              "--n-nodules", "2"])
    assert args.func(args) == 0
    (uid,) = read_seriesuids(tmp_path / "c" / "seriesuids.csv")
    assert uid == "composite-val-3-000-phantom"
    annotations = read_annotations(tmp_path / "c" / "annotations.csv")[uid]
    truth = json.loads((tmp_path / "c" / "truth.json").read_text())["cases"][uid]["nodules"]
    assert len(annotations) == len(truth) == 2 + sum(t["origin"] == "phantom" for t in truth)
