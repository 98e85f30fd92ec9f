"""``make_phantom``: a procedural chest CT with exact ground truth (nodules, lungs, vessels).

Order of work: anatomy → coarse lung map → vessel trees, airways, ribs → nodule plan → opacity plan (only when
asked for) → background slices → tube layers (great vessels, pulmonary vessels, airway walls and lumens, rib
cortex and marrow) → infection-like opacities → nodules → correlated noise → int16. Each random part has its own
``numpy`` generator spawned from one ``SeedSequence`` (the config's seed), so the result is deterministic and, e.g.,
the number of nodules does not change the vessels, and adding opacities changes nothing else (a phantom without
them is bit for bit the one made before they existed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from lunglesionai.core.volume import Volume

from . import tissues as t
from .anatomy import Anatomy, build_anatomy
from .background import render_background
from .config import PhantomConfig
from .grid import Grid
from .lungs import build_lung_map
from .nodule_shapes import draw_nodule_specs
from .nodules import NoduleTruth, nodule_truth, paint_nodule, render_nodule
from .noise import correlated_noise_slabs, make_smooth_field
from .opacities import OPACITY_KINDS, OpacityTruth, opacity_truth, paint_opacity, plan_opacities, render_opacity
from .placement import place_nodules
from .structures import build_airways, build_great_vessels, build_ribs
from .tubes import OCCUPANCY_SCALE, Tubes, render_tubes
from .vessels import VesselTree, build_vessel_trees

__all__ = ["Phantom", "make_phantom"]

logger = logging.getLogger(__name__)

#: Random streams spawned from the seed, one per part of the phantom.
STREAMS = ("anatomy", "vessels", "airways", "nodules", "texture", "noise", "opacities")
#: Step of the lung's low-frequency texture at reference scale, mm.
LUNG_TEXTURE_STEP_MM = 9.0
#: Slices blended at a time when painting a tube layer.
PAINT_SLAB = 32
#: Largest nodule diameter as a fraction of the narrower lung's width.
NODULE_MAX_LUNG_FRACTION = 0.3
_HALF = OCCUPANCY_SCALE // 2 + 1  # uint8 occupancy >= this means >= 50 %


@dataclass(frozen=True)
class Phantom:
    """A synthetic chest CT and its ground truth.

    Args:
        volume: the CT (int16 HU, (Z, Y, X)), identity direction (i → L, j → P, k → S), centred on LPS 0.
        nodules: ground truth of every nodule, "GT1" (largest) first.
        lung_mask: (Z, Y, X) uint8, 1 = right lung (x < 0), 2 = left lung; intrapulmonary vessels, airways and
            nodules are part of the lung, the mediastinum, hilar vessels and great vessels are not.
        vessel_mask: (Z, Y, X) bool, the pulmonary vessel trees (with their hilar stems) filling >= 50 % of a voxel.
        config: the config that made it.
        vessel_trees: the four trees as tubes (right/left artery/vein), LPS mm.
        anatomy: the layout the phantom was drawn from (mm).
        opacities: infection-like opacities (patchy ground glass "GGO<n>", consolidation "CON<n>"), which are
            not nodules: use them as negatives and keep pasted nodules out of their masks
            (:meth:`opacity_mask`); empty unless the config asks for them.
    """

    volume: Volume
    nodules: list[NoduleTruth]
    lung_mask: np.ndarray
    vessel_mask: np.ndarray
    config: PhantomConfig
    vessel_trees: list[VesselTree]
    anatomy: Anatomy
    opacities: list[OpacityTruth] = field(default_factory=list)

    def opacity_mask(self) -> np.ndarray:
        """(Z, Y, X) bool union of the opacities' masks on the volume's grid (all False without opacities)."""
        out = np.zeros(self.volume.shape_zyx, dtype=np.uint8)
        for o in self.opacities:
            o.mask.paste_into(out, 1)
        return out.astype(bool)

    def opacity_table(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per opacity (no masks): id, kind, lung, center_lps_mm, volume_mm3, mean_hu,
        extent_mm, nominal_size_mm, subpleural, air_bronchograms, mask_voxels, mask_offset_kji."""
        return [o.to_dict() for o in self.opacities]

    def truth_table(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per nodule (no masks): id, center_lps_mm, diameter_mm, texture, attachment, shape,
        mean_hu, volume_mm3, nominal_diameter_mm, solid_diameter_mm, lung, mask_voxels, mask_offset_kji."""
        return [n.to_dict() for n in self.nodules]


def make_phantom(config: Optional[PhantomConfig] = None) -> Phantom:
    """Synthesise a chest CT phantom.

    Args:
        config: the phantom's config (default: ``PhantomConfig.clinical()``).

    Returns:
        :class:`Phantom` (int16 HU volume, nodule truth, lung and vessel masks).

    Raises:
        RuntimeError: a nodule could not be placed (the lungs are too small for the requested sizes).

    Example:
        >>> p = make_phantom(PhantomConfig.small())
        >>> p.volume.hu.dtype, len(p.nodules), sorted(np.unique(p.lung_mask).tolist())
        (dtype('int16'), 6, [0, 1, 2])
    """
    config = config or PhantomConfig.clinical()
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(config.seed).spawn(len(STREAMS))
    rng = {name: np.random.default_rng(s) for name, s in zip(STREAMS, seeds)}
    grid = Grid(config.shape_zyx, config.spacing_mm)
    anat = build_anatomy(config, rng["anatomy"])
    lung_map = build_lung_map(anat)
    trees = build_vessel_trees(anat, lung_map, config, rng["vessels"])
    shapes = _plan_nodules(config, anat, lung_map, trees, grid, rng["nodules"])
    counts = {"ground-glass": config.ground_glass_patches, "consolidation": config.consolidations}
    plans = plan_opacities(counts, anat, lung_map, shapes, _fov_z(config, grid), rng["opacities"]) \
        if any(counts.values()) else []
    hu, lung_mask, vessel_mask = _render_anatomy(config, anat, lung_map, trees, grid, rng)
    opacity_renders = [(p, render_opacity(p, lung_mask, grid, shapes)) for p in plans]
    opacity_renders = [(p, r) for p, r in opacity_renders if r is not None]
    for _, r in opacity_renders:
        paint_opacity(hu, r)
    renders = [render_nodule(s, anat, grid, config.supersample) for s in shapes]
    for r in renders:
        paint_nodule(hu, r)
    order = np.argsort([-float(r.fraction.sum()) for r in renders], kind="stable")  # GT1 is the largest
    renders, shapes = [renders[i] for i in order], [shapes[i] for i in order]
    for sl, noise in correlated_noise_slabs(hu.shape, config.spacing_mm, config.noise_sigma_hu,
                                            config.noise_correlation_mm, rng["noise"]):
        hu[sl] += noise
    hu_int = np.clip(np.rint(hu), *t.HU_CLIP).astype(np.int16)
    del hu
    truths = [nodule_truth(r, s, hu_int, lung_mask, grid, f"GT{i + 1}")
              for i, (r, s) in enumerate(zip(renders, shapes))]
    opacities = _opacity_truths(opacity_renders, hu_int, lung_mask, grid)
    volume = grid.to_volume(hu_int, source=f"lunglesionai.synth phantom seed={config.seed}")
    logger.info("phantom %s at %s mm: %d nodules, %d opacities in %.1f s", config.shape_zyx, config.spacing_mm,
                len(truths), len(opacities), time.perf_counter() - t0)
    return Phantom(volume, truths, lung_mask, vessel_mask, config, trees, anat, opacities)


def _opacity_truths(renders, hu_int: np.ndarray, lung_mask: np.ndarray, grid: Grid) -> list[OpacityTruth]:
    """Truth of each rendered opacity, numbered per kind in placement order ("GGO1", "CON1", …)."""
    counters = {kind: 0 for kind in OPACITY_KINDS}
    out = []
    for plan, render in renders:
        counters[plan.style.kind] += 1
        prefix = OPACITY_KINDS[plan.style.kind][1]
        out.append(opacity_truth(render, plan, hu_int, lung_mask, grid, f"{prefix}{counters[plan.style.kind]}"))
    return out


def _render_anatomy(config: PhantomConfig, anat: Anatomy, lung_map, trees: list[VesselTree], grid: Grid,
                    rng: dict[str, np.random.Generator]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background slices, then the tube layers in painter's order; returns (hu float32, lung_mask, vessel_mask)."""
    bg = render_background(anat, grid, _lung_texture(anat, rng["texture"]), config.contrast_hu, config.abdominal_gas)
    hu, lung_mask = bg.hu, bg.lung_mask
    ss = config.supersample
    great = render_tubes(build_great_vessels(anat), grid, ss)
    _paint_layer(hu, great, t.BLOOD_HU if config.contrast_hu is None else config.contrast_hu)
    lung_mask[great >= _HALF] = 0  # the aortic arch may bulge into a lung's apex
    del great
    vessels = render_tubes(Tubes.concat([tree.tubes for tree in trees]), grid, ss)
    _paint_layer(hu, vessels, t.BLOOD_HU, weight=bg.cavity)
    vessel_mask = (vessels >= _HALF) & (bg.cavity >= _HALF)
    del vessels
    airways = build_airways(anat, lung_map, config, rng["airways"])
    _paint_layer(hu, render_tubes(airways.wall, grid, ss), t.AIRWAY_WALL_HU)
    _paint_layer(hu, render_tubes(airways.lumen, grid, ss), t.AIR_HU)
    ribs = build_ribs(anat)
    _paint_layer(hu, render_tubes(ribs.cortex, grid, ss), t.CORTICAL_BONE_HU)
    _paint_layer(hu, render_tubes(ribs.marrow, grid, ss), t.MARROW_HU)
    return hu, lung_mask, vessel_mask


def _plan_nodules(config, anat, lung_map, trees, grid: Grid, rng: np.random.Generator):
    """Draw and place the nodules; all lie inside the field of view in z."""
    widest = 2.0 * min(lung.semi_xy[0] for lung in anat.lungs) * NODULE_MAX_LUNG_FRACTION
    d_lo, d_hi = config.nodule_diameter_range_mm
    d_hi = max(min(d_hi, widest), d_lo)
    specs = draw_nodule_specs(config.n_nodules, (d_lo, d_hi), rng)
    return place_nodules(specs, anat, lung_map, trees, _fov_z(config, grid), rng)


def _fov_z(config: PhantomConfig, grid: Grid) -> tuple[float, float]:
    """Heights (mm) that planned structures must lie within: the field of view less one slice at each end."""
    (z0, z1) = grid.extent_mm[2]
    margin = config.spacing_mm[2]
    return (z0 + margin, z1 - margin)


def _lung_texture(anat: Anatomy, rng: np.random.Generator):
    step = max(LUNG_TEXTURE_STEP_MM * anat.scale, 4.0)
    ax, ay = anat.cavity_semi
    z_lo, z_hi = anat.lungs_z_range
    lo = (-ax, anat.cavity_center_y - ay, z_lo)
    hi = (ax, anat.cavity_center_y + ay, z_hi)
    return make_smooth_field(lo, hi, step, rng)


def _paint_layer(hu: np.ndarray, layer: np.ndarray, value: float, weight: Optional[np.ndarray] = None) -> None:
    """Blend ``value`` into ``hu`` (the phantom's own buffer) by a uint8 occupancy layer (times ``weight``)."""
    scale = np.float32(1.0 / OCCUPANCY_SCALE)
    for start in range(0, hu.shape[0], PAINT_SLAB):
        sl = slice(start, start + PAINT_SLAB)
        occ = layer[sl]
        if not occ.any():
            continue
        f = occ.astype(np.float32) * scale
        if weight is not None:
            f *= weight[sl].astype(np.float32) * scale
        hu[sl] += f * (np.float32(value) - hu[sl])
