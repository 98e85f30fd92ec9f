"""Tests of lunglesionai.datagen.scanner_augmentation on small synthetic volumes (exact geometry, known HU)."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.datagen.scanner_augmentation import (
    VESSEL_HU_RANGE,
    ScannerAugmentation,
    augment_scan,
    map_points_kji,
    vessel_region,
)

LUNG_HU, TISSUE_HU = -850.0, 40.0
#: Every step off: each test switches on the one it checks.
NOTHING = ScannerAugmentation(kernel_probability=0, noise_probability=0, thickness_probability=0,
                              in_plane_probability=0, contrast_probability=0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # i → R, j → A: data stored as RAS-ordered rows


def _only(**changes) -> ScannerAugmentation:
    return ScannerAugmentation(**{**NOTHING.__dict__, **changes})


def _flat(shape=(40, 48, 48), spacing=(0.7, 0.7, 1.25), hu=LUNG_HU, direction=None) -> Volume:
    return Volume(np.full(shape, hu, np.float32), spacing, (-12.0, 30.0, -250.0),
                  direction or (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _world(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS x, y, z (mm) of every voxel centre, each (Z, Y, X)."""
    kji = np.stack(np.meshgrid(*(np.arange(n) for n in volume.shape_zyx), indexing="ij"), -1).reshape(-1, 3)
    lps = volume.kji_to_lps(kji).reshape(*volume.shape_zyx, 3)
    return lps[..., 0], lps[..., 1], lps[..., 2]


def _blob(volume: Volume, center_lps, sigma_mm: float = 2.0, peak: float = 900.0) -> Volume:
    x, y, z = _world(volume)
    d2 = (x - center_lps[0]) ** 2 + (y - center_lps[1]) ** 2 + (z - center_lps[2]) ** 2
    return volume.with_array((volume.hu + peak * np.exp(-0.5 * d2 / sigma_mm**2)).astype(np.float32))


def _centroid_lps(volume: Volume, background: float = LUNG_HU) -> np.ndarray:
    w = np.clip(volume.hu - background, 0, None).astype(float)
    kji = np.argwhere(np.ones(volume.shape_zyx, bool))
    centre_kji = (kji * w.reshape(-1, 1)).sum(axis=0) / w.sum()
    return volume.kji_to_lps(centre_kji[None])[0]


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("direction", [None, FLIPPED])
@pytest.mark.parametrize(
    "changes, spacing_xyz",
    [  # resampling in z (5 mm thick, 3 mm apart), in-plane (0.9 mm), both, and a finer pixel (0.6 mm)
        ({"thickness_probability": 1, "slice_thickness_mm_range": (5.0, 5.0), "slice_overlap_range": (0.6, 0.6)},
         (0.7, 0.7, 3.0)),
        ({"in_plane_probability": 1, "in_plane_pixel_mm_range": (0.9, 0.9)}, (0.9, 0.9, 1.25)),
        ({"in_plane_probability": 1, "in_plane_pixel_mm_range": (0.6, 0.6), "thickness_probability": 1,
          "slice_thickness_mm_range": (2.0, 2.0), "slice_overlap_range": (1.0, 1.0)}, (0.6, 0.6, 2.0)),
    ],
)
def test_resampling_keeps_lps_geometry(changes, spacing_xyz, direction):
    point = (-3.3, 41.7, -226.1)  # LPS mm, between voxel centres
    vol = _blob(_flat(direction=direction), point if direction is None else _mirror(point))
    truth = point if direction is None else _mirror(point)
    out, mask, params = augment_scan(vol, np.ones(vol.shape_zyx, np.uint8), np.random.default_rng(0),
                                     _only(**changes))
    assert out.spacing_mm == pytest.approx(spacing_xyz)
    assert out.origin_lps_mm == vol.origin_lps_mm and out.direction == vol.direction
    extent_in = (np.asarray(vol.shape_zyx[::-1]) - 1) * vol.spacing_mm
    extent_out = (np.asarray(out.shape_zyx[::-1]) - 1) * np.asarray(out.spacing_mm)
    assert np.all(extent_out <= extent_in + 1e-6) and np.all(extent_out > extent_in - np.asarray(out.spacing_mm))
    assert mask.shape == out.shape_zyx and mask.dtype == np.uint8 and mask.all()
    assert params["shape_zyx"] == list(out.shape_zyx) and params["spacing_mm"] == pytest.approx(spacing_xyz)
    assert _centroid_lps(out) == pytest.approx(truth, abs=0.15)  # same anatomy at the same LPS point
    kji = map_points_kji(truth, out)[0]
    assert np.linalg.norm(out.kji_to_lps(kji[None])[0] - truth) < 1e-9
    assert out.hu[tuple(np.round(kji).astype(int))] > 0.5 * (out.hu.max() + LUNG_HU)  # the blob is where it maps


def _mirror(point):
    """A point inside the flipped test volume (its x and y run the other way from the origin)."""
    return (-12.0 - (point[0] + 12.0), 30.0 - (point[1] - 30.0), point[2])


def test_crop_to_lungs_keeps_world_positions():
    vol = _blob(_flat(), (-3.3, 41.7, -226.1))
    lung = np.zeros(vol.shape_zyx, np.uint8)
    lung[10:30, 12:40, 8:30] = 2
    out, mask, params = augment_scan(vol, lung, np.random.default_rng(0), _only(crop_to_lungs_margin_mm=1.5))
    offset = np.array(params["crop_offset_kji"])
    assert offset.tolist() == [8, 9, 5]  # at least 1.5 mm: 2 slices of 1.25 mm, 3 pixels of 0.7 mm
    assert out.origin_lps_mm == pytest.approx(tuple(vol.kji_to_lps(offset[None])[0]))
    assert out.shape_zyx == (24, 34, 28) and set(np.unique(mask)) == {0, 2}
    assert _centroid_lps(out) == pytest.approx((-3.3, 41.7, -226.1), abs=0.05)


# ---------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("correlation_mm, min_neighbour_corr", [(None, -0.05), (0.7, 0.3)])
def test_noise_sd_is_the_requested_one(correlation_mm, min_neighbour_corr):
    vol = _flat(shape=(30, 64, 64))
    cfg = _only(noise_probability=1, noise_sd_hu_range=(22.0, 22.0),
                noise_correlation_probability=0.0 if correlation_mm is None else 1.0,
                noise_correlation_mm_range=(correlation_mm or 0.5,) * 2)
    out, _, params = augment_scan(vol, np.ones(vol.shape_zyx, bool), np.random.default_rng(3), cfg)
    noise = out.hu - LUNG_HU
    assert params["noise_sd_hu"] == 22.0 and params["noise_correlation_mm"] == correlation_mm
    assert float(noise.std()) == pytest.approx(22.0, rel=0.04)
    assert abs(float(noise.mean())) < 1.0
    corr = float(np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1])
    assert corr > min_neighbour_corr and (correlation_mm is not None or corr < 0.05)


# ---------------------------------------------------------------------------------------------- kernel
def _edge_volume() -> Volume:
    vol = _flat(shape=(12, 32, 64), spacing=(0.7, 0.7, 1.0))
    hu = vol.hu.copy()
    hu[:, :, 32:] = TISSUE_HU  # an edge along x
    hu[6:] += 100.0  # and one along z
    return vol.with_array(hu)


def test_smooth_kernel_blurs_in_plane_only():
    vol = _edge_volume()
    cfg = _only(kernel_probability=1, sharp_kernel_fraction=0.0, kernel_blur_sigma_mm_range=(1.0, 1.0))
    out, _, params = augment_scan(vol, np.ones(vol.shape_zyx, bool), np.random.default_rng(0), cfg)
    assert params["kernel"] == "smooth" and params["kernel_blur_sigma_mm"] == 1.0
    step_before = np.abs(np.diff(vol.hu, axis=2)).max()
    step_after = np.abs(np.diff(out.hu, axis=2)).max()
    assert step_after < 0.5 * step_before  # σ 1 mm spreads the edge over several 0.7 mm pixels
    assert np.abs(np.diff(out.hu, axis=0)).max() == pytest.approx(100.0, abs=1e-3)  # z untouched


def test_sharp_kernel_overshoots_at_edges():
    vol = _edge_volume()
    cfg = _only(kernel_probability=1, sharp_kernel_fraction=1.0, kernel_sharpen_amount_range=(1.0, 1.0))
    out, _, params = augment_scan(vol, np.ones(vol.shape_zyx, bool), np.random.default_rng(0), cfg)
    assert params["kernel"] == "sharp" and params["kernel_sharpen_amount"] == 1.0
    assert out.hu.max() > vol.hu.max() + 50 and out.hu.min() < vol.hu.min() - 50  # unsharp-mask over/undershoot
    assert np.abs(np.diff(out.hu, axis=2)).max() > np.abs(np.diff(vol.hu, axis=2)).max()


# ---------------------------------------------------------------------------------------------- slice thickness
def test_thickness_changes_the_slice_spacing_and_blurs_z():
    vol = _edge_volume()  # 12 slices of 1 mm, a 100 HU step between slices 5 and 6
    cfg = _only(thickness_probability=1, slice_thickness_mm_range=(5.0, 5.0), slice_overlap_range=(0.5, 0.5))
    out, mask, params = augment_scan(vol, np.ones(vol.shape_zyx, bool), np.random.default_rng(0), cfg)
    assert params["slice_thickness_mm"] == 5.0 and params["slice_spacing_mm"] == 2.5
    assert out.spacing_mm == pytest.approx((0.7, 0.7, 2.5)) and out.shape_zyx == (5, 32, 64)
    column = out.hu[:, 5, 10] - LUNG_HU  # z profile across the 100 HU step at z = 5.5 mm (slices at 0, 2.5, 5 … mm)
    # a Gaussian profile of FWHM 5 mm (σ 2.08 mm after the native 1 mm): 40 HU at z = 5 mm, 83 HU at 7.5 mm
    assert column[2] == pytest.approx(40.5, abs=3.0) and column[3] == pytest.approx(83.3, abs=3.0)
    assert np.all(np.diff(column) > 0)


def test_thickness_never_finer_than_the_native_slices():
    vol = _flat(shape=(16, 32, 32), spacing=(0.7, 0.7, 2.5))
    cfg = _only(thickness_probability=1, slice_thickness_mm_range=(1.0, 1.0))
    out, _, params = augment_scan(vol, np.ones(vol.shape_zyx, bool), np.random.default_rng(0), cfg)
    assert params["slice_thickness_mm"] == 2.5 and out.spacing_mm[2] == 2.5 and out.shape_zyx == vol.shape_zyx


# ---------------------------------------------------------------------------------------------- contrast
def _lungs_with_vessel_and_nodule():
    """Body of soft tissue, a lung box of −850 HU holding a 1.4 mm-radius tube and a 6 mm-radius nodule."""
    vol = _flat(shape=(40, 64, 64), spacing=(0.7, 0.7, 1.0), hu=TISSUE_HU)
    x, y, z = _world(vol)
    lung = np.zeros(vol.shape_zyx, np.uint8)
    lung[:, 8:56, 8:56] = 1
    hu = np.where(lung > 0, LUNG_HU, TISSUE_HU).astype(np.float32)
    cx, cy = vol.kji_to_lps([[0, 20, 20]])[0][:2]
    tube = (x - cx) ** 2 + (y - cy) ** 2 <= 1.4**2
    nodule_c = vol.kji_to_lps([[20, 40, 40]])[0]
    nodule = (x - nodule_c[0]) ** 2 + (y - nodule_c[1]) ** 2 + (z - nodule_c[2]) ** 2 <= 6.0**2
    hu[tube & (lung > 0)] = TISSUE_HU
    hu[nodule] = TISSUE_HU
    return vol.with_array(hu), lung, tube & (lung > 0), nodule


def test_contrast_shift_only_touches_vessels_in_the_lungs():
    vol, lung, tube, nodule = _lungs_with_vessel_and_nodule()
    cfg = _only(contrast_probability=1, vessel_shift_hu_range=(120.0, 120.0))
    out, _, params = augment_scan(vol, lung, np.random.default_rng(0), cfg)
    changed = out.hu != vol.hu
    region = vessel_region(vol.hu, lung, vol.spacing_mm) > 0
    assert params["vessel_shift_hu"] == 120.0 and params["vessel_voxels"] == int(tube.sum())
    assert changed.any() and not (changed & ~region).any() and not (changed & (lung == 0)).any()
    assert np.all(out.hu[tube] == pytest.approx(TISSUE_HU + 120.0))
    assert np.all(out.hu[nodule] == vol.hu[nodule])  # a blob wider than the size rule keeps its HU
    assert np.all(out.hu[lung == 0] == TISSUE_HU)  # the body and mediastinum are untouched


def test_contrast_shift_keeps_vessels_in_a_plausible_range_and_spares_protected_voxels():
    vol, lung, tube, _ = _lungs_with_vessel_and_nodule()
    cfg = _only(contrast_probability=1, vessel_shift_hu_range=(-150.0, -150.0))
    out, _, params = augment_scan(vol, lung, np.random.default_rng(0), cfg)
    assert params["vessel_shift_hu"] == pytest.approx(VESSEL_HU_RANGE[0] - TISSUE_HU)  # 40 HU blood → 0, not −110
    assert out.hu[tube].min() >= VESSEL_HU_RANGE[0]
    protect = np.zeros(vol.shape_zyx, bool)
    protect[:20] = True
    out2, _, _ = augment_scan(vol, lung, np.random.default_rng(0), cfg, protect_mask=protect)
    assert np.all(out2.hu[protect] == vol.hu[protect]) and np.any(out2.hu[~protect] != vol.hu[~protect])


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_result_other_seed_differs():
    vol, lung, _, _ = _lungs_with_vessel_and_nodule()
    cfg = ScannerAugmentation(kernel_probability=1, noise_probability=1, thickness_probability=1,
                              in_plane_probability=1, contrast_probability=1)
    a = augment_scan(vol, lung, np.random.default_rng(11), cfg)
    b = augment_scan(vol, lung, np.random.default_rng(11), cfg)
    c = augment_scan(vol, lung, np.random.default_rng(12), cfg)
    assert a[2] == b[2] and np.array_equal(a[0].hu, b[0].hu) and np.array_equal(a[1], b[1])
    assert a[2] != c[2]
    assert np.array_equal(vol.hu, _lungs_with_vessel_and_nodule()[0].hu)  # the input is not modified


def test_default_config_returns_json_ready_parameters():
    import json

    vol, lung, _, _ = _lungs_with_vessel_and_nodule()
    out, mask, params = augment_scan(vol, lung, np.random.default_rng(5))
    assert out.hu.dtype == np.float32 and mask.dtype == lung.dtype
    assert json.loads(json.dumps(params)) == params
    assert {"kernel", "noise_sd_hu", "slice_thickness_mm", "in_plane_pixel_mm", "vessel_shift_hu"} <= set(params)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"kernel_probability": 1.5}, "kernel_probability"),
        ({"contrast_probability": -0.1}, "contrast_probability"),
        ({"sharp_kernel_fraction": float("nan")}, "sharp_kernel_fraction"),
        ({"noise_sd_hu_range": (30.0, 10.0)}, "noise_sd_hu_range"),  # reversed
        ({"noise_sd_hu_range": (0.0, 500.0)}, "noise_sd_hu_range"),  # beyond the limit
        ({"slice_thickness_mm_range": (0.0, 5.0)}, "slice_thickness_mm_range"),
        ({"in_plane_pixel_mm_range": 0.8}, "in_plane_pixel_mm_range"),  # not a pair
        ({"kernel_blur_sigma_mm_range": (0.0, "1")}, "kernel_blur_sigma_mm_range"),
        ({"vessel_shift_hu_range": (-900.0, 0.0)}, "vessel_shift_hu_range"),
        ({"vessel_max_radius_mm": 0.0}, "vessel_max_radius_mm"),
        ({"vessel_threshold_hu": 5000.0}, "vessel_threshold_hu"),
        ({"crop_to_lungs_margin_mm": -1.0}, "crop_to_lungs_margin_mm"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=f"ScannerAugmentation.{field} must"):
        ScannerAugmentation(**changes)


def test_bad_masks_are_refused():
    vol = _flat(shape=(10, 16, 16))
    with pytest.raises(ValueError, match=r"lung_mask shape \(10, 16, 15\) differs"):
        augment_scan(vol, np.ones((10, 16, 15), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="protect_mask shape"):
        augment_scan(vol, np.ones(vol.shape_zyx, bool), np.random.default_rng(0), protect_mask=np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="lung mask .* is empty"):
        augment_scan(vol, np.zeros(vol.shape_zyx, bool), np.random.default_rng(0),
                     ScannerAugmentation(crop_to_lungs_margin_mm=5.0))
