"""Checks shared by the CT readers of :mod:`lunglesionai.io` and :mod:`lunglesionai.dicom`.

:class:`CTInputError` (the one error type of CT loading), and the checks and helpers both readers use: image
shape, HU range, HU storage dtype, orthonormal direction cosines, ITK error text and ITK warnings off. Kept in
their own module so that ``io`` and ``dicom`` can both import them without importing each other in a circle;
:mod:`lunglesionai.io` re-exports the public names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .volume import Volume

__all__ = ["CTInputError", "MIN_HU_AIR", "ORTHONORMAL_TOL"]

MIN_HU_AIR = -500.0
"""A CT in HU holds air or lung, so its minimum must lie below this (HU); checked for non-DICOM files."""
ORTHONORMAL_TOL = 1e-3
"""Tolerance on |DᵀD − I| for the direction cosines."""
_INT16 = np.iinfo(np.int16)


class CTInputError(ValueError):
    """An input that is not a usable 3-D CT; the message names the path and the problem on one line."""


def _check_shape(p: Path, size: Sequence[int], n_components: int, min_slices: int) -> None:
    size = tuple(int(n) for n in size)
    if len(size) < 3 or (len(size) == 3 and min(size) == 1):
        raise CTInputError(f"{p}: a 2-D image (size {size}), not a 3-D CT volume")
    if len(size) > 3:
        raise CTInputError(f"{p}: a {len(size)}-D image (size {size}); need one 3-D CT volume")
    if n_components != 1:
        raise CTInputError(f"{p}: {n_components} components per voxel (colour or vector image); CT is scalar")
    if min(size) < min_slices:
        raise CTInputError(f"{p}: only {min(size)} slices (size {size}); need at least {min_slices}")


def _check_hu_range(volume: Volume) -> None:
    lowest = float(np.min(volume.hu))
    if lowest > MIN_HU_AIR:
        raise CTInputError(
            f"{volume.source}: intensities do not look like CT Hounsfield units: minimum {lowest:g} > "
            f"{MIN_HU_AIR:g} (no air or lung); typical of an MR image, or of a CT stored without the -1024 "
            f"HU offset (raw values); convert to HU, or pass check_hu=False if it really is HU"
        )


def _as_hu_dtype(array: np.ndarray) -> np.ndarray:
    """int16 when every value is integral and fits in int16, else float32 (checked slice by slice)."""
    if array.dtype == np.int16:
        return array
    if array.size and (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        fits = _INT16.min <= array.min() and array.max() <= _INT16.max
        return array.astype(np.int16 if fits else np.float32)
    integral = array.size > 0 and all(np.array_equal(s, np.rint(s)) for s in array)
    if integral and _INT16.min <= array.min() and array.max() <= _INT16.max:
        return array.astype(np.int16)
    return array.astype(np.float32, copy=False)


def _check_orthonormal(source: str | Path, direction: np.ndarray) -> None:
    if np.abs(direction.T @ direction - np.eye(3)).max() > ORTHONORMAL_TOL:
        raise CTInputError(f"{source}: direction cosines {np.round(direction, 4).tolist()} are not orthonormal")


def _itk_reason(exc: Exception) -> str:
    """The informative last line of an ITK exception message, without ITK's source-file prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return reason.split("): ", 1)[-1].removeprefix("sitk::ERROR: ")[:300]


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's stderr warnings (e.g. its own non-uniform-spacing note); the readers log instead."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)
