"""Random fields of the phantom: low-frequency tissue texture and spatially correlated image noise.

* :class:`SmoothField`: a band-limited random field (unit variance) on a coarse grid, evaluated one axial slice
  at a time by separable Gaussian-kernel interpolation, so the full volume is never materialised in float64.
* :func:`add_correlated_noise`: white Gaussian noise filtered by a Gaussian kernel and rescaled so that its
  standard deviation is exactly ``sigma_hu`` (the usual first-order model of reconstructed CT noise, whose
  texture comes from the reconstruction kernel; e.g. Solomon & Samei, Med. Phys. 2012, doi:10.1118/1.4747511).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["SmoothField", "PlaneSampler", "make_smooth_field", "gaussian_noise_gain", "correlated_noise_slabs",
           "add_correlated_noise"]

#: Truncation of the noise filter's Gaussian kernel, in standard deviations (scipy's default).
NOISE_KERNEL_TRUNCATE = 4.0
#: Slices of noise filtered at a time (bounds the float32 temporaries).
NOISE_SLAB = 48


@dataclass(frozen=True)
class SmoothField:
    """A smooth zero-mean, roughly unit-variance random field over an LPS box, evaluated per axial slice.

    Args:
        coarse: (Zc, Yc, Xc) float64 values on the coarse grid.
        origin_xyz: LPS (mm) of ``coarse[0, 0, 0]``.
        step_mm: coarse grid step, mm.
    """

    coarse: np.ndarray
    origin_xyz: tuple[float, float, float]
    step_mm: float

    def slice(self, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: float) -> np.ndarray:
        """Field values (float32, shape (len(y_mm), len(x_mm))) on the axial plane at height ``z_mm``."""
        return self.sampler(x_mm, y_mm)(z_mm)

    def sampler(self, x_mm: np.ndarray, y_mm: np.ndarray) -> "PlaneSampler":
        """A :class:`PlaneSampler` for the axial planes of the grid ``x_mm`` × ``y_mm`` (weights computed once)."""
        wy = _weights(y_mm, self.origin_xyz[1], self.step_mm, self.coarse.shape[1]).astype(np.float32)
        wx = _weights(x_mm, self.origin_xyz[0], self.step_mm, self.coarse.shape[2]).astype(np.float32)
        return PlaneSampler(self, wx, wy)


@dataclass(frozen=True)
class PlaneSampler:
    """Evaluates a :class:`SmoothField` on axial planes of one grid, optionally on a crop of it.

    Args:
        field: the field.
        wx, wy: (X, Xc) and (Y, Yc) float32 interpolation weights of the grid's x and y coordinates.
    """

    field: SmoothField
    wx: np.ndarray
    wy: np.ndarray

    def __call__(self, z_mm: float, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(rows, cols) float32 field values on the plane at height ``z_mm``."""
        f = self.field
        wz = _weights(np.array([z_mm]), f.origin_xyz[2], f.step_mm, f.coarse.shape[0])[0]
        plane = np.tensordot(wz, f.coarse, axes=(0, 0)).astype(np.float32)
        return self.wy[rows] @ plane @ self.wx[cols].T


def _weights(coords: np.ndarray, origin: float, step: float, n: int) -> np.ndarray:
    """(len(coords), n) normalised Gaussian interpolation weights of coarse nodes (width one step)."""
    nodes = origin + step * np.arange(n)
    d = (np.asarray(coords, dtype=float)[:, None] - nodes[None, :]) / step
    w = np.exp(-0.5 * d * d / 0.36)
    w[w < 1e-6] = 0.0  # no denormals in the float32 products
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)


def make_smooth_field(
    lo_xyz: Sequence[float], hi_xyz: Sequence[float], step_mm: float, rng: np.random.Generator
) -> SmoothField:
    """A :class:`SmoothField` covering the LPS box [lo, hi] (mm) with features about ``2 * step_mm`` across.

    Example:
        >>> f = make_smooth_field((-50, -50, -50), (50, 50, 50), 10.0, np.random.default_rng(0))
        >>> f.slice(np.linspace(-50, 50, 4), np.linspace(-50, 50, 3), 0.0).shape
        (3, 4)
    """
    lo = np.asarray(lo_xyz, dtype=float) - 2 * step_mm
    n = np.ceil((np.asarray(hi_xyz, dtype=float) + 2 * step_mm - lo) / step_mm).astype(int) + 1
    coarse = ndimage.gaussian_filter(rng.standard_normal(tuple(n[::-1])), 1.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-12)
    return SmoothField(coarse, tuple(float(v) for v in lo), float(step_mm))


def gaussian_noise_gain(sigma_vox: Sequence[float], truncate: float = NOISE_KERNEL_TRUNCATE) -> float:
    """Standard deviation of unit white noise after scipy's separable Gaussian filter with ``sigma_vox`` per axis.

    Equals the product over axes of the L2 norm of the normalised, truncated 1-D kernel (radius
    ``int(truncate * sigma + 0.5)``, as ``scipy.ndimage.gaussian_filter`` builds it).
    """
    gain = 1.0
    for sigma in sigma_vox:
        if sigma <= 0:
            continue
        radius = int(truncate * float(sigma) + 0.5)
        t = np.arange(-radius, radius + 1, dtype=float)
        k = np.exp(-0.5 * (t / sigma) ** 2)
        k /= k.sum()
        gain *= float(np.sqrt(np.sum(k * k)))
    return gain


def correlated_noise_slabs(
    shape_zyx: tuple[int, int, int], spacing_mm: Sequence[float], sigma_hu: float, correlation_mm: float,
    rng: np.random.Generator,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Spatially correlated Gaussian noise of standard deviation ``sigma_hu``, slab by slab along z.

    White float32 noise is drawn slice by slice (so the result does not depend on the slab size), filtered with a
    Gaussian of ``correlation_mm`` (per axis in voxels: correlation / spacing), and scaled by the exact gain of
    the truncated kernel (:func:`gaussian_noise_gain`). Slabs overlap by the kernel radius, so the output equals
    filtering the whole volume at once while keeping only a few slabs in memory.

    Args:
        shape_zyx: volume shape (Z, Y, X).
        spacing_mm: voxel size (x, y, z), mm.
        sigma_hu: target standard deviation, HU.
        correlation_mm: standard deviation of the colouring kernel, mm (0: white noise).
        rng: generator of the white noise.

    Yields:
        (z slice, (slab, Y, X) float32 noise in HU), covering the volume in order.
    """
    sigma_vox = [correlation_mm / s for s in (spacing_mm[2], spacing_mm[1], spacing_mm[0])]
    gain = np.float32(sigma_hu / gaussian_noise_gain(sigma_vox))
    pad = int(NOISE_KERNEL_TRUNCATE * sigma_vox[0] + 0.5)
    n = shape_zyx[0]
    white = _WhiteNoise(rng, tuple(shape_zyx))
    for start in range(0, n, NOISE_SLAB):
        stop = min(start + NOISE_SLAB, n)
        lo, hi = max(start - pad, 0), min(stop + pad, n)
        block = white.rows(lo, hi)
        coloured = ndimage.gaussian_filter(block, sigma_vox, mode="reflect", truncate=NOISE_KERNEL_TRUNCATE)
        yield slice(start, stop), coloured[start - lo:stop - lo] * gain


def add_correlated_noise(
    hu: np.ndarray, spacing_mm: Sequence[float], sigma_hu: float, correlation_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """``hu`` plus :func:`correlated_noise_slabs` noise, as a new float32 array (``hu`` is left unchanged).

    Args:
        hu: (Z, Y, X) HU volume.
        spacing_mm: voxel size (x, y, z), mm.
        sigma_hu: target noise standard deviation, HU.
        correlation_mm: standard deviation of the Gaussian kernel that colours the noise, mm.
        rng: generator for the white noise.

    Returns:
        (Z, Y, X) float32 array ``hu + noise``.

    Example:
        >>> out = add_correlated_noise(np.zeros((40, 40, 40), np.float32), (1, 1, 1), 20.0, 0.7,
        ...                            np.random.default_rng(0))
        >>> 18 < float(out.std()) < 22
        True
    """
    out = np.array(hu, dtype=np.float32, copy=True)
    for sl, noise in correlated_noise_slabs(out.shape, spacing_mm, sigma_hu, correlation_mm, rng):
        out[sl] += noise
    return out


class _WhiteNoise:
    """White float32 noise, drawn slice by slice in order so that slabs overlap consistently."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int]) -> None:
        self._rng = rng
        self._shape = shape
        self._cache: dict[int, np.ndarray] = {}
        self._next = 0

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Slices [lo, hi) of the white noise, (hi - lo, Y, X) float32."""
        while self._next < hi:
            self._cache[self._next] = self._rng.standard_normal(self._shape[1:], dtype=np.float32)
            self._next += 1
        for k in [k for k in self._cache if k < lo]:
            del self._cache[k]
        return np.stack([self._cache[k] for k in range(lo, hi)])
