"""NIfTI-1 and NIfTI-2 headers parsed with numpy/struct (``nifti1.h``: 348 bytes, ``nifti2.h``: 540 bytes):
magic, datatype and bitpix, dimensions, voxel offset, voxel size and scaling checked; the data size they declare
returned as :class:`~lunglesionai.io.declared_data.DeclaredData`. Part of :mod:`lunglesionai.io.image_checks`.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import NamedTuple

from lunglesionai.core.ct_checks import CTInputError, check_spacing, sanitize_text
from lunglesionai.io.declared_data import DeclaredData, _inflated_chunks, _is_gzip, _name, _read_prefix

__all__ = ["NIFTI_DATATYPES", "read_nifti_header"]

_NIFTI1_MAGIC = {b"n+1\0": True, b"ni1\0": False}  # True: data in the same file
_NIFTI2_MAGIC = {b"n+2\0\r\n\x1a\n": True, b"ni2\0\r\n\x1a\n": False}
# NIfTI datatype code -> (name, bits per voxel, numpy kind); nifti1.h "DT_*" codes of scalar real types.
NIFTI_DATATYPES = {
    2: ("uint8", 8, "u1"), 4: ("int16", 16, "i2"), 8: ("int32", 32, "i4"), 16: ("float32", 32, "f4"),
    64: ("float64", 64, "f8"), 256: ("int8", 8, "i1"), 512: ("uint16", 16, "u2"), 768: ("uint32", 32, "u4"),
    1024: ("int64", 64, "i8"), 1280: ("uint64", 64, "u8"),
}
_NIFTI_OTHER_TYPES = {1: "binary", 32: "complex64", 128: "RGB24", 1536: "float128", 1792: "complex128",
                      2048: "complex256", 2304: "RGBA32"}


def read_nifti_header(path: Path) -> DeclaredData:
    """Parse a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header of a .nii or .nii.gz file.

    Follows ``nifti1.h``/``nifti2.h``: byte order from ``sizeof_hdr`` (348 or 540 read little- or big-endian),
    magic ``n+1``/``n+2`` (data in this file from ``vox_offset``; an offset below 352/544 means 352/544) or
    ``ni1``/``ni2`` (data in the .img file next to it), ``dim[0]`` in 1..7 and ``dim[1..dim[0]]`` ≥ 1,
    ``datatype`` a scalar real type whose ``bitpix`` matches, ``pixdim[1..3]`` the voxel size in mm (> 0),
    finite ``scl_slope``/``scl_inter`` (slope 0 means "no scaling" and is allowed).

    Args:
        path: a .nii or .nii.gz file.

    Returns:
        The declared data; for .nii.gz ``stream_skip`` is ``vox_offset``, for .nii ``file_offset`` is.

    Raises:
        CTInputError: see :func:`read_declared_data`.
    """
    h = _parse_nifti_fields(path, _nifti_head(path))
    where = f"{_name(path)}: corrupt {h.fmt} header"
    if not 1 <= h.dim[0] <= 7:
        raise CTInputError(f"{where}: dim[0] = {h.dim[0]} (the number of dimensions must be 1 to 7)")
    size = tuple(int(n) for n in h.dim[1:h.dim[0] + 1])
    if min(size) < 1:
        raise CTInputError(f"{where}: dimensions {list(size)} (each must be >= 1)")
    type_name, kind = _nifti_type(path, h.fmt, h.datatype, h.bitpix)
    if not (math.isfinite(h.vox_offset) and h.vox_offset >= 0):
        raise CTInputError(f"{where}: vox_offset {h.vox_offset:g} (must be a number >= 0)")
    if not (math.isfinite(h.scl_slope) and math.isfinite(h.scl_inter)):
        raise CTInputError(f"{where}: scl_slope {h.scl_slope:g}, scl_inter {h.scl_inter:g}: the stored values "
                           f"cannot be scaled to HU (ITK would silently ignore this)")
    check_spacing(path, h.pixdim[1:min(h.dim[0], 3) + 1])
    minimum_offset = (352 if h.fmt == "NIfTI-1" else 544) if h.single_file else 0
    offset = max(int(h.vox_offset), minimum_offset)
    data_file = path if h.single_file else _nifti_image_file(path, h.fmt)
    gz_data = _is_gzip(data_file)
    return DeclaredData(
        h.fmt, size, h.bitpix // 8, type_name, data_file, 0 if gz_data else offset,
        encoding="gzip" if gz_data else "raw", stream_skip=offset if gz_data else 0, offset_name="vox_offset",
        float_dtype=h.endian + kind if kind.startswith("f") else None,
    )


class _NiftiFields(NamedTuple):
    fmt: str
    endian: str
    dim: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: float
    scl_slope: float
    scl_inter: float
    single_file: bool


def _nifti_head(path: Path) -> bytes:
    """The first 540 bytes of the file, decompressed when it is gzip-compressed (told by its magic bytes, as
    ITK's znzlib does, whatever the suffix); fewer if it is shorter."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                fh.seek(0)
                return fh.read(540)
            fh.seek(0)
            return _read_prefix(_inflated_chunks(fh, path, gzip=True), 540)
    except OSError as exc:
        raise CTInputError(f"{_name(path)}: cannot read ({exc.strerror or exc})") from exc


def _parse_nifti_fields(path: Path, head: bytes) -> _NiftiFields:
    """The header fields the data layout depends on (nifti1.h / nifti2.h offsets), byte order from sizeof_hdr."""
    if len(head) < 348:
        raise CTInputError(f"{_name(path)}: not a NIfTI file: {len(head)} bytes, shorter than a NIfTI-1 header "
                           f"(348 bytes)")
    for e in "<>":
        (sizeof_hdr,) = struct.unpack(e + "i", head[:4])
        if sizeof_hdr == 348:
            magic = head[344:348]
            _check_magic(path, "NIfTI-1", magic, _NIFTI1_MAGIC)
            return _NiftiFields(
                "NIfTI-1", e, struct.unpack(e + "8h", head[40:56]), *struct.unpack(e + "2h", head[70:74]),
                struct.unpack(e + "8f", head[76:108]), *struct.unpack(e + "3f", head[108:120]), _NIFTI1_MAGIC[magic])
        if sizeof_hdr == 540:
            if len(head) < 540:
                raise CTInputError(f"{_name(path)}: truncated: {len(head)} bytes, shorter than its NIfTI-2 header "
                                   f"(540 bytes)")
            magic = head[4:12]
            _check_magic(path, "NIfTI-2", magic, _NIFTI2_MAGIC)
            return _NiftiFields(
                "NIfTI-2", e, struct.unpack(e + "8q", head[16:80]), *struct.unpack(e + "2h", head[12:16]),
                struct.unpack(e + "8d", head[104:168]), float(struct.unpack(e + "q", head[168:176])[0]),
                *struct.unpack(e + "2d", head[176:192]), _NIFTI2_MAGIC[magic])
    (little,) = struct.unpack("<i", head[:4])
    raise CTInputError(f"{_name(path)}: not a NIfTI file: sizeof_hdr is {little} (NIfTI-1: 348, NIfTI-2: 540)")


def _check_magic(path: Path, fmt: str, magic: bytes, accepted: dict) -> None:
    if magic not in accepted:
        shown = " or ".join(repr(m.split(b"\0")[0].decode()) for m in accepted)
        raise CTInputError(f"{_name(path)}: corrupt {fmt} header: magic {sanitize_text(magic)!r} (expected {shown})")


def _nifti_type(path: Path, fmt: str, code: int, bitpix: int) -> tuple[str, str]:
    """(name, numpy kind) of a scalar NIfTI datatype whose bitpix matches."""
    if code not in NIFTI_DATATYPES:
        what = _NIFTI_OTHER_TYPES.get(code)
        reason = f"{what}, not a scalar type a CT uses" if what else "unknown datatype code"
        raise CTInputError(f"{_name(path)}: unsupported {fmt} datatype {code} ({reason})")
    type_name, bits, kind = NIFTI_DATATYPES[code]
    if bitpix != bits:
        raise CTInputError(f"{_name(path)}: corrupt {fmt} header: datatype {code} ({type_name}) has {bits} bits "
                           f"per voxel but bitpix says {bitpix}")
    return type_name, kind


def _nifti_image_file(path: Path, fmt: str) -> Path:
    """The .img (or .img.gz) data file of a header-only NIfTI (magic ni1/ni2)."""
    stem = re.sub(r"\.(nii|hdr)(\.gz)?$", "", path.name, flags=re.IGNORECASE)
    for candidate in (path.with_name(stem + ".img"), path.with_name(stem + ".img.gz")):
        if candidate.is_file():
            return candidate
    raise CTInputError(f"{_name(path)}: the {fmt} magic says the voxels are in a separate {stem}.img file, "
                       f"which does not exist")
