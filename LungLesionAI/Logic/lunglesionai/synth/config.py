"""Configuration of the procedural chest-CT phantom: :class:`PhantomConfig` and its presets.

Every length is in millimetres, every intensity in Hounsfield units. Spacing is given (x, y, z) as ITK does;
shapes are (Z, Y, X) as the arrays are indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import numpy as np

__all__ = [
    "PhantomConfig",
    "MAX_SHAPE_ZYX",
    "IN_PLANE_SPACING_RANGE_MM",
    "SLICE_SPACING_RANGE_MM",
    "NOISE_SIGMA_RANGE_HU",
    "NODULE_DIAMETER_LIMITS_MM",
]

#: Largest volume the phantom renders (Z, Y, X).
MAX_SHAPE_ZYX = (300, 512, 512)
#: Smallest volume: enough voxels for a chest with lungs in it.
MIN_SHAPE_ZYX = (16, 96, 96)
#: Allowed in-plane (x and y) voxel size, mm: the range of clinical chest CT reconstructions.
IN_PLANE_SPACING_RANGE_MM = (0.6, 0.9)
#: Allowed slice spacing (z), mm: thin-slice to 2.5 mm reconstructions.
SLICE_SPACING_RANGE_MM = (0.625, 2.5)
#: Allowed standard deviation of the image noise, HU.
NOISE_SIGMA_RANGE_HU = (15.0, 40.0)
#: Nodule diameters the phantom may draw, mm (Fleischner range of reportable nodules up to masses).
NODULE_DIAMETER_LIMITS_MM = (3.0, 30.0)
#: Allowed sub-samples per axis for partial-volume rendering.
SUPERSAMPLE_RANGE = (1, 6)
#: Allowed number of nodules.
N_NODULES_RANGE = (0, 30)
#: Allowed number of ground-glass patches and of consolidations (each).
N_OPACITIES_RANGE = (0, 12)
#: Body width as a fraction of the in-plane field of view when ``body_width_mm`` is left to ``None``.
AUTO_BODY_FILL = 0.92
#: Body width range a config may ask for, mm (a small child-size chest to a large adult).
BODY_WIDTH_RANGE_MM = (100.0, 400.0)
#: Ratio of the body's antero-posterior depth to its width (the reference adult: 245 / 340).
BODY_DEPTH_RATIO = 245.0 / 340.0
#: Vessel radius limits, mm.
VESSEL_RADIUS_RANGE_MM = (0.3, 8.0)
#: Width of the reference adult the anatomy is laid out for, mm (see :mod:`.anatomy`).
REFERENCE_BODY_WIDTH_MM = 340.0
#: Adult pulmonary vessel trees: radius at the hilum (mm) and end branches per tree; automatic minimum.
ADULT_VESSEL_ROOT_RADIUS_MM, ADULT_VESSEL_LEAVES, MIN_AUTO_VESSEL_LEAVES = 5.0, 1400, 80
#: Adult bronchial trees: end branches per lung; automatic minimum.
ADULT_AIRWAY_LEAVES, MIN_AUTO_AIRWAY_LEAVES = 12, 4


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that decides a phantom. The same config (same seed) gives the same array, bit for bit.

    Args:
        shape_zyx: volume size (Z, Y, X) in voxels, at most 300×512×512.
        spacing_mm: voxel size (x, y, z) in mm; x and y in [0.6, 0.9], z in [0.625, 2.5].
        seed: seed of the ``numpy.random.Generator`` (``SeedSequence``-split per part of the anatomy, so changing
            ``n_nodules`` leaves the vessels alone).
        n_nodules: number of nodules, 0–30.
        noise_sigma_hu: standard deviation of the (spatially correlated) image noise, 15–40 HU.
        noise_correlation_mm: standard deviation of the Gaussian kernel that correlates the noise, mm.
        supersample: sub-samples per axis used where shapes have edges (nodules, vessels, ribs, airways).
        body_width_mm: left–right width of the body, mm; the whole patient scales with it, so two configs with the
            same ``body_width_mm`` and seed show the same patient at any spacing. ``None``: 92 % of the field of view.
        nodule_diameter_range_mm: (min, max) nominal nodule diameter, within [3, 30] mm; the maximum is further
            capped by the size of the lungs.
        vessel_root_radius_mm: radius of each pulmonary vessel tree at the hilum, mm; ``None``: 5 mm for an
            adult, less for a smaller body (see :attr:`patient_scale`).
        vessel_min_radius_mm: radius at the tips of the vessel trees, mm.
        vessel_leaves_per_tree: end branches per vessel tree (two trees per lung: arteries and veins); ``None``:
            1400 for an adult, in proportion to lung volume for a smaller body.
        airway_leaves_per_lung: end branches of each lung's bronchial tree; ``None``: 12 for an adult, fewer for a
            smaller body.
        contrast_hu: if set, blood in the heart, aorta and great vessels has this HU (contrast-enhanced CT);
            ``None``: unenhanced blood (40 HU).
        abdominal_gas: put a gas bubble in the stomach fundus under the left hemidiaphragm (real scans have one;
            it tests that lung masks leave it out).
        ground_glass_patches: number of infection-like patchy ground-glass opacities (−750…−450 HU, several
            centimetres, soft edges, mostly subpleural; not nodules, see :mod:`.opacities`), 0–12. 0 (default) leaves
            the phantom exactly as without the option.
        consolidations: number of infection-like consolidations (−100…+50 HU, some with air bronchograms), 0–12.

    Raises:
        ValueError: a field is out of range; the message names the field and the value.

    Example:
        >>> PhantomConfig.small().shape_zyx
        (100, 160, 160)
        >>> PhantomConfig(noise_sigma_hu=5.0)
        Traceback (most recent call last):
        ...
        ValueError: PhantomConfig.noise_sigma_hu must be in [15.0, 40.0] HU, got 5.0
    """

    shape_zyx: tuple[int, int, int] = (280, 512, 512)
    spacing_mm: tuple[float, float, float] = (0.7, 0.7, 1.25)
    seed: int = 0
    n_nodules: int = 10
    noise_sigma_hu: float = 25.0
    noise_correlation_mm: float = 0.6
    supersample: int = 3
    body_width_mm: Optional[float] = None
    nodule_diameter_range_mm: tuple[float, float] = (4.0, 28.0)
    vessel_root_radius_mm: Optional[float] = None
    vessel_min_radius_mm: float = 0.5
    vessel_leaves_per_tree: Optional[int] = None
    airway_leaves_per_lung: Optional[int] = None
    contrast_hu: Optional[float] = None
    abdominal_gas: bool = True
    ground_glass_patches: int = 0
    consolidations: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_zyx", tuple(int(n) for n in self.shape_zyx))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "nodule_diameter_range_mm", tuple(float(d) for d in self.nodule_diameter_range_mm))
        self._validate_grid()
        self._validate_scalars()
        self._validate_anatomy()

    # ----------------------------------------------------------------------------------------------- presets
    @classmethod
    def clinical(cls, **overrides: Any) -> "PhantomConfig":
        """A clinical-size chest CT: 280×512×512 voxels of 0.7×0.7×1.25 mm (358×358×350 mm field of view)."""
        return replace(cls(), **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> "PhantomConfig":
        """A small, fast phantom (1–2 s): 100×160×160 voxels of 0.85×0.85×1.25 mm, a child-size chest.

        It still has both lungs, branching vessel trees, airways, ribs and six nodules of every texture and
        attachment; tests and the Slicer self-test use it.
        """
        base = cls(shape_zyx=(100, 160, 160), spacing_mm=(0.85, 0.85, 1.25), n_nodules=6,
                   nodule_diameter_range_mm=(4.0, 14.0))
        return replace(base, **overrides)

    # ----------------------------------------------------------------------------------------------- derived
    @property
    def fov_mm(self) -> tuple[float, float, float]:
        """Field of view (x, y, z) in mm: voxel count times spacing."""
        z, y, x = self.shape_zyx
        return (x * self.spacing_mm[0], y * self.spacing_mm[1], z * self.spacing_mm[2])

    @property
    def resolved_body_width_mm(self) -> float:
        """``body_width_mm``, or 92 % of the in-plane field of view when it is ``None``."""
        if self.body_width_mm is not None:
            return float(self.body_width_mm)
        fov_x, fov_y, _ = self.fov_mm
        return AUTO_BODY_FILL * min(fov_x, fov_y / BODY_DEPTH_RATIO)

    @property
    def patient_scale(self) -> float:
        """Size of this patient relative to the reference adult (body width / 340 mm)."""
        return self.resolved_body_width_mm / REFERENCE_BODY_WIDTH_MM

    @property
    def resolved_vessel_root_radius_mm(self) -> float:
        """``vessel_root_radius_mm``, or 5 mm × patient scale (at least 2.5 mm) when it is ``None``."""
        if self.vessel_root_radius_mm is not None:
            return float(self.vessel_root_radius_mm)
        return ADULT_VESSEL_ROOT_RADIUS_MM * float(np.clip(self.patient_scale, 0.5, 1.2))

    @property
    def resolved_vessel_leaves_per_tree(self) -> int:
        """``vessel_leaves_per_tree``, or 1400 × (patient scale)³ (at least 80) when it is ``None``."""
        if self.vessel_leaves_per_tree is not None:
            return int(self.vessel_leaves_per_tree)
        return max(int(round(ADULT_VESSEL_LEAVES * self.patient_scale**3)), MIN_AUTO_VESSEL_LEAVES)

    @property
    def resolved_airway_leaves_per_lung(self) -> int:
        """``airway_leaves_per_lung``, or 12 × (patient scale)² (at least 4) when it is ``None``."""
        if self.airway_leaves_per_lung is not None:
            return int(self.airway_leaves_per_lung)
        return max(int(round(ADULT_AIRWAY_LEAVES * self.patient_scale**2)), MIN_AUTO_AIRWAY_LEAVES)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ----------------------------------------------------------------------------------------------- checks
    def _validate_grid(self) -> None:
        if len(self.shape_zyx) != 3:
            raise ValueError(f"PhantomConfig.shape_zyx must have 3 sizes (Z, Y, X), got {self.shape_zyx}")
        for n, lo, hi, axis in zip(self.shape_zyx, MIN_SHAPE_ZYX, MAX_SHAPE_ZYX, "ZYX"):
            if not lo <= n <= hi:
                raise ValueError(
                    f"PhantomConfig.shape_zyx {axis} size must be in [{lo}, {hi}], got {n} (shape {self.shape_zyx})"
                )
        if len(self.spacing_mm) != 3:
            raise ValueError(f"PhantomConfig.spacing_mm must have 3 values (x, y, z), got {self.spacing_mm}")
        lo, hi = IN_PLANE_SPACING_RANGE_MM
        for s, axis in zip(self.spacing_mm[:2], "xy"):
            if not lo <= s <= hi:
                raise ValueError(f"PhantomConfig.spacing_mm {axis} must be in [{lo}, {hi}] mm, got {s}")
        lo, hi = SLICE_SPACING_RANGE_MM
        if not lo <= self.spacing_mm[2] <= hi:
            raise ValueError(f"PhantomConfig.spacing_mm z must be in [{lo}, {hi}] mm, got {self.spacing_mm[2]}")

    def _validate_scalars(self) -> None:
        _check_range("noise_sigma_hu", self.noise_sigma_hu, NOISE_SIGMA_RANGE_HU, "HU")
        _check_range("noise_correlation_mm", self.noise_correlation_mm, (0.0, 3.0), "mm")
        for name, bounds in (("supersample", SUPERSAMPLE_RANGE), ("n_nodules", N_NODULES_RANGE),
                             ("ground_glass_patches", N_OPACITIES_RANGE), ("consolidations", N_OPACITIES_RANGE)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"PhantomConfig.{name} must be an int, got {value!r}")
            _check_range(name, value, bounds, "")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"PhantomConfig.seed must be a non-negative int, got {self.seed!r}")
        if self.contrast_hu is not None:
            _check_range("contrast_hu", self.contrast_hu, (40.0, 600.0), "HU")

    def _validate_anatomy(self) -> None:
        width = self.resolved_body_width_mm
        _check_range("body_width_mm", width, BODY_WIDTH_RANGE_MM, "mm")
        fov_x, fov_y, _ = self.fov_mm
        if width > fov_x or width * BODY_DEPTH_RATIO > fov_y:
            raise ValueError(
                f"PhantomConfig.body_width_mm {width:.1f} mm (depth {width * BODY_DEPTH_RATIO:.1f} mm) does not fit "
                f"the in-plane field of view {fov_x:.1f}×{fov_y:.1f} mm"
            )
        d_lo, d_hi = self.nodule_diameter_range_mm if len(self.nodule_diameter_range_mm) == 2 else (0.0, -1.0)
        lim_lo, lim_hi = NODULE_DIAMETER_LIMITS_MM
        if not lim_lo <= d_lo <= d_hi <= lim_hi:
            raise ValueError(
                f"PhantomConfig.nodule_diameter_range_mm must be (min, max) with {lim_lo} <= min <= max <= {lim_hi}"
                f" mm, got {self.nodule_diameter_range_mm}"
            )
        _check_range("vessel_root_radius_mm", self.resolved_vessel_root_radius_mm, VESSEL_RADIUS_RANGE_MM, "mm")
        _check_range("vessel_min_radius_mm", self.vessel_min_radius_mm, (VESSEL_RADIUS_RANGE_MM[0], 2.0), "mm")
        if self.vessel_min_radius_mm >= self.resolved_vessel_root_radius_mm:
            raise ValueError(
                f"PhantomConfig.vessel_min_radius_mm {self.vessel_min_radius_mm} must be below "
                f"vessel_root_radius_mm {self.resolved_vessel_root_radius_mm}"
            )
        _check_range("vessel_leaves_per_tree", self.resolved_vessel_leaves_per_tree, (8, 3000), "")
        _check_range("airway_leaves_per_lung", self.resolved_airway_leaves_per_lung, (1, 64), "")


def _check_range(name: str, value: Any, bounds: tuple[float, float], unit: str) -> None:
    """Raise ValueError naming ``PhantomConfig.<name>`` unless ``bounds[0] <= value <= bounds[1]``."""
    lo, hi = bounds
    try:
        ok = lo <= value <= hi
    except TypeError:
        ok = False
    if not ok:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"PhantomConfig.{name} must be in [{lo}, {hi}]{suffix}, got {value!r}")
