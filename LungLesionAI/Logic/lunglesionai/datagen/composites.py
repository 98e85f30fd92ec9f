"""Composite chest CTs: real LIDC nodules pasted into real or phantom lungs, with LUNA16-style ground truth.

**Composites are not clinical scans.** They are training and validation data made because no full annotated chest
CT is available offline: real LIDC-IDRI nodules (``lidc_voi`` VOIs, one split only) pasted into the lung parenchyma
of a host CT, either the real 1.5 mm chest crop (``../shared/data/ct``) or a procedural phantom (whose own nodules
stay as extra truth). Detection numbers measured on them say how a detector finds real nodule *appearances* in
real or synthetic lung *backgrounds*; they are not clinical sensitivity or false-positive rates. The real host has
no annotations: anything found there apart from the pasted nodules is counted as a false positive although it may
be a real, unannotated finding.

Pasting one nodule (:func:`compose`):

1. **Source**: the VOI (HU, its own spacing and LPS geometry) and its consensus mask, padded (HU by edge values, mask
   by 0) so the blending ramp fits; when the host grid is coarser, the HU are first smoothed with a Gaussian of
   FWHM sqrt(host² − source²) per axis (anti-aliasing, so the pasted noise and edges match the host's resolution).
2. **Blend weight** ``w``: the consensus mask blurred with a Gaussian whose 10–90 % edge width is
   ``feather_mm`` (default 1.5 mm), so ``w`` ≈ 1 inside the nodule, 0.5 on the mask boundary, 0 about
   ``feather_mm`` outside (values below :data:`WEIGHT_FLOOR` are set to 0). On thick-slice sources the ramp along
   z is the linear interpolation between slices. Measured on a flat host: the change is <= 40 HU beyond 1.5 mm
   and <= 2 HU beyond 2.5 mm from the pasted mask.
3. **Geometry**: a random rotation (uniform about z, plus a tilt of at most ``max_tilt_deg`` about a random axial
   axis, so LIDC's thick-slice blur stays mostly along z) and random flips; the mask centroid maps to the chosen
   centre. HU, ``w`` and mask are resampled onto the host grid with SimpleITK (linear), in LPS.
4. **Blending** (``blend="max"``, default): ``out = max(host, host + w · (nodule − host))``, i.e. alpha compositing
   with the feathered mask, never darker than the host. In aerated lung the nodule is denser than the host, so
   this is plain alpha compositing: the nodule's own HU inside (ground-glass stays as faint as in its source scan,
   no additive contrast gain), a ``feather_mm`` ramp to pure host outside (``w`` = 0 there: the VOI box never
   shows). Where the host is denser (a vessel crossing, the pleura) the host wins, so vessels run through
   ground-glass and no dark rim of source lung appears. ``blend="alpha"`` drops the max.
5. **Placement**: uniform random centres inside the host lung mask such that a ball of the nodule's extent radius
   plus ``boundary_margin_mm`` lies in the lung (and the image), at most ``max_dense_fraction`` of the footprint is
   denser than ``dense_hu`` (no pasting over the hilum or large vessels), and surfaces stay ``min_distance_mm``
   apart from each other and from existing truth. A fraction ``juxta_pleural_fraction`` is placed touching the
   lung boundary instead.

Truth per nodule (JSON-ready dict): ``center_lps_mm`` (the mapped mask centroid), ``diameter_mm`` (**the LIDC
table's diameter**, the radiologists' measure LUNA16 uses, so the hit radius is LUNA16's; the pasted mask's
equivalent-sphere diameter is ``mask_diameter_mm``, median 1.13 × the table's over ``lidc_voi``; phantom nodules
give their mask-equivalent diameter and say so in ``diameter_source``), ``texture``, ``source`` (VOI file), ``bbox_lps_mm`` [[x0, y0, z0], [x1, y1, z1]] (voxel-edge
box of the pasted mask), ``attachment``, ``split``, ``patient_id``, ratings and the rotation used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lunglesionai.core.findings import FindingMask, equivalent_diameter_mm
from lunglesionai.core.vocabulary import TEXTURE_CLASSES
from lunglesionai.core.volume import Volume
from lunglesionai.datasets.lidc import NoduleRecord, load_voi, read_nodule_table

__all__ = [
    "BLEND_METHODS",
    "Composite",
    "CompositeConfig",
    "EDGE_WIDTH_PER_SIGMA",
    "FWHM_PER_SIGMA",
    "Host",
    "JUXTA_CORE_FRACTION",
    "JUXTA_TOUCH_MM",
    "MASK_LEVEL",
    "MAX_FAILED_NODULES",
    "NoduleSource",
    "PreparedNodule",
    "WEIGHT_FLOOR",
    "compose",
    "find_position",
    "lung_bounds",
    "paste_nodule",
    "prepare_nodule",
    "random_orientation",
]

logger = logging.getLogger(__name__)
BLEND_METHODS = ("max", "alpha")
WEIGHT_FLOOR = 1e-3
"""Blend weights below this are set to 0 (the Gaussian's tail; at most a 1 HU step at the paste's rim)."""
EDGE_WIDTH_PER_SIGMA = 2.563
"""10–90 % width of a Gaussian-blurred step edge, in units of the Gaussian's sigma."""
FWHM_PER_SIGMA = 2.3548
JUXTA_CORE_FRACTION = 0.5
"""A juxta-pleural nodule keeps a ball of this fraction of its extent radius inside the lung."""
JUXTA_TOUCH_MM = 1.0
"""…and its extent radius plus this reaches outside the lung (it touches the pleura)."""
MAX_FAILED_NODULES = 25
""":func:`compose` stops looking for room after this many nodules found no place in a row."""
MASK_LEVEL = 0.5
"""A host voxel belongs to a pasted nodule's truth mask when the resampled consensus mask is >= this."""


@dataclass(frozen=True)
class CompositeConfig:
    """Settings of :func:`compose` (one composite) and :func:`build_composite_set`.

    Args:
        n_nodules: LIDC nodules to paste per composite (>= 0).
        seed: random seed (nodule choice, rotation, flips, positions); same seed, same composite.
        split: ``lidc_voi`` split the nodules come from ("train" for training sets, "val" for validation sets).
        min_distance_mm: smallest gap between two nodule surfaces (pasted or existing), mm.
        boundary_margin_mm: smallest gap between a nodule's surface and the lung boundary / image edge, mm.
        juxta_pleural_fraction: share of nodules placed touching the lung boundary instead, in [0, 1].
        diameter_range_mm: (min, max) LIDC table diameter of the nodules used, mm (LUNA16 counts >= 3 mm).
        textures: texture classes to use ("solid", "part-solid", "ground-glass"); None: all.
        feather_mm: 10–90 % width of the blend ramp at the mask boundary, mm (> 0).
        blend: "max" (default) or "alpha"; see the module docstring.
        max_tilt_deg: largest tilt of the nodule's axis away from z, degrees (0: rotation about z only).
        flip: random flips along x, y, z.
        antialias: smooth the source to the host's resolution when the host grid is coarser.
        dense_hu: host HU above which a voxel counts as dense (vessel, soft tissue).
        max_dense_fraction: largest share of dense host voxels in a nodule's footprint, in [0, 1].
        max_attempts: random positions tried per nodule before another nodule is tried.

    Raises:
        ValueError: a field is out of range (the message names it and its value).
    """

    n_nodules: int = 4
    seed: int = 0
    split: str = "val"
    min_distance_mm: float = 5.0
    boundary_margin_mm: float = 3.0
    juxta_pleural_fraction: float = 0.0
    diameter_range_mm: tuple[float, float] = (3.0, 30.0)
    textures: tuple[str, ...] | None = None
    feather_mm: float = 1.5
    blend: str = "max"
    max_tilt_deg: float = 15.0
    flip: bool = True
    antialias: bool = True
    dense_hu: float = -400.0
    max_dense_fraction: float = 0.25
    max_attempts: int = 300

    def __post_init__(self) -> None:
        checks = {
            "n_nodules": self.n_nodules >= 0,
            "min_distance_mm": self.min_distance_mm >= 0,
            "boundary_margin_mm": self.boundary_margin_mm >= 0,
            "juxta_pleural_fraction": 0.0 <= self.juxta_pleural_fraction <= 1.0,
            "diameter_range_mm": 0 < self.diameter_range_mm[0] < self.diameter_range_mm[1],
            "feather_mm": self.feather_mm > 0,
            "blend": self.blend in BLEND_METHODS,
            "max_tilt_deg": 0.0 <= self.max_tilt_deg <= 180.0,
            "max_dense_fraction": 0.0 <= self.max_dense_fraction <= 1.0,
            "max_attempts": self.max_attempts >= 1,
            "split": bool(self.split),
            "textures": self.textures is None or set(self.textures) <= set(TEXTURE_CLASSES),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"CompositeConfig.{name} is out of range: {getattr(self, name)!r}")


class NoduleSource:
    """The LIDC VOIs of one ``lidc_voi`` split, loaded lazily and cached.

    Args:
        data_dir: folder in the ``lidc_voi`` layout (``nodules.csv``, ``images/``, ``masks/``).
        split: only rows whose ``split`` column equals this are used (a table without the column has none).

    Raises:
        lunglesionai.datasets.lidc.LidcTableError: no table, a malformed row, or no row of ``split``.

    Example:
        >>> source = NoduleSource("../shared/data/lidc_voi", "val")  # doctest: +SKIP
        >>> len(source.records)  # doctest: +SKIP
        151
    """

    def __init__(self, data_dir: str | os.PathLike, split: str) -> None:
        from lunglesionai.datasets.lidc import LidcTableError

        self.data_dir = Path(data_dir)
        self.split = split
        self.records: list[NoduleRecord] = [r for r in read_nodule_table(data_dir, split) if r.split == split]
        if not self.records:
            raise LidcTableError(f"{self.data_dir}: no nodule with split == {split!r}")
        self._cache: dict[int, tuple[Volume, np.ndarray]] = {}

    def load(self, index: int) -> tuple[Volume, np.ndarray]:
        """(VOI volume in HU, boolean (Z, Y, X) consensus mask) of ``records[index]``."""
        if index not in self._cache:
            self._cache[index] = load_voi(self.data_dir, self.records[index])
        return self._cache[index]


@dataclass(frozen=True)
class Host:
    """A host CT: volume, lung mask ((Z, Y, X), > 0 = lung) and its own truth (phantom nodules; none for real CT)."""

    name: str
    volume: Volume
    lung_mask: np.ndarray
    truth: tuple[dict, ...] = ()
    masks: tuple[FindingMask | None, ...] = ()


@dataclass(frozen=True)
class Composite:
    """One composite CT and its truth.

    Args:
        case_id: file stem and LUNA16 ``seriesuid`` of the case.
        volume: the composite (host dtype, host grid).
        truth: one JSON-ready dict per nodule (existing host nodules first, then pasted ones).
        masks: per truth nodule, its voxel mask on the volume's grid (or None).
        host: the host's name.
        config: the config that made it.
    """

    case_id: str
    volume: Volume
    truth: list[dict]
    masks: list[FindingMask | None] = field(default_factory=list)
    host: str = ""
    config: CompositeConfig | None = None

    def labelmap(self) -> np.ndarray:
        """(Z, Y, X) uint16 labelmap: truth nodule n (0-based) has label n + 1."""
        labels = np.zeros(self.volume.shape_zyx, np.uint16)
        for n, mask in enumerate(self.masks, start=1):
            if mask is not None:
                mask.paste_into(labels, n)
        return labels


@dataclass(frozen=True)
class PreparedNodule:
    """A source nodule ready to resample (:func:`prepare_nodule`), used by :func:`paste_nodule`.

    Args:
        hu, weight, mask: padded HU (anti-aliased), feathered blend weight in [0, 1] and binary mask, SimpleITK
            images on the source VOI's grid (LPS).
        centre_lps_mm: (3,) centroid of the mask, source LPS mm.
        radius_mm: largest distance from that centroid to a mask voxel, plus half a voxel diagonal (mm).
        support_mm: the same for every voxel of non-zero weight, plus a voxel diagonal (mm).
        background_hu: median HU outside the mask in the source VOI (fills the resampling's outside).
    """

    hu: sitk.Image
    weight: sitk.Image
    mask: sitk.Image
    centre_lps_mm: np.ndarray
    radius_mm: float
    support_mm: float
    background_hu: float


def compose(
    host: Volume,
    host_lung_mask: np.ndarray,
    nodules_source: NoduleSource,
    config: CompositeConfig = CompositeConfig(),
    *,
    existing_truth: Sequence[dict] = (),
    existing_masks: Sequence[FindingMask | None] = (),
) -> Composite:
    """Paste ``config.n_nodules`` LIDC nodules of ``config.split`` into the host's lungs (method: module docstring).

    Args:
        host: host CT in HU (any grid and direction).
        host_lung_mask: (Z, Y, X) lung labels on the host grid (> 0 = lung).
        nodules_source: the VOIs; its split must equal ``config.split``.
        config: settings.
        existing_truth: truth dicts of nodules already in the host (``center_lps_mm``, ``diameter_mm``, optional
            ``extent_radius_mm``); they are kept out of the way and returned first in the truth.
        existing_masks: their masks (same order), for :meth:`Composite.labelmap`.

    Returns:
        Composite (``case_id`` empty). Fewer nodules than asked (with a warning) when no room is left.

    Raises:
        ValueError: mask shape differs from the host's, or the source's split is not ``config.split``.

    Example:
        >>> from lunglesionai.synth import PhantomConfig, make_phantom
        >>> p = make_phantom(PhantomConfig.small(seed=1))  # doctest: +SKIP
        >>> c = compose(p.volume, p.lung_mask, NoduleSource("lidc_voi", "val"), CompositeConfig(n_nodules=3))  # doctest: +SKIP
    """
    if np.shape(host_lung_mask) != host.shape_zyx:
        raise ValueError(f"lung mask shape {np.shape(host_lung_mask)} differs from the host's {host.shape_zyx}")
    if nodules_source.split != config.split:
        raise ValueError(f"nodule source split {nodules_source.split!r} differs from config.split {config.split!r}")
    rng = np.random.default_rng(config.seed)
    hu = np.array(host.hu, copy=True)
    lung = np.asarray(host_lung_mask) > 0
    if existing_masks and len(existing_masks) != len(existing_truth):
        raise ValueError(f"{len(existing_masks)} existing masks for {len(existing_truth)} existing truth nodules")
    occupied = [(np.asarray(t["center_lps_mm"], float), _extent_radius(t)) for t in existing_truth]
    truth = [dict(t) for t in existing_truth]
    masks = list(existing_masks) if existing_masks else [None] * len(existing_truth)
    bounds = lung_bounds(lung)
    placed = failed = 0
    for index in rng.permutation(_eligible(nodules_source.records, config)):
        if placed == config.n_nodules or failed == MAX_FAILED_NODULES:
            break
        voi, voi_mask = nodules_source.load(int(index))
        prepared = prepare_nodule(voi, voi_mask, host.spacing_mm, config)
        juxta = bool(rng.random() < config.juxta_pleural_fraction)
        centre = find_position(host, lung, bounds, prepared, occupied, config, rng, juxta) if bounds else None
        if centre is None:
            failed += 1
            continue
        matrix = random_orientation(rng, config)
        mask = paste_nodule(hu, host, prepared, matrix, centre, config.blend)
        record = nodules_source.records[int(index)]
        placed, failed = placed + 1, 0
        truth.append(_pasted_truth(f"C{placed}", record, host, centre, mask, matrix, juxta))
        masks.append(mask)
        occupied.append((centre, prepared.radius_mm))
    if placed < config.n_nodules:
        logger.warning("placed %d of %d nodules (no room left in the host lungs)", placed, config.n_nodules)
    return Composite("", host.with_array(hu), truth, masks, host.source, config)


def _eligible(records: Sequence[NoduleRecord], config: CompositeConfig) -> np.ndarray:
    low, high = config.diameter_range_mm
    keep = [
        i for i, r in enumerate(records)
        if low <= r.diameter_mm <= high
        and (config.textures is None or (r.texture is not None and TEXTURE_CLASSES[r.texture] in config.textures))
    ]
    return np.asarray(keep, dtype=int)


def prepare_nodule(voi: Volume, mask: np.ndarray, host_spacing_mm, config: CompositeConfig) -> PreparedNodule:
    """Pad, anti-alias and feather one VOI (steps 1–2 of the module docstring).

    Args:
        voi: the source nodule's VOI (HU, its own grid).
        mask: (Z, Y, X) boolean mask of the nodule on that grid.
        host_spacing_mm: (x, y, z) voxel spacing of the host (mm); the VOI is blurred down to it when
            ``config.antialias``.
        config: feathering width and anti-aliasing.

    Returns:
        The :class:`PreparedNodule`.
    """
    spacing_zyx = np.asarray(voi.spacing_mm[::-1], float)
    sigma_mm = config.feather_mm / EDGE_WIDTH_PER_SIGMA
    pad = [int(np.ceil(4 * sigma_mm / s)) + 2 for s in spacing_zyx]
    hu = np.pad(np.asarray(voi.hu, np.float32), [(p, p) for p in pad], mode="edge")
    binary = np.pad(mask.astype(np.float32), [(p, p) for p in pad])
    if config.antialias:
        host_zyx = np.asarray(host_spacing_mm[::-1], float)
        smooth = np.sqrt(np.clip(host_zyx**2 - spacing_zyx**2, 0, None)) / FWHM_PER_SIGMA / spacing_zyx
        if np.any(smooth > 0):
            hu = ndimage.gaussian_filter(hu, smooth, mode="nearest")
    weight = ndimage.gaussian_filter(binary, sigma_mm / spacing_zyx, mode="constant")
    weight[weight < WEIGHT_FLOOR] = 0.0
    origin = voi.kji_to_lps([[-p for p in pad]])[0]
    images = []
    for array in (hu, weight, binary):
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(tuple(origin.tolist()))
        image.SetSpacing(voi.spacing_mm)
        image.SetDirection(voi.direction)
        images.append(image)
    padded = Volume(binary, voi.spacing_mm, tuple(origin.tolist()), voi.direction)
    inside = padded.kji_to_lps(np.argwhere(binary > 0))
    centre = inside.mean(axis=0)
    voxel = float(np.linalg.norm(voi.spacing_mm))
    radius = float(np.linalg.norm(inside - centre, axis=1).max()) + voxel / 2
    # linear interpolation carries a weight up to one source voxel beyond the last non-zero one
    support = float(np.linalg.norm(padded.kji_to_lps(np.argwhere(weight > 0)) - centre, axis=1).max()) + voxel
    background = float(np.median(voi.hu[~mask])) if np.any(~mask) else float(np.min(voi.hu))
    return PreparedNodule(images[0], images[1], images[2], centre, radius, support, background)


def random_orientation(rng: np.random.Generator, config: CompositeConfig) -> np.ndarray:
    """A random 3×3 map from host LPS offsets to source LPS offsets: a rotation about z, a tilt of at most
    ``config.max_tilt_deg`` and, when ``config.flip``, random axis flips. ``rng`` is advanced."""
    spin = Rotation.from_euler("z", rng.uniform(0.0, 360.0), degrees=True)
    axis_angle = rng.uniform(0.0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(0.0, config.max_tilt_deg))
    tilt_rotation = Rotation.from_rotvec(tilt * np.array([np.cos(axis_angle), np.sin(axis_angle), 0.0]))
    flips = np.where(rng.random(3) < 0.5, -1.0, 1.0) if config.flip else np.ones(3)
    return (tilt_rotation * spin).as_matrix() @ np.diag(flips)


def lung_bounds(lung: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, last) (k, j, i) index of the (Z, Y, X) lung mask's bounding box (both (3,) int arrays), or None for
    an empty mask."""
    nonzero = [np.flatnonzero(lung.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    if any(n.size == 0 for n in nonzero):
        return None
    return np.array([n[0] for n in nonzero]), np.array([n[-1] for n in nonzero])


def find_position(host: Volume, lung: np.ndarray, bounds, prepared: PreparedNodule, occupied, config: CompositeConfig,
                   rng: np.random.Generator, juxta: bool) -> np.ndarray | None:
    """A random centre (host LPS mm, (3,)) satisfying the placement rules (module docstring, step 5), or None.

    Args:
        host: the host CT; lung: its (Z, Y, X) lung mask; bounds: :func:`lung_bounds` of it.
        prepared: the nodule to place (its radius and support).
        occupied: [(centre LPS mm, radius mm), ...] of the nodules already placed.
        config: margins, spacing between nodules, dense-tissue limits, attempts.
        rng: random generator (advanced); juxta: place it touching the pleura instead of inside the lung.

    Returns:
        None when no position was found in ``config.max_attempts`` draws.
    """
    radius = prepared.radius_mm
    spacing_zyx = np.asarray(host.spacing_mm[::-1], float)
    outer = radius + (JUXTA_TOUCH_MM if juxta else config.boundary_margin_mm)
    reach = max(outer, prepared.support_mm)
    lo, hi = bounds
    for _ in range(config.max_attempts):
        kji = rng.uniform(lo - 0.5, hi + 0.5)
        centre = host.kji_to_lps([kji])[0]
        if any(np.linalg.norm(centre - c) < radius + r + config.min_distance_mm for c, r in occupied):
            continue
        window = _ball_window(np.rint(kji).astype(int), reach, spacing_zyx, lung.shape)
        if window is None:
            continue
        box, distance = window
        lung_box = lung[box]
        if juxta:
            ok = lung_box[distance <= JUXTA_CORE_FRACTION * radius].all() and not lung_box[distance <= outer].all()
        else:
            ok = lung_box[distance <= outer].all()
        footprint = (distance <= radius) & lung_box
        if ok and footprint.any() and np.mean(host.hu[box][footprint] > config.dense_hu) <= config.max_dense_fraction:
            return centre
    return None


def _ball_window(centre_kji: np.ndarray, radius_mm: float, spacing_zyx: np.ndarray, shape):
    """(index box, distance in mm of each box voxel from the centre voxel), or None if the ball leaves the image."""
    half = np.ceil(radius_mm / spacing_zyx).astype(int)
    lo, hi = centre_kji - half, centre_kji + half + 1
    if np.any(lo < 0) or np.any(hi > np.asarray(shape)):
        return None
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre_kji, spacing_zyx)]
    distance = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), distance


def paste_nodule(hu: np.ndarray, host: Volume, prepared: PreparedNodule, matrix: np.ndarray, centre: np.ndarray,
           blend: str) -> FindingMask:
    """Resample the prepared nodule around ``centre`` and blend it into ``hu`` (in place); return its mask.

    Args:
        hu: the (Z, Y, X) host HU array to paste into (modified; integer arrays are rounded and clipped).
        host: the host's geometry; prepared: from :func:`prepare_nodule`.
        matrix: 3×3 host-to-source offset map (:func:`random_orientation`).
        centre: (3,) host LPS mm where the nodule's centroid goes.
        blend: one of :data:`BLEND_METHODS` ("max": the nodule never darkens the host).

    Returns:
        The pasted nodule's mask (:data:`MASK_LEVEL` of the resampled mask) on the host grid.
    """
    corners = centre + np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]) * prepared.support_mm
    kji = host.lps_to_kji(corners)
    lo = np.maximum(np.floor(kji.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(kji.max(axis=0)).astype(int) + 2, host.shape_zyx)
    reference = sitk.Image([int(n) for n in (hi - lo)[::-1]], sitk.sitkFloat32)
    reference.SetSpacing(host.spacing_mm)
    reference.SetOrigin(tuple(host.kji_to_lps([lo])[0].tolist()))
    reference.SetDirection(host.direction)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix.reshape(-1).tolist())
    transform.SetCenter(tuple(centre.tolist()))
    transform.SetTranslation(tuple((prepared.centre_lps_mm - centre).tolist()))

    def resample(image: sitk.Image, default: float) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, sitk.sitkLinear, default))

    nodule, weight = resample(prepared.hu, prepared.background_hu), resample(prepared.weight, 0.0)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    under = hu[box].astype(np.float32)
    out = under + weight * (nodule - under)
    if blend == "max":
        out = np.maximum(out, under)
    if np.issubdtype(hu.dtype, np.integer):
        info = np.iinfo(hu.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    hu[box] = out.astype(hu.dtype)
    mask = resample(prepared.mask, 0.0) >= MASK_LEVEL
    if not mask.any():
        nearest = np.clip(np.rint(host.lps_to_kji([centre])[0]).astype(int) - lo, 0, np.asarray(mask.shape) - 1)
        mask[tuple(nearest)] = True
    return FindingMask(tuple(int(v) for v in lo), mask)


def _pasted_truth(nodule_id: str, record: NoduleRecord, host: Volume, centre: np.ndarray, mask: FindingMask,
                  matrix: np.ndarray, juxta: bool) -> dict:
    volume_mm3 = mask.voxel_count * host.voxel_volume_mm3
    return {
        "id": nodule_id,
        "origin": "lidc-voi",
        "source": record.file,
        "patient_id": record.patient_id,
        "split": record.split,
        "center_lps_mm": [round(float(c), 3) for c in centre],
        "diameter_mm": round(float(record.diameter_mm), 3),
        "diameter_source": "lidc-table",
        "mask_diameter_mm": round(equivalent_diameter_mm(volume_mm3), 3),
        "texture": TEXTURE_CLASSES[record.texture] if record.texture is not None else None,
        "attachment": "juxta-pleural" if juxta else "isolated",
        "bbox_lps_mm": _mask_bbox_lps(host, mask),
        "malignancy_rating": record.rating,
        "malignant": record.malignant,
        "host_to_source_matrix": np.round(matrix, 6).tolist(),
    }


def _mask_bbox_lps(volume: Volume, mask: FindingMask) -> list[list[float]]:
    """Voxel-edge bounding box of a mask, LPS mm: [[x0, y0, z0], [x1, y1, z1]] (min and max corners)."""
    kji = np.argwhere(mask.array) + np.asarray(mask.offset_kji)
    lo, hi = kji.min(axis=0) - 0.5, kji.max(axis=0) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    lps = volume.kji_to_lps(corners)
    return [[round(float(v), 3) for v in lps.min(axis=0)], [round(float(v), 3) for v in lps.max(axis=0)]]


def _extent_radius(truth: dict) -> float:
    return float(truth.get("extent_radius_mm", float(truth["diameter_mm"]) / 2.0))
