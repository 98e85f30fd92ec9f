"""Where the phantom's organs are: the layout of a reference adult chest, scaled to the configured body width.

All positions are LPS millimetres in the patient frame: x to the patient's left, y posterior, z superior, with the
body's axis at x = y = 0 and the mid-height of the lungs at z = 0. The grid is centred on the same origin
(:mod:`.grid`), so the same :class:`Anatomy` rendered at two spacings is the same patient.

The reference numbers (a 340 mm wide, 245 mm deep adult; lungs about 270 mm high) are rounded from textbook
cross-sectional anatomy; :func:`build_anatomy` scales every length by ``body_width / 340`` and jitters a few of
them per seed so that seeds differ in more than nodules and vessels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import numpy as np

from .config import REFERENCE_BODY_WIDTH_MM, PhantomConfig

__all__ = ["LungShape", "Anatomy", "build_anatomy", "REFERENCE_BODY_WIDTH_MM", "RIGHT", "LEFT"]

#: Lung labels, as in :attr:`~lunglesionai.synth.phantom.Phantom.lung_mask` (right lung has negative x in LPS).
RIGHT, LEFT = 1, 2
#: Relative standard deviation of the per-seed jitter of organ sizes.
SIZE_JITTER = 0.03
#: Standard deviation of the per-seed jitter of organ positions at reference scale, mm.
POSITION_JITTER_MM = 4.0
#: Fields that are not lengths and must not be scaled.
_UNSCALED = frozenset({"label", "body_power", "cavity_min_factor", "cavity_base_widening", "scale", "rib_count"})


@dataclass(frozen=True)
class LungShape:
    """One lung: an elliptic cylinder with an ellipsoidal apex dome, cut by the diaphragm below.

    Args:
        label: 1 (right lung, x < 0) or 2 (left lung, x > 0).
        center_xy, semi_xy: centre and semi-axes (x, y) of the lung's cross-section, mm.
        z_shoulder: height where the apex dome starts, mm; ``apex_height``: the dome's height, mm.
        dome_xyz: top of the hemidiaphragm's dome (x, y, z), mm; ``dome_radii``: (rx, ry) over which it falls by
            ``dome_depth`` mm (a paraboloid); ``z_floor``: lowest point of the lung (costophrenic recess), mm.
        vessel_roots: LPS points where the artery and vein trees leave the mediastinum (hilum).
    """

    label: int
    center_xy: tuple[float, float]
    semi_xy: tuple[float, float]
    z_shoulder: float
    apex_height: float
    dome_xyz: tuple[float, float, float]
    dome_radii: tuple[float, float]
    dome_depth: float
    z_floor: float
    artery_root: tuple[float, float, float]
    vein_root: tuple[float, float, float]
    bronchus_end: tuple[float, float, float]

    @property
    def z_apex(self) -> float:
        """Height of the lung's apex, mm."""
        return self.z_shoulder + self.apex_height


_RIGHT_LUNG = LungShape(
    label=RIGHT, center_xy=(-73.0, 4.0), semi_xy=(66.0, 98.0), z_shoulder=55.0, apex_height=80.0,
    dome_xyz=(-62.0, -8.0, -88.0), dome_radii=(85.0, 100.0), dome_depth=60.0, z_floor=-138.0,
    artery_root=(-28.0, 0.0, 14.0), vein_root=(-30.0, 14.0, -24.0), bronchus_end=(-38.0, 14.0, 8.0),
)
_LEFT_LUNG = LungShape(
    label=LEFT, center_xy=(75.0, 4.0), semi_xy=(64.0, 98.0), z_shoulder=52.0, apex_height=80.0,
    dome_xyz=(66.0, -8.0, -100.0), dome_radii=(85.0, 100.0), dome_depth=55.0, z_floor=-142.0,
    artery_root=(30.0, 4.0, 20.0), vein_root=(32.0, 18.0, -30.0), bronchus_end=(40.0, 16.0, 4.0),
)


@dataclass(frozen=True)
class Anatomy:
    """The chest's layout in mm (LPS, patient frame). Defaults are the reference adult (``scale`` 1).

    Shapes named ``*_semi`` are semi-axes, ``*_center`` centres; ``(x, y)`` pairs describe structures that run
    along z. See the module docstring for the frame.
    """

    scale: float = 1.0
    body_semi: tuple[float, float] = (170.0, 122.5)
    body_power: float = 2.4
    fat_mm: float = 14.0
    cavity_center_y: float = -4.0
    cavity_semi: tuple[float, float] = (142.0, 100.0)
    cavity_narrow_z: float = 55.0
    cavity_narrow_height: float = 120.0
    cavity_min_factor: float = 0.55
    cavity_base_z: float = -140.0
    cavity_base_widening: float = 0.14
    right_lung: LungShape = _RIGHT_LUNG
    left_lung: LungShape = _LEFT_LUNG
    mediastinum_center_y: float = -8.0
    mediastinum_semi: tuple[float, float] = (28.0, 100.0)
    heart_center: tuple[float, float, float] = (18.0, -28.0, -54.0)
    heart_semi: tuple[float, float, float] = (62.0, 50.0, 52.0)
    pericardial_fat_mm: float = 4.0
    vertebra_center: tuple[float, float] = (0.0, 60.0)
    vertebra_radius: float = 18.0
    spine_exclusion_center: tuple[float, float] = (0.0, 74.0)
    spine_exclusion_radius: float = 33.0
    canal_center: tuple[float, float] = (0.0, 88.0)
    canal_radius: float = 8.0
    arch_center: tuple[float, float] = (0.0, 92.0)
    arch_semi: tuple[float, float] = (15.0, 11.0)
    process_center: tuple[float, float] = (0.0, 108.0)
    process_semi: tuple[float, float] = (5.0, 13.0)
    transverse_center: tuple[float, float] = (22.0, 80.0)
    transverse_semi: tuple[float, float] = (11.0, 5.0)
    cortex_mm: float = 2.0
    disc_period: float = 27.0
    disc_thickness: float = 6.0
    sternum_center: tuple[float, float] = (0.0, -108.0)
    sternum_semi: tuple[float, float] = (16.0, 6.0)
    sternum_z: tuple[float, float] = (-95.0, 45.0)
    aorta_path: tuple[tuple[float, float, float], ...] = (
        (-6.0, -24.0, -20.0), (-6.0, -24.0, 46.0), (4.0, 2.0, 64.0), (20.0, 32.0, 58.0), (24.0, 46.0, 42.0),
        (24.0, 46.0, -175.0),
    )
    aorta_radius: float = 14.0
    pulmonary_trunk_path: tuple[tuple[float, float, float], ...] = ((12.0, -50.0, -12.0), (8.0, -22.0, 20.0))
    pulmonary_trunk_radius: float = 13.0
    left_atrium: tuple[float, float, float] = (8.0, 10.0, -36.0)
    svc_path: tuple[tuple[float, float, float], ...] = ((-24.0, -18.0, 160.0), (-24.0, -18.0, 0.0))
    svc_radius: float = 10.0
    esophagus_center: tuple[float, float] = (5.0, 34.0)
    esophagus_radius: float = 8.0
    trachea_center: tuple[float, float] = (0.0, 12.0)
    trachea_radius: float = 10.0
    carina_z: float = 28.0
    stomach_gas_center: tuple[float, float, float] = (74.0, -16.0, -130.0)
    stomach_gas_semi: tuple[float, float, float] = (28.0, 26.0, 11.0)
    rib_count: int = 12
    rib_top_z: float = 112.0
    rib_step_z: float = 22.5
    rib_drop: float = 42.0
    rib_radius: float = 4.5
    rib_offset: float = 7.0

    @property
    def lungs(self) -> tuple[LungShape, LungShape]:
        """(right lung, left lung)."""
        return (self.right_lung, self.left_lung)

    @property
    def lungs_z_range(self) -> tuple[float, float]:
        """(lowest, highest) height of either lung, mm."""
        return min(lung.z_floor for lung in self.lungs), max(lung.z_apex for lung in self.lungs)

    @property
    def body_depth(self) -> float:
        """Antero-posterior depth of the body, mm."""
        return 2.0 * self.body_semi[1]

    def cavity_scale(self, z):
        """Scale (x, y) of the thoracic cavity's cross-section at height(s) ``z`` (mm, scalar or array).

        The cage narrows above ``cavity_narrow_z`` towards the thoracic inlet (an elliptic profile, never below
        ``cavity_min_factor``) and widens left-right linearly below it, by ``cavity_base_widening`` at
        ``cavity_base_z``, so the lungs are broader at their bases than at their apices.
        """
        z = np.asarray(z, dtype=float)
        t = np.maximum((z - self.cavity_narrow_z) / self.cavity_narrow_height, 0.0)
        narrow = np.maximum(np.sqrt(np.maximum(1.0 - t * t, 0.0)), self.cavity_min_factor)
        down = np.clip((self.cavity_narrow_z - z) / (self.cavity_narrow_z - self.cavity_base_z), 0.0, 1.0)
        return narrow * (1.0 + self.cavity_base_widening * down), narrow


#: Minimum sizes that keep thin structures visible when a small body is scaled down, mm.
MIN_SIZES_MM = {"fat_mm": 5.0, "rib_radius": 1.5, "cortex_mm": 1.2, "trachea_radius": 6.0, "canal_radius": 4.0}


def build_anatomy(config: PhantomConfig, rng: np.random.Generator) -> Anatomy:
    """The anatomy of ``config``'s patient: the reference adult scaled to its body width, jittered per seed.

    Args:
        config: the phantom config (``resolved_body_width_mm`` decides the scale).
        rng: generator for the jitter (the caller's anatomy stream).

    Returns:
        Anatomy with every length in mm.

    Example:
        >>> a = build_anatomy(PhantomConfig.clinical(), np.random.default_rng(0))
        >>> round(a.scale, 2)
        0.97
    """
    scale = config.resolved_body_width_mm / REFERENCE_BODY_WIDTH_MM
    base = _scaled(Anatomy(), scale)
    base = replace(base, scale=scale, **{k: max(getattr(base, k), v) for k, v in MIN_SIZES_MM.items()})
    def size() -> float:
        return 1.0 + SIZE_JITTER * float(np.clip(rng.standard_normal(), -2, 2))

    def shift() -> float:
        return POSITION_JITTER_MM * scale * float(np.clip(rng.standard_normal(), -2, 2))

    hc = base.heart_center
    return replace(
        base,
        heart_center=(hc[0] + shift(), hc[1] + shift(), hc[2] + shift()),
        heart_semi=tuple(a * size() for a in base.heart_semi),
        right_lung=_jitter_lung(base.right_lung, size, shift),
        left_lung=_jitter_lung(base.left_lung, size, shift),
    )


def _jitter_lung(lung: LungShape, size, shift) -> LungShape:
    dome = lung.dome_xyz
    return replace(
        lung,
        semi_xy=(lung.semi_xy[0] * size(), lung.semi_xy[1] * size()),
        apex_height=lung.apex_height * size(),
        dome_xyz=(dome[0], dome[1], dome[2] + shift()),
    )


def _scaled(obj: Any, scale: float) -> Any:
    """Copy of a dataclass with every length field (floats, tuples, nested dataclasses) multiplied by ``scale``."""
    changes = {}
    for f in fields(obj):
        if f.name in _UNSCALED:
            continue
        changes[f.name] = _scale_value(getattr(obj, f.name), scale)
    return replace(obj, **changes)


def _scale_value(value: Any, scale: float) -> Any:
    if is_dataclass(value):
        return _scaled(value, scale)
    if isinstance(value, tuple):
        return tuple(_scale_value(v, scale) for v in value)
    return float(value) * scale
