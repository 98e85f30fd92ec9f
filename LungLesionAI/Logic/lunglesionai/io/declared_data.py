"""The data an image header declares (:class:`DeclaredData`) and the check that it is all in the file: the file
length for raw data, or the whole compressed stream decompressed in chunks of :data:`CHUNK_BYTES` (constant
memory), which also finds a corrupt or truncated gzip/zlib stream; float NIfTI data are scanned for NaN/Inf
on the way. Every refusal raises :class:`~lunglesionai.core.ct_checks.CTInputError` naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from lunglesionai.core.ct_checks import CTInputError, sanitize_text

__all__ = ["CHUNK_BYTES", "DeclaredData", "EXTRA_STREAM_BYTES", "HEADER_LIMIT_BYTES", "check_declared_data"]

logger = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
"""Bytes read (and at most decompressed) at a time when a compressed stream is checked: memory stays constant."""
HEADER_LIMIT_BYTES = 1 << 20
"""A NRRD or MetaImage text header must end within this many bytes."""
EXTRA_STREAM_BYTES = 64 << 20
"""Decompression stops this far beyond the declared data (trailing data is not read by ITK either)."""


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
