"""Header checks of NIfTI, NRRD and MetaImage files before SimpleITK reads their voxels.

SimpleITK reads a truncated file without complaint in several cases (the missing voxels come back as 0 HU, a
half ``.nii.gz`` included), replaces a zero NIfTI voxel size by 1 mm, ignores a NaN ``scl_slope``, and its NIfTI
reader (niftilib's ``nifti_read_buffer``) turns NaN and infinite float voxels into 0. So the loader first
parses the header itself and compares the data size it declares with what the file holds:

* :func:`read_declared_data` parses the header (NIfTI-1/-2 with numpy/struct, NRRD with ``nrrd.read_header``,
  MetaImage ``key = value`` lines) and refuses malformed fields (magic, datatype/bitpix, dimensions, voxel
  offset, voxel size, scaling); it reads the header only.
* :func:`check_declared_data` then checks that the data are all there: the file length for raw data, or the
  whole compressed stream decompressed in chunks of :data:`CHUNK_BYTES` (constant memory), which also finds a
  corrupt or truncated gzip/zlib stream; float NIfTI data are scanned for NaN/Inf on the way.

Formats followed: the NIfTI-1 header (``nifti1.h``, 348 bytes) and NIfTI-2 (``nifti2.h``, 540 bytes); NRRD0001-
NRRD0005 (teem's "NRRD file format", fields ``type``, ``dimension``, ``sizes``, ``encoding``, ``data file``,
``line skip``, ``byte skip``, ``space directions``, ``spacings``); MetaIO (ITK's MetaImage: ``NDims``,
``DimSize``, ``ElementType``, ``ElementNumberOfChannels``, ``ElementSpacing``, ``HeaderSize``,
``CompressedData``, ``CompressedDataSize``, ``ElementDataFile``). Every refusal raises
:class:`~lunglesionai.core.ct_checks.CTInputError` with one line that starts with the file's path.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, Optional

import numpy as np

from lunglesionai.core.ct_checks import CTInputError, check_spacing, sanitize_text

__all__ = [
    "CHUNK_BYTES",
    "DeclaredData",
    "check_declared_data",
    "check_image_file",
    "read_declared_data",
    "read_metaimage_header",
    "read_nifti_header",
    "read_nrrd_header",
]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Bytes read (and at most decompressed) at a time when a compressed stream is checked: memory stays constant."""
HEADER_LIMIT_BYTES = 1 << 20
"""A NRRD or MetaImage text header must end within this many bytes."""
EXTRA_STREAM_BYTES = 64 << 20
"""Decompression stops this far beyond the declared data (trailing data is not read by ITK either)."""

# NIfTI datatype code -> (name, bits per voxel, numpy kind); nifti1.h "DT_*" codes of scalar real types.
NIFTI_DATATYPES = {
    2: ("uint8", 8, "u1"), 4: ("int16", 16, "i2"), 8: ("int32", 32, "i4"), 16: ("float32", 32, "f4"),
    64: ("float64", 64, "f8"), 256: ("int8", 8, "i1"), 512: ("uint16", 16, "u2"), 768: ("uint32", 32, "u4"),
    1024: ("int64", 64, "i8"), 1280: ("uint64", 64, "u8"),
}
_NIFTI_OTHER_TYPES = {1: "binary", 32: "complex64", 128: "RGB24", 1536: "float128", 1792: "complex128",
                      2048: "complex256", 2304: "RGBA32"}
_NIFTI1_MAGIC = {b"n+1\0": True, b"ni1\0": False}  # True: data in the same file
_NIFTI2_MAGIC = {b"n+2\0\r\n\x1a\n": True, b"ni2\0\r\n\x1a\n": False}
# NRRD "type" spellings -> bytes per value (NRRD0005 spec, "type" field).
_NRRD_TYPES = {
    **dict.fromkeys(["signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"], 1),
    **dict.fromkeys(["short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"], 2),
    **dict.fromkeys(["int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"], 4),
    **dict.fromkeys(["longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"], 8),
}
# MetaIO element types -> bytes per value (metaTypes.h MET_ValueTypeSize).
_MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


@dataclass(frozen=True)
class DeclaredData:
    """Where a header says the voxel data lie, how they are encoded, and how many bytes they take.

    Attributes:
        format: "NIfTI-1", "NIfTI-2", "NRRD" or "MetaImage".
        size: voxels per axis as the header lists them (fastest axis first, i.e. x, y, z, ...).
        bytes_per_voxel: bytes of one voxel (all its components).
        type_name: the voxel type as the header names it, for messages.
        data_file: the file holding the data (the header file itself, or a detached data file).
        file_offset: bytes of ``data_file`` before the data (raw) or before the compressed stream.
        encoding: "raw", "gzip" (gzip stream, several members allowed) or "zlib" (MetaImage CompressedData).
        stream_skip: bytes of the decompressed stream before the data (NIfTI ``vox_offset`` of a .nii.gz, NRRD
            ``byte skip`` of compressed data); 0 for raw data.
        data_at_end: the data are the last bytes of the file (NRRD ``byte skip: -1``, MetaIO ``HeaderSize = -1``).
        compressed_size: MetaIO ``CompressedDataSize`` (bytes of the zlib stream), or None.
        float_dtype: numpy dtype (with byte order) of float NIfTI data, scanned for NaN/Inf; None otherwise.
        offset_name: the header field(s) that place the data, for messages (e.g. "vox_offset").
    """

    format: str
    size: tuple[int, ...]
    bytes_per_voxel: int
    type_name: str
    data_file: Path
    file_offset: int
    encoding: str = "raw"
    stream_skip: int = 0
    data_at_end: bool = False
    compressed_size: Optional[int] = None
    float_dtype: Optional[str] = None
    offset_name: str = "data offset"

    @property
    def n_bytes(self) -> int:
        """Bytes of voxel data the header declares: product of ``size`` × ``bytes_per_voxel``."""
        return math.prod(self.size) * self.bytes_per_voxel

    def describe(self) -> str:
        """E.g. "16×16×12 int16 voxels (6144 bytes)", for messages."""
        return f"{'×'.join(str(n) for n in self.size)} {self.type_name} voxels ({self.n_bytes} bytes)"


def check_image_file(path: str | os.PathLike) -> Optional[DeclaredData]:
    """Parse the header of a NIfTI/NRRD/MetaImage file and check that all its declared voxel data are there.

    :func:`read_declared_data` followed by :func:`check_declared_data`; the loader calls the two separately
    (ITK's header read and the memory check go in between).

    Args:
        path: a .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd file.

    Returns:
        What the header declares, or None for another suffix (or a layout not checked, e.g. ASCII data).

    Raises:
        CTInputError: malformed header, or data missing or corrupt (see the two functions).
    """
    declared = read_declared_data(path)
    if declared is not None:
        check_declared_data(path, declared)
    return declared


def read_declared_data(path: str | os.PathLike) -> Optional[DeclaredData]:
    """Parse the header of a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) file.

    Only the header is read (for .nii.gz, the first 540 decompressed bytes). The fields the data layout depends
    on are checked, the voxel size with :func:`~lunglesionai.core.ct_checks.check_spacing`.

    Args:
        path: the image file.

    Returns:
        The declared data layout, or None when the suffix is none of the above or the layout is one this module
        does not check (NRRD/MetaImage ASCII, hex or bzip2 data, or data split over a list of files).

    Raises:
        CTInputError: bad magic or sizeof_hdr, unknown or non-scalar datatype, bitpix not matching the datatype,
            a dimension zero or negative, voxel offset negative or not finite, voxel size zero, negative or
            NaN, NaN/Inf ``scl_slope``/``scl_inter``, an unparsable NRRD/MetaIO header, or a missing data file.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti_header(p)
    if name.endswith((".nrrd", ".nhdr")):
        return read_nrrd_header(p)
    if name.endswith((".mha", ".mhd")):
        return read_metaimage_header(p)
    return None


def check_declared_data(source: str | os.PathLike, declared: DeclaredData) -> None:
    """Check that the data a header declares are all there, before any voxel is read into memory.

    Raw data: the data file must hold ``file_offset + n_bytes`` bytes (no voxel is read); float NIfTI data are
    also read in chunks and scanned for NaN/Inf. Compressed data (gzip, zlib): the stream is
    decompressed in chunks of :data:`CHUNK_BYTES` and its length counted, so memory stays constant; zlib
    verifies the gzip CRC-32 and length, so a corrupt stream is refused too.

    Args:
        source: the image file named in messages (the header file).
        declared: from :func:`read_declared_data`.

    Raises:
        CTInputError: the voxel offset lies beyond the end of the file, the data are shorter than declared,
            the compressed stream is truncated or corrupt, or float NIfTI data hold NaN/Inf.
    """
    if declared.encoding == "raw" and declared.float_dtype is None:
        _check_raw_length(source, declared)
        return
    _check_stream(source, declared)


# ---------------------------------------------------------------------------------------------------- NIfTI


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


# ----------------------------------------------------------------------------------------------------- NRRD


def read_nrrd_header(path: Path) -> Optional[DeclaredData]:
    """Parse a NRRD header (.nrrd with attached data, or .nhdr with a ``data file``) with ``nrrd.read_header``.

    Follows the NRRD0005 format: ``type`` (bytes per value), ``dimension`` and ``sizes`` (each ≥ 1),
    ``encoding`` (raw and gzip checked; ascii, hex, bzip2 not), ``data file`` (one file, relative to the
    header's folder; LIST and pattern forms are not checked), ``line skip`` (lines of the data file before the
    data, or before the compressed stream), ``byte skip`` (bytes before the data, counted after decompression;
    -1: raw data at the end of the file), voxel size from the ``space directions`` vector lengths or
    ``spacings``.

    Args:
        path: a .nrrd or .nhdr file.

    Returns:
        The declared data, or None for a layout not checked.

    Raises:
        CTInputError: see :func:`read_declared_data`.
    """
    import nrrd

    lines, header_bytes = _nrrd_header_lines(path)
    try:
        header = nrrd.read_header(lines)
    except (nrrd.NRRDError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CTInputError(f"{_name(path)}: corrupt NRRD header ({sanitize_text(exc)})") from exc
    type_name = str(header.get("type", "")).strip().lower()
    if type_name not in _NRRD_TYPES:
        raise CTInputError(f"{_name(path)}: unsupported or missing NRRD type {sanitize_text(type_name)!r}")
    size = tuple(int(n) for n in np.atleast_1d(header.get("sizes", [])))
    if not size or len(size) != int(header.get("dimension", len(size))) or min(size) < 1:
        raise CTInputError(f"{_name(path)}: corrupt NRRD header: sizes {list(size)} for dimension "
                           f"{header.get('dimension')} (each size must be >= 1)")
    _check_nrrd_spacing(path, header)
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}.get(str(header.get("encoding", "")).lower())
    data_name = header.get("data file", header.get("datafile"))
    if encoding is None or (data_name is not None and (str(data_name).startswith("LIST") or " " in str(data_name))):
        logger.info("%s: NRRD encoding %s / data file %s: data length not checked", path, header.get("encoding"),
                    data_name)
        return None
    data_file = path if data_name is None else _data_file(path, str(data_name), "NRRD data file")
    file_offset = header_bytes if data_name is None else 0
    file_offset = _skip_lines(data_file, file_offset, int(header.get("line skip", header.get("lineskip", 0))))
    byte_skip = int(header.get("byte skip", header.get("byteskip", 0)))
    if byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):
        raise CTInputError(f"{_name(path)}: corrupt NRRD header: byte skip {byte_skip} with {encoding} encoding")
    raw = encoding == "raw"
    return DeclaredData("NRRD", size, _NRRD_TYPES[type_name], type_name, data_file,
                        file_offset + (max(byte_skip, 0) if raw else 0), encoding=encoding,
                        stream_skip=0 if raw else byte_skip, data_at_end=byte_skip == -1,
                        offset_name="byte skip" if not raw else "header length, line skip and byte skip")


def _nrrd_header_lines(path: Path) -> tuple[list[str], int]:
    """The header lines up to the blank line that ends it, and the header's length in bytes (data start)."""
    prefix = _read_file_prefix(path, HEADER_LIMIT_BYTES)
    if not prefix.startswith(b"NRRD"):
        raise CTInputError(f"{_name(path)}: not a NRRD file (no 'NRRD000x' magic line)")
    lines, used = [], 0
    for raw_line in prefix.splitlines(keepends=True):
        if not raw_line.endswith(b"\n") and len(prefix) >= HEADER_LIMIT_BYTES:
            break
        used += len(raw_line)
        if not raw_line.strip():
            return lines, used
        lines.append(raw_line.decode("ascii", "replace"))
    if len(prefix) >= HEADER_LIMIT_BYTES:
        raise CTInputError(f"{_name(path)}: corrupt NRRD header: no blank line ends it within "
                           f"{HEADER_LIMIT_BYTES} bytes")
    return lines, used


def _check_nrrd_spacing(path: Path, header: dict) -> None:
    """Voxel size from the ``space directions`` vector lengths (rows "none" skipped), else ``spacings``."""
    directions = header.get("space directions")
    if directions is not None:
        rows = [np.asarray(row, float) for row in np.atleast_2d(np.asarray(directions, float))]
        spacing = [float(np.linalg.norm(r)) for r in rows if not np.all(np.isnan(r))]
    elif header.get("spacings") is not None:
        spacing = [float(s) for s in np.atleast_1d(header["spacings"])]
    else:
        return
    check_spacing(path, spacing)


# ------------------------------------------------------------------------------------------------ MetaImage


def read_metaimage_header(path: Path) -> Optional[DeclaredData]:
    """Parse a MetaImage (MetaIO) header: ``key = value`` lines up to ``ElementDataFile``, which comes last.

    Follows ITK's MetaIO: ``NDims``, ``DimSize`` (each ≥ 1), ``ElementType`` (``MET_SHORT`` ...),
    ``ElementNumberOfChannels``, ``ElementSpacing`` (else ``ElementSize``) as the voxel size in mm,
    ``BinaryData`` (ASCII data are not checked), ``CompressedData`` (a zlib stream) and ``CompressedDataSize``
    (its length in bytes), ``HeaderSize`` (bytes before the data in a detached file; -1: data at its end),
    ``ElementDataFile`` (``LOCAL``: right after the header line; a file name, relative to the header's folder;
    ``LIST`` and patterns are not checked).

    Args:
        path: a .mha or .mhd file.

    Returns:
        The declared data, or None for a layout not checked.

    Raises:
        CTInputError: see :func:`read_declared_data`.
    """
    fields, header_bytes = _metaimage_fields(path)
    ndims = _meta_ints(path, fields, "NDims", 1)[0]
    size = tuple(_meta_ints(path, fields, "DimSize", ndims))
    if min(size) < 1:
        raise CTInputError(f"{_name(path)}: corrupt MetaImage header: DimSize {list(size)} (each must be >= 1)")
    element = fields.get("elementtype", "").upper()
    if element not in _MET_TYPES:
        raise CTInputError(f"{_name(path)}: unsupported or missing MetaImage ElementType {sanitize_text(element)!r}")
    channels = _meta_ints(path, fields, "ElementNumberOfChannels", 1, default="1")[0]
    spacing_key = "elementspacing" if "elementspacing" in fields else "elementsize"
    if spacing_key in fields:
        check_spacing(path, _meta_floats(path, fields, spacing_key, ndims))
    data_name = fields["elementdatafile"]
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if fields.get("binarydata", "true").lower() != "true" or data_name.upper().startswith("LIST") or (
            "%" in data_name or " " in data_name.strip()):
        logger.info("%s: MetaImage ASCII or multi-file data: data length not checked", path)
        return None
    local = data_name.upper() == "LOCAL"
    data_file = path if local else _data_file(path, data_name, "MetaImage ElementDataFile")
    header_size = 0 if local else _meta_ints(path, fields, "HeaderSize", 1, default="0")[0]
    comp_size = _meta_ints(path, fields, "CompressedDataSize", 1, default="0")[0] if compressed else 0
    return DeclaredData("MetaImage", size, _MET_TYPES[element] * max(channels, 1), element, data_file,
                        header_bytes if local else max(header_size, 0), encoding="zlib" if compressed else "raw",
                        data_at_end=header_size == -1 and not compressed, compressed_size=comp_size or None,
                        offset_name="the header length" if local else "HeaderSize")


def _metaimage_fields(path: Path) -> tuple[dict[str, str], int]:
    """Lower-cased keys -> values up to ``ElementDataFile``, and the header's length in bytes."""
    prefix = _read_file_prefix(path, HEADER_LIMIT_BYTES)
    fields: dict[str, str] = {}
    used = 0
    for raw_line in prefix.splitlines(keepends=True):
        used += len(raw_line)
        key, sep, value = raw_line.decode("latin-1").partition("=")
        if not sep:
            if raw_line.strip():
                raise CTInputError(f"{_name(path)}: not a MetaImage header: line {sanitize_text(raw_line[:60])!r} "
                                   f"is not 'key = value'")
            continue
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            return fields, used
    raise CTInputError(f"{_name(path)}: not a MetaImage header: no ElementDataFile line")


def _meta_ints(path: Path, fields: dict, key: str, count: int, default: Optional[str] = None) -> list[int]:
    values = _meta_floats(path, fields, key.lower(), count, default)
    if not all(v.is_integer() for v in values):
        raise CTInputError(f"{_name(path)}: corrupt MetaImage header: {key} = {values} (need integers)")
    return [int(v) for v in values]


def _meta_floats(path: Path, fields: dict, key: str, count: int, default: Optional[str] = None) -> list[float]:
    text = fields.get(key.lower(), default)
    try:
        values = [float(v) for v in (text or "").split()]
    except ValueError:
        values = []
    if len(values) != count:
        raise CTInputError(f"{_name(path)}: corrupt MetaImage header: {key} = {sanitize_text(text)!r} (need "
                           f"{count} number(s))")
    return values


# --------------------------------------------------------------------------------------------- data checks


def _check_raw_length(source: str | os.PathLike, declared: DeclaredData) -> None:
    """Uncompressed data: the file length is enough, no voxel is read."""
    length = _file_size(declared.data_file)
    holder = "the file" if Path(declared.data_file) == Path(source) else f"the data file {declared.data_file.name}"
    if declared.data_at_end:
        have = length - declared.file_offset
        if have < declared.n_bytes:
            raise CTInputError(f"{_name(source)}: truncated: the {declared.format} header declares "
                               f"{declared.describe()} at the end of {holder}, which holds only {have} bytes "
                               f"after the header ({declared.n_bytes - have} missing)")
        return
    if declared.file_offset > length:
        raise CTInputError(f"{_name(source)}: corrupt {declared.format} header: {declared.offset_name} puts the "
                           f"voxel data at byte {declared.file_offset}, beyond the end of {holder} ({length} bytes)")
    have = length - declared.file_offset
    if have < declared.n_bytes:
        raise CTInputError(f"{_name(source)}: truncated: the {declared.format} header declares "
                           f"{declared.describe()} from byte {declared.file_offset} of {holder}, which holds only "
                           f"{have} bytes there ({declared.n_bytes - have} missing)")


def _check_stream(source: str | os.PathLike, declared: DeclaredData) -> None:
    """Compressed data (or float NIfTI data): read it all in chunks, count it, scan floats for NaN/Inf."""
    if declared.compressed_size is not None:
        length = _file_size(declared.data_file)
        if length - declared.file_offset < declared.compressed_size:
            raise CTInputError(f"{_name(source)}: truncated: CompressedDataSize is {declared.compressed_size} "
                               f"bytes, but only {max(length - declared.file_offset, 0)} follow the header")
    if declared.encoding == "raw":
        _check_raw_length(source, declared)
    need = declared.stream_skip + declared.n_bytes
    with open(declared.data_file, "rb") as fh:
        fh.seek(declared.file_offset)
        chunks = (_file_chunks(fh, declared.n_bytes) if declared.encoding == "raw" else
                  _inflated_chunks(fh, source, gzip=declared.encoding == "gzip"))
        total, bad = _count_stream(chunks, declared, need + EXTRA_STREAM_BYTES)
    if total < need:
        what = "the decompressed data" if declared.encoding != "raw" else "the file"
        at = f" from byte {declared.stream_skip} ({declared.offset_name})" if declared.stream_skip else ""
        raise CTInputError(f"{_name(source)}: truncated: the {declared.format} header declares "
                           f"{declared.describe()}{at}, but {what} holds only {total} bytes ({need - total} "
                           f"missing)")
    if bad:
        raise CTInputError(f"{_name(source)}: {bad} stored voxel value(s) are NaN or infinite; a CT holds finite "
                           f"HU values (ITK's NIfTI reader would silently turn them into 0)")


def _count_stream(chunks: Iterator[bytes], declared: DeclaredData, stop_after: int) -> tuple[int, int]:
    """(bytes seen, non-finite float voxels among the declared data) of a chunked stream."""
    start, stop = declared.stream_skip, declared.stream_skip + declared.n_bytes
    dtype = np.dtype(declared.float_dtype) if declared.float_dtype else None
    total, bad, carry = 0, 0, b""
    for chunk in chunks:
        begin, total = total, total + len(chunk)
        lo, hi = max(start, begin), min(stop, total)
        if dtype is not None and hi > lo:
            part = carry + chunk[lo - begin:hi - begin]
            usable = len(part) - len(part) % dtype.itemsize
            bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(part, dtype, usable // dtype.itemsize))))
            carry = part[usable:]
        if total > stop_after:
            logger.warning("%s: more data than the header declares; the rest is not checked", declared.data_file)
            break
    return total, bad


def _inflated_chunks(fh: BinaryIO, source: str | os.PathLike, gzip: bool) -> Iterator[bytes]:
    """Decompressed chunks (each ≤ CHUNK_BYTES) of a gzip (several members allowed) or zlib stream.

    Raises:
        CTInputError: corrupt data (bad header, CRC or length check) or a stream that ends before its end marker.
    """
    kind = "gzip" if gzip else "zlib"
    inflater = zlib.decompressobj(31 if gzip else 15)
    data = fh.read(CHUNK_BYTES)
    while True:
        try:
            out = inflater.decompress(data, CHUNK_BYTES)
        except zlib.error as exc:
            raise CTInputError(f"{_name(source)}: corrupt {kind} data ({exc})") from exc
        if out:
            yield out
        data = inflater.unconsumed_tail
        if inflater.eof:
            data = inflater.unused_data or fh.read(CHUNK_BYTES)
            if not gzip or not data.startswith(b"\x1f\x8b"):
                if data.strip(b"\0"):
                    logger.info("%s: bytes after the end of the %s stream ignored", source, kind)
                return
            inflater = zlib.decompressobj(31)
        elif not data:
            data = fh.read(CHUNK_BYTES)
            if not data and not out:
                raise CTInputError(f"{_name(source)}: truncated {kind} data: the compressed stream ends before "
                                   f"its end marker (incomplete file)")


def _file_chunks(fh: BinaryIO, n_bytes: int) -> Iterator[bytes]:
    """Chunks of an uncompressed file from its current position, ``n_bytes`` in all at most."""
    left = n_bytes
    while left > 0:
        chunk = fh.read(min(CHUNK_BYTES, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


# ------------------------------------------------------------------------------------------------- helpers


def _read_prefix(chunks: Iterator[bytes], n: int) -> bytes:
    """The first ``n`` bytes of a chunked stream (fewer if it is shorter); the rest is not decompressed."""
    out = b""
    for chunk in chunks:
        out += chunk
        if len(out) >= n:
            break
    return out[:n]


def _read_file_prefix(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise CTInputError(f"{_name(path)}: cannot read ({exc.strerror or exc})") from exc


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError as exc:
        raise CTInputError(f"{_name(path)}: cannot read ({exc.strerror or exc})") from exc


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise CTInputError(f"{_name(path)}: cannot read ({exc.strerror or exc})") from exc


def _data_file(header: Path, name: str, what: str) -> Path:
    """A detached data file named by a header, relative to the header's folder; it must exist."""
    data_file = Path(name) if Path(name).is_absolute() else header.parent / name
    if not data_file.is_file():
        raise CTInputError(f"{_name(header)}: the {what} {sanitize_text(name)!r} does not exist")
    return data_file


def _skip_lines(path: Path, offset: int, n_lines: int) -> int:
    """The byte offset after ``n_lines`` more lines of ``path`` from ``offset`` (NRRD ``line skip``)."""
    if n_lines <= 0:
        return offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        for _ in range(n_lines):
            if not fh.readline(HEADER_LIMIT_BYTES).endswith(b"\n"):
                raise CTInputError(f"{_name(path)}: corrupt NRRD data: fewer than {n_lines} lines to skip")
        return fh.tell()


def _name(path: str | os.PathLike) -> str:
    return sanitize_text(path, 400)
