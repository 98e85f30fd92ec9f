"""MetaImage (ITK MetaIO) ``key = value`` headers: NDims, DimSize, ElementType, ElementNumberOfChannels,
ElementSpacing, HeaderSize, CompressedData, CompressedDataSize, ElementDataFile; the data size they declare
returned as :class:`~lunglesionai.io.declared_data.DeclaredData`. Part of :mod:`lunglesionai.io.image_checks`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from lunglesionai.core.ct_checks import CTInputError, check_spacing, sanitize_text
from lunglesionai.io.declared_data import HEADER_LIMIT_BYTES, DeclaredData, _data_file, _name, _read_file_prefix

__all__ = ["read_metaimage_header"]

logger = logging.getLogger(__name__)
# MetaIO element types -> bytes per value (metaTypes.h MET_ValueTypeSize).
_MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


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
