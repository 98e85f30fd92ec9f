"""Placing nodules in the lungs according to their attachment, without overlaps.

* isolated: the whole nodule inside its lung, clear of the pleura and of every vessel of radius
  >= :data:`MAJOR_VESSEL_RADIUS_MM` (thinner ones may run into it, as in real lungs);
* juxta-pleural: centred within its radius of the pleura so that the lung boundary cuts a cap off it (the part
  outside the lung is not drawn: the nodule sits on the pleura with a broad base);
* juxta-vascular: beside a vessel of radius 1–3 mm, its surface reaching into the vessel.

Candidates come from the coarse :class:`~.lungs.LungMap`; each is then checked on points filling the nodule with
the exact lung function, so the attachment holds on any voxel grid. Nodules keep a gap of
:data:`NODULE_GAP_MM` between their bounding balls.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import numpy as np

from .anatomy import Anatomy
from .lungs import LungMap, lung_label_at
from .nodule_shapes import NoduleShape, NoduleSpec, make_nodule_shape
from .tubes import Tubes
from .vessels import VesselTree

__all__ = ["place_nodules", "clipped_fraction", "MAJOR_VESSEL_RADIUS_MM"]

logger = logging.getLogger(__name__)

#: Vessels at least this thick count for "isolated" clearance and can carry a juxta-vascular nodule, mm.
MAJOR_VESSEL_RADIUS_MM = 1.0
#: Thickest vessel a juxta-vascular nodule is put beside, mm.
MAX_CARRIER_RADIUS_MM = 3.0
#: Gap between nodules' bounding balls, and between isolated nodules and the pleura / major vessels, mm.
NODULE_GAP_MM, CLEARANCE_MM = 3.0, 1.0
#: Fraction of a juxta-pleural nodule's volume the pleura cuts off.
PLEURAL_CUT_RANGE = (0.04, 0.4)
#: Candidates drawn per try, tries per size, and how much the diameter shrinks after a failed size.
CANDIDATES, TRIES, SHRINK = 128, 6, 0.85
#: Points per radius along each axis of the lattice that probes a nodule's volume.
LATTICE_PER_RADIUS = 6


def place_nodules(specs: list[NoduleSpec], anat: Anatomy, lung_map: LungMap, trees: list[VesselTree],
                  z_range_mm: tuple[float, float], rng: np.random.Generator) -> list[NoduleShape]:
    """Give each spec a shape and a place in its lung.

    Args:
        specs: nodule kinds (placed in order; pass them largest first).
        anat: the anatomy.
        lung_map: coarse lung map.
        trees: the pulmonary vessel trees.
        z_range_mm: (lo, hi) heights the whole nodule must lie within (the field of view), mm.
        rng: the nodules' random stream.

    Returns:
        Placed shapes, one per spec (a spec that does not fit is shrunk by 15 % until it does; one that does
        not fit at 3 mm goes to the other lung, and then becomes isolated).

    Raises:
        RuntimeError: a nodule could not be placed even at the smallest size, in either lung, nor as an
            isolated nodule.
    """
    vessels = Tubes.concat([t.tubes for t in trees])
    labels = np.concatenate([np.full(len(t.tubes), t.lung_label) for t in trees])
    stems = np.concatenate([t.generation == 0 for t in trees])
    placed: list[NoduleShape] = []
    for spec in specs:
        shape = _place_with_fallbacks(spec, anat, lung_map, vessels, labels, stems, placed, z_range_mm, rng)
        placed.append(shape)
    return placed


def _place_with_fallbacks(spec, anat, lung_map, vessels, labels, stems, placed, z_range, rng) -> NoduleShape:
    """Place ``spec``; if it cannot fit, try the other lung, then an isolated nodule of the same texture."""
    fallbacks = (spec, replace(spec, lung_label=3 - spec.lung_label), replace(spec, attachment="isolated"))
    for n, candidate in enumerate(fallbacks):
        try:
            return _place_one(candidate, anat, lung_map, vessels, labels, stems, placed, z_range, rng)
        except RuntimeError as error:
            if n == len(fallbacks) - 1:
                raise
            logger.info("%s; trying %s", error, "the other lung" if n == 0 else "an isolated nodule")
    raise AssertionError("unreachable")


def _place_one(spec, anat, lung_map, vessels, labels, stems, placed, z_range, rng) -> NoduleShape:
    for _ in range(TRIES * 4):
        shape = make_nodule_shape(spec, rng)
        for _ in range(TRIES):
            center = _find_center(shape, anat, lung_map, vessels, labels, stems, placed, z_range, rng)
            if center is not None:
                return shape.at(center)
        smaller = max(spec.diameter_mm * SHRINK, 3.0)
        if smaller == spec.diameter_mm:
            break
        logger.debug("nodule %.1f mm %s did not fit; trying %.1f mm", spec.diameter_mm, spec.attachment, smaller)
        spec = replace(spec, diameter_mm=smaller)
    raise RuntimeError(f"could not place a {spec.texture} {spec.attachment} nodule in lung {spec.lung_label}")


def _find_center(shape, anat, lung_map, vessels, labels, stems, placed, z_range, rng) -> Optional[np.ndarray]:
    """One batch of candidates for ``shape``'s attachment; the first that passes every check, or None."""
    spec, rb, r = shape.spec, shape.bound_radius_mm, shape.radius_mm
    zr = (z_range[0] + rb, z_range[1] - rb)
    major = (vessels.radius_start_mm >= MAJOR_VESSEL_RADIUS_MM) & (labels == spec.lung_label) & ~stems
    if spec.attachment == "juxta-vascular":
        pts = _beside_vessels(shape, vessels, major, rng)
        pts = pts[lung_map.distance_at(pts) >= rb + CLEARANCE_MM] if len(pts) else pts
    else:
        lo, hi = (rb + CLEARANCE_MM, np.inf) if spec.attachment == "isolated" else (0.35 * r, 0.85 * r)
        pool = lung_map.candidates(spec.lung_label, lo, hi)  # not cut to the FOV: same draws on any grid
        if len(pool) == 0:
            return None
        pts = pool[rng.integers(0, len(pool), CANDIDATES)]
        pts = pts + rng.uniform(-0.5, 0.5, pts.shape) * lung_map.step_mm
        clear = _vessel_clearance(pts, _subset(vessels, major)) >= rb + CLEARANCE_MM
        pts = pts[clear]
    pts = pts[(pts[:, 2] >= zr[0]) & (pts[:, 2] <= zr[1])] if len(pts) else pts
    for c in pts[: CANDIDATES // 8]:
        if _overlaps(c, rb, placed):
            continue
        cut = clipped_fraction(shape.at(c), anat)
        if spec.attachment == "juxta-pleural":
            if PLEURAL_CUT_RANGE[0] <= cut <= PLEURAL_CUT_RANGE[1]:
                return c
        elif cut == 0.0:
            return c
    return None


def _beside_vessels(shape: NoduleShape, vessels: Tubes, major: np.ndarray, rng) -> np.ndarray:
    """Centres that put ``shape``'s surface 40 % of the way into a carrier vessel's radius."""
    r_max = min(MAX_CARRIER_RADIUS_MM, 0.6 * shape.radius_mm + 0.5)
    ok = np.flatnonzero(major & (vessels.radius_start_mm <= r_max))
    if len(ok) == 0:
        return np.zeros((0, 3))
    pick = ok[rng.integers(0, len(ok), CANDIDATES)]
    t = rng.uniform(0.2, 0.8, (len(pick), 1))
    axis = vessels.end_lps_mm[pick] - vessels.start_lps_mm[pick]
    p = vessels.start_lps_mm[pick] + t * axis
    r_v = vessels.radius_start_mm[pick] + t[:, 0] * (vessels.radius_end_mm[pick] - vessels.radius_start_mm[pick])
    n = rng.standard_normal(p.shape)
    n -= axis * (np.sum(n * axis, axis=1) / np.maximum(np.sum(axis * axis, axis=1), 1e-12))[:, None]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    reach = np.array([_support(shape, -d) for d in n])
    return p + n * (reach + 0.4 * r_v)[:, None]


def _support(shape: NoduleShape, direction: np.ndarray) -> float:
    """Distance from the centre to the surface of ``shape`` (at the origin) along ``direction``, mm."""
    s = np.linspace(0.0, shape.bound_radius_mm, 200)
    pts = s[:, None] * direction[None, :]
    inside = shape.signed_distance(pts[:, 0], pts[:, 1], pts[:, 2]) < 0
    return float(s[np.flatnonzero(inside)[-1]]) if inside.any() else 0.0


def _subset(tubes: Tubes, keep: np.ndarray) -> Tubes:
    return Tubes(tubes.start_lps_mm[keep], tubes.end_lps_mm[keep], tubes.radius_start_mm[keep],
                 tubes.radius_end_mm[keep])


def _vessel_clearance(points: np.ndarray, tubes: Tubes) -> np.ndarray:
    """(P,) smallest distance (mm) from each point to the surface of any of ``tubes``; inf without tubes."""
    if len(tubes) == 0:
        return np.full(len(points), np.inf)
    a = tubes.start_lps_mm[None, :, :]
    d = (tubes.end_lps_mm - tubes.start_lps_mm)[None, :, :]
    rel = points[:, None, :] - a
    t = np.clip(np.sum(rel * d, axis=2) / np.maximum(np.sum(d * d, axis=2), 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(rel - t[..., None] * d, axis=2)
    radius = tubes.radius_start_mm[None, :] + t * (tubes.radius_end_mm - tubes.radius_start_mm)[None, :]
    return np.min(dist - radius, axis=1)


def _overlaps(center: np.ndarray, bound: float, placed: list[NoduleShape]) -> bool:
    return any(np.linalg.norm(center - p.center) < bound + p.bound_radius_mm + NODULE_GAP_MM for p in placed)


def clipped_fraction(shape: NoduleShape, anat: Anatomy) -> float:
    """Fraction of ``shape``'s volume outside its lung, measured on a lattice of points (grid-independent).

    Example:
        A nodule in the middle of a lung returns 0.0; one straddling the pleura returns about 0.3.
    """
    step = shape.radius_mm / LATTICE_PER_RADIUS
    rb = shape.bound_radius_mm
    axis = np.arange(-rb, rb + step / 2, step)
    gz, gy, gx = np.meshgrid(axis, axis, axis, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1) + shape.center
    inside = shape.signed_distance(pts[:, 0], pts[:, 1], pts[:, 2]) < 0
    pts = pts[inside]
    if len(pts) == 0:
        return 1.0
    return float(np.mean(lung_label_at(anat, pts) != shape.spec.lung_label))
