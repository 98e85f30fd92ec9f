"""Implicit shapes and their partial-volume occupancy.

A shape is the set ``g(x, y, z) < 0`` of a smooth function ``g`` whose gradient is known analytically. The
fraction of a voxel of size (sx, sy, sz) that a shape fills is approximated to first order (a locally planar
boundary, a box-shaped voxel whose sensitivity is averaged along the boundary normal):

    occupancy = clip(0.5 - g / (|dg/dx| sx + |dg/dy| sy + |dg/dz| sz), 0, 1)

``g / |grad g|`` is the signed distance to the boundary and ``sum_i |n_i| s_i`` the voxel's width along the
normal ``n``, so the formula is exact for planar edges (linear-ramp approximation of the box filter) and needs no
supersampling. Large smooth organs use it; thin or small structures (vessels, nodules) are supersampled instead
(:mod:`.tubes`, :mod:`.nodules`). With ``spacing_mm=None`` the occupancy is the sharp indicator ``g < 0``.

All functions take broadcastable coordinate arrays (mm, LPS) and never modify them.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = [
    "Field",
    "occupancy",
    "ellipse",
    "ellipsoid",
    "capped_cylinder",
    "superellipse",
    "below_height",
    "slab_occupancy",
]

#: A field: (g, dg/dx, dg/dy, dg/dz), each broadcastable to the coordinate arrays.
Field = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_TINY = 1e-12


def occupancy(field: Field, spacing_mm: Optional[Sequence[float]]) -> np.ndarray:
    """Fraction of each voxel inside ``g < 0`` (linear-ramp partial volume), float32 in [0, 1].

    Args:
        field: (g, gx, gy, gz) from one of this module's shapes.
        spacing_mm: voxel size (x, y, z) in mm, or ``None`` for the sharp indicator ``g < 0``.

    Returns:
        float32 array of the broadcast shape of ``g`` and its gradient.

    Example:
        >>> g = ellipse(np.array([0.0, 9.8, 11.0]), np.zeros(3), 0.0, 0.0, 10.0, 10.0)
        >>> [round(float(v), 2) for v in occupancy(g, (1.0, 1.0, 1.0))]
        [1.0, 0.7, 0.0]
    """
    g, gx, gy, gz = field
    if spacing_mm is None:
        return np.asarray(g < 0, dtype=np.float32)
    sx, sy, sz = (float(s) for s in spacing_mm)
    width = np.abs(gx) * sx + np.abs(gy) * sy + np.abs(gz) * sz + _TINY
    occ = 0.5 - g / width
    return np.clip(occ, 0.0, 1.0).astype(np.float32, copy=False)


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> Field:
    """Elliptic cylinder along z: ``((x-cx)/ax)^2 + ((y-cy)/ay)^2 - 1`` and its gradient (mm)."""
    u = (x - cx) / ax
    v = (y - cy) / ay
    return u * u + v * v - 1.0, 2.0 * u / ax, 2.0 * v / ay, np.zeros(1, dtype=np.float32)


def ellipsoid(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, center: Sequence[float], semi_axes: Sequence[float]
) -> Field:
    """Axis-aligned ellipsoid with ``center`` (x, y, z) and ``semi_axes`` (a, b, c) in mm."""
    u = (x - center[0]) / semi_axes[0]
    v = (y - center[1]) / semi_axes[1]
    w = (z - center[2]) / semi_axes[2]
    g = u * u + v * v + w * w - 1.0
    return g, 2.0 * u / semi_axes[0], 2.0 * v / semi_axes[1], 2.0 * w / semi_axes[2]


def capped_cylinder(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, cx: float, cy: float, ax: float, ay: float, z_cap: float, cap: float
) -> Field:
    """Elliptic cylinder below ``z_cap`` closed above by a half-ellipsoid of height ``cap`` (a lung's apex dome)."""
    u = (x - cx) / ax
    v = (y - cy) / ay
    w = np.maximum(np.asarray(z, dtype=np.float64) - z_cap, 0.0) / cap
    g = u * u + v * v + w * w - 1.0
    return g, 2.0 * u / ax, 2.0 * v / ay, 2.0 * w / cap


def superellipse(x: np.ndarray, y: np.ndarray, ax: float, ay: float, power: float) -> Field:
    """Superellipse cylinder ``|x/ax|^p + |y/ay|^p - 1`` centred on the z axis (a boxy body outline)."""
    u = np.abs(x) / ax
    v = np.abs(y) / ay
    up = u ** (power - 1.0)
    vp = v ** (power - 1.0)
    g = up * u + vp * v - 1.0
    return g, power * up * np.sign(x) / ax, power * vp * np.sign(y) / ay, np.zeros(1, dtype=np.float32)


def below_height(
    z: np.ndarray, height: np.ndarray, dheight_dx: np.ndarray, dheight_dy: np.ndarray, inside_below: bool
) -> Field:
    """The region under (``inside_below``) or above a height field ``z = h(x, y)``, with h's gradient given."""
    sign = 1.0 if inside_below else -1.0
    g = sign * (z - height)
    return g, -sign * dheight_dx, -sign * dheight_dy, np.full(1, sign, dtype=np.float32)


def slab_occupancy(z: float, thickness: float, z0: float, z1: float) -> float:
    """Exact fraction of the slab [z - t/2, z + t/2] (a slice of thickness t) that lies in [z0, z1]."""
    lo = max(z - 0.5 * thickness, z0)
    hi = min(z + 0.5 * thickness, z1)
    return max(hi - lo, 0.0) / thickness
