"""Prior/current CT pairs with exact truth, for testing follow-up comparison (registration, matching, growth).

**Pairs are test data, not clinical follow-ups.** One host CT (a procedural phantom or a real CT of
``../shared/data/ct``) is turned into two scans of "the same patient":

* **prior** = the host, with nodules pasted (synthetic ellipsoids or real LIDC-IDRI VOIs), plus new image noise;
* **current** = the host warped by a smooth breathing-like deformation plus a repositioning (shift and small
  rotation), with the same nodules pasted at their mapped positions, grown or shrunk by known volume factors, one
  nodule that is new and without the prior's resolved one, plus independent new noise.

Deformation (:func:`breathing_transform`), a displacement field on a ``field_spacing_mm`` grid mapping **current LPS
mm → prior LPS mm**: a cranio-caudal component that grows smoothly (smoothstep) from the lung apices to the bases
(the diaphragm moves most; Seppenwoolde et al., Int J Radiat Oncol Biol Phys 53(4):822–834, 2002,
doi:10.1016/S0360-3016(02)02803-1, measured 12 ± 2 mm cranio-caudal motion of lower-lobe tumours), an
antero-posterior expansion of 30 % of it, and a random smooth field (Gaussian-filtered white noise, sigma
``smoothness_mm``) of 30 %; their sum is scaled so that its largest displacement over the lungs is
``deformation_mm``. Then a rotation of at most ``max_rotation_deg`` about the lungs' centroid and a shift of
``shift_mm`` in a random direction are added. The host (linear) and its lung mask (nearest neighbour) are resampled
through it; voxels mapping outside the host get :data:`OUTSIDE_HU` (air).

Nodules (pasted after warping, so they keep their shape, as solid nodules do; their orientation follows the local
rotation of the deformation): each is pasted with the compositing of :mod:`lunglesionai.datagen.composites`
(feathered mask, ``max`` blending, anti-aliasing) at a centre chosen by its placement rules (inside the lung with a
margin, off dense structures, apart from each other). A volume change by factor ``f`` is made by rescaling the VOI's
voxel spacing by ``f^(1/3)``: the larger of the two appearances keeps the source size, the smaller one is the VOI
shrunk (never enlarged, so no upsampling blur).

Truth (``FollowupPair.truth``, JSON-ready; the ``truth.json`` of :func:`write_pairs`)::

    {"interval_days": 180,
     "nodules": [{"id": "F1", "prior_lps_mm": [x, y, z] or null, "current_lps_mm": [x, y, z] or null,
                  "prior_volume_mm3": V1 or null, "current_volume_mm3": V2 or null,
                  "prior_diameter_mm": d1 or null, "current_diameter_mm": d2 or null,
                  "prior_mask_volume_mm3": ... or null, "current_mask_volume_mm3": ... or null,
                  "volume_factor": f or null, "source": "...", "texture": "solid" | ...}, ...],
     "host": "...", "deformation_mm": ..., "shift_mm": [x, y, z], "rotation_deg": ...}

Centres are the points the VOI's mask centroid was pasted at, LPS mm of each scan. ``*_volume_mm3`` is the nodule's
true volume in that scan: the source mask's volume times the linear scale cubed (so the ratio of the two is exactly
``volume_factor``), ``*_diameter_mm`` its equivalent-sphere diameter (mm); ``*_mask_volume_mm3`` is the pasted
mask's voxel count × voxel volume on the CT grid (what the image holds at the 0.5 level; for a 5 mm nodule on a
0.7 × 0.7 × 1.25 mm grid it differs from the true volume by up to about 10 %). ``null``: the nodule is absent from
that scan (new: no prior; resolved: no current).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lunglesionai.core.findings import FindingMask, equivalent_diameter_mm
from lunglesionai.core.output_folder import atomic_output_folder, check_output_folder, write_json_atomic
from lunglesionai.core.sitk_bridge import volume_to_sitk
from lunglesionai.core.volume import Volume
from lunglesionai.datagen.composites import (
    CompositeConfig,
    NoduleSource,
    find_position,
    lung_bounds,
    paste_nodule,
    prepare_nodule,
    random_orientation,
)
from lunglesionai.io.ct_files import save_volume
from lunglesionai.synth.noise import add_correlated_noise

__all__ = [
    "FOLLOWUP_PAIR_FILES",
    "OUTSIDE_FOV_HU",
    "OUTSIDE_HU",
    "FollowupPair",
    "FollowupPairConfig",
    "breathing_transform",
    "make_pair",
    "synthetic_nodule",
    "write_pairs",
]

logger = logging.getLogger(__name__)

OUTSIDE_HU = -1000.0
"""HU of current voxels that map outside the host (air)."""
OUTSIDE_FOV_HU = -1024.0
"""Host voxels below this (a scanner's padding outside its field of view) are raised to it in both scans."""
FOLLOWUP_PAIR_FILES = ("prior.nii.gz", "current.nii.gz", "truth.json")
"""The files of one case folder written by :func:`write_pairs`."""
SYNTHETIC_NODULE_HU = 30.0
"""Mean HU inside a synthetic solid nodule (soft tissue)."""
SYNTHETIC_LUNG_HU = -850.0
"""HU around a synthetic nodule in its VOI (aerated lung)."""
SYNTHETIC_VOI_SPACING_MM = 0.5
"""Voxel size of a synthetic nodule's VOI, mm."""
AP_EXPANSION_SHARE = 0.3
"""Antero-posterior expansion relative to the cranio-caudal breathing component."""
RANDOM_FIELD_SHARE = 0.3
"""Random smooth displacement relative to the cranio-caudal breathing component."""
LUNG_POINTS = 20000
"""About this many lung voxels (a regular subsample) describe the lungs' extent and centroid."""
INVERSE_TOLERANCE_MM = 1e-4
"""Truth points are mapped into the current scan to within this, mm."""
MAX_PLACEMENT_TRIES = 20
"""Placements tried per VOI (the centre mapped into the current scan must keep the nodule inside the image)."""
MAX_CANDIDATES_PER_NODULE = 10
"""VOIs tried per nodule before the pair is refused."""
_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class FollowupPairConfig:
    """Settings of :func:`make_pair`.

    Args:
        volume_factors: one nodule in both scans per factor: current volume / prior volume (> 0; 1 = stable).
        n_new: nodules only in the current scan (>= 0).
        n_resolved: nodules only in the prior scan (>= 0).
        diameter_range_mm: (min, max) diameter of the nodules: synthetic ones are drawn uniformly from it, LIDC ones
            are chosen among VOIs whose table diameter lies in it (mm, 3–30).
        interval_days: days between the scans, written into the truth (> 0).
        deformation_mm: largest breathing-like displacement over the lungs, mm (0–30; 5–15 is realistic).
        shift_mm: length of the repositioning shift, mm (>= 0), in a random direction.
        max_rotation_deg: the repositioning rotation is uniform in [−this, this] degrees about a random axis (0–10).
        smoothness_mm: sigma of the random part of the deformation, mm (> 0).
        field_spacing_mm: node spacing of the displacement field, mm (> 0).
        noise_hu: standard deviation of the new noise added to each scan, HU (>= 0).
        noise_correlation_mm: Gaussian sigma that correlates that noise, mm (> 0).
        interval_days: the interval written into the truth, days.
        paste: placement and compositing settings (:class:`~lunglesionai.datagen.composites.CompositeConfig`;
            its ``n_nodules``, ``seed``, ``split`` and ``juxta_pleural_fraction`` are not used).

    Raises:
        ValueError: a field is out of range (the message names it and its value).
    """

    volume_factors: tuple[float, ...] = (1.0, 1.0, 1.7, 2.2, 0.5)
    n_new: int = 1
    n_resolved: int = 1
    diameter_range_mm: tuple[float, float] = (5.0, 15.0)
    interval_days: float = 180.0
    deformation_mm: float = 10.0
    shift_mm: float = 8.0
    max_rotation_deg: float = 3.0
    smoothness_mm: float = 40.0
    field_spacing_mm: float = 6.0
    noise_hu: float = 12.0
    noise_correlation_mm: float = 0.6
    paste: CompositeConfig = field(default_factory=lambda: CompositeConfig(min_distance_mm=8.0))

    def __post_init__(self) -> None:
        checks = {
            "volume_factors": all(f > 0 for f in self.volume_factors),
            "n_new": self.n_new >= 0,
            "n_resolved": self.n_resolved >= 0,
            "diameter_range_mm": 3.0 <= self.diameter_range_mm[0] <= self.diameter_range_mm[1] <= 30.0,
            "interval_days": self.interval_days > 0,
            "deformation_mm": 0.0 <= self.deformation_mm <= 30.0,
            "shift_mm": self.shift_mm >= 0,
            "max_rotation_deg": 0.0 <= self.max_rotation_deg <= 10.0,
            "smoothness_mm": self.smoothness_mm > 0,
            "field_spacing_mm": self.field_spacing_mm > 0,
            "noise_hu": self.noise_hu >= 0,
            "noise_correlation_mm": self.noise_correlation_mm > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"FollowupPairConfig.{name} is out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class FollowupPair:
    """One prior/current pair and its truth (module docstring).

    Args:
        prior: the prior CT (host grid, int16 HU).
        current: the current CT (host grid, int16 HU).
        truth: JSON-ready truth (module docstring).
        prior_lung: (Z, Y, X) uint8 lung labels of the prior (the host's).
        current_lung: (Z, Y, X) uint8 lung labels of the current (the host's, warped).
        current_to_prior: the true deformation, current LPS mm → prior LPS mm (SimpleITK transform).
        case_id: folder name used by :func:`write_pairs` ("" → ``pair_<n>``).
    """

    prior: Volume
    current: Volume
    truth: dict
    prior_lung: np.ndarray
    current_lung: np.ndarray
    current_to_prior: sitk.Transform
    case_id: str = ""


def synthetic_nodule(diameter_mm: float, rng: np.random.Generator) -> tuple[Volume, np.ndarray]:
    """A solid synthetic nodule VOI: an ellipsoid (axes within ±15 % of ``diameter_mm``) in aerated lung.

    Args:
        diameter_mm: nominal diameter, mm (> 0).
        rng: random generator (axes, texture noise).

    Returns:
        (VOI Volume of float32 HU on a :data:`SYNTHETIC_VOI_SPACING_MM` isotropic grid centred on LPS 0, boolean
        (Z, Y, X) mask of the ellipsoid).

    Raises:
        ValueError: ``diameter_mm`` is not positive.

    Example:
        >>> voi, mask = synthetic_nodule(8.0, np.random.default_rng(0))
        >>> bool(150 < mask.sum() * voi.voxel_volume_mm3 < 400)
        True
    """
    if not diameter_mm > 0:
        raise ValueError(f"synthetic_nodule: diameter_mm must be > 0, got {diameter_mm}")
    semi_axes = diameter_mm / 2 * rng.uniform(0.85, 1.15, 3)
    n = int(np.ceil(semi_axes.max() * 2.6 / SYNTHETIC_VOI_SPACING_MM)) | 1
    axis = (np.arange(n) - n // 2) * SYNTHETIC_VOI_SPACING_MM
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    mask = (x / semi_axes[0]) ** 2 + (y / semi_axes[1]) ** 2 + (z / semi_axes[2]) ** 2 <= 1.0
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, mask.shape), 2.0)
    hu = np.where(mask, SYNTHETIC_NODULE_HU + 15.0 * texture / max(texture.std(), 1e-6), SYNTHETIC_LUNG_HU)
    origin = tuple(float(axis[0]) for _ in range(3))
    voi = Volume(hu.astype(np.float32), (SYNTHETIC_VOI_SPACING_MM,) * 3, origin, source="synthetic")
    return voi, mask


def breathing_transform(host: Volume, host_lung: np.ndarray, rng: np.random.Generator,
                        config: FollowupPairConfig = FollowupPairConfig()) -> tuple[sitk.Transform, dict]:
    """A breathing-like deformation plus repositioning, current LPS mm → prior LPS mm (module docstring).

    Args:
        host: the host CT (its grid is the field's extent).
        host_lung: (Z, Y, X) lung mask of the host (> 0 = lung), not empty.
        rng: random generator (signs, random field, rotation axis and angle, shift direction).
        config: ``deformation_mm``, ``shift_mm``, ``max_rotation_deg``, ``smoothness_mm``, ``field_spacing_mm``.

    Returns:
        (``sitk.DisplacementFieldTransform`` covering the host plus 50 mm, JSON-ready description:
        ``deformation_mm`` (the largest deformation over the lungs), ``shift_mm`` (x, y, z), ``rotation_deg``).

    Raises:
        ValueError: the lung mask is empty or its shape differs from the host's.
    """
    lung = np.asarray(host_lung) > 0
    if lung.shape != host.shape_zyx or not lung.any():
        raise ValueError(f"breathing_transform needs a non-empty lung mask of shape {host.shape_zyx}")
    nodes, field_geometry = _field_nodes(host, config.field_spacing_mm, margin_mm=50.0)
    stride = max(1, int(round((lung.sum() / LUNG_POINTS) ** (1 / 3))))
    lung_points = host.kji_to_lps(np.argwhere(lung[::stride, ::stride, ::stride]) * stride)
    centre = lung_points.mean(axis=0)
    z_bottom, z_top = lung_points[:, 2].min(), lung_points[:, 2].max()
    half_depth = max(1.0, float(np.ptp(lung_points[:, 1])) / 2)
    s = np.clip((z_top - nodes[..., 2]) / max(z_top - z_bottom, 1.0), 0.0, 1.0)
    smooth = s * s * (3 - 2 * s)
    deformation = np.zeros_like(nodes)
    deformation[..., 2] = rng.choice([-1.0, 1.0]) * smooth
    deformation[..., 1] = AP_EXPANSION_SHARE * smooth * (nodes[..., 1] - centre[1]) / half_depth
    sigma_nodes = config.smoothness_mm / config.field_spacing_mm
    for axis in range(3):
        noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, nodes.shape[:3]), sigma_nodes, mode="nearest")
        deformation[..., axis] += RANDOM_FIELD_SHARE * noise / max(np.abs(noise).max(), 1e-9)
    in_lung = _nodes_in_lung(host, lung, nodes)
    largest = float(np.linalg.norm(deformation[in_lung], axis=-1).max()) if in_lung.any() else 1.0
    deformation *= config.deformation_mm / max(largest, 1e-9)
    rotation = Rotation.from_rotvec(_unit(rng.normal(size=3)) * np.deg2rad(
        rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)))
    shift = _unit(rng.normal(size=3)) * config.shift_mm
    rigid = (nodes - centre) @ (rotation.as_matrix() - np.eye(3)).T + shift
    image = sitk.GetImageFromArray((deformation + rigid).astype(np.float64), isVector=True)
    image.SetSpacing(field_geometry[0])
    image.SetOrigin(field_geometry[1])
    image.SetDirection(host.direction)
    info = {"deformation_mm": round(float(config.deformation_mm), 3),
            "shift_mm": [round(float(v), 3) for v in shift],
            "rotation_deg": round(float(np.rad2deg(rotation.magnitude())), 3)}
    return sitk.DisplacementFieldTransform(image), info


def make_pair(host: Volume, host_lung: np.ndarray, rng: np.random.Generator, *,
              nodules: NoduleSource | Sequence[tuple[Volume, np.ndarray]] | None = None,
              config: FollowupPairConfig = FollowupPairConfig(), case_id: str = "") -> FollowupPair:
    """Make a prior/current pair from one host CT (method and truth format: module docstring).

    Args:
        host: host CT in HU (Z, Y, X), any grid; for exact truth it should hold no nodules of its own (a phantom
            made with ``n_nodules=0``; a real CT's own unannotated nodules appear stable in both scans).
        host_lung: (Z, Y, X) lung mask of the host (> 0 = lung).
        rng: random generator; the same seed gives the same pair.
        nodules: where the nodules come from: None → :func:`synthetic_nodule` with diameters drawn from
            ``config.diameter_range_mm``; a :class:`~lunglesionai.datagen.composites.NoduleSource` → random LIDC
            VOIs whose table diameter is in that range; a sequence of (VOI Volume, boolean mask) → used in order
            (``len(volume_factors) + n_new + n_resolved`` needed).
        config: settings.
        case_id: stored in the pair (folder name for :func:`write_pairs`).

    Returns:
        :class:`FollowupPair`; truth nodules in the order: both scans (``volume_factors`` order), new, resolved.

    Raises:
        ValueError: the lung mask's shape differs from the host's or it is empty; too few VOIs given; a nodule
            found no room in the lungs (the message names it).

    Example:
        >>> from lunglesionai.synth import PhantomConfig, make_phantom
        >>> p = make_phantom(PhantomConfig.small(n_nodules=0))  # doctest: +SKIP
        >>> pair = make_pair(p.volume, p.lung_mask, np.random.default_rng(0))  # doctest: +SKIP
        >>> [n["volume_factor"] for n in pair.truth["nodules"]]  # doctest: +SKIP
        [1.0, 1.0, 1.7, 2.2, 0.5, None, None]
    """
    lung = np.asarray(host_lung)
    if lung.shape != host.shape_zyx:
        raise ValueError(f"{host.source or 'host'}: lung mask of shape {lung.shape} for a CT of shape "
                         f"{host.shape_zyx}")
    if not np.any(lung):
        raise ValueError(f"{host.source or 'host'}: no lung found in the host CT; a follow-up pair needs lungs")
    # Outside the reconstruction circle (scanner padding such as -3024 HU) is air: new noise on the padding would
    # otherwise make values no CT reader accepts as HU.
    host = host.with_array(np.maximum(np.asarray(host.hu, np.float32), OUTSIDE_FOV_HU))
    transform, info = breathing_transform(host, lung, rng, config)
    host_image = volume_to_sitk(host)
    warped = sitk.Resample(sitk.Cast(host_image, sitk.sitkFloat32), host_image, transform, sitk.sitkLinear,
                           OUTSIDE_HU, sitk.sitkFloat32)
    current_lung = sitk.GetArrayFromImage(sitk.Resample(_label_image(host, lung), host_image, transform,
                                                        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    prior_hu = np.asarray(host.hu, dtype=np.float32).copy()
    current_hu = sitk.GetArrayFromImage(warped)
    current = host.with_array(current_hu)
    plan = [("both", f) for f in config.volume_factors] + [("new", None)] * config.n_new
    plan += [("resolved", None)] * config.n_resolved
    candidates = _candidates(nodules, len(plan), config, rng)
    bounds = lung_bounds(lung > 0)
    occupied: list[tuple[np.ndarray, float]] = []
    truth_nodules = []
    for n, (kind, factor) in enumerate(plan, start=1):
        voi, voi_mask, name, texture, big, prior_p, current_c = _place_next(host, lung > 0, bounds, occupied,
                                                                            transform, candidates, config, rng, n)
        occupied.append((prior_p, big.radius_mm))
        scale_prior, scale_current = _scales(kind, factor)
        matrix = random_orientation(rng, config.paste)
        entry = {"id": f"F{n}", "prior_lps_mm": None, "current_lps_mm": None, "prior_volume_mm3": None,
                 "current_volume_mm3": None, "prior_diameter_mm": None, "current_diameter_mm": None,
                 "prior_mask_volume_mm3": None, "current_mask_volume_mm3": None,
                 "volume_factor": None if factor is None else float(factor), "source": name, "texture": texture}
        if scale_prior is not None:
            scaled_nodule = prepare_nodule(_scaled(voi, scale_prior), voi_mask, host.spacing_mm, config.paste)
            mask = paste_nodule(prior_hu, host, scaled_nodule, matrix, prior_p, config.paste.blend)
            entry.update(_measured("prior", host, prior_p, mask, _nominal_mm3(voi, voi_mask, scale_prior)))
        if scale_current is not None:
            local = matrix @ _local_rotation(transform, current_c)
            scaled_nodule = prepare_nodule(_scaled(voi, scale_current), voi_mask, host.spacing_mm, config.paste)
            mask = paste_nodule(current_hu, current, scaled_nodule, local, current_c, config.paste.blend)
            entry.update(_measured("current", host, current_c, mask, _nominal_mm3(voi, voi_mask, scale_current)))
        truth_nodules.append(entry)
    prior_vol = host.with_array(_noisy(prior_hu, host, config, rng))
    current_vol = host.with_array(_noisy(current_hu, host, config, rng))
    truth = {"interval_days": float(config.interval_days), "nodules": truth_nodules, "host": host.source, **info}
    return FollowupPair(prior_vol, current_vol, truth, lung.astype(np.uint8), current_lung, transform, case_id)


def write_pairs(out_dir: str | os.PathLike, pairs: Iterable[FollowupPair], *, overwrite: bool = False) -> Path:
    """Write pairs as ``<out_dir>/<case>/{prior.nii.gz, current.nii.gz, truth.json}``, atomically.

    The whole folder is written into a temporary sibling and renamed into place when every pair is written
    (:func:`lunglesionai.core.output_folder.atomic_output_folder`, which adds the manifest), so an error leaves no
    half-written set. ``<case>`` is the pair's ``case_id`` or ``pair_<n>`` (n from 0, three digits).

    Args:
        out_dir: target folder (must not exist unless ``overwrite`` and written by lunglesionai).
        pairs: the pairs (an iterable: made one at a time, so memory holds one pair).
        overwrite: replace an existing set written by lunglesionai.

    Returns:
        ``out_dir`` as an absolute path.

    Raises:
        ValueError: a case id that is not a plain folder name, or used twice.
        lunglesionai.core.output_folder.OutputPathError: ``out_dir`` cannot be written, or exists without
            ``overwrite`` (:class:`~lunglesionai.core.output_folder.OutputExistsError`), checked before any work.

    Example:
        >>> write_pairs("pairs", [pair])  # doctest: +SKIP
        PosixPath('/.../pairs')
    """
    check_output_folder(out_dir, overwrite=overwrite)  # before any pair is made
    seen: set[str] = set()
    with atomic_output_folder(out_dir, overwrite=overwrite, command="make-followup-pairs") as staging:
        for n, pair in enumerate(pairs):
            case = pair.case_id or f"pair_{n:03d}"
            if not _CASE_NAME.match(case) or case in seen:
                raise ValueError(f"{out_dir}: case id {case!r} is not a plain folder name or is used twice")
            seen.add(case)
            folder = staging / case
            folder.mkdir()
            save_volume(pair.prior, folder / FOLLOWUP_PAIR_FILES[0])
            save_volume(pair.current, folder / FOLLOWUP_PAIR_FILES[1])
            write_json_atomic(folder / FOLLOWUP_PAIR_FILES[2], pair.truth)
            logger.info("pair %d: %s written", n + 1, case)
    return Path(out_dir).expanduser().absolute()


# ----------------------------------------------------------------------------------------------- helpers


def _field_nodes(host: Volume, spacing_mm: float, margin_mm: float):
    """(nodes (Z, Y, X, 3) LPS mm, (spacing, origin)) of a grid along the host's axes covering it plus a margin."""
    extent_xyz = np.asarray(host.shape_zyx[::-1]) * np.asarray(host.spacing_mm)
    size_xyz = np.ceil((extent_xyz + 2 * margin_mm) / spacing_mm).astype(int) + 1
    corner = host.ijk_to_lps([[-0.5, -0.5, -0.5]])[0] - host.direction_matrix @ np.full(3, margin_mm)
    k, j, i = np.meshgrid(*[np.arange(n) * spacing_mm for n in size_xyz[::-1]], indexing="ij")
    offsets = np.stack([i, j, k], axis=-1)
    nodes = corner + offsets @ host.direction_matrix.T
    return nodes, ((float(spacing_mm),) * 3, tuple(float(c) for c in corner))


def _nodes_in_lung(host: Volume, lung: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    kji = np.rint(host.lps_to_kji(nodes.reshape(-1, 3))).astype(int)
    inside = np.all((kji >= 0) & (kji < np.asarray(host.shape_zyx)), axis=1)
    result = np.zeros(len(kji), bool)
    result[inside] = lung[tuple(kji[inside].T)]
    return result.reshape(nodes.shape[:3])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _label_image(host: Volume, lung: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(lung.astype(np.uint8))
    image.SetSpacing(host.spacing_mm)
    image.SetOrigin(host.origin_lps_mm)
    image.SetDirection(host.direction)
    return image


def _candidates(nodules, count: int, config: FollowupPairConfig, rng: np.random.Generator) -> Iterator[tuple]:
    """(VOI, mask, source name, texture) candidates, one at a time (see :func:`make_pair`, ``nodules``)."""
    low, high = config.diameter_range_mm
    if nodules is None:
        while True:
            yield (*synthetic_nodule(float(rng.uniform(low, high)), rng), "synthetic", "solid")
    elif isinstance(nodules, NoduleSource):
        from lunglesionai.core.vocabulary import TEXTURE_CLASSES

        eligible = [i for i, r in enumerate(nodules.records) if low <= r.diameter_mm <= high]
        if len(eligible) < count:
            raise ValueError(f"{nodules.data_dir}: {len(eligible)} VOIs of {low}–{high} mm, {count} needed")
        for index in rng.permutation(eligible):
            record = nodules.records[int(index)]
            texture = TEXTURE_CLASSES[record.texture] if record.texture is not None else None
            yield (*nodules.load(int(index)), record.file, texture)
    else:
        given = list(nodules)
        if len(given) < count:
            raise ValueError(f"make_pair: {len(given)} nodule VOIs given, {count} needed")
        for voi, mask in given:
            yield voi, np.asarray(mask, bool), voi.source or "given", None


def _place_next(host, lung, bounds, occupied, transform, candidates, config, rng, n: int):
    """The next candidate that finds room: (VOI, mask, name, texture, prepared, prior centre, current centre)."""
    for _ in range(MAX_CANDIDATES_PER_NODULE):
        try:
            voi, voi_mask, name, texture = next(candidates)
        except StopIteration:
            break
        prepared = prepare_nodule(voi, voi_mask, host.spacing_mm, config.paste)
        placed = _place(host, lung, bounds, prepared, occupied, transform, config, rng)
        if placed is not None:
            return voi, voi_mask, name, texture, prepared, *placed
        logger.info("nodule F%d: %s found no room, trying another", n, name)
    raise ValueError(f"{host.source or 'host'}: nodule F{n} found no room in the lungs (crowded or small lungs)")


def _scales(kind: str, factor: float | None) -> tuple[float | None, float | None]:
    """Linear scale of the VOI in the prior and in the current (None: absent); the larger appearance keeps 1."""
    if kind == "new":
        return None, 1.0
    if kind == "resolved":
        return 1.0, None
    linear = float(factor) ** (1.0 / 3.0)
    return (1.0 / linear, 1.0) if linear >= 1.0 else (1.0, linear)


def _scaled(voi: Volume, scale: float) -> Volume:
    """The VOI with its voxel spacing (and origin, about LPS 0) times ``scale``: the same voxels, bigger or smaller."""
    if scale == 1.0:
        return voi
    origin = tuple(float(o) * scale for o in voi.origin_lps_mm)
    return Volume(voi.hu, tuple(s * scale for s in voi.spacing_mm), origin, voi.direction, voi.source)


def _place(host, lung, bounds, prepared, occupied, transform, config, rng):
    """(prior centre, current centre) LPS mm of a nodule placed in the host and mapped into the current scan, with
    room around it in both; None when no place is found."""
    for _ in range(MAX_PLACEMENT_TRIES):
        prior_p = find_position(host, lung, bounds, prepared, occupied, config.paste, rng, False)
        if prior_p is None:
            break
        current_c = _invert_point(transform, prior_p)
        kji = host.lps_to_kji([current_c])[0]
        reach = prepared.support_mm / np.asarray(host.spacing_mm[::-1])
        if np.all(kji - reach >= 0) and np.all(kji + reach <= np.asarray(host.shape_zyx) - 1):
            return prior_p, current_c
    return None


def _invert_point(transform: sitk.Transform, prior_lps_mm: np.ndarray) -> np.ndarray:
    """The current point c with ``transform(c) = prior_lps_mm`` (fixed-point iteration to 1e-4 mm)."""
    target = np.asarray(prior_lps_mm, float)
    current = target.copy()
    for _ in range(200):
        residual = target - np.asarray(transform.TransformPoint(tuple(current)))
        if np.linalg.norm(residual) < INVERSE_TOLERANCE_MM:
            break
        current = current + residual
    return current


def _local_rotation(transform: sitk.Transform, point: np.ndarray, step_mm: float = 1.0) -> np.ndarray:
    """Rotation part (polar decomposition) of the transform's Jacobian at ``point``: current → prior offsets."""
    jacobian = np.empty((3, 3))
    for axis in range(3):
        delta = np.zeros(3)
        delta[axis] = step_mm
        plus = np.asarray(transform.TransformPoint(tuple(point + delta)))
        minus = np.asarray(transform.TransformPoint(tuple(point - delta)))
        jacobian[:, axis] = (plus - minus) / (2 * step_mm)
    u, _, vt = np.linalg.svd(jacobian)
    return u @ vt


def _nominal_mm3(voi: Volume, voi_mask: np.ndarray, scale: float) -> float:
    """Volume of the source mask rescaled by ``scale`` (linear), mm³: the nodule's true volume in that scan."""
    return float(np.count_nonzero(voi_mask)) * voi.voxel_volume_mm3 * scale**3


def _measured(prefix: str, grid: Volume, centre: np.ndarray, mask: FindingMask, nominal_mm3: float) -> dict:
    return {f"{prefix}_lps_mm": [round(float(c), 3) for c in centre],
            f"{prefix}_volume_mm3": round(nominal_mm3, 2),
            f"{prefix}_diameter_mm": round(equivalent_diameter_mm(nominal_mm3), 3),
            f"{prefix}_mask_volume_mm3": round(float(mask.voxel_count * grid.voxel_volume_mm3), 2)}


def _noisy(hu: np.ndarray, grid: Volume, config: FollowupPairConfig, rng: np.random.Generator) -> np.ndarray:
    """int16 HU with new correlated noise of ``config.noise_hu`` (none when 0)."""
    if config.noise_hu > 0:
        hu = add_correlated_noise(hu, grid.spacing_mm, config.noise_hu, config.noise_correlation_mm, rng)
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
