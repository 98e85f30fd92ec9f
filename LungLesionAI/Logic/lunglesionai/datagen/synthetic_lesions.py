"""Synthetic lesions of DeepLesion's classes, drawn from radiology ranges and placed where they belong.

**These are training and validation stand-ins, not clinical lesions.** No annotated whole-body CT is available
offline, so the universal lesion detector learns from lesions painted into real CTs (``../shared/data/ct``) and
phantoms; lung lesions are real LIDC nodules pasted by :mod:`lunglesionai.datagen.composites` instead (see
:mod:`lunglesionai.datagen.uld_cases`). Classes follow DeepLesion's coarse types (Yan K et al., "DeepLesion: automated
mining of large-scale lesion annotations and universal lesion detection with deep learning", J Med Imaging
5(3):036501, 2018, doi:10.1117/1.JMI.5.3.036501).

=========================  ===========  =====================  ===============  =====================================
class                      type         size (mm)              HU               range / appearance from
=========================  ===========  =====================  ===============  =====================================
liver_cyst                 liver        5–35 diameter          0–20             Mortelé & Ros, RadioGraphics 2001;
                                                                                21:895–910 (water attenuation, sharp)
liver_metastasis           liver        8–45 diameter          liver − 20…60    Sica, Ji & Ros, AJR 2000;174:691–698
                                                                                (hypoattenuating in portal phase)
lymph_node_mediastinal     mediastinum  short axis 10–22,      20–60            Glazer et al., AJR 1985;144:261–265
                                        long/short 1–1.8                        (> 10 mm short axis enlarged); RECIST
                                                                                1.1, Eisenhauer et al., Eur J Cancer
                                                                                2009;45:228–247
lymph_node_retroperitoneal abdomen      short axis 10–20,      20–60            Dorfman et al., Radiology 1991;180:
                                        long/short 1–1.8                        319–322 (upper abdominal node sizes)
kidney_cyst                kidney       5–35 diameter          −9–20            Silverman et al., Radiology 2019;292:
                                                                                475–488 (Bosniak 2019: simple fluid)
kidney_mass                kidney       15–50 diameter         30–90            Israel & Bosniak, Urology 2005;66:
                                                                                484–488 (solid, enhancing)
bone_lytic                 bone         8–25 diameter          0–100            Hamaoka et al., J Clin Oncol 2004;22:
                                                                                2942–2953 (lytic: bone replaced by
                                                                                soft tissue)
bone_blastic               bone         6–20 diameter          700–1000         Ulano et al., AJR 2016;207:362–368
                                                                                (osteoblastic metastases mostly
                                                                                < 885 HU mean, enostoses denser)
soft_tissue_mass           soft tissue  15–50 diameter         30–60            Kransdorf & Murphey, RadioGraphics
                                                                                2016;36:1931–1948 (masses of muscle-
                                                                                like attenuation in fat/muscle)
=========================  ===========  =====================  ===============  =====================================

Where they go (:mod:`lunglesionai.datagen.lesion_regions`): liver lesions inside the liver, nodes in mediastinal fat or
retroperitoneal fat beside the spine, bone lesions in vertebral marrow, soft-tissue masses in the body wall,
kidney lesions only where a kidney mask is given (no CT here shows kidneys, so that class is not placed).

Shape and rendering (:func:`paint_lesion`): an ellipsoid with random orientation (any rotation about z, tilt up to
20°) whose surface is lobulated by a few smooth bumps (von Mises functions of direction, amplitude per class),
rendered with 3×3×3 sub-voxel sampling (partial volume at the edge) and blurred by the class's margin width (sharp
for cysts, ill-defined for metastases). Inside: the class HU plus a smooth internal texture plus spatially
correlated noise whose standard deviation matches the host's noise measured around the lesion, so the lesion is
neither smoother nor noisier than the scan. Blend: ``out = host + f · (lesion − host)`` with the partial-volume
fraction ``f``.

Truth per lesion (:class:`LesionTruth`): class, type, centre and voxel-edge box in LPS mm, key slice (the axial
slice of largest cross-section, as DeepLesion's key slices are those where the radiologist measured the lesion),
nominal long and short axes, HU, and the mask on the host grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.datagen.lesion_regions import AnatomyRegions

__all__ = [
    "LESION_CLASSES",
    "LesionClass",
    "LesionSpec",
    "LesionTruth",
    "draw_lesion_spec",
    "estimate_noise_hu",
    "paint_lesion",
    "place_lesions",
]

logger = logging.getLogger(__name__)

SUBSAMPLES = 3
"""Sub-samples per axis for the partial-volume fraction."""
MAX_TILT_DEG = 20.0
N_BUMPS = 4
BUMP_SHARPNESS = 5.0
"""Concentration of the von Mises bumps that lobulate the surface (higher: narrower lobes)."""
TEXTURE_SCALE_MM = 2.5
NOISE_CORRELATION_MM = 0.6
NOISE_HU_BOUNDS = (5.0, 60.0)
MASK_LEVEL = 0.5
MIN_GAP_MM = 4.0
"""Smallest gap between two placed lesions' bounding spheres, mm."""
SHRINK_FACTOR = 0.8
SHRINK_TRIES = 3
ATTEMPTS_PER_SIZE = 80


@dataclass(frozen=True)
class LesionClass:
    """One synthetic lesion class (see the module docstring's table).

    Args:
        name: class name.
        lesion_type: DeepLesion coarse type (:data:`lunglesionai.nets.mp3d.DEEPLESION_TYPES`).
        region: :class:`~lunglesionai.datagen.lesion_regions.AnatomyRegions` name the centre is drawn from.
        diameter_range_mm: long-axis diameter range, mm; for nodes (``short_axis=True``) the short-axis range.
        aspect_range: long / short axis ratio range (>= 1).
        hu_range: lesion HU range (absolute), or HU *below the liver's* when ``relative_to_liver``.
        relative_to_liver: the HU is ``liver_hu - value`` (hypoattenuating liver lesions).
        margin_mm: Gaussian blur of the edge, mm (0: only partial volume).
        lobulation: amplitude of the surface bumps as a fraction of the radius.
        texture_hu: standard deviation of the smooth internal texture, HU.
        fit: share of the lesion's radius that must lie inside the region around the centre (1: all of it).
        footprint_region, min_footprint_fraction: a region most of the lesion's ball must cover (e.g. nodes in fat).
        avoid: regions the lesion never overlaps (its outer surface stays clear of their voxel centres).
        short_axis: ``diameter_range_mm`` is the short axis (lymph nodes, RECIST).
        reference: where the size / HU range and the appearance come from.
    """

    name: str
    lesion_type: str
    region: str
    diameter_range_mm: tuple[float, float]
    aspect_range: tuple[float, float]
    hu_range: tuple[float, float]
    margin_mm: float
    lobulation: float
    texture_hu: float
    fit: float = 1.0
    relative_to_liver: bool = False
    footprint_region: str | None = None
    min_footprint_fraction: float = 0.0
    short_axis: bool = False
    avoid: tuple[str, ...] = ("lung",)
    reference: str = ""


LESION_CLASSES: dict[str, LesionClass] = {c.name: c for c in (
    LesionClass("liver_cyst", "liver", "liver", (5.0, 35.0), (1.0, 1.2), (0.0, 20.0), 0.3, 0.03, 2.0, 1.0,
                reference="Mortele & Ros, RadioGraphics 2001;21:895-910"),
    LesionClass("liver_metastasis", "liver", "liver", (8.0, 45.0), (1.0, 1.3), (20.0, 60.0), 1.0, 0.15, 6.0, 1.0,
                relative_to_liver=True, reference="Sica, Ji & Ros, AJR 2000;174:691-698"),
    LesionClass("lymph_node_mediastinal", "mediastinum", "mediastinum", (10.0, 22.0), (1.0, 1.8), (20.0, 60.0),
                0.5, 0.05, 4.0, 0.3, footprint_region="fat", min_footprint_fraction=0.25, short_axis=True,
                avoid=("lung", "dense"), reference="Glazer et al., AJR 1985;144:261-265; RECIST 1.1"),
    LesionClass("lymph_node_retroperitoneal", "abdomen", "retroperitoneum", (10.0, 20.0), (1.0, 1.8),
                (20.0, 60.0), 0.5, 0.05, 4.0, 0.3, footprint_region="fat", min_footprint_fraction=0.3,
                short_axis=True, avoid=("lung", "dense"), reference="Dorfman et al., Radiology 1991;180:319-322"),
    LesionClass("kidney_cyst", "kidney", "kidney", (5.0, 35.0), (1.0, 1.2), (-9.0, 20.0), 0.3, 0.03, 2.0, 1.0,
                reference="Silverman et al., Radiology 2019;292:475-488"),
    LesionClass("kidney_mass", "kidney", "kidney", (15.0, 50.0), (1.0, 1.3), (30.0, 90.0), 0.6, 0.15, 10.0, 0.8,
                reference="Israel & Bosniak, Urology 2005;66:484-488"),
    LesionClass("bone_lytic", "bone", "bone", (8.0, 25.0), (1.0, 1.3), (0.0, 100.0), 0.5, 0.1, 8.0, 0.9,
                reference="Hamaoka et al., J Clin Oncol 2004;22:2942-2953"),
    LesionClass("bone_blastic", "bone", "bone", (6.0, 20.0), (1.0, 1.3), (700.0, 1000.0), 0.6, 0.15, 60.0, 0.9,
                reference="Ulano et al., AJR 2016;207:362-368"),
    LesionClass("soft_tissue_mass", "soft tissue", "body_wall", (15.0, 50.0), (1.0, 1.5), (30.0, 60.0), 0.6, 0.15,
                6.0, 0.6, avoid=("lung", "dense"), reference="Kransdorf & Murphey, RadioGraphics 2016;36:1931-1948"),
)}


@dataclass(frozen=True)
class LesionSpec:
    """A drawn lesion before placement: ``semi_axes_mm`` (3,) along the rotated axes, ``rotation`` (3, 3)
    (columns: the lesion's axes in LPS), ``bump_directions`` (N_BUMPS, 3) unit vectors, ``bump_amplitudes``
    (N_BUMPS,) as fractions of the radius, ``hu``, and the class."""

    lesion_class: LesionClass
    semi_axes_mm: np.ndarray
    rotation: np.ndarray
    bump_directions: np.ndarray
    bump_amplitudes: np.ndarray
    hu: float

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere holding the whole lesion and its blurred edge, mm."""
        return float(self.semi_axes_mm.max() * (1.0 + self.bump_amplitudes.sum()) + 2.0 * self.lesion_class.margin_mm)

    def scaled(self, factor: float) -> LesionSpec:
        """The same lesion ``factor`` times smaller or larger."""
        return LesionSpec(self.lesion_class, self.semi_axes_mm * factor, self.rotation, self.bump_directions,
                          self.bump_amplitudes, self.hu)


@dataclass(frozen=True)
class LesionTruth:
    """Ground truth of one placed lesion (LPS mm, HU).

    Args:
        lesion_class, lesion_type: class name and DeepLesion coarse type.
        center_lps_mm: centroid of the mask (x, y, z).
        bbox_lps_mm: voxel-edge box ((x0, y0, z0), (x1, y1, z1)) of the mask.
        key_slice_z_mm: LPS z of the axial slice with the largest cross-section (the DeepLesion-style key slice).
        long_axis_mm, short_axis_mm: nominal diameters of the drawn ellipsoid (before lobulation).
        hu: the lesion's HU (before texture and noise); noise_hu: the matched noise standard deviation.
        mask: the lesion's voxels on the host grid (partial-volume fraction >= 0.5).
    """

    lesion_class: str
    lesion_type: str
    center_lps_mm: tuple[float, float, float]
    bbox_lps_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    key_slice_z_mm: float
    long_axis_mm: float
    short_axis_mm: float
    hu: float
    noise_hu: float
    mask: FindingMask = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready dict (no mask)."""
        return {"lesion_class": self.lesion_class, "lesion_type": self.lesion_type,
                "center_lps_mm": [round(float(v), 3) for v in self.center_lps_mm],
                "bbox_lps_mm": [[round(float(v), 3) for v in c] for c in self.bbox_lps_mm],
                "key_slice_z_mm": round(float(self.key_slice_z_mm), 3), "long_axis_mm": round(self.long_axis_mm, 2),
                "short_axis_mm": round(self.short_axis_mm, 2), "hu": round(self.hu, 1),
                "noise_hu": round(self.noise_hu, 1)}


def draw_lesion_spec(lesion_class: LesionClass, rng: np.random.Generator, liver_hu: float | None = None) -> LesionSpec:
    """Draw size, shape, orientation and HU of one lesion of ``lesion_class`` (uniform within its ranges).

    Raises:
        ValueError: the class is relative to the liver and ``liver_hu`` is None.
    """
    lo, hi = lesion_class.diameter_range_mm
    diameter = float(rng.uniform(lo, hi))
    aspects = rng.uniform(*lesion_class.aspect_range, size=2)
    if lesion_class.short_axis:
        semi = 0.5 * diameter * np.array([aspects[0], 1.0, min(aspects[1], aspects[0])])
    else:
        semi = 0.5 * diameter * np.array([1.0, 1.0 / aspects[0], 1.0 / aspects[1]])
    tilt = np.deg2rad(rng.uniform(0.0, MAX_TILT_DEG))
    rotation = (Rotation.from_euler("z", rng.uniform(0, 2 * np.pi))
                * Rotation.from_rotvec(tilt * _unit(rng.normal(size=3) * [1, 1, 0]))
                * Rotation.from_euler("y", rng.choice([0.0, np.pi / 2]))).as_matrix()
    directions = np.stack([_unit(rng.normal(size=3)) for _ in range(N_BUMPS)])
    amplitudes = rng.uniform(0.0, lesion_class.lobulation, size=N_BUMPS)
    hu = float(rng.uniform(*lesion_class.hu_range))
    if lesion_class.relative_to_liver:
        if liver_hu is None:
            raise ValueError(f"{lesion_class.name}: HU is relative to the liver, but no liver HU was given")
        hu = liver_hu - hu
    return LesionSpec(lesion_class, semi, rotation, directions, amplitudes, hu)


def estimate_noise_hu(hu: np.ndarray, region: np.ndarray, spacing_zyx_mm) -> float:
    """Robust noise standard deviation of ``hu`` inside ``region`` (e.g. fat, which is homogeneous).

    1.4826 × MAD of the in-plane high-pass residual (HU minus its Gaussian smoothing of 1.5 mm), corrected for
    the share of white noise that the smoothing keeps, clipped to :data:`NOISE_HU_BOUNDS`; voxels next to edges
    (where the residual holds structure) are left out by using only those whose smoothed gradient is below its
    median. Arrays (Z, Y, X); returns HU (the middle of the bounds when ``region`` has under 50 voxels).
    """
    from lunglesionai.synth.noise import gaussian_noise_gain

    sigma = [0.0, 1.5 / spacing_zyx_mm[1], 1.5 / spacing_zyx_mm[2]]
    smooth = ndi.gaussian_filter(np.asarray(hu, np.float32), sigma)
    gradient = ndi.gaussian_gradient_magnitude(smooth, [0.0, 1.0, 1.0])
    inside = np.asarray(region, bool)
    if inside.sum() < 50:
        return float(np.mean(NOISE_HU_BOUNDS))
    flat = inside & (gradient <= np.median(gradient[inside]))
    values = (np.asarray(hu, np.float32) - smooth)[flat]
    mad = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    kernel_gain = gaussian_noise_gain(sigma)  # std of the smoothed part of unit white noise
    return float(np.clip(mad / np.sqrt(max(1.0 - kernel_gain**2, 1e-3)), *NOISE_HU_BOUNDS))


def paint_lesion(hu: np.ndarray, volume: Volume, spec: LesionSpec, centre_kji: np.ndarray,
                 rng: np.random.Generator, noise_hu: float, *, residual: tuple | None = None,
                 necrosis: tuple[float, float] | None = None) -> LesionTruth:
    """Render ``spec`` centred at ``centre_kji`` into ``hu`` **in place** (method: module docstring).

    Args:
        hu: (Z, Y, X) float32 working copy of the host's HU (modified).
        volume: the host (grid and LPS geometry; its own array is not modified).
        spec: the lesion.
        centre_kji: (3,) voxel index of the centre.
        rng: generator of texture and noise.
        noise_hu: standard deviation of the noise added inside the lesion (the host's, :func:`estimate_noise_hu`).
        residual: optional (residual, valid) of :func:`lunglesionai.datagen.lesion_appearance.tissue_residual`:
            the lesion's noise is a patch of the host's own tissue residual instead (synthetic noise when no
            patch fits).
        necrosis: optional (core scale, core HU): a central core of that relative size at that HU.

    Returns:
        The lesion's :class:`LesionTruth`.
    """
    spacing = np.asarray(volume.spacing_mm[::-1], float)
    half = np.ceil(spec.extent_mm / spacing).astype(int) + 2
    lo = np.maximum(np.round(centre_kji).astype(int) - half, 0)
    hi = np.minimum(np.round(centre_kji).astype(int) + half + 1, hu.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    fraction = _occupancy(spec, lo, hi, centre_kji, spacing, volume.direction_matrix)
    if spec.lesion_class.margin_mm > 0:
        fraction = ndi.gaussian_filter(fraction, spec.lesion_class.margin_mm / spacing)
    host = hu[box]
    from lunglesionai.synth.noise import add_correlated_noise

    texture = ndi.gaussian_filter(rng.standard_normal(host.shape).astype(np.float32), TEXTURE_SCALE_MM / spacing)
    texture *= spec.lesion_class.texture_hu / max(float(texture.std()), 1e-6)
    value = spec.hu + texture
    if necrosis is not None:
        core = _occupancy(spec.scaled(necrosis[0]), lo, hi, centre_kji, spacing, volume.direction_matrix)
        value = value + ndi.gaussian_filter(core, 1.0 / spacing) * (necrosis[1] - spec.hu)
    noise = None
    if residual is not None:
        from lunglesionai.datagen.lesion_appearance import residual_patch

        noise = residual_patch(residual[0], residual[1], host.shape, rng)
    if noise is None:
        noise = add_correlated_noise(np.zeros(host.shape, np.float32), tuple(spacing[::-1]), noise_hu,
                                     NOISE_CORRELATION_MM, rng)
    hu[box] = host + fraction * (value + noise - host)
    mask = FindingMask(tuple(int(v) for v in lo), fraction >= MASK_LEVEL)
    return _truth(volume, spec, mask, noise_hu)


def place_lesions(volume: Volume, regions: AnatomyRegions, classes: list[str], rng: np.random.Generator,
                  *, occupied: list[tuple[np.ndarray, float]] | None = None,
                  appearance=None) -> tuple[Volume, list[LesionTruth]]:
    """Draw one lesion per entry of ``classes`` and paint it where its class belongs.

    A lesion whose class region is empty, or for which no centre is found (region clearance, footprint, image
    border, :data:`MIN_GAP_MM` to other lesions) after shrinking it up to :data:`SHRINK_TRIES` times, is skipped
    with a log message.

    Args:
        volume: host CT (LPS-ordered axes, as :func:`lunglesionai.datagen.lesion_regions.anatomy_regions` needs); unchanged.
        regions: the host's regions.
        classes: class names of :data:`LESION_CLASSES` (repeat a name for several lesions).
        rng: generator of everything random.
        occupied: (centre LPS mm, radius mm) of things to keep clear of (e.g. pasted nodules).
        appearance: optional :class:`lunglesionai.datagen.lesion_appearance.LesionAppearance` (texture residual
            from the host's own tissue, necrotic centres); None: synthetic noise only, as before.

    Returns:
        (new Volume with the lesions, float32 HU rounded to the host's integer dtype when it has one; truths in
        placement order).

    Raises:
        KeyError: an unknown class name.
    """
    unknown = [c for c in classes if c not in LESION_CLASSES]
    if unknown:
        raise KeyError(f"unknown lesion classes {unknown}; choose from {sorted(LESION_CLASSES)}")
    hu = np.asarray(volume.hu, dtype=np.float32).copy()
    spacing = np.asarray(volume.spacing_mm[::-1], float)
    noise_hu = estimate_noise_hu(hu, regions["fat"] | regions["liver"], spacing)
    residual = None
    if appearance is not None and appearance.real_texture:
        from lunglesionai.datagen.lesion_appearance import tissue_residual

        residual = tissue_residual(hu, regions["body"] & ~regions["lung"], spacing)
    clear = list(occupied or [])
    distances: dict[str, np.ndarray] = {}
    truths = []
    for name in classes:
        cls = LESION_CLASSES[name]
        region = regions[cls.region]
        if not region.any() or (cls.relative_to_liver and regions.liver_hu is None):
            logger.info("no %s region in %s: %s skipped", cls.region, volume.source or "volume", name)
            continue
        if cls.region not in distances:
            distances[cls.region] = ndi.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        if cls.avoid not in distances:
            avoid = np.zeros(region.shape, bool)
            for other in cls.avoid:
                avoid |= regions[other]
            distances[cls.avoid] = (ndi.distance_transform_edt(~avoid, sampling=spacing) if avoid.any()
                                    else np.full(region.shape, np.inf))
        spec = draw_lesion_spec(cls, rng, regions.liver_hu)
        centre, spec = _find_centre(volume, regions, spec, distances[cls.region], distances[cls.avoid], clear, rng)
        if centre is None:
            logger.info("no room for %s in %s", name, volume.source or "volume")
            continue
        necrosis = None
        if appearance is not None:
            from lunglesionai.datagen.lesion_appearance import draw_necrosis

            necrosis = draw_necrosis(name, 2.0 * float(spec.semi_axes_mm.max()), appearance, rng)
        truth = paint_lesion(hu, volume, spec, centre, rng, noise_hu, residual=residual, necrosis=necrosis)
        truths.append(truth)
        clear.append((np.asarray(truth.center_lps_mm), spec.extent_mm))
    if np.issubdtype(np.asarray(volume.hu).dtype, np.integer):
        info = np.iinfo(np.asarray(volume.hu).dtype)
        hu = np.clip(np.rint(hu), info.min, info.max).astype(np.asarray(volume.hu).dtype)
    return volume.with_array(hu), truths


def _find_centre(volume: Volume, regions: AnatomyRegions, spec: LesionSpec, distance: np.ndarray,
                 avoid_distance: np.ndarray, clear, rng):
    cls = spec.lesion_class
    spacing = np.asarray(volume.spacing_mm[::-1], float)
    shape = np.asarray(volume.shape_zyx)
    for _ in range(SHRINK_TRIES + 1):
        radius = spec.extent_mm
        margin = np.ceil(radius / spacing).astype(int)
        surface = spec.semi_axes_mm.max() * (1.0 + spec.bump_amplitudes.sum())
        ok = (distance >= cls.fit * spec.semi_axes_mm.max()) & (avoid_distance >= surface + 0.5 * spacing.min())
        candidates = np.argwhere(ok)
        if len(candidates):
            inside = np.all((candidates >= margin) & (candidates < shape - margin), axis=1)
            candidates = candidates[inside]
        for index in rng.permutation(len(candidates))[:ATTEMPTS_PER_SIZE]:
            centre = candidates[index].astype(float)
            lps = volume.kji_to_lps(centre[None])[0]
            if any(np.linalg.norm(lps - c) < radius + r + MIN_GAP_MM for c, r in clear):
                continue
            if cls.footprint_region and _footprint_fraction(regions[cls.footprint_region], centre,
                                                             0.7 * spec.semi_axes_mm.max(), spacing) < \
                    cls.min_footprint_fraction:
                continue
            return centre, spec
        smaller = spec.scaled(SHRINK_FACTOR)
        if smaller.semi_axes_mm.min() * 2 < 0.5 * cls.diameter_range_mm[0]:
            break
        spec = smaller
    return None, spec


def _footprint_fraction(region: np.ndarray, centre: np.ndarray, radius_mm: float, spacing: np.ndarray) -> float:
    half = np.ceil(radius_mm / spacing).astype(int)
    lo = np.maximum(centre.astype(int) - half, 0)
    hi = np.minimum(centre.astype(int) + half + 1, region.shape)
    grids = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing)], indexing="ij")
    ball = sum(g**2 for g in grids) <= radius_mm**2
    sub = region[tuple(slice(a, b) for a, b in zip(lo, hi))]
    return float(sub[ball].mean()) if ball.any() else 0.0


def _occupancy(spec: LesionSpec, lo, hi, centre_kji, spacing, direction) -> np.ndarray:
    """Partial-volume fraction (SUBSAMPLES³ points per voxel) of the lesion on the crop [lo, hi)."""
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5
    axes = [(np.arange(a, b)[:, None] + offsets[None, :]).ravel() - c for a, b, c in zip(lo, hi, centre_kji)]
    k, j, i = np.meshgrid(*axes, indexing="ij")
    # voxel offsets (k, j, i) → LPS mm offsets, then into the lesion's frame
    ijk_mm = np.stack([i * spacing[2], j * spacing[1], k * spacing[0]], axis=-1)
    lps = ijk_mm @ np.asarray(direction).T
    local = lps @ spec.rotation
    rho = np.linalg.norm(local / spec.semi_axes_mm, axis=-1)
    unit = local / np.maximum(np.linalg.norm(local, axis=-1, keepdims=True), 1e-9)
    bumps = np.exp(BUMP_SHARPNESS * (unit @ spec.bump_directions.T - 1.0)) @ spec.bump_amplitudes
    inside = (rho <= 1.0 + bumps).astype(np.float32)
    n = [b - a for a, b in zip(lo, hi)]
    return inside.reshape(n[0], SUBSAMPLES, n[1], SUBSAMPLES, n[2], SUBSAMPLES).mean(axis=(1, 3, 5))


def _truth(volume: Volume, spec: LesionSpec, mask: FindingMask, noise_hu: float) -> LesionTruth:
    kji = np.argwhere(mask.array) + np.asarray(mask.offset_kji)
    if kji.size == 0:  # a lesion smaller than half a voxel everywhere: keep its centre voxel as the mask
        raise ValueError(f"{spec.lesion_class.name}: the rendered lesion covers no voxel (semi-axes "
                         f"{spec.semi_axes_mm} mm on spacing {volume.spacing_mm})")
    lo, hi = kji.min(axis=0) - 0.5, kji.max(axis=0) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    box = volume.kji_to_lps(corners)
    areas = np.bincount(kji[:, 0])
    key_k = int(np.argmax(areas))
    key_z = float(volume.kji_to_lps([[key_k, 0, 0]])[0][2])
    semi = np.sort(spec.semi_axes_mm)
    return LesionTruth(spec.lesion_class.name, spec.lesion_class.lesion_type,
                       tuple(float(v) for v in volume.kji_to_lps(kji.mean(axis=0)[None])[0]),
                       (tuple(float(v) for v in box.min(axis=0)), tuple(float(v) for v in box.max(axis=0))),
                       key_z, float(2 * semi[-1]), float(2 * semi[1]), float(spec.hu), float(noise_hu), mask)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.array([1.0, 0.0, 0.0])
