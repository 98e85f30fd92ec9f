"""Tests of the phantom's infection-like opacities (lunglesionai.synth.opacities): patchy ground glass and
consolidation, which are not nodules."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from lunglesionai.synth import PhantomConfig, make_phantom
from lunglesionai.synth.opacities import CONSOLIDATION, EDGE_REACH, GROUND_GLASS, SIZE_SCALE_RANGE

#: sha256 of hu, lung_mask and vessel_mask bytes of ``make_phantom(PhantomConfig.small(seed=0))``, recorded before
#: the opacities existed (numpy 2 / scipy as pinned in requirements, x86-64 with numpy's AVX2 dispatch): a phantom
#: without them must not change.
SMALL_SEED0_SHA256 = "0db97ba73da8d4b16a8a9aa3d72fda73d194b68642dd90e0696712752e1b5668"
#: numpy's dispatch targets above AVX2 (numpy 2.4 names). Their SIMD transcendental functions round a few last bits
#: differently, which moves a few HU by one on an AVX-512 machine (the masks do not change); the digest is therefore
#: taken in a child process with them disabled (``NPY_DISABLE_CPU_FEATURES``), as the hash was recorded.
ABOVE_AVX2 = "X86_V4 AVX512_ICL AVX512_SPR"
_DIGEST_SCRIPT = """
import hashlib, numpy as np
from numpy._core._multiarray_umath import __cpu_features__
from lunglesionai.synth import PhantomConfig, make_phantom
if not __cpu_features__.get("AVX2"):
    print("no-avx2")
else:
    p = make_phantom(PhantomConfig.small(seed=0, ground_glass_patches=0, consolidations=0))
    h = hashlib.sha256()
    for array in (p.volume.hu, p.lung_mask, p.vessel_mask):
        h.update(np.ascontiguousarray(array).tobytes())
    print(h.hexdigest())
"""
NOISE_SD_HU = 25.0  # the small preset's noise


@pytest.fixture(scope="module")
def plain():
    return make_phantom(PhantomConfig.small(seed=0, ground_glass_patches=0, consolidations=0))


@pytest.fixture(scope="module")
def infected():
    return make_phantom(PhantomConfig.small(seed=0, ground_glass_patches=3, consolidations=2))


def _full(mask, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    mask.paste_into(out, 1)
    return out.astype(bool)


def test_without_opacities_the_phantom_is_unchanged_bit_for_bit(plain):
    assert plain.opacities == [] and not plain.opacity_mask().any() and plain.opacity_table() == []
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the phantom's hash was recorded on x86-64; this is {platform.machine()}")
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=ABOVE_AVX2)
    digest = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT], env=env, capture_output=True, text=True,
                            check=True).stdout.strip()
    if digest == "no-avx2":
        pytest.skip("the phantom's hash was recorded with numpy's AVX2 dispatch; this CPU has no AVX2")
    assert digest == SMALL_SEED0_SHA256


def test_opacities_change_nothing_else(plain, infected):
    assert [n.to_dict() for n in infected.nodules] == [n.to_dict() for n in plain.nodules]
    assert np.array_equal(infected.lung_mask, plain.lung_mask)
    assert np.array_equal(infected.vessel_mask, plain.vessel_mask)
    spacing_zyx = infected.volume.spacing_mm[::-1]
    distance = ndimage.distance_transform_edt(~infected.opacity_mask(), sampling=spacing_zyx)
    reach = distance <= EDGE_REACH * GROUND_GLASS.edge_mm + max(spacing_zyx)  # the soft edge, nothing farther
    assert np.array_equal(infected.volume.hu[~reach], plain.volume.hu[~reach])
    assert not np.array_equal(infected.volume.hu, plain.volume.hu)


def test_kinds_ids_and_table(infected):
    ids = [o.id for o in infected.opacities]
    assert ids == ["GGO1", "GGO2", "GGO3", "CON1", "CON2"]
    assert [o.kind for o in infected.opacities] == ["ground-glass"] * 3 + ["consolidation"] * 2
    table = json.loads(json.dumps(infected.opacity_table()))
    assert [row["id"] for row in table] == ids and {"center_lps_mm", "extent_mm", "subpleural"} <= set(table[0])
    assert {o.lung for o in infected.opacities} == {"right", "left"}  # alternating lungs


def _interior(phantom, opacity) -> np.ndarray:
    """HU of the opacity's voxels 2 voxels in from its edge, off vessels and air bronchograms."""
    shape = phantom.volume.shape_zyx
    inner = ndimage.binary_erosion(_full(opacity.mask, shape), iterations=2)
    inner &= ~ndimage.binary_dilation(phantom.vessel_mask, iterations=1)
    values = phantom.volume.hu[inner].astype(float)
    assert values.size > 20, f"{opacity.id}: too few interior voxels"
    return values[values > -800] if opacity.kind == "consolidation" else values


@pytest.mark.parametrize("style", [GROUND_GLASS, CONSOLIDATION], ids=lambda s: s.kind)
def test_hu_in_the_asked_range(infected, style):
    found = [o for o in infected.opacities if o.kind == style.kind]
    assert found
    lo, hi = style.hu_range
    for o in found:
        values = _interior(infected, o)
        assert lo <= float(np.median(values)) <= hi, o.id
        p5, p95 = np.percentile(values, [5, 95])
        assert lo - 2.5 * NOISE_SD_HU <= p5 and p95 <= hi + 2.5 * NOISE_SD_HU, o.id


@pytest.mark.parametrize("style", [GROUND_GLASS, CONSOLIDATION], ids=lambda s: s.kind)
def test_size_is_the_asked_one(infected, style):
    scale = float(np.clip(infected.anatomy.scale, *SIZE_SCALE_RANGE))
    for o in (o for o in infected.opacities if o.kind == style.kind):
        assert style.size_range_mm[0] * scale <= o.nominal_size_mm <= style.size_range_mm[1] * scale
        assert 0.5 * o.nominal_size_mm <= max(o.extent_mm) <= 2.5 * o.nominal_size_mm, o.id
        assert o.volume_mm3 > 0.02 * o.nominal_size_mm**3, o.id  # a patch, not a sliver


def test_adult_ground_glass_spans_centimetres():
    # an adult-size chest (body 340 mm) on a short, coarse z field of view keeps this quick
    p = make_phantom(PhantomConfig(shape_zyx=(24, 280, 400), spacing_mm=(0.9, 0.9, 2.5), body_width_mm=340.0,
                                   n_nodules=0, ground_glass_patches=2, supersample=1, vessel_leaves_per_tree=40))
    assert len(p.opacities) == 2
    for o in p.opacities:
        assert GROUND_GLASS.size_range_mm[0] <= o.nominal_size_mm <= GROUND_GLASS.size_range_mm[1]
        assert max(o.extent_mm[:2]) >= 25.0, o.to_dict()  # several centimetres in-plane


def test_mostly_subpleural_and_the_flag_is_true(infected):
    shape = infected.volume.shape_zyx
    flags = []
    for o in infected.opacities:
        label = 1 if o.lung == "right" else 2
        touches = ndimage.binary_dilation(_full(o.mask, shape)) & (infected.lung_mask != label)
        assert o.subpleural == bool(touches.any()), o.id
        assert np.all(infected.lung_mask[_full(o.mask, shape)] == label), o.id  # inside its own lung
        flags.append(o.subpleural)
    assert sum(flags) >= 0.5 * len(flags)


def test_never_overlap_the_nodules(infected):
    shape = infected.volume.shape_zyx
    nodules = np.zeros(shape, bool)
    for n in infected.nodules:
        nodules |= _full(n.mask, shape)
    grown = ndimage.binary_dilation(infected.opacity_mask(), iterations=2)
    assert nodules.any() and not (grown & nodules).any()


def test_vessels_show_through_ground_glass_and_bronchograms_hold_air(infected):
    shape = infected.volume.shape_zyx
    hu = infected.volume.hu
    vessels_in_ggo = [hu[_full(o.mask, shape) & infected.vessel_mask] for o in infected.opacities
                      if o.kind == "ground-glass"]
    vessels_in_ggo = np.concatenate(vessels_in_ggo)
    assert vessels_in_ggo.size > 0 and np.median(vessels_in_ggo) > -300  # denser than the −750…−450 haze
    with_air = [o for o in infected.opacities if o.air_bronchograms]
    assert with_air
    for o in with_air:
        assert np.sum(hu[_full(o.mask, shape)] < -700) >= 3, o.id


@pytest.mark.parametrize("field, value", [("ground_glass_patches", -1), ("consolidations", 13),
                                          ("ground_glass_patches", 1.5), ("consolidations", True)])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=f"PhantomConfig.{field} must"):
        PhantomConfig.small(**{field: value})
