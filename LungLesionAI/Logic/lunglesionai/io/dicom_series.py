"""DICOM CT reading for :func:`lunglesionai.io.ct_files.load_volume`: series listing and choice, series and multi-frame files.

Pixels are read by SimpleITK (GDCM), headers are checked with pydicom; the geometry is LPS (DICOM's patient
frame). Every refusal raises :class:`~lunglesionai.io.ct_files.CTInputError` with a one-line message that starts with
the offending path; header text and file names in messages pass through
:func:`~lunglesionai.core.ct_checks.sanitize_text`. The entry point is :func:`lunglesionai.io.ct_files.load_volume`;
:func:`list_dicom_series` and :class:`DicomSeriesInfo` are re-exported by :mod:`lunglesionai.io.ct_files`.

Before GDCM sees a folder or a series, :mod:`lunglesionai.io.dicom_checks` refuses what GDCM would silently
skip or misread: unreadable folder members (broken links, special files), damaged DICOM files, pixel data
whose length or compressed frames are broken, and two reconstructions under one SeriesInstanceUID.

DICOM slice-spacing policy (series and multi-frame files alike), with ``g`` the gaps between neighbouring
slice positions along the slice normal and ``m`` their median:

1. every ``|g - m| <= SLICE_SPACING_RTOL * m`` (5 %): accepted as is, slice spacing = (last - first) / (n - 1);
2. some gap ``>= MISSING_SLICE_RATIO * m`` (1.5×): refused as missing slice(s);
3. some gap ``<= DUPLICATE_SLICE_RTOL * m``: refused as duplicate slice positions (mixed acquisitions);
4. otherwise (moderately non-uniform): resampled onto a uniform grid at spacing ``m`` by linear
   interpolation between the two neighbouring slices, with a logged warning saying so.

Gantry tilt: a series whose slices drift sideways (in the image plane) by more than
``MAX_INPLANE_DRIFT_VOXELS`` pixels over the stack, i.e. a tilted or sheared acquisition, is refused; ITK
cannot represent that grid without resampling, and silently ignoring it misplaces voxels. Resample it first
(e.g. in 3D Slicer with DICOM "acquisition geometry regularization").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from lunglesionai.core.ct_checks import (
    _INT16,
    ORTHONORMAL_TOL,
    CTInputError,
    _as_hu_dtype,
    _check_hu_range,
    _check_orthonormal,
    _itk_reason,
    _itk_warnings_off,
    check_memory,
    sanitize_text,
)
from lunglesionai.core.volume import Volume
from lunglesionai.io.dicom_checks import (
    CT_SOP_CLASS_UIDS,
    _shown,
    check_one_reconstruction,
    check_unlisted_files,
    read_header,
    read_series_headers,
    scan_folder,
)

__all__ = [
    "CT_SOP_CLASS_UIDS",
    "DUPLICATE_SLICE_RTOL",
    "DicomSeriesInfo",
    "MAX_INPLANE_DRIFT_VOXELS",
    "MISSING_SLICE_RATIO",
    "SLICE_SPACING_RTOL",
    "list_dicom_series",
]

logger = logging.getLogger(__name__)

SLICE_SPACING_RTOL = 0.05
"""Relative deviation of a slice gap from the median gap that is accepted without resampling."""
MISSING_SLICE_RATIO = 1.5
"""A gap at least this many times the median gap is a missing slice: the series is refused."""
DUPLICATE_SLICE_RTOL = 0.01
"""A gap at most this fraction of the median gap means two slices at one position: refused."""
MAX_INPLANE_DRIFT_VOXELS = 0.5
"""Largest sideways drift of a slice (in pixels) before a series counts as gantry-tilted: refused."""


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One DICOM series found in a folder.

    Args:
        uid: SeriesInstanceUID ("" when the files carry none).
        modality: Modality tag ("CT", "MR", ...; "" when absent).
        description: SeriesDescription ("" when absent).
        n_slices: number of 2-D images (files, or frames of a single multi-frame file).
        files: the series' file paths, as GDCM orders them.
        sop_class_uid: SOPClassUID of the first file ("" when absent).
    """

    uid: str
    modality: str
    description: str
    n_slices: int
    files: tuple[str, ...]
    sop_class_uid: str = ""

    @property
    def is_ct(self) -> bool:
        """True for Modality CT, or for a CT SOP class when the Modality tag is missing."""
        return self.modality == "CT" or (not self.modality and self.sop_class_uid in CT_SOP_CLASS_UIDS)

    def summary(self) -> str:
        """One-line description: uid, modality, description and slice count, header text sanitised
        (:func:`~lunglesionai.core.ct_checks.sanitize_text`: no escape codes or line breaks reach a terminal)."""
        uid = sanitize_text(self.uid, 100) if self.uid else "<empty>"
        modality = sanitize_text(self.modality, 16) if self.modality else "?"
        return f"uid={uid} {modality} '{sanitize_text(self.description, 80)}' ({self.n_slices} slices)"


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeriesInfo]:
    """List the DICOM series in a folder (top level only), found by GDCM, headers read by pydicom.

    The folder's members are checked first (:func:`lunglesionai.io.dicom_checks.scan_folder`), and DICOM
    files that GDCM lists in no series afterwards (:func:`lunglesionai.io.dicom_checks.check_unlisted_files`).

    Args:
        folder: a folder; non-DICOM files in it (without the DICOM PS3.10 preamble) and non-image DICOM
            objects (DICOMDIR, structured reports) are ignored.

    Returns:
        One :class:`DicomSeriesInfo` per SeriesInstanceUID, in GDCM's order (empty list when none).

    Raises:
        CTInputError: ``folder`` does not exist or is not a folder; a member is a broken or looping symbolic
            link, unreadable, or a special file (FIFO, device, socket); a DICOM file is unparsable, or is an
            image that GDCM lists in no series; the first file of a series cannot be parsed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTInputError(f"{_shown(folder)}: not a folder")
    scan = scan_folder(folder)
    listed = [
        (uid, tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)))
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    ]
    check_unlisted_files(scan, [f for _, files in listed for f in files])
    found = []
    for uid, files in listed:
        if not files:
            continue
        ds = read_header(files[0])
        n_slices = len(files) if len(files) > 1 else _n_frames(ds)
        found.append(
            DicomSeriesInfo(
                uid=uid,
                modality=str(ds.get("Modality", "") or ""),
                description=str(ds.get("SeriesDescription", "") or ""),
                n_slices=n_slices,
                files=files,
                sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
            )
        )
    return found


def _choose_series(
    folder: Path, series: list[DicomSeriesInfo], series_uid: str | None, min_slices: int
) -> DicomSeriesInfo:
    listing = "; ".join(s.summary() for s in series)
    where = _shown(folder)
    if not series:
        raise CTInputError(f"{where}: no DICOM image series in this folder (subfolders are not searched)")
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise CTInputError(f"{where}: no series with uid={sanitize_text(repr(series_uid))}; found: {listing}")
        pick = chosen[0]
        if not pick.is_ct:
            raise CTInputError(f"{where}: series {pick.summary()} has modality "
                               f"{sanitize_text(repr(pick.modality), 40)}, not CT")
        return pick
    ct = [s for s in series if s.is_ct]
    if not ct:
        raise CTInputError(f"{where}: no CT series (modality must be CT); found: {listing}")
    usable = [s for s in ct if s.n_slices >= min_slices]
    if not usable:
        raise CTInputError(f"{where}: every CT series has fewer than {min_slices} slices; found: {listing}")
    if len(usable) > 1:
        choices = "; ".join(s.summary() for s in usable)
        raise CTInputError(
            f"{where}: {len(usable)} CT series, choose one with --series-uid UID (Python: series_uid=...): {choices}"
        )
    for skipped in series:
        if skipped is not usable[0]:
            logger.info("%s: skipped DICOM series %s", where, skipped.summary())
    return usable[0]


def _load_dicom_series(
    folder: Path, info: DicomSeriesInfo, min_slices: int, check_hu: bool, max_memory_gb: float | None = None
) -> Volume:
    first = read_header(info.files[0])
    check_memory(folder, (len(info.files), int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)),
                 max_memory_gb)
    _check_modality(folder, first)
    headers = read_series_headers(folder, info.files)
    check_one_reconstruction(folder, info.summary(), info.files, headers)
    try:
        iops = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    except (AttributeError, TypeError, ValueError) as exc:
        raise CTInputError(
            f"{_shown(folder)}: a slice of series {info.summary()} lacks ImageOrientation/ImagePositionPatient"
        ) from exc
    if iops.shape[1:] != (6,) or positions.shape[1:] != (3,) or np.ptp(iops, axis=0).max() > ORTHONORMAL_TOL:
        raise CTInputError(f"{_shown(folder)}: slices of series {info.summary()} differ in ImageOrientationPatient")
    geometry = _stack_geometry(folder, positions, iops[0], _pixel_spacing(headers[0]), min_slices)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([info.files[n] for n in geometry.order])
    reader.SetOutputPixelType(_series_pixel_type(headers))
    try:
        with _itk_warnings_off():
            array = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        reason = sanitize_text(_itk_reason(exc), 300)
        raise CTInputError(f"{_shown(folder)}: cannot read the pixel data of series {info.summary()} ({reason})") \
            from exc
    volume = _finish_stack(str(folder), array, geometry)
    return _check_rescale(volume, headers[0], check_hu)


def _load_dicom_file(
    p: Path, min_slices: int, check_hu: bool, source: str, max_memory_gb: float | None = None
) -> Volume:
    ds = read_header(p)
    _check_modality(p, ds)
    frames = _n_frames(ds)
    check_memory(p, (frames, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)), max_memory_gb)
    where = _shown(p)
    if frames < 2:
        raise CTInputError(f"{where}: a single 2-D DICOM slice, not a 3-D CT; load the folder holding the whole series")
    if frames < min_slices:
        raise CTInputError(f"{where}: only {frames} frames (slices); need at least {min_slices}")
    read_series_headers(p, [p])
    try:
        image = sitk.ReadImage(str(p), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise CTInputError(f"{where}: cannot read the DICOM pixel data ({sanitize_text(_itk_reason(exc), 300)})") \
            from exc
    array = _as_hu_dtype(sitk.GetArrayFromImage(image))
    frame_geometry = _enhanced_frame_geometry(ds)
    if frame_geometry is None:
        logger.warning("%s: no per-frame positions (not an enhanced CT); using ITK's geometry", p)
        volume = Volume(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), source)
    else:
        positions, iop, spacing_xy = frame_geometry
        geometry = _stack_geometry(p, positions, iop, spacing_xy, min_slices)
        volume = _finish_stack(source, array[list(geometry.order)], geometry)
    _check_orthonormal(source, volume.direction_matrix)
    return _check_rescale(volume, ds, check_hu)


@dataclass(frozen=True)
class _StackGeometry:
    order: tuple[int, ...]  # slice order along the normal (ascending)
    z_mm: np.ndarray  # sorted slice positions along the normal
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    spacing: tuple[float, float, float]
    resample: bool


def _stack_geometry(
    source: Path, positions: np.ndarray, iop: np.ndarray, spacing_xy: tuple[float, float], min_slices: int
) -> _StackGeometry:
    """Sort slices along the normal and apply the tilt and slice-spacing policy of the module docstring."""
    row, col = iop[:3], iop[3:]
    if max(abs(row @ col), abs(row @ row - 1), abs(col @ col - 1)) > ORTHONORMAL_TOL:
        raise CTInputError(f"{_shown(source)}: ImageOrientationPatient {iop.tolist()} is not orthonormal")
    normal = np.cross(row, col)
    if len(positions) < min_slices:
        raise CTInputError(f"{_shown(source)}: only {len(positions)} slices; need at least {min_slices}")
    z = positions @ normal
    order = np.argsort(z, kind="stable")
    z, positions = z[order], positions[order]
    drift = positions - positions[:1] - np.outer(z - z[0], normal)
    drift_mm = float(np.linalg.norm(drift, axis=1).max())
    if drift_mm > MAX_INPLANE_DRIFT_VOXELS * min(spacing_xy):
        tilt_deg = np.degrees(np.arctan2(np.linalg.norm(drift[-1]), z[-1] - z[0]))
        raise CTInputError(
            f"{_shown(source)}: gantry tilt or sheared slices (slices drift {drift_mm:.2f} mm in-plane, tilt ≈ "
            f"{tilt_deg:.1f}°); refused: resample it to an orthogonal grid first"
        )
    spacing_z, resample = _slice_spacing(source, z)
    direction = np.column_stack([row, col, normal]).reshape(-1)
    return _StackGeometry(
        order=tuple(int(n) for n in order),
        z_mm=z,
        origin=tuple(float(v) for v in positions[0]),
        direction=tuple(float(v) for v in direction),
        spacing=(float(spacing_xy[0]), float(spacing_xy[1]), spacing_z),
        resample=resample,
    )


def _slice_spacing(source: Path, z: np.ndarray) -> tuple[float, bool]:
    """(slice spacing in mm, whether to resample) for sorted positions ``z``; refuses per the policy."""
    gaps = np.diff(z)
    median = float(np.median(gaps))
    if median <= 0 or gaps.min() <= DUPLICATE_SLICE_RTOL * median:
        at = float(z[int(np.argmin(gaps))])
        raise CTInputError(
            f"{_shown(source)}: duplicate slice positions (two slices at {at:.2f} mm); refused: mixed acquisitions?"
        )
    if gaps.max() >= MISSING_SLICE_RATIO * median:
        n = int(np.argmax(gaps))
        raise CTInputError(
            f"{_shown(source)}: missing slice(s): gap of {gaps[n]:.2f} mm between {z[n]:.2f} and {z[n + 1]:.2f} mm is "
            f"{gaps[n] / median:.1f}× the median spacing {median:.3g} mm; refused"
        )
    deviation = float(np.abs(gaps - median).max() / median)
    if deviation <= SLICE_SPACING_RTOL:
        return float((z[-1] - z[0]) / (len(z) - 1)), False
    logger.warning(
        "%s: non-uniform slice spacing (gaps %.3g-%.3g mm, %.0f%% off the median %.3g mm); resampled to %.3g mm "
        "by linear interpolation between neighbouring slices",
        source, gaps.min(), gaps.max(), 100 * deviation, median, median,
    )
    return median, True


def _finish_stack(source: str, array: np.ndarray, geometry: _StackGeometry) -> Volume:
    if geometry.resample:
        array = _resample_slices(array, geometry.z_mm, geometry.spacing[2])
    return Volume(_as_hu_dtype(array), geometry.spacing, geometry.origin, geometry.direction, source)


def _resample_slices(array: np.ndarray, z_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Linear interpolation along axis 0 from sorted positions ``z_mm`` onto a uniform grid from z_mm[0].

    ITK images cannot carry non-uniform slice positions, so this 1-D step is done here, slice by slice
    (float32, one output slice in memory at a time beyond the result).
    """
    n_out = int(np.floor((z_mm[-1] - z_mm[0]) / spacing_mm + 1e-6)) + 1
    targets = z_mm[0] + spacing_mm * np.arange(n_out)
    lower = np.clip(np.searchsorted(z_mm, targets, side="right") - 1, 0, len(z_mm) - 2)
    weight = (targets - z_mm[lower]) / (z_mm[lower + 1] - z_mm[lower])
    out = np.empty((n_out, *array.shape[1:]), np.float32)
    for n, (k, w) in enumerate(zip(lower, weight, strict=True)):
        out[n] = (1.0 - w) * array[k].astype(np.float32) + w * array[k + 1].astype(np.float32)
    return out


def _enhanced_frame_geometry(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, tuple[float, float]] | None:
    """(frame positions (N, 3), IOP (6,), pixel spacing (x, y)) from functional groups, or None."""
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != _n_frames(ds):
        return None

    def item(frame: pydicom.Dataset, name: str) -> pydicom.Dataset | None:
        for group in (frame, shared):
            if group is not None and name in group:
                return group[name][0]
        return None

    try:
        planes = [item(f, "PlanePositionSequence") for f in per_frame]
        positions = np.array([[float(v) for v in plane.ImagePositionPatient] for plane in planes])
        iop = np.asarray(item(per_frame[0], "PlaneOrientationSequence").ImageOrientationPatient, float)
        measures = item(per_frame[0], "PixelMeasuresSequence")
    except AttributeError:
        return None
    if measures is None or "PixelSpacing" not in measures:
        return None
    return positions, iop, (float(measures.PixelSpacing[1]), float(measures.PixelSpacing[0]))


def _check_modality(source: Path, ds: pydicom.Dataset) -> None:
    modality = str(ds.get("Modality", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality == "CT" or (not modality and sop_class in CT_SOP_CLASS_UIDS):
        return
    raise CTInputError(f"{_shown(source)}: DICOM modality {sanitize_text(repr(modality or '<missing>'), 40)}, not CT "
                       f"(SOP class {sanitize_text(sop_class or '?', 80)})")


def _check_rescale(volume: Volume, ds: pydicom.Dataset, check_hu: bool) -> Volume:
    """The HU plausibility check (:func:`lunglesionai.core.ct_checks._check_hu_range`) for every DICOM CT: without
    any rescale intercept the stored values may be raw (all rules); with one, a wrong slope (HU×10) or intercept
    (a missing −1024 offset) is still checked, the need for air or lung is not (the rescale is the scanner's)."""
    has_rescale = "RescaleIntercept" in ds or any(
        "PixelValueTransformationSequence" in g for g in ds.get("SharedFunctionalGroupsSequence", [])
    )
    if not has_rescale:
        logger.warning("%s: DICOM without RescaleIntercept; assuming the stored values are HU", volume.source)
    if check_hu:
        _check_hu_range(volume, require_air=not has_rescale)
    return volume


def _series_pixel_type(headers: list[pydicom.Dataset]) -> int:
    """ITK output type: float32 when slices differ in rescale or use a non-integer one (an integer read
    would truncate), int16 when the stored bit range maps inside int16 (saves memory), else ITK's choice."""
    pairs = {(float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0)) for h in headers}
    if len(pairs) > 1 or any(not float(v).is_integer() for pair in pairs for v in pair):
        return sitk.sitkFloat32
    (slope, intercept), first = pairs.pop(), headers[0]
    bits = int(first.get("BitsStored", first.get("BitsAllocated", 16)) or 16)
    signed = int(first.get("PixelRepresentation", 0) or 0) == 1
    stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    hu = [slope * v + intercept for v in stored]
    return sitk.sitkInt16 if _INT16.min <= min(hu) and max(hu) <= _INT16.max else sitk.sitkUnknown


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float]:
    """(x, y) pixel spacing in mm: DICOM PixelSpacing is (row spacing = y, column spacing = x)."""
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
    return float(spacing[1]), float(spacing[0])


def _n_frames(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1
