"""Checks of a DICOM folder and of its member files: is every file there, intact, and from one reconstruction?

GDCM (through SimpleITK) is forgiving where a CT reader must not be: it silently skips folder members it
cannot read (a broken symbolic link or a damaged file drops slices, or makes a folder look empty), reads past
short pixel data, returns garbage for corrupt compressed frames, and merges two reconstructions that share a
SeriesInstanceUID into one fake volume. :mod:`lunglesionai.io.dicom_series` calls these checks around GDCM; each
refusal raises :class:`~lunglesionai.core.ct_checks.CTInputError` with one line that starts with the offending
path and names the file(s) and the problem (header text and file names pass through
:func:`~lunglesionai.core.ct_checks.sanitize_text`).

1. :func:`scan_folder`, before GDCM opens anything (top level only): every member must be a readable regular
   file, a folder (not searched) or a symbolic link to one of those. Broken or looping links, files without
   read permission and special files (FIFO, device, socket: never opened; reading a FIFO blocks for ever)
   are refused. Regular files carrying the DICOM file preamble (``DICM`` at byte 128, DICOM PS3.10 section
   7.1) are noted; other files (README.txt, XML annotations) are ignored.
2. :func:`check_unlisted_files`, after GDCM listed the series: a preamble file that GDCM put in no series is
   refused when pydicom cannot parse it or when it is an image (a CT SOP class, or Rows/Columns of the Image
   Pixel module); non-image objects (DICOMDIR, structured reports, presentation states) are ignored.
3. :func:`read_series_headers`, when a series is loaded: every member is parsed whole; native pixel data
   must have the byte length its Image Pixel module declares (PS3.3 C.7.6.3, PS3.5 section 8.1.1), and
   encapsulated (compressed) frames (PS3.5 section 8.2, annex A.4) must decode with pydicom without any
   error or warning. Where pydicom has no decoder for a transfer syntax, that decode check is skipped (INFO).
4. :func:`check_one_reconstruction`: slices of one series must agree in ConvolutionKernel, SliceThickness,
   Rows, Columns, PixelSpacing and ReconstructionDiameter (PS3.3 C.8.2.1 CT Image module, C.7.6.2 Image
   Plane module) and must not repeat an InstanceNumber (PS3.3 C.7.6.1).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder, iter_pixels
from pydicom.uid import JPEGExtended12Bit

from lunglesionai.core.ct_checks import CTInputError, sanitize_text, special_file_kind

__all__ = [
    "CT_SOP_CLASS_UIDS",
    "MAX_NAMED_MEMBERS",
    "ONE_RECONSTRUCTION_TAGS",
    "FolderScan",
    "check_one_reconstruction",
    "check_unlisted_files",
    "read_header",
    "read_series_headers",
    "scan_folder",
]

logger = logging.getLogger(__name__)

CT_SOP_CLASS_UIDS = frozenset(
    {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
)
"""CT Image, Enhanced CT Image and Legacy Converted Enhanced CT Image Storage (DICOM PS3.4 B.5)."""
MAX_NAMED_MEMBERS = 5
"""A refusal names at most this many offending files, then says how many more there are."""
ONE_RECONSTRUCTION_TAGS = (
    "ConvolutionKernel", "SliceThickness", "Rows", "Columns", "PixelSpacing", "ReconstructionDiameter",
)
"""Header attributes every slice of one reconstruction shares; slices that differ in one come from two."""
_MM_TAGS = frozenset({"SliceThickness", "PixelSpacing", "ReconstructionDiameter"})
_PREAMBLE_BYTES = 128  # DICOM PS3.10 7.1: a 128-byte preamble, then the prefix "DICM"
_PREFIX = b"DICM"
_PATH_CHARS = 1000  # paths are shown whole up to this length (sanitize_text cuts header text at 200)
_NAME_CHARS = 100


def _shown(path: object) -> str:
    """A path or file name as it may appear in a one-line message (control characters replaced)."""
    return sanitize_text(path, _PATH_CHARS)


def _named(problems: Sequence[tuple[str, str]]) -> str:
    """``name (reason), …`` for at most :data:`MAX_NAMED_MEMBERS` members, then ``and N more``."""
    shown = problems[:MAX_NAMED_MEMBERS]
    text = ", ".join(f"{sanitize_text(name, _NAME_CHARS)} ({reason})" for name, reason in shown)
    extra = len(problems) - MAX_NAMED_MEMBERS
    return f"{text} and {extra} more" if extra > 0 else text


# ------------------------------------------------------------------------------------------ folder members


@dataclass(frozen=True)
class FolderScan:
    """The top-level members of a DICOM folder, as :func:`scan_folder` found them.

    Attributes:
        folder: the folder scanned.
        dicom_files: regular files (or links to one) that carry the DICOM PS3.10 preamble and prefix
            (``DICM`` at byte 128), sorted by name.
    """

    folder: Path
    dicom_files: tuple[Path, ...]


def scan_folder(folder: Path) -> FolderScan:
    """Refuse unreadable members of a DICOM folder before GDCM scans it (top level only; folders are skipped).

    Special files are never opened: ``stat`` tells them apart, and regular files are opened non-blocking and
    checked again on the open descriptor, so a member swapped for a FIFO meanwhile cannot hang the run.

    Args:
        folder: the DICOM folder.

    Returns:
        The members that carry the DICOM preamble (DICOM PS3.10 section 7.1).

    Raises:
        CTInputError: the folder cannot be listed, or some members are broken or looping symbolic links,
            files without read permission, or special files (FIFO, device, socket); the message names up to
            :data:`MAX_NAMED_MEMBERS` of them.
    """
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError as exc:
        raise CTInputError(f"{_shown(folder)}: cannot list this folder ({exc.strerror or exc})") from exc
    problems, dicom_files = [], []
    for name in names:
        reason, has_preamble = _inspect_member(folder / name)
        if reason is not None:
            problems.append((name, reason))
        elif has_preamble:
            dicom_files.append(folder / name)
    if problems:
        raise CTInputError(
            f"{_shown(folder)}: {len(problems)} unreadable member(s) in this DICOM folder: {_named(problems)}; "
            f"refused: a series missing files is incomplete; repair or remove them"
        )
    return FolderScan(folder, tuple(dicom_files))


def _inspect_member(path: Path) -> tuple[str | None, bool]:
    """(why the member is unreadable or None, whether it carries the DICOM preamble)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if path.is_symlink():
            return ("symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
                    if exc.errno == errno.ENOENT else f"symbolic link: {exc.strerror or exc}"), False
        return f"cannot read: {exc.strerror or exc}", False
    if stat.S_ISDIR(mode):
        return None, False
    if not stat.S_ISREG(mode):
        return _special_kind(mode), False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        return "no read permission", False
    except OSError as exc:
        return f"cannot open: {exc.strerror or exc}", False
    try:
        opened_mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(opened_mode):
            return _special_kind(opened_mode), False
        head = os.read(fd, _PREAMBLE_BYTES + len(_PREFIX))
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}", False
    finally:
        os.close(fd)
    return None, head[_PREAMBLE_BYTES:] == _PREFIX


def _special_kind(mode: int) -> str:
    return f"{special_file_kind(mode)}, never opened"


def check_unlisted_files(scan: FolderScan, listed: Sequence[str | os.PathLike]) -> None:
    """Refuse DICOM files of the folder that GDCM put in no series, unless they are non-image objects.

    GDCM skips a file it cannot parse, or an image file it finds incomplete (e.g. truncated before the pixel
    data), without a word; the series then loads with slices missing.

    Args:
        scan: the folder scan of :func:`scan_folder`.
        listed: every file GDCM listed, in any series.

    Raises:
        CTInputError: some preamble files are unparsable by pydicom, lack the File Meta Information's
            TransferSyntaxUID or MediaStorageSOPClassUID (DICOM PS3.10 section 7.1: random bytes after
            ``DICM``), or are images (a CT SOP class, or Rows/Columns: the Image Pixel module, PS3.3 C.7.6.3)
            that GDCM lists in no series.
    """
    listed_names = {Path(f).name for f in listed}
    problems = []
    for path in scan.dicom_files:
        if path.name in listed_names:
            continue
        try:
            ds = read_header(path)
        except CTInputError as exc:
            problems.append((path.name, f"pydicom cannot parse it: {_first_line(exc.__cause__ or exc, 80)}"))
            continue
        meta = getattr(ds, "file_meta", None) or Dataset()
        sop_class = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", "") or "")
        if not meta.get("TransferSyntaxUID") or not meta.get("MediaStorageSOPClassUID"):
            problems.append((path.name, "no valid File Meta Information (DICOM PS3.10 7.1): damaged"))
        elif sop_class in CT_SOP_CLASS_UIDS or "Rows" in ds or "Columns" in ds:
            problems.append((path.name, "an image that GDCM lists in no series: damaged or truncated"))
        else:
            logger.info("%s: ignored DICOM file %s (not an image; SOP class %s)", _shown(scan.folder),
                        _shown(path.name), sanitize_text(sop_class or "?", 80))
    if problems:
        raise CTInputError(
            f"{_shown(scan.folder)}: {len(problems)} damaged DICOM file(s) in this folder: {_named(problems)}; "
            f"refused: a series missing files is incomplete; repair or remove them"
        )


# ------------------------------------------------------------------------------------------ headers and pixels


#: pydicom warnings about header/codestream metadata that disagree on intact data (common in real series: the
#: codestream's precision vs Bits Stored, a colour space hint); never signs of damaged pixel data.
_BENIGN_DECODE_WARNINGS = (r".*'Bits Stored' value.*", r".*'Photometric Interpretation' value.*")


@contextlib.contextmanager
def _pydicom_quiet(warnings_as_errors: bool) -> Iterator[list[warnings.WarningMessage]]:
    """pydicom's log records off (it logs what it warns, and logs every failed decoder with a traceback);
    Python warnings either recorded (returned list) or raised as errors. Deprecation warnings are about
    APIs, not data, and are never escalated."""
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("error" if warnings_as_errors else "always")
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            for pattern in _BENIGN_DECODE_WARNINGS:
                warnings.filterwarnings("always" if not warnings_as_errors else "ignore", message=pattern)
            yield caught
    finally:
        pydicom_logger.setLevel(level)


def _log_warnings(path: Path, caught: list[warnings.WarningMessage]) -> None:
    for item in caught:
        logger.info("%s: pydicom: %s", _shown(path), sanitize_text(item.message))


def _first_line(exc: BaseException, max_len: int) -> str:
    """The first non-empty line of an exception's message (its type name when empty), sanitised, without
    pydicom's hint at its Python ``force=True`` argument."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0].split(" Use force=True")[0] if lines else type(exc).__name__
    return sanitize_text(text, max_len)


def _read(path: Path, stop_before_pixels: bool) -> Dataset:
    """pydicom read of a DICOM PS3.10 file, every element decoded at once so that pydicom's complaints about
    values surface here, as INFO log records, instead of on stderr whenever a value is first used."""
    try:
        with _pydicom_quiet(warnings_as_errors=False) as caught:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
            for _ in ds.iterall():
                pass
    except Exception as exc:  # any failure to parse untrusted bytes means: not a readable DICOM file
        raise CTInputError(
            f"{_shown(path)}: not a readable DICOM file (pydicom: {_first_line(exc, 120)}); repair or remove it"
        ) from exc
    _log_warnings(path, caught)
    return ds


def read_header(path: str | os.PathLike) -> Dataset:
    """The DICOM header of one file (DICOM PS3.10 file format), pixel data not read.

    Args:
        path: a DICOM file with the 128-byte preamble and ``DICM`` prefix (DICOM PS3.10 section 7.1; ITK
            cannot read pixels from files without them).

    Returns:
        The pydicom dataset up to (not including) PixelData. pydicom's warnings are logged at INFO.

    Raises:
        CTInputError: pydicom cannot parse the file (or cannot open it); the message names it.
    """
    return _read(Path(path), stop_before_pixels=True)


def read_series_headers(source: str | os.PathLike, files: Sequence[str | os.PathLike]) -> list[Dataset]:
    """Read every file of a series whole and check its pixel data; return the headers (pixel data dropped).

    Native pixel data must hold Rows × Columns × SamplesPerPixel × BitsAllocated / 8 × NumberOfFrames bytes
    (plus one pad byte when that is odd; DICOM PS3.5 section 8.1.1, PS3.3 C.7.6.3). Encapsulated
    (compressed) pixel data (PS3.5 section 8.2 and annex A.4) is decoded frame by frame with pydicom, with
    warnings raised as errors: any failure means GDCM would hand back garbage pixels. A transfer syntax
    without a pydicom decoder here is not decode-checked; that is logged at INFO once per series.

    Args:
        source: the series' folder (or the file), for the log.
        files: the series' files, one at a time in memory.

    Returns:
        One header per file, in the order of ``files``.

    Raises:
        CTInputError: a file cannot be parsed, has no pixel data, declares an impossible image size, holds
            pixel data of the wrong length, or holds compressed frames that do not decode cleanly; the
            message names the file and the reason.
    """
    headers, skipped = [], Counter()
    for name in files:
        path = Path(name)
        ds = _read(path, stop_before_pixels=False)
        if "PixelData" not in ds:
            raise CTInputError(f"{_shown(path)}: no pixel data (PixelData missing: a truncated or damaged file); "
                               f"repair or remove it")
        if ds["PixelData"].is_undefined_length:
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if _decoder_available(str(syntax or ""), _bits_stored(ds)):
                _check_frames_decode(path, ds, syntax)
            else:
                skipped[str(syntax or "?")] += 1
        else:
            _check_native_length(path, ds)
        del ds.PixelData
        headers.append(ds)
    for syntax, n in skipped.items():
        logger.info("%s: no pydicom decoder for transfer syntax %s here; decode check of %d compressed file(s) "
                    "skipped", _shown(source), _syntax_name(syntax), n)
    return headers


def _syntax_name(syntax: str) -> str:
    uid = pydicom.uid.UID(syntax)
    return sanitize_text(f"{uid.name} ({uid})" if uid.is_valid and uid.name != str(uid) else uid, 120)


def _bits_stored(ds: Dataset) -> int:
    try:
        return int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    except (TypeError, ValueError):
        return 16


@lru_cache(maxsize=None)
def _decoder_available(syntax: str, bits_stored: int) -> bool:
    """Whether a pydicom decoding plugin here can decode this transfer syntax at this precision; a plugin
    that cannot (Pillow and 12-bit JPEG Extended) would otherwise fail on intact data."""
    try:
        plugins = set(get_decoder(syntax).available_plugins) if syntax else set()
    except (NotImplementedError, ValueError):
        return False
    if syntax == JPEGExtended12Bit and bits_stored > 8:
        plugins.discard("pillow")
    return bool(plugins)


def _check_frames_decode(path: Path, ds: Dataset, syntax: str) -> None:
    try:
        with _pydicom_quiet(warnings_as_errors=True):
            for _ in iter_pixels(ds):
                pass
    except Exception as exc:  # any decoder exception or escalated warning: the frames are damaged
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith("Unable to decode"):
            lines = [line.removeprefix("pydicom: ") for line in lines[1:]]
        reason = sanitize_text("; ".join(lines) or type(exc).__name__, 200)
        raise CTInputError(
            f"{_shown(path)}: corrupt compressed pixel data ({_syntax_name(syntax)}): {reason}; refused: GDCM "
            f"would return garbage pixels; re-export the series"
        ) from exc


def _image_size(ds: Dataset) -> dict[str, int]:
    """Rows, Columns, SamplesPerPixel, BitsAllocated, NumberOfFrames as positive integers (PS3.3 C.7.6.3)."""
    size = {}
    for keyword, default in (("Rows", None), ("Columns", None), ("SamplesPerPixel", 1), ("BitsAllocated", None),
                             ("NumberOfFrames", 1)):
        value = ds.get(keyword)
        value = default if value in (None, "") else value
        try:
            size[keyword] = int(value)
            valid = size[keyword] >= 1 and float(value) == size[keyword]
        except (TypeError, ValueError, OverflowError):
            valid = False
        if not valid:
            shown = "missing" if value is None else f"{sanitize_text(value, 40)!r}"
            raise ValueError(f"{keyword} is {shown}, not a positive integer")
    bits = size["BitsAllocated"]
    if bits != 1 and bits % 8:
        raise ValueError(f"BitsAllocated is {bits}: must be 1 or a multiple of 8 (DICOM PS3.5 8.1.1)")
    return size


def _check_native_length(path: Path, ds: Dataset) -> None:
    try:
        size = _image_size(ds)
    except ValueError as exc:
        raise CTInputError(f"{_shown(path)}: impossible image size in the header: {exc}; repair or remove it") \
            from exc
    samples = size["SamplesPerPixel"]
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two samples stored per pixel on average (PS3.3 C.7.6.3.1.2)
    expected = math.ceil(
        size["Rows"] * size["Columns"] * samples * size["BitsAllocated"] * size["NumberOfFrames"] / 8
    )
    actual = len(ds.PixelData)
    if actual == expected or (expected % 2 and actual == expected + 1):
        return
    formula = "×".join(str(size[k]) for k in ("Rows", "Columns", "SamplesPerPixel")) + \
        f"×{size['BitsAllocated']}/8×{size['NumberOfFrames']}"
    raise CTInputError(
        f"{_shown(path)}: PixelData holds {actual} bytes, but Rows×Columns×SamplesPerPixel×BitsAllocated/8×"
        f"NumberOfFrames = {formula} = {expected} bytes (DICOM PS3.5 8.1.1); the file is truncated or its "
        f"header is wrong; repair or remove it"
    )


# ------------------------------------------------------------------------------------------ one reconstruction


def _normalised(value: object) -> str:
    """A header value as comparable text: numbers to 6 significant digits, multi-values joined by ``\\``."""
    if value is None or value == "":
        return "<missing>"
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_normalised(v) for v in value)
    if isinstance(value, (int, float)):
        return f"{float(value):.6g}"
    return str(value).strip()


def check_one_reconstruction(source: str | os.PathLike, series: str, files: Sequence[str | os.PathLike],
                             headers: Sequence[Dataset]) -> None:
    """Refuse a series whose slices come from more than one reconstruction.

    Two reconstructions under one SeriesInstanceUID (e.g. a soft-tissue and a lung kernel, or two stacks
    offset by half the spacing) would otherwise be merged into one fake, finer volume.

    Args:
        source: the folder, for the message.
        series: the series' one-line summary, for the message.
        files: the series' files.
        headers: their headers, in the same order.

    Raises:
        CTInputError: slices differ in one of :data:`ONE_RECONSTRUCTION_TAGS` (DICOM PS3.3 C.8.2.1, C.7.6.2,
            C.7.6.3; a tag missing in some slices counts as a difference), or two slices share an
            InstanceNumber (PS3.3 C.7.6.1; slices without one are not compared); the message names each
            tag and the values seen (mm for SliceThickness, PixelSpacing, ReconstructionDiameter).
    """
    problems = []
    for keyword in ONE_RECONSTRUCTION_TAGS:
        counts = Counter(_normalised(h.get(keyword)) for h in headers)
        if len(counts) > 1:
            unit = " mm" if keyword in _MM_TAGS else ""
            seen = ", ".join(f"'{sanitize_text(v, 40)}'{unit if v != '<missing>' else ''} in {n} slice(s)"
                             for v, n in counts.most_common(4))
            problems.append(f"{keyword} differs ({seen}{' …' if len(counts) > 4 else ''})")
    by_number: dict[str, list[str]] = {}
    for name, header in zip(files, headers, strict=True):
        number = header.get("InstanceNumber")
        if number not in (None, ""):
            by_number.setdefault(_normalised(number), []).append(Path(name).name)
    repeated = {n: names for n, names in by_number.items() if len(names) > 1}
    if repeated:
        number, names = next(iter(repeated.items()))
        problems.append(f"InstanceNumber repeats ({len(repeated)} number(s), e.g. {sanitize_text(number, 20)} in "
                        f"{sanitize_text(names[0], _NAME_CHARS)} and {sanitize_text(names[1], _NAME_CHARS)})")
    if problems:
        raise CTInputError(
            f"{_shown(source)}: series {series} mixes reconstructions: {'; '.join(problems)}; refused: they would "
            f"be merged into one fake volume; put each reconstruction in its own folder (or give each its own "
            f"SeriesInstanceUID) and load one"
        )
