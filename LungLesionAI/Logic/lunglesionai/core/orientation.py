"""Reorient a volume to LPS axis order exactly (axis permutations and flips, no interpolation), and back.

After :func:`reorient_to_lps` the array axes run i → +x (towards patient Left), j → +y (Posterior),
k → +z (Superior), so ``hu[k, j, i]`` is an axial stack from feet to head with image rows from anterior to
posterior, as most lung-CT models expect. Only whole-axis permutations and flips are used, so every voxel
keeps its value and its LPS position; an oblique volume keeps its (nearly identity) oblique direction.
:class:`AxisPermutation` carries the step so masks and labelmaps predicted on the LPS grid go back to the
original grid exactly (STYLE.md house rule 8: each stage has its inverse in the same module).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from lunglesionai.core.volume import Volume

__all__ = ["AxisPermutation", "reorient_to_lps", "restore_orientation"]

_IDENTITY_ORDER = (0, 1, 2)
_NO_FLIP = (False, False, False)


@dataclass(frozen=True)
class AxisPermutation:
    """An exact (Z, Y, X) grid reorientation: transpose the last three axes, then flip some of them.

    Args:
        order_kji: for each output array axis (k, j, i), the input array axis it comes from
            (``np.transpose`` order of the last three axes).
        flip_kji: for each output array axis (after the transpose), whether it is reversed.
        original_shape_zyx: (Z, Y, X) shape of the original grid.

    Example:
        >>> perm = AxisPermutation((2, 1, 0), (True, False, False), (2, 3, 4))
        >>> a = np.arange(24).reshape(2, 3, 4)
        >>> perm.apply(a).shape
        (4, 3, 2)
        >>> bool((perm.invert(perm.apply(a)) == a).all())
        True
    """

    order_kji: tuple[int, int, int]
    flip_kji: tuple[bool, bool, bool]
    original_shape_zyx: tuple[int, int, int]

    def __post_init__(self) -> None:
        if sorted(self.order_kji) != [0, 1, 2]:
            raise ValueError(f"order_kji must be a permutation of (0, 1, 2), got {self.order_kji}")
        if len(self.flip_kji) != 3 or len(self.original_shape_zyx) != 3:
            raise ValueError(f"flip_kji and original_shape_zyx need 3 entries, got {self.flip_kji}, "
                             f"{self.original_shape_zyx}")
        object.__setattr__(self, "order_kji", tuple(int(a) for a in self.order_kji))
        object.__setattr__(self, "flip_kji", tuple(bool(f) for f in self.flip_kji))
        object.__setattr__(self, "original_shape_zyx", tuple(int(n) for n in self.original_shape_zyx))

    @classmethod
    def identity(cls, shape_zyx: tuple[int, int, int]) -> "AxisPermutation":
        """The do-nothing permutation for a grid of (Z, Y, X) shape ``shape_zyx``."""
        return cls(_IDENTITY_ORDER, _NO_FLIP, tuple(shape_zyx))

    @property
    def is_identity(self) -> bool:
        """True when :meth:`apply` and :meth:`invert` return their input unchanged."""
        return self.order_kji == _IDENTITY_ORDER and self.flip_kji == _NO_FLIP

    @property
    def lps_shape_zyx(self) -> tuple[int, int, int]:
        """(Z, Y, X) shape of the reoriented (LPS) grid."""
        return tuple(self.original_shape_zyx[a] for a in self.order_kji)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Map an array on the original grid to the LPS grid.

        Args:
            array: (..., Z, Y, X) on the original grid (any dtype; leading axes such as channels are kept).

        Returns:
            (..., Z', Y', X') on the LPS grid, a new C-contiguous array (the input itself when identity).

        Raises:
            ValueError: the last three axes do not have ``original_shape_zyx``.
        """
        self._check(array, self.original_shape_zyx, "original")
        return array if self.is_identity else self._apply_axes(array)

    def apply_crop(self, offset_kji: tuple[int, int, int], array: np.ndarray) -> tuple[
        tuple[int, int, int], np.ndarray
    ]:
        """Map a crop of the original grid (e.g. a nodule mask) to the same voxels' crop of the LPS grid (the
        inverse of :meth:`invert_crop`); only the crop is transposed and flipped, no full-size array is made.

        Args:
            offset_kji: (k, j, i) index on the original grid of ``array[0, 0, 0]``.
            array: (Zc, Yc, Xc) crop.

        Returns:
            (offset_kji on the LPS grid, C-contiguous crop on the LPS grid; the input itself when identity).

        Raises:
            ValueError: ``array`` is not 3-D.
        """
        if np.ndim(array) != 3:
            raise ValueError(f"need a 3-D crop, got shape {np.shape(array)}")
        if self.is_identity:
            return tuple(int(o) for o in offset_kji), array
        offset = [int(offset_kji[a]) for a in self.order_kji]
        shape = np.shape(array)
        for axis, flipped in enumerate(self.flip_kji):
            if flipped:
                offset[axis] = int(self.lps_shape_zyx[axis]) - (offset[axis] + int(shape[self.order_kji[axis]]))
        return tuple(offset), self._apply_axes(np.asarray(array))

    def _apply_axes(self, array: np.ndarray) -> np.ndarray:
        lead = tuple(range(array.ndim - 3))
        out = np.transpose(array, lead + tuple(len(lead) + a for a in self.order_kji))
        flips = tuple(len(lead) + n for n, f in enumerate(self.flip_kji) if f)
        return np.ascontiguousarray(np.flip(out, flips) if flips else out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Map an array on the LPS grid back to the original grid (the exact inverse of :meth:`apply`).

        Args:
            array: (..., Z', Y', X') on the LPS grid, e.g. a mask or labelmap predicted there.

        Returns:
            (..., Z, Y, X) on the original grid, a new C-contiguous array (the input itself when identity).

        Raises:
            ValueError: the last three axes do not have ``lps_shape_zyx``.
        """
        self._check(array, self.lps_shape_zyx, "LPS")
        return array if self.is_identity else self._invert_axes(array)

    def invert_crop(self, offset_kji: tuple[int, int, int], array: np.ndarray) -> tuple[
        tuple[int, int, int], np.ndarray
    ]:
        """Map a crop of the LPS grid (e.g. a nodule mask) to the same voxels' crop of the original grid.

        Args:
            offset_kji: (k, j, i) index on the LPS grid of ``array[0, 0, 0]`` (may lie outside the grid).
            array: (Zc, Yc, Xc) crop.

        Returns:
            (offset_kji on the original grid, (Zc', Yc', Xc') crop on the original grid), so that the crop's
            voxels land on exactly the original voxels they covered on the LPS grid.

        Raises:
            ValueError: ``array`` is not 3-D or is empty.
        """
        if np.ndim(array) != 3 or 0 in np.shape(array):
            raise ValueError(f"need a non-empty 3-D crop, got shape {np.shape(array)}")
        if self.is_identity:
            return tuple(int(o) for o in offset_kji), array
        stop = tuple(int(o) + int(n) for o, n in zip(offset_kji, np.shape(array), strict=True))
        start, _ = self.box_to_original(tuple(int(o) for o in offset_kji), stop)
        return start, self._invert_axes(array)

    def _invert_axes(self, array: np.ndarray) -> np.ndarray:
        lead = tuple(range(array.ndim - 3))
        flips = tuple(len(lead) + n for n, f in enumerate(self.flip_kji) if f)
        out = np.flip(array, flips) if flips else array
        inverse = np.argsort(self.order_kji)
        return np.ascontiguousarray(np.transpose(out, lead + tuple(len(lead) + int(a) for a in inverse)))

    def kji_to_original(self, kji: np.ndarray) -> np.ndarray:
        """Map (N, 3) (k, j, i) indices on the LPS grid (fractional allowed) to indices on the original grid.

        Returns:
            (N, 3) float (k, j, i) indices on the original grid.
        """
        kji = np.atleast_2d(np.asarray(kji, dtype=float))
        lps_shape = np.asarray(self.lps_shape_zyx, dtype=float)
        flipped = np.where(self.flip_kji, lps_shape - 1.0 - kji, kji)
        out = np.empty_like(flipped)
        out[:, list(self.order_kji)] = flipped
        return out

    def box_to_original(self, start_kji: tuple[int, int, int], stop_kji: tuple[int, int, int]) -> tuple[
        tuple[int, int, int], tuple[int, int, int]
    ]:
        """Map a half-open index box [start, stop) on the LPS grid to the same voxels' box on the original grid.

        Args:
            start_kji: first (k, j, i) voxel of the box on the LPS grid.
            stop_kji: one past the last (k, j, i) voxel.

        Returns:
            (start_kji, stop_kji) half-open box on the original grid, so that
            ``original[s0:e0, s1:e1, s2:e2]`` holds exactly the voxels of ``lps[start:stop]``.

        Raises:
            ValueError: the box is empty or reversed.
        """
        start, stop = np.asarray(start_kji, int), np.asarray(stop_kji, int)
        if start.shape != (3,) or stop.shape != (3,) or np.any(stop <= start):
            raise ValueError(f"need a non-empty box start < stop (3 ints each), got {start_kji}, {stop_kji}")
        corners = self.kji_to_original(np.stack([start, stop - 1])).astype(int)
        return tuple(int(v) for v in corners.min(0)), tuple(int(v) + 1 for v in corners.max(0))

    def _check(self, array: np.ndarray, shape: tuple[int, int, int], grid: str) -> None:
        if np.ndim(array) < 3 or tuple(np.shape(array)[-3:]) != shape:
            raise ValueError(f"array shape {np.shape(array)} does not end with the {grid} grid shape {shape}")


def reorient_to_lps(volume: Volume) -> tuple[Volume, AxisPermutation]:
    """Permute and flip the volume's axes so that i → +x (L), j → +y (P), k → +z (S), exactly.

    Each array axis goes to the LPS axis its direction cosine is closest to (an optimal assignment on
    |direction|, so oblique volumes get a proper permutation too); negative directions are flipped.
    Spacing, origin and direction are updated so that every voxel keeps its LPS position; no voxel value
    is interpolated. This is RAS/LPS "closest canonical" reorientation (cf. nibabel ``as_closest_canonical``,
    here in LPS).

    Args:
        volume: any Volume; ``hu`` (Z, Y, X).

    Returns:
        (reoriented volume, permutation). The reoriented ``hu`` is a C-contiguous copy; a volume already in
        LPS order is returned itself with :meth:`AxisPermutation.identity` (no copy).

    Example:
        >>> flipped = Volume(np.zeros((3, 4, 5), np.int16), (1, 1, 2), (0, 0, 0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
        >>> lps, perm = reorient_to_lps(flipped)
        >>> lps.direction[:5], perm.flip_kji
        ((1.0, 0.0, 0.0, 0.0, 1.0), (False, True, True))
    """
    direction = volume.direction_matrix
    lps_axis, ijk_axis = linear_sum_assignment(-np.abs(direction))  # rows: L, P, S; columns: i, j, k
    source_ijk = ijk_axis[np.argsort(lps_axis)]  # source_ijk[a]: the ijk axis that becomes LPS axis a
    signs = np.sign(direction[np.arange(3), source_ijk])
    signs[signs == 0] = 1.0
    if np.array_equal(source_ijk, [0, 1, 2]) and np.all(signs > 0):
        return volume, AxisPermutation.identity(volume.shape_zyx)

    # array axes are (k, j, i): new array axis 2 - a comes from old array axis 2 - source_ijk[a]
    order_kji = tuple(int(2 - source_ijk[2 - n]) for n in range(3))
    flip_kji = tuple(bool(signs[2 - n] < 0) for n in range(3))
    perm = AxisPermutation(order_kji, flip_kji, volume.shape_zyx)

    shape_ijk = np.asarray(volume.shape_zyx[::-1])
    first_voxel_ijk = np.where(signs < 0, shape_ijk[source_ijk] - 1, 0)  # old index of the new voxel 0, per LPS axis
    old_ijk = np.zeros(3)
    old_ijk[source_ijk] = first_voxel_ijk
    new_direction = direction[:, source_ijk] * signs[None, :] + 0.0  # + 0.0 turns -0.0 into 0.0
    reoriented = Volume(
        hu=perm.apply(volume.hu),
        spacing_mm=tuple(volume.spacing_mm[a] for a in source_ijk),
        origin_lps_mm=tuple(volume.ijk_to_lps(old_ijk)[0]),
        direction=tuple(new_direction.reshape(-1)),
        source=volume.source,
    )
    return reoriented, perm


def restore_orientation(volume_lps: Volume, perm: AxisPermutation) -> Volume:
    """Undo :func:`reorient_to_lps`: put a volume on the LPS grid back on the original grid, exactly.

    Works for any array on the LPS grid wrapped in a Volume (e.g. a probability map made with
    ``lps.with_array(prob)``); the geometry returned equals the original volume's.

    Args:
        volume_lps: a volume on the grid :func:`reorient_to_lps` returned.
        perm: the permutation it returned.

    Returns:
        Volume on the original grid (``volume_lps`` itself when ``perm`` is the identity).

    Raises:
        ValueError: ``volume_lps`` does not have ``perm.lps_shape_zyx``.
    """
    hu = perm.invert(volume_lps.hu)
    if perm.is_identity:
        return volume_lps
    source_ijk = np.array([2 - perm.order_kji[2 - a] for a in range(3)])  # original ijk axis of LPS axis a
    signs = np.array([-1.0 if perm.flip_kji[2 - a] else 1.0 for a in range(3)])
    lps_shape_ijk = np.asarray(perm.lps_shape_zyx[::-1])
    first_voxel_lps_ijk = np.where(signs < 0, lps_shape_ijk - 1, 0)  # LPS-grid index of original voxel 0
    direction = np.empty((3, 3))
    direction[:, source_ijk] = volume_lps.direction_matrix * signs[None, :] + 0.0
    spacing = np.empty(3)
    spacing[source_ijk] = volume_lps.spacing_mm
    return Volume(
        hu=hu,
        spacing_mm=tuple(spacing),
        origin_lps_mm=tuple(volume_lps.ijk_to_lps(first_voxel_lps_ijk)[0]),
        direction=tuple(direction.reshape(-1)),
        source=volume_lps.source,
    )
