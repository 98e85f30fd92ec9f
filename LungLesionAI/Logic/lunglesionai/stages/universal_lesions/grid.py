"""The universal lesion detector's grid: a CT resampled to fixed in-plane and slice spacing, its slabs and boxes.

:func:`slice_grid` resamples any CT (any direction) onto an axis-aligned LPS grid of ``pixel_spacing_mm`` ×
``pixel_spacing_mm`` × ``slice_spacing_mm`` covering the whole volume (MP3D resamples to a fixed slice spacing;
Zhang et al., MICCAI 2020), after a Gaussian anti-aliasing filter wherever the grid is coarser than the CT (FWHM
sqrt(target² − source²) per axis). X and Y are padded to multiples of the network's size divisor with air
(−1024 HU); Z is not padded. :func:`label_grid` puts a label map on the same grid (nearest neighbour).

Arrays are (Z, Y, X) = (slice, row, column) with k inferior → superior, rows anterior → posterior, columns
right → left (LPS). A slab (:meth:`SliceGrid.slab`) is the network's (C·n, X, Y) input; a 2-D box is
``(x0, y0, x1, y1)`` in grid pixels (pixel centres at integers; a box around pixels i0…i1 is i0 − 0.5 … i1 + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from lunglesionai.core.hu_windows import window_hu_channels
from lunglesionai.core.sitk_bridge import volume_to_sitk
from lunglesionai.core.volume import Volume
from lunglesionai.nets.mp3d import ULDConfig

__all__ = ["AIR_HU", "SliceGrid", "label_grid", "mask_boxes_per_slice", "slice_grid"]

AIR_HU = -1024.0
FWHM_PER_SIGMA = 2.3548


@dataclass(frozen=True)
class SliceGrid:
    """A CT on the ULD grid.

    Args:
        hu: (Z, Y, X) HU (float32 or int16).
        origin_lps_mm: LPS (x, y, z) of voxel (0, 0, 0)'s centre.
        spacing_mm: (x, y, z) voxel size, mm.
    """

    hu: np.ndarray
    origin_lps_mm: np.ndarray
    spacing_mm: tuple[float, float, float]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """(Z, Y, X)."""
        return tuple(int(n) for n in self.hu.shape)

    def xyz_to_lps(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) fractional grid coordinates (x = column, y = row, z = slice) → (N, 3) LPS mm."""
        return np.asarray(self.origin_lps_mm, float) + np.atleast_2d(np.asarray(xyz, float)) * self.spacing_mm

    def lps_to_xyz(self, lps_mm: np.ndarray) -> np.ndarray:
        """(N, 3) LPS mm → (N, 3) fractional grid coordinates (x, y, z)."""
        return (np.atleast_2d(np.asarray(lps_mm, float)) - np.asarray(self.origin_lps_mm, float)) / self.spacing_mm

    def slab_indices(self, k: int, n_slices: int) -> np.ndarray:
        """The ``n_slices`` slice indices of the slab centred on ``k`` (the first / last slice repeated at the
        ends)."""
        half = n_slices // 2
        return np.clip(np.arange(k - half, k + half + 1), 0, self.shape_zyx[0] - 1)

    def slab(self, k: int, config: ULDConfig, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """The network input centred on slice ``k``: (C·n, X, Y) float32 in [0, 1] (channel ``c·n + s``).

        Args:
            k: centre slice index.
            config: windows and ``n_slices``.
            rows, cols: optional crop (Y and X index ranges).
        """
        stack = np.asarray(self.hu[self.slab_indices(k, config.n_slices)][:, rows, cols], np.float32)
        channels = window_hu_channels(stack, config.hu_windows)  # (C, n, Y, X)
        return np.ascontiguousarray(channels.transpose(0, 1, 3, 2).reshape(-1, stack.shape[2], stack.shape[1]))

    def windowed_volume(self, config: ULDConfig) -> np.ndarray:
        """All slices windowed: (C, Z, X, Y) float32 (the input of :func:`lunglesionai.nets.mp3d.predict_slices`)."""
        return np.ascontiguousarray(window_hu_channels(self.hu, config.hu_windows).transpose(0, 1, 3, 2))


def slice_grid(volume: Volume, config: ULDConfig, *, divisor: int | None = None) -> SliceGrid:
    """Resample ``volume`` onto the ULD grid (see the module docstring).

    Args:
        volume: CT in HU, any direction.
        config: ``pixel_spacing_mm`` and ``slice_spacing_mm``.
        divisor: X and Y are padded to multiples of this (default ``config.size_divisible``).

    Returns:
        :class:`SliceGrid` with float32 HU.

    Example:
        >>> v = Volume(np.zeros((10, 64, 64), np.int16), (0.7, 0.7, 1.0), (0.0, 0.0, 0.0))
        >>> slice_grid(v, ULDConfig()).shape_zyx
        (5, 64, 64)
    """
    divisor = config.size_divisible if divisor is None else divisor
    target = np.array([config.pixel_spacing_mm, config.pixel_spacing_mm, config.slice_spacing_mm], float)
    shape = np.asarray(volume.shape_zyx)[::-1] - 1
    corners = np.array([[a, b, c] for a in (0, shape[0]) for b in (0, shape[1]) for c in (0, shape[2])], float)
    lps = volume.ijk_to_lps(corners)
    lo, hi = lps.min(axis=0), lps.max(axis=0)
    size = np.floor((hi - lo) / target + 1e-6).astype(int) + 1
    padded = size.copy()
    padded[:2] = np.ceil(size[:2] / divisor).astype(int) * divisor
    origin = lo - 0.5 * (padded - size) * target
    origin[2] = lo[2]
    image = sitk.Cast(volume_to_sitk(volume), sitk.sitkFloat32)
    source = np.abs(volume.direction_matrix) @ np.asarray(volume.spacing_mm)  # spacing along x, y, z (approx.)
    sigma = np.sqrt(np.maximum(target**2 - source**2, 0.0)) / FWHM_PER_SIGMA
    sigma_index = sigma_along_image_axes(volume, sigma)
    if np.any(sigma_index > 0):
        image = sitk.DiscreteGaussian(image, [float(s) ** 2 for s in sigma_index], 32, 0.01, True)
    reference = sitk.Image([int(s) for s in padded], sitk.sitkFloat32)
    reference.SetSpacing([float(s) for s in target])
    reference.SetOrigin([float(v) for v in origin])
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, AIR_HU)
    return SliceGrid(sitk.GetArrayFromImage(resampled), origin, tuple(float(s) for s in target))


def sigma_along_image_axes(volume: Volume, sigma_lps_mm: np.ndarray) -> np.ndarray:
    """Per-axis Gaussian sigma (mm) given along LPS x, y, z, expressed along the image's i, j, k axes (the
    axis each image axis is closest to)."""
    nearest = np.argmax(np.abs(volume.direction_matrix), axis=0)  # for image axis a, the LPS axis it follows
    return np.asarray(sigma_lps_mm, float)[nearest]


def label_grid(labels: np.ndarray, volume: Volume, grid: SliceGrid) -> np.ndarray:
    """A (Z, Y, X) label map on ``volume``'s grid, resampled by nearest neighbour onto ``grid``: (Z, Y, X) uint16.

    Raises:
        ValueError: the label map's shape differs from the volume's.
    """
    if np.shape(labels) != volume.shape_zyx:
        raise ValueError(f"label map shape {np.shape(labels)} differs from the volume's {volume.shape_zyx}")
    image = sitk.GetImageFromArray(np.asarray(labels, np.uint16))
    image.SetSpacing(volume.spacing_mm)
    image.SetOrigin(volume.origin_lps_mm)
    image.SetDirection(volume.direction)
    reference = sitk.Image([int(s) for s in grid.shape_zyx[::-1]], sitk.sitkUInt16)
    reference.SetSpacing([float(s) for s in grid.spacing_mm])
    reference.SetOrigin([float(v) for v in grid.origin_lps_mm])
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(out)


def mask_boxes_per_slice(mask: np.ndarray, min_area_fraction: float = 0.25) -> dict[int, tuple[np.ndarray, int]]:
    """2-D boxes of one lesion's mask on every slice where its cross-section is large enough.

    Args:
        mask: (Z, Y, X) boolean mask on a grid.
        min_area_fraction: slices whose cross-section area is below this share of the largest one are left out
            (the lesion's tips: too small to be a fair target).

    Returns:
        ``{k: (box (4,) float32 (x0, y0, x1, y1) pixel edges, area in pixels)}``; empty for an empty mask.
    """
    areas = np.asarray(mask, bool).sum(axis=(1, 2))
    if not areas.any():
        return {}
    out = {}
    for k in np.flatnonzero(areas >= min_area_fraction * areas.max()):
        rows, cols = np.nonzero(mask[k])
        box = np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5], np.float32)
        out[int(k)] = (box, int(areas[k]))
    return out
