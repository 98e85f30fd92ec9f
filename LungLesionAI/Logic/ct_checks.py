"""Checks shared by the CT readers of :mod:`lunglesionai.io` and :mod:`lunglesionai.dicom`.

:class:`CTInputError` (the one error type of CT loading), and the checks and helpers both readers use: image
shape, HU range, HU storage dtype, orthonormal direction cosines, ITK error text and ITK warnings off. Kept in
their own module so that ``io`` and ``dicom`` can both import them without importing each other in a circle;
:mod:`lunglesionai.io` re-exports the public names.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .volume import Volume

__all__ = [
    "CTInputError",
    "DEFAULT_MAX_MEMORY_GB",
    "MEMORY_BYTES_PER_VOXEL",
    "MIN_HU_AIR",
    "ORTHONORMAL_TOL",
    "check_memory",
    "check_regular_file",
    "check_spacing",
    "check_finite",
    "sanitize_text",
]

MIN_HU_AIR = -500.0
"""A CT in HU holds air or lung, so its minimum must lie below this (HU); checked for non-DICOM files."""
ORTHONORMAL_TOL = 1e-3
"""Tolerance on |DᵀD − I| for the direction cosines."""
_INT16 = np.iinfo(np.int16)
DEFAULT_MAX_MEMORY_GB = 16.0
"""Default memory budget (GB, 10⁹ bytes) an analysis may need; ``--max-memory-gb`` / ``max_memory_gb=`` raise it."""
MEMORY_BYTES_PER_VOXEL = 40
"""Peak memory of a whole analysis per CT voxel (bytes): ``lunglesionai bench`` measured 2.9 GB peak on a
512×512×300 phantom (37 B/voxel, the phantom itself included), rounded up."""
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


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


def sanitize_text(text: object, max_len: int = 200) -> str:
    """``text`` made safe to print on a terminal: control characters (ANSI escape sequences, carriage
    returns, newlines, bells) replaced by ``?`` and the result cut to ``max_len`` characters (``…`` marks a cut).

    Header strings of DICOM files and file names are data, not trusted text: every error message that quotes
    one passes it through here.

    Example:
        >>> sanitize_text("Chest\x1b[31m CT")
        'Chest?[31m CT'
    """
    cleaned = _CONTROL_CHARS.sub("?", str(text))
    return cleaned if len(cleaned) <= max_len else cleaned[: max_len - 1] + "…"


def check_regular_file(p: Path) -> None:
    """Refuse special files (FIFO, character or block device, socket) before anything opens them.

    Opening a FIFO blocks until a writer appears, so a FIFO handed over as a CT would hang the run for ever.

    Raises:
        CTInputError: ``p`` is not a regular file, a folder or a symbolic link to one of those.
    """
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise CTInputError(f"{sanitize_text(p)}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    raise CTInputError(f"{sanitize_text(p)}: {kind}, not a CT file or folder")


def check_spacing(source: str | os.PathLike, spacing_mm: Sequence[float]) -> None:
    """Refuse voxel spacings that are zero, negative or not finite.

    Args:
        source: the file, for the message.
        spacing_mm: (x, y, z) voxel size in mm as the header declares it.

    Raises:
        CTInputError: a spacing is ≤ 0, NaN or infinite.
    """
    values = [float(v) for v in spacing_mm]
    if all(math.isfinite(v) and v > 0 for v in values):
        return
    shown = ", ".join(f"{v:g}" for v in values)
    raise CTInputError(f"{sanitize_text(source)}: implausible voxel spacing ({shown}) mm: every spacing must be "
                       f"a positive number; fix the header")


def check_memory(source: str | os.PathLike, shape_zyx: Sequence[int], max_memory_gb: float | None) -> None:
    """Refuse a volume whose analysis would need more than ``max_memory_gb``, before its voxels are read.

    The need is estimated as voxel count × :data:`MEMORY_BYTES_PER_VOXEL`.

    Args:
        source: the file or folder, for the message.
        shape_zyx: the volume's size in voxels, as its header declares it (any axis order).
        max_memory_gb: the budget in GB (10⁹ bytes); None means :data:`DEFAULT_MAX_MEMORY_GB`.

    Raises:
        CTInputError: the estimated need exceeds the budget.
    """
    budget = DEFAULT_MAX_MEMORY_GB if max_memory_gb is None else float(max_memory_gb)
    n_voxels = math.prod(int(n) for n in shape_zyx)
    need_gb = n_voxels * MEMORY_BYTES_PER_VOXEL / 1e9
    if need_gb > budget:
        size = "×".join(str(int(n)) for n in shape_zyx)
        raise CTInputError(
            f"{sanitize_text(source)}: {size} voxels would need about {need_gb:.0f} GB to analyse (limit "
            f"{budget:g} GB); crop or downsample it, or raise the limit with --max-memory-gb"
        )


def check_finite(source: str | os.PathLike, hu: np.ndarray) -> None:
    """Refuse NaN or infinite voxel values (float data only; integer data cannot hold them).

    Raises:
        CTInputError: some voxels are NaN or ±Inf; the message gives how many.
    """
    if not np.issubdtype(hu.dtype, np.floating):
        return
    bad = sum(int(np.count_nonzero(~np.isfinite(s))) for s in hu)
    if bad:
        raise CTInputError(f"{sanitize_text(source)}: {bad} voxel(s) are NaN or infinite; a CT holds finite HU "
                           f"values")
