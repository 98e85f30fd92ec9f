"""Tests of lesion appearance borrowed from real tissue: host residual texture and necrotic centres."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.core.volume import Volume
from lunglesionai.datagen.lesion_appearance import (
    NECROSIS_HU_RANGE,
    LesionAppearance,
    draw_necrosis,
    residual_patch,
    tissue_residual,
)
from lunglesionai.datagen.synthetic_lesions import LesionClass, draw_lesion_spec, paint_lesion


def _host(noise_sd: float = 15.0, seed: int = 0):
    """(20, 64, 64) 1-mm grid: left half 50 HU tissue with white noise, right half -1000 HU air."""
    rng = np.random.default_rng(seed)
    hu = np.full((20, 64, 64), -1000.0, np.float32)
    hu[:, :, :32] = 50.0 + rng.normal(0.0, noise_sd, (20, 64, 32))
    return hu


def test_residual_is_the_hosts_noise_in_homogeneous_tissue():
    hu = _host(15.0)
    residual, valid = tissue_residual(hu, hu > -500, (1.0, 1.0, 1.0))
    assert residual.shape == hu.shape and valid[:, :, :28].mean() > 0.3 and not valid[:, :, 36:].any()
    assert 10.0 < residual[valid].std() < 16.0  # most of the white noise survives the 1.5 mm high-pass
    quiet, _ = tissue_residual(_host(3.0), hu > -500, (1.0, 1.0, 1.0))
    assert quiet[valid].std() < 0.3 * residual[valid].std()  # it follows the host, not a fixed level
    with pytest.raises(ValueError, match="shape"):
        tissue_residual(hu, np.ones((2, 2, 2), bool), (1.0, 1.0, 1.0))


def test_residual_patch_comes_from_tissue_or_not_at_all():
    hu = _host(15.0)
    residual, valid = tissue_residual(hu, hu > -500, (1.0, 1.0, 1.0))
    patch = residual_patch(residual, valid, (8, 16, 16), np.random.default_rng(1))
    assert patch is not None and patch.shape == (8, 16, 16) and patch.std() > 5.0
    assert residual_patch(residual, np.zeros_like(valid), (8, 16, 16), np.random.default_rng(1)) is None
    assert residual_patch(residual, valid, (30, 16, 16), np.random.default_rng(1)) is None  # larger than the host


def test_necrosis_only_for_large_lesions_of_necrotic_classes():
    rng = np.random.default_rng(0)
    always = LesionAppearance(necrosis_probability=1.0)
    core = draw_necrosis("liver_metastasis", 30.0, always, rng)
    assert core is not None and NECROSIS_HU_RANGE[0] <= core[1] <= NECROSIS_HU_RANGE[1] and 0 < core[0] < 1
    assert draw_necrosis("liver_metastasis", 12.0, always, rng) is None  # too small
    assert draw_necrosis("liver_cyst", 30.0, always, rng) is None  # cysts are fluid already
    assert draw_necrosis("liver_metastasis", 30.0, LesionAppearance(necrosis_probability=0.0), rng) is None
    assert draw_necrosis("liver_metastasis", 30.0, None, rng) is None
    with pytest.raises(ValueError, match="necrosis_probability"):
        LesionAppearance(necrosis_probability=1.5)


def test_painted_lesion_has_a_dark_core_and_the_hosts_grain():
    hu = np.full((30, 60, 60), 60.0, np.float32)
    hu += np.random.default_rng(3).normal(0.0, 12.0, hu.shape).astype(np.float32)
    volume = Volume(hu.copy(), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    cls = LesionClass("mass", "soft tissue", "body_wall", (24.0, 24.0), (1.0, 1.0), (50.0, 50.0), 0.0, 0.0, 0.0)
    spec = draw_lesion_spec(cls, np.random.default_rng(0))
    residual = tissue_residual(hu, np.ones(hu.shape, bool), (1.0, 1.0, 1.0))
    plain, necrotic = hu.copy(), hu.copy()
    centre = np.array([15.0, 30.0, 30.0])
    paint_lesion(plain, volume, spec, centre, np.random.default_rng(1), noise_hu=0.0, residual=residual)
    paint_lesion(necrotic, volume, spec, centre, np.random.default_rng(1), noise_hu=0.0, residual=residual,
                 necrosis=(0.5, 10.0))
    inner = (slice(13, 18), slice(28, 33), slice(28, 33))
    assert abs(float(plain[inner].mean()) - 50.0) < 6.0 and abs(float(necrotic[inner].mean()) - 10.0) < 8.0
    rim = (15, 30, slice(40, 41))  # 10 mm from the centre: outside the 6-mm core, inside the 12-mm lesion
    assert abs(float(necrotic[rim].mean()) - 50.0) < 25.0
    assert 6.0 < float(plain[10:20, 25:35, 25:35].std()) < 20.0  # the host's 12 HU grain, not a flat fill
