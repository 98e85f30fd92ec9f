"""NRRD headers (NRRD0001-NRRD0005, teem's "NRRD file format") read with ``nrrd.read_header``: type, dimension,
sizes, encoding, data file, line and byte skip, voxel size; the data size they declare returned as
:class:`~lunglesionai.io.declared_data.DeclaredData`. Part of :mod:`lunglesionai.io.image_checks`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from lunglesionai.core.ct_checks import CTInputError, check_spacing, sanitize_text
from lunglesionai.io.declared_data import (
    HEADER_LIMIT_BYTES,
    DeclaredData,
    _data_file,
    _name,
    _read_file_prefix,
    _skip_lines,
)

__all__ = ["read_nrrd_header"]

logger = logging.getLogger(__name__)
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
