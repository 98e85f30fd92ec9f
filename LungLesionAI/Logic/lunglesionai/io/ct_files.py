"""Load a CT from disk into a :class:`~lunglesionai.core.volume.Volume` (HU, LPS geometry), and write one back.

Accepted inputs of :func:`load_volume`:

* a folder holding a DICOM series (the CT series is picked, see :func:`load_volume`);
* a single DICOM file holding a multi-frame (enhanced) CT;
* NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``).

Pixels are read by SimpleITK (GDCM for DICOM), DICOM headers are checked with pydicom. ITK reports every
format in LPS (it converts NIfTI's RAS itself), so the returned geometry is LPS whatever the file. Every
refusal raises :class:`CTInputError` with a one-line message that starts with the offending path.

DICOM specifics (series choice, slice-spacing and gantry-tilt policy) live in :mod:`lunglesionai.io.dicom_series`;
the checks shared with it, and :class:`CTInputError`, in :mod:`lunglesionai.core.ct_checks`. Both are
re-exported here, so ``from lunglesionai.io.ct_files import CTInputError, DicomSeriesInfo, list_dicom_series`` works.

"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk
from pydicom.misc import is_dicom

from lunglesionai.core.ct_checks import (  # noqa: F401  (ORTHONORMAL_TOL re-exported for callers of lunglesionai.io.ct_files)
    MIN_HU_AIR,
    ORTHONORMAL_TOL,
    CTInputError,
    _as_hu_dtype,
    _check_hu_range,
    _check_orthonormal,
    _check_shape,
    _itk_reason,
    check_finite,
    check_memory,
    check_regular_file,
    check_spacing,
    sanitize_text,
)
from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.core.sitk_bridge import volume_from_sitk, volume_to_sitk
from lunglesionai.core.volume import Volume
from lunglesionai.io.dicom_series import (  # noqa: F401  (constants re-exported for callers of lunglesionai.io.ct_files)
    CT_SOP_CLASS_UIDS,
    DUPLICATE_SLICE_RTOL,
    MAX_INPLANE_DRIFT_VOXELS,
    MISSING_SLICE_RATIO,
    SLICE_SPACING_RTOL,
    DicomSeriesInfo,
    _choose_series,
    _load_dicom_file,
    _load_dicom_series,
    list_dicom_series,
)
from lunglesionai.io.image_checks import check_declared_data, read_declared_data

__all__ = [
    "CTInputError",
    "DicomSeriesInfo",
    "MIN_SLICES",
    "MIN_HU_AIR",
    "load_volume",
    "list_dicom_series",
    "save_volume",
    "volume_to_sitk",
    "volume_from_sitk",
]

logger = logging.getLogger(__name__)

MIN_SLICES = 10
"""Fewest slices (voxels along the shortest axis) a CT volume may have."""
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SAVE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def load_volume(
    path: str | os.PathLike,
    *,
    series_uid: str | None = None,
    min_slices: int = MIN_SLICES,
    check_hu: bool = True,
    max_memory_gb: float | None = None,
) -> Volume:
    """Read a CT from a DICOM folder or file, NIfTI, NRRD or MetaImage into a Volume in HU and LPS.

    A DICOM folder may hold several series (top level only, subfolders are not searched): non-CT series and
    CT series with fewer than ``min_slices`` images (localizers) are skipped; if more than one CT series is
    left, the error lists each (uid, description, slice count) and ``series_uid`` must choose one.
    Slice-spacing and gantry-tilt policy: see :mod:`lunglesionai.io.dicom_series`.

    Args:
        path: DICOM series folder, multi-frame DICOM file, or .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file.
        series_uid: SeriesInstanceUID to load from a DICOM folder that holds several CT series.
        min_slices: fewest slices accepted (default ``MIN_SLICES`` = 10).
        check_hu: for non-DICOM files (and DICOM without rescale tags), refuse intensities that are not
            plausible HU (:func:`lunglesionai.core.ct_checks.check_hu_plausible`: no air or lung, e.g. MR or raw
            values without the -1024 offset; many values far below air, e.g. HU×10; non-air median far above
            soft tissue).
        max_memory_gb: memory budget of the analysis in GB; a volume whose header declares more voxels than
            fit (:func:`lunglesionai.core.ct_checks.check_memory`) is refused before its voxels are read. None:
            ``DEFAULT_MAX_MEMORY_GB`` (16 GB).

    Returns:
        Volume: ``hu`` (Z, Y, X) int16 when the values are integral and fit, else float32, in HU;
        ``spacing_mm`` (x, y, z); origin and direction in LPS; ``source`` = the resolved path.

    Raises:
        CTInputError: missing path, unreadable or unsupported file, 2-D image or single slice, fewer than
            ``min_slices`` slices, non-CT modality, intensities not in HU, several CT series without
            ``series_uid``, missing or duplicate slices, gantry tilt, non-orthogonal direction cosines; for
            NIfTI/NRRD/MetaImage also a corrupt header (magic, datatype/bitpix, dimensions, voxel offset), a
            voxel size that is zero, negative or NaN, data shorter than the header declares or a corrupt
            compressed stream (:mod:`lunglesionai.io.image_checks`), NaN/Inf voxels or NIfTI scaling.

    Example:
        >>> vol = load_volume("chest.nii.gz")  # doctest: +SKIP
        >>> vol.hu.shape, vol.spacing_mm  # doctest: +SKIP
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CTInputError(f"{p}: no such file or folder")
    p = p.resolve()
    check_regular_file(p)
    if series_uid is not None and not p.is_dir():
        raise CTInputError(f"{sanitize_text(p)}: --series-uid {sanitize_text(series_uid)} given, but the input is a "
                           f"file, not a DICOM folder")
    if p.is_dir():
        info = _choose_series(p, list_dicom_series(p), series_uid, min_slices)
        if len(info.files) == 1:
            return _load_dicom_file(Path(info.files[0]), min_slices, check_hu, str(p), max_memory_gb)
        return _load_dicom_series(p, info, min_slices, check_hu, max_memory_gb)
    if is_dicom(p):
        return _load_dicom_file(p, min_slices, check_hu, str(p), max_memory_gb)
    return _load_image_file(p, min_slices, check_hu, max_memory_gb)


def save_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a Volume to NIfTI / NRRD / MetaImage through SimpleITK, geometry preserved, atomically.

    The file is written to a hidden temporary file in the same folder, then renamed onto ``path``
    (:func:`lunglesionai.core.output_folder.write_file_atomic`), so readers never see a partial file and a failed
    write leaves nothing behind.

    Args:
        volume: the volume; ``hu`` dtype is kept (int16 stays int16).
        path: target ending in .nii, .nii.gz, .nrrd or .mha (single-file formats only).
        compress: compress the voxels (always for .nii.gz).

    Returns:
        The path written.

    Raises:
        ValueError: unsupported suffix.
        FileNotFoundError: the target folder does not exist.
    """
    p = Path(path)
    suffix = _matching_suffix(p, SAVE_SUFFIXES)
    if suffix is None:
        raise ValueError(f"{p}: cannot save here; use one of {', '.join(SAVE_SUFFIXES)}")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{p}: folder {p.parent} does not exist")
    image = volume_to_sitk(volume)
    write_file_atomic(p, lambda tmp: sitk.WriteImage(image, str(tmp), compress or suffix == ".nii.gz"),
                      suffix=suffix)
    return p


# ----------------------------------------------------------------------------------------------- files


def _load_image_file(p: Path, min_slices: int, check_hu: bool, max_memory_gb: float | None = None) -> Volume:
    """Read a NIfTI/NRRD/MetaImage (or other ITK-readable) file, checking it before and after the voxels are read.

    Order: own header parse (:func:`lunglesionai.io.image_checks.read_declared_data`: magic, datatype, dimensions,
    voxel offset, voxel size, scaling), ITK's header read, shape, memory budget and ITK's voxel size, then the
    declared data length against the file (whole compressed stream decompressed in chunks,
    :func:`~lunglesionai.io.image_checks.check_declared_data`), then the voxels: finite values, plausible HU.
    """
    declared = read_declared_data(p) if _matching_suffix(p, VOLUME_SUFFIXES) else None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CTInputError(
            f"{p}: unreadable or unsupported file ({_itk_reason(exc)}); accepted: a DICOM folder or file, "
            f"{', '.join(VOLUME_SUFFIXES)}"
        ) from exc
    _check_shape(p, reader.GetSize(), reader.GetNumberOfComponents(), min_slices)
    check_memory(p, reader.GetSize()[::-1], max_memory_gb)
    if _matching_suffix(p, VOLUME_SUFFIXES) is None:
        raise CTInputError(f"{p}: unsupported format; accepted: a DICOM folder or file, {', '.join(VOLUME_SUFFIXES)}")
    check_spacing(p, reader.GetSpacing())
    if declared is not None:
        check_declared_data(p, declared)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CTInputError(f"{p}: unreadable image data ({_itk_reason(exc)})") from exc
    volume = volume_from_sitk(image, str(p))
    check_finite(p, volume.hu)
    if check_hu:
        _check_hu_range(volume)
    return volume


def _matching_suffix(p: Path, suffixes: Sequence[str]) -> str | None:
    name = p.name.lower()
    return next((s for s in sorted(suffixes, key=len, reverse=True) if name.endswith(s)), None)
