"""Checks shared by the CT readers of :mod:`lunglesionai.io.ct_files` and :mod:`lunglesionai.io.dicom_series`.

:class:`CTInputError` (the one error type of CT loading), and the checks and helpers both readers use: image
shape, HU plausibility (:func:`check_hu_plausible`), HU storage dtype, orthonormal direction cosines, ITK
error text and ITK warnings off. Kept in their own module so that ``io`` and ``dicom`` can both import them
without importing each other in a circle; :mod:`lunglesionai.io.ct_files` re-exports the public names.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lunglesionai.core.volume import Volume

__all__ = [
    "CTInputError",
    "DEFAULT_MAX_MEMORY_GB",
    "MEMORY_BYTES_PER_VOXEL",
    "FAR_BELOW_AIR_HU",
    "MAX_FAR_BELOW_AIR_FRACTION",
    "MAX_TISSUE_MEDIAN_HU",
    "MIN_AIR_FRACTION",
    "MIN_HU_AIR",
    "ORTHONORMAL_TOL",
    "check_memory",
    "check_regular_file",
    "check_spacing",
    "check_finite",
    "special_file_kind",
    "check_hu_plausible",
    "sanitize_text",
]

MIN_HU_AIR = -500.0
"""Air (-1000 HU) and lung (about -900 to -500 HU) lie at or below this; the non-air voxels (fat, soft tissue,
bone) above it. Used by :func:`check_hu_plausible`."""
HU_SAMPLE_STEP = 4
""":func:`check_hu_plausible` looks at every 4th voxel along each axis: 1/64 of a large volume (35 ms on a
512×512×300 CT)."""
HU_SAMPLE_MIN_VOXELS = 250_000
"""...unless that sample would hold fewer voxels than this; then a finer step (down to every voxel) is used."""
PADDING_MIN_FRACTION = 0.005
"""The sample's minimum (or maximum) value is a constant padding value, set aside with its interpolated edge
before the HU rules, when it covers at least this fraction of the sample. Measured on ../shared/data: padding
(-3024, -2048 HU) or clamped outside air (-1024, -1000 HU) covers 21-26 % of the whole CTs."""
PADDING_EDGE_VOXELS = 1
"""Sample voxels around the padding set aside with it (the blurred padding edge of a resampled volume)."""
FAR_BELOW_AIR_HU = -1200.0
"""Far below air (-1000 HU): no tissue lies here, only padding, its blurred edge, or wrongly scaled data."""
MIN_AIR_FRACTION = 0.02
"""Fewest voxels (outside padding) in air or lung, ``FAR_BELOW_AIR_HU`` to ``MIN_HU_AIR`` (-1200 to -500 HU).

Measured (every 4th voxel, padding set aside): whole CTs in ../shared/data 34.6 % (chest crop) to 78.0 %
(whole body); 718 LIDC nodule crops (lidc_voi, 43-74 voxels wide) 12.8 % at least, 30.1 % for those with
≥ 10 slices. Raw stored values (no -1024 offset) have 0-1 % (only the edge of the padding), MR none."""
MAX_FAR_BELOW_AIR_FRACTION = 0.03
"""Most voxels (outside padding) that may lie below ``FAR_BELOW_AIR_HU``.

Measured: whole CTs 0-0.06 % (0.83 % in the resampled chest_ct_lowres.nrrd before its padding edge is set
aside), LIDC crops 0.71 % at most; HU×10 puts all air and lung there (≥ 12.8 %)."""
MAX_TISSUE_MEDIAN_HU = 600.0
"""Highest median of the non-air voxels (> ``MIN_HU_AIR``) accepted as HU; soft tissue sits near 0-100 HU.

Measured: whole CTs -57 to 62 HU; LIDC crops -436 to 465 HU (465: a 2-slice crop around a calcified nodule;
crops with ≥ 10 slices at most 236 HU). Raw stored values put fat and soft tissue at about 900-1100."""
_SKIP_NOTE = " (Python: check_hu=False skips this check)"
ORTHONORMAL_TOL = 1e-3
"""Tolerance on |DᵀD − I| for the direction cosines."""
_INT16 = np.iinfo(np.int16)
DEFAULT_MAX_MEMORY_GB = 16.0
"""Default memory budget (GB, 10⁹ bytes) an analysis may need; ``--max-memory-gb`` / ``max_memory_gb=`` raise it."""
MEMORY_BYTES_PER_VOXEL = 40
"""Peak memory of a whole analysis per CT voxel (bytes): ``lunglesionai bench`` measured 2.9 GB peak on a
512×512×300 phantom (37 B/voxel, the phantom itself included), rounded up."""
logger = logging.getLogger(__name__)
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


def _check_hu_range(volume: Volume, *, require_air: bool = True) -> None:
    """The HU plausibility check of ``volume.hu`` (:func:`check_hu_plausible`), named after ``volume.source``.

    Kept under this name for the DICOM reader (:func:`lunglesionai.io.dicom_series._check_rescale`).

    Raises:
        CTInputError: see :func:`check_hu_plausible`.
    """
    check_hu_plausible(volume.source, volume.hu, require_air=require_air)


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
    raise CTInputError(f"{sanitize_text(p)}: {special_file_kind(mode)}, not a CT file or folder")


def special_file_kind(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, for messages: "a FIFO (named pipe)", "a device
    file", "a socket" or "a special file" (``mode``: ``os.stat().st_mode``)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


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


# ------------------------------------------------------------------------------------------- HU plausibility


def check_hu_plausible(source: str | os.PathLike, hu: np.ndarray, *, require_air: bool = True) -> None:
    """Refuse intensities that are not plausible CT Hounsfield units, judged on a subsample of the voxels.

    The sample takes every :data:`HU_SAMPLE_STEP`-th voxel along each axis (a finer step on small volumes,
    so that it holds :data:`HU_SAMPLE_MIN_VOXELS` voxels or all of them). A constant padding value (the
    sample's minimum or maximum when it covers at least :data:`PADDING_MIN_FRACTION` of it, e.g. -2000 or
    -3024 outside a scanner's circular field of view, or outside air clamped at -1024) is set aside with its
    edge. The remaining voxels must pass, in this order:

    1. at most :data:`MAX_FAR_BELOW_AIR_FRACTION` (3 %) of them far below air (< -1200 HU); else HU scaled
       (×10?) or a wrong rescale;
    2. at least :data:`MIN_AIR_FRACTION` (2 %) of them in air or lung (-1200 to -500 HU); else no air or lung:
       an MR image, or CT stored without the -1024 HU offset (raw values), padding or not;
    3. the median of the non-air voxels (> -500 HU) at most :data:`MAX_TISSUE_MEDIAN_HU` (600 HU); else raw
       stored values without the rescale (soft tissue should sit near 0-100 HU).

    A crop without outside air (lung only) passes: its lung parenchyma is the air of rule 1. Slice thickness
    plays no part. Known gap: raw values with a padding value inside -1200..-500 whose edge was blurred by
    two resamplings can pass.

    Args:
        source: the file or folder, for the message.
        hu: (Z, Y, X) voxel values, meant to be HU (any real dtype, finite; see :func:`check_finite`).
        require_air: apply rule 2. DICOM with RescaleSlope/Intercept skips it: the scanner's rescale already
            makes the values HU, and only a wrong slope (rule 1) or intercept (rule 3) is checked.

    Raises:
        CTInputError: one of the rules above (or every voxel equal); the one-line message names ``source``,
            the measured value and the likely cause.
    """
    sample = _hu_sample(np.asarray(hu))
    if sample.size == 0:
        return
    kept, padding = _set_padding_aside(sample)
    name = sanitize_text(source)
    if kept.size == 0:
        raise CTInputError(f"{name}: every voxel is {float(sample.flat[0]):g}: a blank image, not a CT")
    aside = "".join(f", {v:g} HU padding ({f:.1%} of voxels) set aside" for v, f in padding)
    _check_hu_rules(name, kept, aside, require_air)


def _check_hu_rules(name: str, kept: np.ndarray, aside: str, require_air: bool = True) -> None:
    """The three rules of :func:`check_hu_plausible` on the sample without padding (``kept``, 1-D, non-empty)."""
    lowest = float(kept.min())
    far = float(np.count_nonzero(kept < FAR_BELOW_AIR_HU)) / kept.size
    if far > MAX_FAR_BELOW_AIR_FRACTION:
        raise CTInputError(
            f"{name}: values far below air (-1000 HU): {far:.1%} of voxels < {FAR_BELOW_AIR_HU:g} HU (lowest "
            f"{lowest:g}{aside}); scaled HU (×10?) or a wrong rescale; convert to HU{_SKIP_NOTE}"
        )
    air = float(np.count_nonzero((kept >= FAR_BELOW_AIR_HU) & (kept <= MIN_HU_AIR))) / kept.size
    if require_air and air < MIN_AIR_FRACTION:
        found = (f"minimum {lowest:g} > {MIN_HU_AIR:g} HU" if lowest > MIN_HU_AIR else
                 f"only {air:.2%} of voxels in air or lung ({FAR_BELOW_AIR_HU:g} to {MIN_HU_AIR:g} HU)")
        raise CTInputError(
            f"{name}: intensities do not look like CT Hounsfield units (HU): {found}{aside} (no air or lung); "
            f"typical of an MR image, or of a CT stored without the -1024 HU offset (raw values); convert to "
            f"HU{_SKIP_NOTE}"
        )
    tissue = kept[kept > MIN_HU_AIR]
    median = float(np.median(tissue)) if tissue.size else float("nan")
    if median > MAX_TISSUE_MEDIAN_HU:
        raise CTInputError(
            f"{name}: intensities do not look like CT Hounsfield units (HU): the non-air voxels (> {MIN_HU_AIR:g} "
            f"HU) have median {median:g} HU, soft tissue should sit near 0-100 HU; raw stored values without the "
            f"rescale (-1024 HU offset)?{_SKIP_NOTE}"
        )
    logger.debug("%s: HU plausible (air/lung %.1f%%, far below air %.2f%%, non-air median %g%s)", name,
                 100 * air, 100 * far, median, aside)


def _hu_sample(hu: np.ndarray) -> np.ndarray:
    """Every ``step``-th voxel per axis (float32, same number of axes); ``step`` ≤ HU_SAMPLE_STEP keeps enough."""
    step = HU_SAMPLE_STEP
    while step > 1 and hu.size / step**hu.ndim < HU_SAMPLE_MIN_VOXELS:
        step -= 1
    return np.asarray(hu[(slice(None, None, step),) * hu.ndim], dtype=np.float32)


def _set_padding_aside(sample: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The voxels of ``sample`` (flat) without a constant padding value and its blurred edge, and the
    (value, fraction) pairs set aside.

    A padding value is the minimum or maximum when it covers ≥ PADDING_MIN_FRACTION of the sample; its edge
    (voxels touching it, where interpolation mixed padding with air) is set aside with it.
    """
    from scipy import ndimage

    aside = np.zeros(sample.shape, bool)
    padding = []
    for value in sorted({float(sample.min()), float(sample.max())}):
        hits = sample == value
        fraction = float(np.count_nonzero(hits)) / sample.size
        if fraction >= PADDING_MIN_FRACTION:
            aside |= ndimage.binary_dilation(hits, iterations=PADDING_EDGE_VOXELS)
            padding.append((value, fraction))
    return sample[~aside], padding
