"""What each nodule is: its size, texture, attachment and 3-D shape (before it is placed in a lung).

Textures follow the Fleischner Society glossary (Hansell et al., Radiology 2008, doi:10.1148/radiol.2462070712):
solid (soft-tissue attenuation, 0…60 HU here), ground-glass (hazy, −750…−350 HU, vessels stay visible) and
part-solid (ground glass with a solid core). Shapes: round (a slightly uneven ellipsoid), lobulated (a union of
overlapping spheres) and spiculated (a round body with thin tapering spicules, as tubes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .tubes import Tubes, tube_signed_distance

__all__ = [
    "TEXTURES",
    "ATTACHMENTS",
    "SHAPES",
    "NoduleSpec",
    "NoduleShape",
    "draw_nodule_specs",
    "make_nodule_shape",
]

TEXTURES = ("solid", "part-solid", "ground-glass")
ATTACHMENTS = ("isolated", "juxta-pleural", "juxta-vascular")
SHAPES = ("round", "lobulated", "spiculated")
#: Mix of textures for any number of nodules: the first three cover all textures, the rest are mostly solid.
TEXTURE_CYCLE = ("solid", "ground-glass", "part-solid", "solid", "ground-glass", "solid", "part-solid", "solid",
                 "solid", "ground-glass")
#: HU ranges drawn from (inside the glossary's ranges, leaving room for partial volume and noise).
SOLID_HU_RANGE = (10.0, 50.0)
GROUND_GLASS_HU_RANGE = (-680.0, -450.0)
#: Part-solid nodules: solid core radius as a fraction of the nodule radius.
CORE_FRACTION_RANGE = (0.4, 0.6)
#: Smallest nominal diameter of ground-glass and part-solid nodules, mm (smaller ones are not reportable).
MIN_GGN_DIAMETER_MM, MIN_PART_SOLID_DIAMETER_MM = 5.0, 8.0
#: Diameters below which a nodule is drawn round; probabilities of lobulated / spiculated above them.
LOBULATED_MIN_MM, SPICULATED_MIN_MM = 6.0, 8.0
P_LOBULATED, P_SPICULATED = 0.35, 0.35
#: Skew of the diameter distribution towards small nodules (1: log-uniform).
DIAMETER_SKEW = 1.3


@dataclass(frozen=True)
class NoduleSpec:
    """A nodule's kind before placement.

    Args:
        diameter_mm: nominal diameter (of the main body), mm.
        texture: one of :data:`TEXTURES`; attachment: one of :data:`ATTACHMENTS`; shape: one of :data:`SHAPES`.
        hu: attenuation of the nodule (of its ground glass for part-solid ones), HU.
        core_hu: attenuation of the solid core of a part-solid nodule, HU (``None`` otherwise).
        core_fraction: core radius / nodule radius for part-solid nodules (0 otherwise).
        lung_label: lung it goes in (1 right, 2 left).
    """

    diameter_mm: float
    texture: str
    attachment: str
    shape: str
    hu: float
    core_hu: Optional[float]
    core_fraction: float
    lung_label: int


@dataclass(frozen=True)
class NoduleShape:
    """A nodule's geometry in LPS mm: a body (ellipsoid), optional lobes (spheres) and spicules (tubes).

    Args:
        center: (3,) LPS centre, mm.
        spec: the nodule's kind.
        semi_axes: (3,) body semi-axes, mm.
        lobes: (K, 4) sphere centres relative to ``center`` (x, y, z) and radii, mm.
        spicules: tubes relative to ``center``.
    """

    center: np.ndarray
    spec: NoduleSpec
    semi_axes: np.ndarray
    lobes: np.ndarray
    spicules: Tubes

    @property
    def radius_mm(self) -> float:
        """Nominal radius, mm."""
        return 0.5 * self.spec.diameter_mm

    @property
    def core_radius_mm(self) -> float:
        """Radius of the solid core (part-solid nodules), mm; 0 without one."""
        return self.spec.core_fraction * self.radius_mm

    @property
    def bound_radius_mm(self) -> float:
        """Radius of a ball around ``center`` that holds the whole nodule, mm."""
        r = float(np.max(self.semi_axes))
        if len(self.lobes):
            r = max(r, float(np.max(np.linalg.norm(self.lobes[:, :3], axis=1) + self.lobes[:, 3])))
        if len(self.spicules):
            r = max(r, float(np.max(np.linalg.norm(self.spicules.end_lps_mm, axis=1) + self.spicules.radius_end_mm)))
        return r

    def at(self, center) -> "NoduleShape":
        """The same nodule moved to ``center`` (LPS mm)."""
        return replace(self, center=np.asarray(center, dtype=float))

    def signed_distance(self, x, y, z) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) at broadcastable LPS coordinates."""
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        a = self.semi_axes
        norm = np.sqrt((dx / a[0]) ** 2 + (dy / a[1]) ** 2 + (dz / a[2]) ** 2)
        sd = (norm - 1.0) * float(np.min(a))
        for cx, cy, cz, r in self.lobes:
            sd = np.minimum(sd, np.sqrt((dx - cx) ** 2 + (dy - cy) ** 2 + (dz - cz) ** 2) - r)
        sp = self.spicules
        for i in range(len(sp)):
            d = tube_signed_distance(dx, dy, dz, sp.start_lps_mm[i], sp.end_lps_mm[i],
                                     sp.radius_start_mm[i], sp.radius_end_mm[i])
            sd = np.minimum(sd, d)
        return sd

    def core_signed_distance(self, x, y, z) -> np.ndarray:
        """Signed distance to the solid core (a sphere), mm; +inf everywhere when there is none."""
        if self.core_radius_mm <= 0:
            return np.full(np.broadcast(x, y, z).shape, np.inf)
        d = np.sqrt((x - self.center[0]) ** 2 + (y - self.center[1]) ** 2 + (z - self.center[2]) ** 2)
        return d - self.core_radius_mm


def draw_nodule_specs(n: int, diameter_range_mm: tuple[float, float], rng: np.random.Generator) -> list[NoduleSpec]:
    """Draw ``n`` nodule kinds: a spread of sizes, every texture and attachment once ``n >= 3``.

    Diameters are stratified over [min, max] on a log scale skewed towards small nodules; textures cycle through
    :data:`TEXTURE_CYCLE` and attachments through :data:`ATTACHMENTS` (both shuffled); lungs alternate.

    Returns:
        Specs sorted by decreasing diameter.
    """
    d_lo, d_hi = diameter_range_mm
    u = (np.arange(n) + rng.uniform(0.0, 1.0, n)) / max(n, 1)
    diameters = d_lo * (d_hi / d_lo) ** (u ** DIAMETER_SKEW)
    textures = [TEXTURE_CYCLE[i % len(TEXTURE_CYCLE)] for i in range(n)]
    attachments = [ATTACHMENTS[i % 3] for i in range(n)]
    rng.shuffle(textures)
    rng.shuffle(attachments)
    first_lung = int(rng.integers(1, 3))
    specs = []
    for i, (d, texture, attachment) in enumerate(zip(np.sort(diameters)[::-1], textures, attachments)):
        d = _fit_diameter(float(d), texture, d_hi, rng)
        specs.append(_spec(d, texture, attachment, 1 + (first_lung + i) % 2, rng))
    return sorted(specs, key=lambda s: -s.diameter_mm)


def _fit_diameter(d: float, texture: str, d_hi: float, rng: np.random.Generator) -> float:
    """Raise ground-glass and part-solid nodules to their smallest visible size."""
    floor = {"ground-glass": MIN_GGN_DIAMETER_MM, "part-solid": MIN_PART_SOLID_DIAMETER_MM}.get(texture, 0.0)
    if d >= floor:
        return d
    return float(min(rng.uniform(floor, floor * 1.5), max(d_hi, floor)))


def _spec(d: float, texture: str, attachment: str, lung_label: int, rng: np.random.Generator) -> NoduleSpec:
    shape = "round"
    roll = rng.uniform()
    if texture != "ground-glass" and d >= SPICULATED_MIN_MM and roll < P_SPICULATED:
        shape = "spiculated"
    elif d >= LOBULATED_MIN_MM and roll > 1.0 - P_LOBULATED:
        shape = "lobulated"
    if texture == "solid":
        return NoduleSpec(d, texture, attachment, shape, float(rng.uniform(*SOLID_HU_RANGE)), None, 0.0, lung_label)
    ggo = float(rng.uniform(*GROUND_GLASS_HU_RANGE))
    if texture == "ground-glass":
        return NoduleSpec(d, texture, attachment, shape, ggo, None, 0.0, lung_label)
    core = float(rng.uniform(*SOLID_HU_RANGE))
    return NoduleSpec(d, texture, attachment, shape, ggo, core, float(rng.uniform(*CORE_FRACTION_RANGE)), lung_label)


def make_nodule_shape(spec: NoduleSpec, rng: np.random.Generator) -> NoduleShape:
    """Random geometry of a nodule of kind ``spec``, centred at the origin (move it with :meth:`NoduleShape.at`)."""
    r = 0.5 * spec.diameter_mm
    semi = r * np.clip(1.0 + 0.07 * rng.standard_normal(3), 0.88, 1.12)
    lobes = np.zeros((0, 4))
    spicules = Tubes.from_lists([], [], [], [])
    if spec.shape == "lobulated":
        semi = np.full(3, 0.8 * r)
        k = int(rng.integers(4, 7))
        dirs = _unit_vectors(k, rng)
        offsets = dirs * rng.uniform(0.42, 0.55, (k, 1)) * r
        lobes = np.concatenate([offsets, rng.uniform(0.42, 0.58, (k, 1)) * r], axis=1)
    elif spec.shape == "spiculated":
        k = int(rng.integers(6, 13))
        dirs = _unit_vectors(k, rng)
        length = np.clip(rng.uniform(0.5, 1.2, k) * r, 2.5, 12.0)
        r_base = np.clip(0.14 * r, 0.45, 1.2)
        spicules = Tubes(dirs * 0.75 * r, dirs * (r + length)[:, None], np.full(k, r_base), np.full(k, 0.25))
    return NoduleShape(np.zeros(3), spec, semi, lobes, spicules)


def _unit_vectors(k: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((k, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
