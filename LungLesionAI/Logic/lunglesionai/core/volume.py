"""The CT volume: HU voxels plus their place in LPS world space.

Conventions used everywhere in :mod:`lunglesionai`:

* ``hu`` is indexed ``(z, y, x) = (k, j, i)``, as ``SimpleITK.GetArrayFromImage`` and Slicer's
  ``arrayFromVolume`` return it.
* ``spacing_mm``, ``origin_lps_mm`` are given ``(x, y, z)`` as ITK does.
* ``direction`` is ITK's 3×3 direction-cosine matrix, row-major; its *columns* are the LPS directions
  of the i, j, k axes. World point = origin + direction @ (spacing * ijk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Volume", "ijk_to_lps_matrix"]


def ijk_to_lps_matrix(spacing_mm: Sequence[float], origin_lps_mm: Sequence[float],
                      direction: Sequence[float] | np.ndarray) -> np.ndarray:
    """The 4×4 homogeneous matrix mapping voxel indices (i, j, k, 1) to LPS mm: ``direction @ diag(spacing)``
    then ``origin``; the one place this matrix is computed (:attr:`Volume.ijk_to_lps_matrix`, the ``ijkToLPS`` of
    the seg.nrrd files, Slicer's IJKToRAS via :func:`lunglesionai.core.segments.ijk_to_ras_matrix`).

    Args:
        spacing_mm: voxel size (x, y, z) in mm.
        origin_lps_mm: LPS position (x, y, z) in mm of voxel (0, 0, 0)'s centre.
        direction: 3×3 direction cosines (row-major, 9 numbers or a 3×3 array); column n is axis n in LPS.

    Returns:
        (4, 4) float array.

    Raises:
        ValueError: ``direction`` does not hold 9 numbers, or ``spacing_mm`` / ``origin_lps_mm`` not 3.

    Example:
        >>> ijk_to_lps_matrix((0.5, 0.5, 2.0), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)) @ [2, 0, 1, 1]
        array([11., 20., 32.,  1.])
    """
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing_mm, dtype=float)[None, :]
    matrix[:3, 3] = origin_lps_mm
    return matrix


@dataclass(frozen=True)
class Volume:
    """A CT volume in Hounsfield units with its LPS geometry.

    Args:
        hu: (Z, Y, X) array of HU values (any real dtype; int16 or float32 usual).
        spacing_mm: voxel size (x, y, z) in mm, all > 0.
        origin_lps_mm: LPS position (x, y, z) in mm of voxel (i, j, k) = (0, 0, 0)'s centre.
        direction: 3×3 direction cosines (row-major, 9 numbers or a 3×3 array); column n is axis n in LPS.
        source: where the volume came from (a path, or a description such as "phantom seed=0").

    Raises:
        ValueError: ``hu`` is not 3-D, a spacing is not positive, or ``direction`` is not 3×3.

    Example:
        >>> v = Volume(np.zeros((4, 5, 6), np.int16), (0.7, 0.7, 1.25), (0.0, 0.0, 0.0))
        >>> v.ijk_to_lps([[1, 1, 2]]).tolist()
        [[0.7, 0.7, 2.5]]
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    source: str = ""
    _matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if np.ndim(self.hu) != 3:
            raise ValueError(f"Volume needs a 3-D (z, y, x) array, got shape {np.shape(self.hu)}")
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing_mm must be three positive numbers (x, y, z), got {self.spacing_mm}")
        origin = tuple(float(o) for o in self.origin_lps_mm)
        if len(origin) != 3:
            raise ValueError(f"origin_lps_mm must be three numbers (x, y, z), got {self.origin_lps_mm}")
        direction = np.asarray(self.direction, dtype=float).reshape(-1)
        if direction.size != 9:
            raise ValueError(f"direction must have 9 numbers (3×3 row-major), got {direction.size}")
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_lps_mm", origin)
        object.__setattr__(self, "direction", tuple(direction.tolist()))
        object.__setattr__(self, "_matrix", ijk_to_lps_matrix(spacing, origin, direction)[:3, :3].copy())

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (Z, Y, X)."""
        return tuple(int(n) for n in self.hu.shape)

    @property
    def direction_matrix(self) -> np.ndarray:
        """3×3 direction cosines; column n is the LPS direction of axis n (i, j, k)."""
        return np.asarray(self.direction).reshape(3, 3)

    @property
    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix mapping (i, j, k, 1) voxel indices to LPS mm (:func:`ijk_to_lps_matrix`)."""
        return ijk_to_lps_matrix(self.spacing_mm, self.origin_lps_mm, self.direction)

    def ijk_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map (N, 3) voxel indices (i, j, k), fractional allowed, to (N, 3) LPS points in mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self._matrix.T + np.asarray(self.origin_lps_mm)

    def lps_to_ijk(self, lps_mm: np.ndarray) -> np.ndarray:
        """Map (N, 3) LPS points in mm to (N, 3) fractional voxel indices (i, j, k)."""
        lps_mm = np.atleast_2d(np.asarray(lps_mm, dtype=float))
        return np.linalg.solve(self._matrix, (lps_mm - np.asarray(self.origin_lps_mm)).T).T

    def kji_to_lps(self, kji: np.ndarray) -> np.ndarray:
        """Map (N, 3) array indices (k, j, i) to (N, 3) LPS points in mm."""
        return self.ijk_to_lps(np.atleast_2d(np.asarray(kji, dtype=float))[:, ::-1])

    def lps_to_kji(self, lps_mm: np.ndarray) -> np.ndarray:
        """Map (N, 3) LPS points in mm to (N, 3) fractional array indices (k, j, i)."""
        return self.lps_to_ijk(lps_mm)[:, ::-1]

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing_mm))

    def with_array(self, hu: np.ndarray) -> "Volume":
        """A new Volume on the same grid holding ``hu`` (same (Z, Y, X) shape required).

        Raises:
            ValueError: the shape differs from this volume's.
        """
        if np.shape(hu) != self.hu.shape:
            raise ValueError(f"array shape {np.shape(hu)} differs from the volume's {self.hu.shape}")
        return Volume(hu, self.spacing_mm, self.origin_lps_mm, self.direction, self.source)
