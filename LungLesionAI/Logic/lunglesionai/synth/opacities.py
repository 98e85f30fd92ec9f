"""Infection-like lung opacities of the phantom: patchy ground glass and consolidation, which are not nodules.

Real chest CTs hold diffuse disease that a nodule detector must not report: patchy ground-glass opacity (hazy,
−750…−450 HU, several centimetres, soft-edged, often subpleural, vessels and bronchial walls visible through it)
and consolidation (−100…+50 HU, vessels no longer visible, sometimes with air bronchograms), as in infection
(Fleischner Society glossary: Hansell et al., Radiology 2008, doi:10.1148/radiol.2462070712; COVID-19 pattern:
Simpson et al., Radiology: Cardiothoracic Imaging 2020, doi:10.1148/ryct.2020200152). The phantom draws them as
training negatives, with their masks, so that training can count detections on them as false positives and never
puts a truth nodule inside one.

Shape of one opacity (LPS mm, so the same patient at any voxel size): a union of 3–7 overlapping anisotropic
Gaussian lobes around its centre, thresholded at 0.5 after adding a smooth random field (irregular outline);
confined to its lung; edges softened by a Gaussian of the style's ``edge_mm`` (and cut :data:`EDGE_REACH` σ from
the mask, so nothing is painted that the truth does not account for); HU = the style's base value plus a
smooth texture, clipped to the style's range, blended into the image with "denser tissue already there wins" (as
nodules are), so vessels show through ground glass. Nodules are placed first; an opacity keeps a gap of
:data:`NODULE_GAP_MM` from every nodule's bounding ball (a placement that cannot is carved), so opacity and nodule
masks never share a voxel. Opacities may touch each other (multifocal disease).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy import ndimage

from lunglesionai.core.findings import FindingMask

from .anatomy import Anatomy
from .grid import Grid
from .lungs import LungMap
from .nodule_shapes import NoduleShape
from .noise import SmoothField, make_smooth_field
from .tubes import tube_signed_distance

__all__ = ["OpacityStyle", "OpacityPlan", "OpacityRender", "OpacityTruth", "GROUND_GLASS", "CONSOLIDATION",
           "OPACITY_KINDS", "plan_opacities", "render_opacity", "paint_opacity", "opacity_truth", "NODULE_GAP_MM",
           "EDGE_REACH"]


@dataclass(frozen=True)
class OpacityStyle:
    """How one kind of opacity looks (sizes at the reference adult's scale; HU).

    Args:
        kind: "ground-glass" or "consolidation".
        size_range_mm: (lo, hi) nominal diameter of the patch, mm, before scaling to the patient.
        hu_range: (lo, hi) HU every fully filled voxel stays within (before image noise).
        base_hu_range: (lo, hi) HU of the patch's mean value.
        texture_hu: amplitude of the smooth HU texture inside the patch.
        edge_mm: σ of the Gaussian that softens the outline, mm.
        bronchogram_probability: chance that the patch holds air bronchograms.
    """

    kind: str
    size_range_mm: tuple[float, float]
    hu_range: tuple[float, float]
    base_hu_range: tuple[float, float]
    texture_hu: float
    edge_mm: float
    bronchogram_probability: float


#: Patchy ground glass: −750…−450 HU, 3–7 cm, soft edges (Hansell et al. 2008).
GROUND_GLASS = OpacityStyle("ground-glass", (30.0, 70.0), (-750.0, -450.0), (-680.0, -520.0), 45.0, 2.0, 0.0)
#: Consolidation: −100…+50 HU, 2–5 cm, sharper edges, air bronchograms in 60 %.
CONSOLIDATION = OpacityStyle("consolidation", (20.0, 50.0), (-100.0, 50.0), (-50.0, 25.0), 15.0, 0.8, 0.6)
#: The styles by kind, and the prefix of their ids ("GGO1", "CON1").
OPACITY_KINDS = {"ground-glass": (GROUND_GLASS, "GGO"), "consolidation": (CONSOLIDATION, "CON")}
#: Chance that an opacity is placed against the pleura ("often subpleural").
SUBPLEURAL_PROBABILITY = 0.7
#: Gap kept between an opacity's mask and every nodule's bounding ball, mm.
NODULE_GAP_MM = 3.0
#: Patient scale is clipped to this range when scaling the patch sizes (child-size lungs still get centimetres).
SIZE_SCALE_RANGE = (0.4, 1.0)
#: Largest patch as a fraction of the lung's width.
MAX_LUNG_FRACTION = 0.6
#: Lobes per patch (lo, hi inclusive), their spread (σ of the offsets) and their widths, as fractions of the size.
LOBES, LOBE_SPREAD, LOBE_WIDTH = (3, 7), 1.0 / 6.0, (1.0 / 8.0, 1.0 / 5.0)
#: Amplitude of the smooth field added to the lobes before thresholding (irregular outline), and its step.
OUTLINE_NOISE, OUTLINE_STEP_FRACTION = 0.45, 1.0 / 7.0
#: An opacity's soft edge is cut this many edge σ away from its mask (nothing of it is painted farther out).
EDGE_REACH = 2.0
#: Candidates tried per opacity.
CANDIDATES = 64
#: HU of air in a bronchogram (small bronchus, partial volume).
AIR_BRONCHOGRAM_HU = -900.0
#: Bronchograms per consolidation that has them (lo, hi inclusive), their radius at reference scale, mm.
BRONCHOGRAMS, BRONCHOGRAM_RADIUS_MM = (2, 4), (0.9, 1.5)


@dataclass(frozen=True)
class OpacityPlan:
    """One opacity before rendering (LPS mm).

    Args:
        style: its :class:`OpacityStyle`.
        lung_label: 1 (right) or 2 (left).
        center_lps_mm: (3,) centre of the lobes, mm.
        size_mm: nominal diameter, mm.
        lobe_offsets_mm: (L, 3) lobe centres relative to ``center_lps_mm``, mm.
        lobe_sigmas_mm: (L, 3) lobe widths (x, y, z), mm.
        base_hu: mean HU of the patch.
        field: smooth unit-variance field for the outline and the texture.
        bronchograms: (B, 7) tubes: start (3), end (3), radius (mm); B may be 0.
        subpleural: placed against the pleura.
    """

    style: OpacityStyle
    lung_label: int
    center_lps_mm: np.ndarray
    size_mm: float
    lobe_offsets_mm: np.ndarray
    lobe_sigmas_mm: np.ndarray
    base_hu: float
    field: SmoothField
    bronchograms: np.ndarray
    subpleural: bool


@dataclass(frozen=True)
class OpacityRender:
    """An opacity on the grid, inside ``box`` ((z, y, x) slices).

    Args:
        box: index slices of its bounding box.
        fraction: (dz, dy, dx) float32 fraction of each voxel the opacity fills (0 outside its lung).
        hu: (dz, dy, dx) float32 HU of the opacity's tissue.
        air: (dz, dy, dx) float32 fraction of each voxel filled by an air bronchogram.
    """

    box: tuple[slice, slice, slice]
    fraction: np.ndarray
    hu: np.ndarray
    air: np.ndarray


@dataclass(frozen=True)
class OpacityTruth:
    """Ground truth of one infection-like opacity (not a nodule); LPS mm, HU, mm³.

    Args:
        id: "GGO1", "GGO2", … for ground glass, "CON1", … for consolidation (placement order).
        kind: "ground-glass" or "consolidation".
        lung: "right" or "left".
        center_lps_mm: (x, y, z) centroid of the mask, mm.
        mask: voxels the opacity fills to >= 50 % (bronchograms included), a bool crop on the volume's grid.
        volume_mm3: volume of the opacity (sum of the fractions × voxel volume), mm³.
        mean_hu: mean HU of the final (noisy) image inside ``mask``.
        extent_mm: (x, y, z) size of the mask's bounding box, mm.
        nominal_size_mm: the drawn diameter of the patch, mm.
        subpleural: the mask touches the lung's boundary (pleura or mediastinum).
        air_bronchograms: number of air bronchograms drawn in it.
    """

    id: str
    kind: str
    lung: str
    center_lps_mm: tuple[float, float, float]
    mask: FindingMask
    volume_mm3: float
    mean_hu: float
    extent_mm: tuple[float, float, float]
    nominal_size_mm: float
    subpleural: bool
    air_bronchograms: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field except the mask (plus ``mask_voxels`` and ``mask_offset_kji``)."""
        return {
            "id": self.id, "kind": self.kind, "lung": self.lung,
            "center_lps_mm": [round(float(c), 3) for c in self.center_lps_mm],
            "volume_mm3": round(float(self.volume_mm3), 1), "mean_hu": round(float(self.mean_hu), 1),
            "extent_mm": [round(float(e), 2) for e in self.extent_mm],
            "nominal_size_mm": round(float(self.nominal_size_mm), 2), "subpleural": bool(self.subpleural),
            "air_bronchograms": int(self.air_bronchograms), "mask_voxels": self.mask.voxel_count,
            "mask_offset_kji": [int(v) for v in self.mask.offset_kji],
        }


def plan_opacities(counts: dict[str, int], anat: Anatomy, lung_map: LungMap, nodules: list[NoduleShape],
                   z_range_mm: tuple[float, float], rng: np.random.Generator) -> list[OpacityPlan]:
    """Draw and place the opacities: ``counts`` per kind, alternating lungs, clear of ``nodules``.

    Args:
        counts: {"ground-glass": n, "consolidation": m}.
        anat: the anatomy (its ``scale`` sizes the patches).
        lung_map: coarse lung map (candidate centres and pleural distances).
        nodules: the placed nodules (kept clear of).
        z_range_mm: (lo, hi) heights the centres must lie within (the field of view), mm.
        rng: the opacities' own random stream.

    Returns:
        The plans, ground glass first.
    """
    plans: list[OpacityPlan] = []
    first_lung = int(rng.integers(1, 3))
    for kind, n in counts.items():
        style = OPACITY_KINDS[kind][0]
        for i in range(n):
            label = first_lung if (len(plans) % 2 == 0) else 3 - first_lung
            plans.append(_plan_one(style, label, anat, lung_map, nodules, plans, z_range_mm, rng))
    return plans


def _plan_one(style: OpacityStyle, label: int, anat: Anatomy, lung_map: LungMap, nodules, placed, z_range,
              rng: np.random.Generator) -> OpacityPlan:
    lung = anat.right_lung if label == anat.right_lung.label else anat.left_lung
    scale = float(np.clip(anat.scale, *SIZE_SCALE_RANGE))
    size = min(rng.uniform(*style.size_range_mm) * scale, MAX_LUNG_FRACTION * 2.0 * lung.semi_xy[0])
    subpleural = bool(rng.random() < SUBPLEURAL_PROBABILITY)
    center = _choose_center(size, label, subpleural, lung_map, nodules, placed, z_range, rng)
    n_lobes = int(rng.integers(LOBES[0], LOBES[1] + 1))
    offsets = rng.normal(0.0, LOBE_SPREAD * size, (n_lobes, 3))
    offsets[0] = 0.0  # one lobe at the centre, so the patch covers its chosen place
    sigmas = rng.uniform(LOBE_WIDTH[0] * size, LOBE_WIDTH[1] * size, (n_lobes, 3))
    reach = _reach(offsets, sigmas)
    step = max(OUTLINE_STEP_FRACTION * size, 3.0)
    field = make_smooth_field(center - reach, center + reach, step, rng)
    base_hu = float(rng.uniform(*style.base_hu_range))
    bronchograms = np.zeros((0, 7))
    if rng.random() < style.bronchogram_probability:
        bronchograms = _draw_bronchograms(center, size, scale, rng)
    return OpacityPlan(style, label, center, float(size), offsets, sigmas, base_hu, field, bronchograms, subpleural)


def _choose_center(size: float, label: int, subpleural: bool, lung_map: LungMap, nodules, placed, z_range,
                   rng: np.random.Generator) -> np.ndarray:
    """A lung point for the patch: near the pleura when ``subpleural``; the one clearest of nodules and of the
    other patches among :data:`CANDIDATES` draws."""
    zr = (z_range[0] + 0.25 * size, z_range[1] - 0.25 * size)
    if zr[0] > zr[1]:
        zr = (z_range[0], z_range[1])
    lo, hi = (1.0, 0.35 * size) if subpleural else (0.4 * size, np.inf)
    pool = lung_map.candidates(label, lo, hi, zr)
    if len(pool) == 0:
        pool = lung_map.candidates(label, 1.0, np.inf, zr)
    if len(pool) == 0:
        raise RuntimeError(f"no room for a {size:.0f} mm opacity in lung {label} within the field of view")
    pts = pool[rng.integers(0, len(pool), CANDIDATES)]
    pts = pts + rng.uniform(-0.5, 0.5, pts.shape) * lung_map.step_mm
    clearance = np.full(len(pts), np.inf)
    for n in nodules:
        clearance = np.minimum(clearance, np.linalg.norm(pts - n.center, axis=1) - n.bound_radius_mm
                               - NODULE_GAP_MM - 0.5 * size)
    for p in placed:
        clearance = np.minimum(clearance, np.linalg.norm(pts - p.center_lps_mm, axis=1) - 0.5 * (size + p.size_mm))
    ok = np.flatnonzero(clearance >= 0)
    return pts[ok[0]] if len(ok) else pts[int(np.argmax(clearance))]


def _reach(offsets: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(3,) half-size (mm) of the box holding every lobe out to 3 σ."""
    return np.max(np.abs(offsets) + 3.0 * sigmas, axis=0)


def _draw_bronchograms(center: np.ndarray, size: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """(B, 7) straight tapered air tubes starting near the patch's centre: start, end, radius at the start."""
    n = int(rng.integers(BRONCHOGRAMS[0], BRONCHOGRAMS[1] + 1))
    starts = center + rng.normal(0.0, 0.08 * size, (n, 3))
    directions = rng.standard_normal((n, 3))
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    ends = starts + directions * rng.uniform(0.25 * size, 0.45 * size, (n, 1))
    radii = rng.uniform(*BRONCHOGRAM_RADIUS_MM, (n, 1)) * max(scale, 0.6)
    return np.hstack([starts, ends, radii])


def render_opacity(plan: OpacityPlan, lung_mask: np.ndarray, grid: Grid, nodules: list[NoduleShape],
                   ) -> Optional[OpacityRender]:
    """Fraction, HU and bronchogram air of ``plan`` on ``grid``, confined to its lung and clear of ``nodules``.

    Args:
        plan: the opacity.
        lung_mask: (Z, Y, X) uint8 lung labels of the phantom.
        grid: the grid.
        nodules: the phantom's nodules (carved out with a gap of :data:`NODULE_GAP_MM`).

    Returns:
        :class:`OpacityRender`, or ``None`` when the opacity misses the grid or its lung.
    """
    reach = _reach(plan.lobe_offsets_mm, plan.lobe_sigmas_mm) + 3.0 * plan.style.edge_mm
    box = grid.box_slices(plan.center_lps_mm - reach, plan.center_lps_mm + reach)
    if box is None:
        return None
    z, y, x = grid.slice_coords(box)
    field = _field_on(plan.field, x, y, z)
    density = np.zeros(field.shape, dtype=np.float32)
    for offset, sigma in zip(plan.lobe_offsets_mm, plan.lobe_sigmas_mm):
        c = plan.center_lps_mm + offset
        d2 = ((x - c[0]) / sigma[0]) ** 2 + ((y - c[1]) / sigma[1]) ** 2 + ((z - c[2]) / sigma[2]) ** 2
        density += np.exp(-0.5 * d2).astype(np.float32)
    region = (density + OUTLINE_NOISE * field > 0.5).astype(np.float32)
    sigma_vox = [plan.style.edge_mm / s for s in grid.spacing_mm[::-1]]
    in_lung = lung_mask[box] == plan.lung_label
    fraction = ndimage.gaussian_filter(region, sigma_vox, mode="constant") * in_lung
    for n in nodules:  # a gap around every nodule's bounding ball
        fraction[np.sqrt((x - n.center[0]) ** 2 + (y - n.center[1]) ** 2 + (z - n.center[2]) ** 2)
                 < n.bound_radius_mm + NODULE_GAP_MM] = 0.0
    mask = fraction >= 0.5
    if not mask.any():
        return None
    # the soft edge fades within EDGE_REACH σ of the mask: fragments of the outline too thin to reach 50 % anywhere
    # would otherwise be painted without being in the truth
    far = ndimage.distance_transform_edt(~mask, sampling=grid.spacing_mm[::-1]) > EDGE_REACH * plan.style.edge_mm
    fraction[far] = 0.0
    hu = np.clip(plan.base_hu + plan.style.texture_hu * field, *plan.style.hu_range).astype(np.float32)
    air = np.zeros(field.shape, dtype=np.float32)
    half_voxel = 0.5 * float(min(grid.spacing_mm))
    for tube in plan.bronchograms:
        sd = tube_signed_distance(x, y, z, tube[:3], tube[3:6], tube[6], 0.6 * tube[6])
        air = np.maximum(air, np.clip(0.5 - sd / (2.0 * half_voxel), 0.0, 1.0).astype(np.float32))
    air *= fraction >= 0.9  # bronchograms only deep inside the consolidation
    return OpacityRender(box, fraction.astype(np.float32), hu, air)


def _field_on(field: SmoothField, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(dz, dy, dx) float32 values of ``field`` at the box's voxel centres."""
    sampler = field.sampler(x.ravel(), y.ravel())
    return np.stack([sampler(float(zk)) for zk in z.ravel()]).astype(np.float32)


def paint_opacity(hu: np.ndarray, render: OpacityRender) -> None:
    """Blend an opacity into ``hu`` (the phantom's own buffer): denser tissue already there wins (vessels show
    through ground glass), then the air bronchograms replace what they fill."""
    view = hu[render.box]
    blended = view + render.fraction * (render.hu - view)
    np.maximum(view, blended, out=view)
    view += render.air * (np.float32(AIR_BRONCHOGRAM_HU) - view)


def opacity_truth(render: OpacityRender, plan: OpacityPlan, final_hu: np.ndarray, lung_mask: np.ndarray,
                  grid: Grid, opacity_id: str) -> OpacityTruth:
    """Measure a rendered opacity on the finished image: mask (>= 50 %), centroid, volume, extent, mean HU.

    Args:
        render: its rendering.
        plan: its plan.
        final_hu: (Z, Y, X) the finished image (noise included), HU.
        lung_mask: (Z, Y, X) uint8 lung labels.
        grid: the grid.
        opacity_id: "GGO<n>" or "CON<n>".
    """
    box = render.box
    mask = render.fraction >= 0.5
    offset = tuple(int(b.start) for b in box)
    cropped = FindingMask.cropped(mask, offset)
    z, y, x = grid.slice_coords(box)
    total = float(mask.sum())
    center = tuple(float((mask * np.broadcast_to(c, mask.shape)).sum() / total) for c in (x, y, z))
    extent = tuple(float(n * s) for n, s in zip(cropped.array.shape[::-1], grid.spacing_mm))
    outside = ~(lung_mask[box] == plan.lung_label)
    subpleural = bool((ndimage.binary_dilation(mask) & outside).any())
    return OpacityTruth(
        id=opacity_id, kind=plan.style.kind, lung="right" if plan.lung_label == 1 else "left",
        center_lps_mm=center, mask=cropped,
        volume_mm3=float(render.fraction.sum()) * float(np.prod(grid.spacing_mm)),
        mean_hu=float(final_hu[box][mask].mean()), extent_mm=extent, nominal_size_mm=plan.size_mm,
        subpleural=subpleural, air_bronchograms=len(plan.bronchograms),
    )
