"""The phantom's voxel grid: LPS coordinates of voxel centres and bounding boxes in index space.

The grid has identity direction (i → L = +x, j → P = +y, k → S = +z) and its origin is chosen so that the centre
of the field of view is LPS (0, 0, 0), where the body's axis lies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lunglesionai.core.volume import Volume

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """A (Z, Y, X) grid of voxels with spacing (x, y, z) mm, centred on LPS (0, 0, 0), identity direction.

    Args:
        shape_zyx: voxel counts (Z, Y, X).
        spacing_mm: voxel size (x, y, z) in mm.

    Example:
        >>> g = Grid((3, 4, 5), (1.0, 1.0, 2.0))
        >>> g.origin_lps_mm
        (-2.0, -1.5, -2.0)
        >>> g.axis_mm(0).tolist()
        [-2.0, -1.0, 0.0, 1.0, 2.0]
    """

    shape_zyx: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    @property
    def origin_lps_mm(self) -> tuple[float, float, float]:
        """LPS position (x, y, z) of voxel (i, j, k) = (0, 0, 0)'s centre: the field of view is centred on 0."""
        nx = self.shape_zyx[::-1]
        return tuple(-0.5 * (n - 1) * s for n, s in zip(nx, self.spacing_mm))

    def axis_mm(self, axis: int) -> np.ndarray:
        """1-D float64 coordinates (mm, LPS) of the voxel centres along ``axis`` (0 = x, 1 = y, 2 = z)."""
        n = self.shape_zyx[2 - axis]
        return self.origin_lps_mm[axis] + self.spacing_mm[axis] * np.arange(n, dtype=np.float64)

    @property
    def extent_mm(self) -> tuple[tuple[float, float], ...]:
        """((x0, x1), (y0, y1), (z0, z1)): LPS coordinates of the first and last voxel centres per axis."""
        return tuple((float(a[0]), float(a[-1])) for a in (self.axis_mm(0), self.axis_mm(1), self.axis_mm(2)))

    def box_slices(self, lo_lps_mm: np.ndarray, hi_lps_mm: np.ndarray) -> tuple[slice, slice, slice] | None:
        """(z, y, x) slices of the voxels whose centres lie in the LPS box [lo, hi] (mm), clipped to the grid.

        Returns:
            The slices, or ``None`` when the box misses the grid.
        """
        origin = np.asarray(self.origin_lps_mm)
        spacing = np.asarray(self.spacing_mm)
        start = np.ceil((np.asarray(lo_lps_mm) - origin) / spacing - 1e-9).astype(int)
        stop = np.floor((np.asarray(hi_lps_mm) - origin) / spacing + 1e-9).astype(int) + 1
        start = np.maximum(start, 0)
        stop = np.minimum(stop, self.shape_zyx[::-1])
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start[::-1], stop[::-1]))

    def slice_coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable LPS coordinates (mm) of the voxel centres in ``box``: z (n,1,1), y (1,n,1), x (1,1,n)."""
        z = self.axis_mm(2)[box[0]][:, None, None]
        y = self.axis_mm(1)[box[1]][None, :, None]
        x = self.axis_mm(0)[box[2]][None, None, :]
        return z, y, x

    def to_volume(self, hu: np.ndarray, source: str = "") -> Volume:
        """Wrap a (Z, Y, X) array on this grid into a :class:`~lunglesionai.core.volume.Volume` (identity direction)."""
        return Volume(hu, self.spacing_mm, self.origin_lps_mm, source=source)
