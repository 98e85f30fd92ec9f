"""Tests of the DeepLesion loader and the DeepLesion-protocol metric on a tiny folder built here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lunglesionai.app.evaluate_commands import add_evaluate_uld_parser
from lunglesionai.datasets.deeplesion import (
    PNG_HU_OFFSET,
    DeepLesionError,
    key_images,
    load_key_slab,
    load_slice_hu,
    read_dl_info,
)
from lunglesionai.evaluation.deeplesion_protocol import (
    ImageDetections,
    match_images,
    uld_metrics,
)
from lunglesionai.nets.mp3d import ULDConfig

COLUMNS = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
           "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
           "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
           "Patient_age", "Train_Val_Test"]
SQUARE = (30, 20, 41, 29)  # x0, y0, x1, y1 (inclusive pixels) of a 500 HU square on slices 104–106
CONFIG = ULDConfig(n_slices=5, z_kernels=(3, 1, 1, 1), channels=(8, 8, 8, 8), fpn_channels=16, pixel_spacing_mm=1.4,
                   base_anchor_shapes=((6, 6),))


def _write_png(path: Path, hu: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((hu + PNG_HU_OFFSET).astype(np.uint16)).save(path)  # 16-bit grey PNG


def _row(name, key, box, kind, slice_range, spacing, split):
    values = {c: "" for c in COLUMNS}
    values.update(File_name=name, Key_slice_index=str(key), Bounding_boxes=", ".join(map(str, box)),
                  Coarse_lesion_type=str(kind), Slice_range=f"{slice_range[0]}, {slice_range[1]}",
                  Spacing_mm_px_=", ".join(map(str, spacing)), Train_Val_Test=str(split))
    return values


@pytest.fixture
def deeplesion(tmp_path):
    """Two series: 000001_01_01 (slices 100–110, 0.7 mm pixels, 2.5 mm apart) with the square on 104–106, two
    annotated lesions on key slice 105 (test split); 000002_01_01 (slices 10–14), one lesion (validation)."""
    for index in range(100, 111):
        hu = np.full((64, 64), 40, np.int32)
        hu[0, 0], hu[0, 1] = -1000, 3000
        if 104 <= index <= 106:
            x0, y0, x1, y1 = SQUARE
            hu[y0:y1 + 1, x0:x1 + 1] = 500
        _write_png(tmp_path / "Images_png" / "000001_01_01" / f"{index:03d}.png", hu)
    for index in range(10, 15):
        _write_png(tmp_path / "Images_png" / "000002_01_01" / f"{index:03d}.png", np.zeros((48, 48), np.int32))
    rows = [_row("000001_01_01_105.png", 105, SQUARE, 4, (100, 110), (0.7, 0.7, 2.5), 3),
            _row("000001_01_01_105.png", 105, (5, 5, 12, 14), 1, (100, 110), (0.7, 0.7, 2.5), 3),
            _row("000002_01_01_012.png", 12, (3.5, 4, 20, 22.5), -1, (10, 14), (0.8, 0.8, 5.0), 2)]
    with (tmp_path / "DL_info.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def test_table_and_slices_are_read(deeplesion):
    records = read_dl_info(deeplesion / "DL_info.csv")
    assert [r.folder for r in records] == ["000001_01_01", "000001_01_01", "000002_01_01"]
    assert [r.lesion_type for r in records] == ["liver", "bone", None]  # codes 4, 1, −1
    assert records[2].spacing_mm == (0.8, 0.8, 5.0) and records[2].slice_range == (10, 14)
    np.testing.assert_allclose(records[0].box_edges, [29.5, 19.5, 41.5, 29.5])
    assert [len(g) for g in key_images(records)] == [2, 1]
    assert [r.split for r in read_dl_info(deeplesion / "DL_info.csv", split=2)] == [2]
    hu = load_slice_hu(deeplesion, "000001_01_01", 105)
    assert hu.dtype == np.float32 and hu[0, 0] == -1000 and hu[0, 1] == 3000 and hu[25, 35] == 500 and hu[5, 5] == 40


def test_key_slab_maps_back_to_the_png_frame(deeplesion):
    group = key_images(read_dl_info(deeplesion / "DL_info.csv", split=3))[0]
    slab = load_key_slab(deeplesion, group, CONFIG)
    n = CONFIG.n_slices
    assert slab.image.shape[0] == 2 * n and slab.image.shape[1] % 32 == 0 and slab.image.shape[2] % 32 == 0
    assert slab.scale == pytest.approx((2.0, 2.0))  # 1.4 mm slab pixels over 0.7 mm PNG pixels
    centre = slab.image[n // 2]  # wide window, centre slice, (X, Y)
    xs, ys = np.nonzero(centre[1:, 1:] > 0.6)  # 500 HU → 0.74 in (−1024, 1024); 40 HU → 0.52; skip the corner
    xs, ys = xs + 1, ys + 1  # (its 3000 HU test pixel)
    bright = slab.to_original(np.array([[xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5]]))[0]
    np.testing.assert_allclose(bright, group[0].box_edges, atol=2.5)  # within about one slab pixel
    # slices ±2 of 2 mm from the key slice sit 4 mm = 1.6 stored slices away: 103.4 and 106.6, which mix the
    # square (104–106) with the plain slices 103 and 107 in the proportions 0.4 / 0.6
    outer = slab.image[0][xs.min():xs.max() + 1, ys.min():ys.max() + 1].mean()
    assert 0.52 < outer < centre[xs.min():xs.max() + 1, ys.min():ys.max() + 1].mean()


def test_bad_tables_and_images_are_named(deeplesion, tmp_path):
    table = deeplesion / "DL_info.csv"
    broken = tmp_path / "broken.csv"
    broken.write_text(table.read_text().replace("Bounding_boxes", "Boxes"))
    with pytest.raises(DeepLesionError, match="missing column"):
        read_dl_info(broken)
    broken.write_text(table.read_text().replace("000002_01_01_012.png", "scan.png"))
    with pytest.raises(DeepLesionError, match="row 3, column File_name"):
        read_dl_info(broken)
    with pytest.raises(DeepLesionError, match="Train_Val_Test == 1"):
        read_dl_info(table, split=1)
    with pytest.raises(DeepLesionError, match="slice missing"):
        load_slice_hu(deeplesion, "000001_01_01", 99)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(deeplesion / "Images_png" / "000002_01_01" / "013.png")
    with pytest.raises(DeepLesionError, match="16-bit"):
        load_slice_hu(deeplesion, "000002_01_01", 13)


def test_sensitivity_at_fp_by_hand():
    """Four images, four lesions; the expected numbers are derived from the construction, not from a run."""
    lesion = [0.0, 0.0, 10.0, 10.0]
    hit = [0.0, 0.0, 10.0, 20.0]  # IoU exactly 0.5 with ``lesion``: a hit (>=)
    miss = [0.0, 0.0, 10.0, 21.0]  # IoU 100/210 < 0.5: a false positive
    far = [50.0, 50.0, 60.0, 60.0]
    images = [
        ImageDetections("A", [hit, far], [0.9, 0.8], [lesion], ("liver",)),  # hit 0.9, FP 0.8
        ImageDetections("B", [miss, lesion], [0.95, 0.6], [lesion], ("lung",)),  # FP 0.95, hit 0.6
        ImageDetections("C", [lesion, lesion, far], [0.7, 0.65, 0.3], [lesion, far], ("liver", "bone")),
        ImageDetections("D", [far, far], [0.5, 0.4], np.zeros((0, 4))),  # no lesion: two FPs
    ]
    # In score order: 0.95 FP(1) · 0.9 hit(1) · 0.8 FP(2) · 0.7 hit(2) · 0.65 duplicate of C's first lesion, no FP
    # · 0.6 hit(3) · 0.5 FP(3) · 0.4 FP(4) · 0.3 hit(4). Four images, so FPs/image = FPs / 4.
    # 0.5 FP/image allows 2 FPs: the lowest such threshold is 0.6 → 3 hits of 4.
    # 1, 2 and 4 FPs/image allow 4 FPs: threshold 0.3 → 4 of 4.
    expected = {"0.5": 3 / 4, "1": 1.0, "2": 1.0, "4": 1.0}
    metrics = uld_metrics(images)
    assert metrics["sensitivity_at_fp"] == pytest.approx(expected)
    assert metrics["mean_sensitivity"] == pytest.approx(np.mean(list(expected.values())))
    assert metrics["n_images"] == 4 and metrics["n_lesions"] == 4 and metrics["n_boxes"] == 9
    # per type at threshold 0.6: both liver lesions (0.9, 0.7) and the lung lesion (0.6) hit; bone only at 0.3
    assert metrics["per_type"]["liver"]["sensitivity_at_fp"]["0.5"] == 1.0
    assert metrics["per_type"]["lung"]["sensitivity_at_fp"]["0.5"] == 1.0
    assert metrics["per_type"]["bone"]["sensitivity_at_fp"] == pytest.approx({"0.5": 0.0, "1": 1.0, "2": 1.0,
                                                                               "4": 1.0})
    assert metrics["score_at_fp"]["0.5"] == pytest.approx(0.6) and metrics["score_at_fp"]["1"] == pytest.approx(0.3)
    matching = match_images(images)
    assert matching.false_positives[-1] == 4 and matching.hits[-1] == 4


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="no image"):
        uld_metrics([])
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        ImageDetections("x", np.zeros((2, 4)), [0.5], np.zeros((0, 4)))


def test_evaluate_uld_command_writes_metrics(deeplesion, tmp_path):
    import argparse

    from lunglesionai.nets.model_store import save_model
    from lunglesionai.nets.mp3d import build_uld_detector
    from lunglesionai.stages.universal_lesions.detector import ULD_FORMAT, WEIGHTS_FILE

    torch.manual_seed(0)
    save_model(tmp_path / "model", build_uld_detector(CONFIG).network.state_dict(), WEIGHTS_FILE,
               {"format": ULD_FORMAT, "network": CONFIG.to_dict()})
    parser = argparse.ArgumentParser()
    add_evaluate_uld_parser(parser.add_subparsers(dest="dataset"))
    out = tmp_path / "metrics.json"
    args = parser.parse_args(["uld", "--data", str(deeplesion), "--info", str(deeplesion / "DL_info.csv"),
                              "--out", str(out), "--model", str(tmp_path / "model"), "--split", "3"])
    assert args.func(args) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics["sensitivity_at_fp"]) == {"0.5", "1", "2", "4"} and "mean_sensitivity" in metrics
    assert metrics["n_images"] == 1 and metrics["n_lesions"] == 2 and metrics["split"] == 3
    assert set(metrics["per_type"]) == {"liver", "bone"} and metrics["model"]["version"] == ULD_FORMAT


def test_key_slab_mode_follows_the_stored_slices(deeplesion):
    group = key_images(read_dl_info(deeplesion / "DL_info.csv", split=3))[0]
    full = load_key_slab(deeplesion, group, CONFIG)
    assert full.mode == "3d-context"
    forced = load_key_slab(deeplesion, group, CONFIG, "key-slice")
    n = CONFIG.n_slices
    assert forced.mode == "key-slice"
    for c in range(len(CONFIG.hu_windows)):  # every slab slice is the key slice
        channels = forced.image[c * n:(c + 1) * n]
        assert np.array_equal(channels, np.repeat(channels[n // 2][None], n, axis=0))
        assert not np.array_equal(full.image[c * n], full.image[c * n + n // 2])  # context differs (slice 100 vs 105)
    for index in (100, 101, 102, 103, 107, 108, 109, 110):  # keep only the key slice and its touching neighbours
        (deeplesion / "Images_png" / "000001_01_01" / f"{index:03d}.png").unlink()
    auto = load_key_slab(deeplesion, group, CONFIG)
    assert auto.mode == "key-slice" and np.array_equal(auto.image, forced.image)
    with pytest.raises(DeepLesionError, match="missing"):
        load_key_slab(deeplesion, group, CONFIG, "3d-context")
    with pytest.raises(ValueError, match="slab mode"):
        load_key_slab(deeplesion, group, CONFIG, "2d")
