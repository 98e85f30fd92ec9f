"""Output folders that lose no data: pre-flight checks, a manifest of what the program wrote, atomic replacement.

Every command that writes an output folder (``analyze``, ``demo``, ``make-composites``) writes it through
:func:`atomic_output_folder`: the files go to a hidden staging folder beside the target, a manifest
(:data:`MANIFEST_NAME`, JSON) listing every file the program created is added, and the staging folder is renamed
onto the target only when complete. ``overwrite`` replaces an existing folder only when that folder's manifest
covers every entry in it, so ``--overwrite`` can never delete a file the program did not create; and never the
current folder, one of its parents, the input or a parent of the input, ``/`` or the home folder.

:func:`check_output_folder` and :func:`check_output_file` make every check that can fail before the work starts
(exists, is a file, not writable, read-only file system), so a long analysis never ends in a write error.

Single files are written with :func:`write_file_atomic` (any writer: SimpleITK, torch, numpy, CSV, HTML) or
:func:`write_json_atomic` (the one JSON writer: NaN refused): the file is written under a hidden temporary name in
the target's folder and renamed onto the target only when complete, so a reader never sees half a file and a
failed or interrupted write leaves the target as it was and no temporary file behind.

Example:
    >>> out = check_output_folder("result", overwrite=False, inputs=["ct.nii.gz"])  # doctest: +SKIP
    >>> with atomic_output_folder(out, overwrite=False, command="analyze") as staging:  # doctest: +SKIP
    ...     (staging / "report.json").write_text("{}")
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lunglesionai.core.ct_checks import sanitize_text

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA_ID",
    "OutputExistsError",
    "OutputPathError",
    "atomic_output_folder",
    "check_output_file",
    "check_output_folder",
    "read_manifest",
    "record_in_manifest",
    "write_file_atomic",
    "write_json_atomic",
]

MANIFEST_NAME = ".lunglesionai-manifest.json"
"""The manifest file inside every output folder: ``{"schema", "command", "files": [relative POSIX paths]}``."""
MANIFEST_SCHEMA_ID = "lunglesionai-manifest/1"
_STAGING_SUFFIX = ".partial"
_COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst"})
"""A compression suffix is kept together with the suffix before it (``.nii.gz``) in temporary file names."""


class OutputPathError(ValueError):
    """An output location that cannot or must not be written; the message names the path and the reason."""


class OutputExistsError(OutputPathError, FileExistsError):
    """The output folder exists and replacing it was not asked for (also a :class:`FileExistsError`)."""


def check_output_folder(out: str | os.PathLike, *, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check before any work that ``out`` can be written as an output folder, and may be replaced if it exists.

    Args:
        out: the output folder (relative to the current folder or absolute).
        overwrite: whether an existing folder may be replaced (``--overwrite``).
        inputs: the command's input files or folders; ``out`` may not be one of them or contain one.

    Returns:
        ``out`` as an absolute path (symbolic links resolved).

    Raises:
        OutputPathError: ``out`` is a file; exists and ``overwrite`` is False; is protected (``/``, the home
            folder, the current folder or a parent of it, an input or a parent of an input); holds entries its
            manifest does not cover (or has no manifest); or its nearest existing parent is not a writable folder
            (permissions, read-only file system).
    """
    path = Path(out).expanduser().resolve()
    shown = sanitize_text(out)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{shown}: output path is a file, not a folder; choose another output folder")
    if path.exists():
        _refuse_protected(path, shown, inputs)
        if not overwrite:
            raise OutputExistsError(f"{shown}: output folder exists (--overwrite replaces a folder that lunglesionai "
                                  f"wrote)")
        _refuse_foreign_entries(path, shown)
    _check_writable_parent(path, shown)
    return path


def check_output_file(out: str | os.PathLike) -> Path:
    """Check before any work that the file ``out`` (metrics JSON, weights) can be written.

    Returns:
        ``out`` as an absolute path.

    Raises:
        OutputPathError: ``out`` is a folder, or its nearest existing parent is not a writable folder.
    """
    path = Path(out).expanduser().absolute()
    if path.is_dir():
        raise OutputPathError(f"{sanitize_text(out)}: is a folder; give a file name")
    _check_writable_parent(path, sanitize_text(out))
    return path


@contextlib.contextmanager
def atomic_output_folder(out: str | os.PathLike, *, overwrite: bool, command: str) -> Iterator[Path]:
    """Write an output folder atomically: yields an empty staging folder; on success adds the manifest and
    renames it onto ``out``; on any error or interruption (KeyboardInterrupt, SIGTERM turned into an exception)
    removes the staging folder and leaves ``out`` as it was.

    Args:
        out: the target folder (checked with :func:`check_output_folder` at the end again, since time passed).
        overwrite: replace an existing ``out`` whose manifest covers all its entries.
        command: the command that wrote it ("analyze", "demo", …), recorded in the manifest.

    Yields:
        The staging folder (``.<name>.<random>.partial`` beside ``out``; its parent is created when missing).

    Raises:
        OutputPathError: as :func:`check_output_folder`, checked again before the swap.
    """
    target = Path(out).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{secrets.token_hex(6)}{_STAGING_SUFFIX}"
    staging.mkdir(mode=0o777)
    try:
        yield staging
        _write_manifest(staging, command, _relative_files(staging))
        _swap_into_place(staging, target, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(folder: str | os.PathLike) -> set[str] | None:
    """The relative POSIX paths the manifest of ``folder`` lists, or None when it has no readable manifest."""
    try:
        document = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
        if document.get("schema") != MANIFEST_SCHEMA_ID:
            return None
        return {str(name) for name in document["files"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def record_in_manifest(folder: str | os.PathLike, names: Iterable[str], *, command: str) -> None:
    """Add files the program wrote into an existing folder (e.g. ``train`` writing a model folder) to its
    manifest, creating the manifest when missing. Files already listed stay listed."""
    folder = Path(folder)
    listed = read_manifest(folder) or set()
    _write_manifest(folder, command, listed | {Path(n).as_posix() for n in names})


def write_file_atomic(path: str | os.PathLike, writer: Callable[[Path], Any], *, suffix: str | None = None) -> Path:
    """Write one file atomically: ``writer(tmp)`` writes a hidden temporary file in the target's folder, which is
    then renamed onto ``path`` (``os.replace``).

    The temporary name is ``.<name without suffix>.<random>.tmp<suffix>``: it keeps the target's suffix, so
    writers that choose the format by the extension (SimpleITK, ``numpy.savez``) write the right format. On any
    error or interruption (KeyboardInterrupt, SIGTERM turned into an exception) the temporary file is removed
    and an existing ``path`` is left as it was; it is replaced only when ``writer`` returned.

    Args:
        path: the target file; its folder must exist.
        writer: called with the temporary path (a :class:`~pathlib.Path`); must create that file. Its return
            value is ignored.
        suffix: the suffix to keep (e.g. ``".nii.gz"`` for a name with more dots); default: the last suffix of
            ``path``, with the one before it when the last is a compression suffix (``.gz``, ``.bz2``, ``.xz``,
            ``.zst``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist, or ``writer`` did not create the temporary file.
        ValueError: ``suffix`` is not a suffix of the name of ``path``.
        OSError: the rename failed (e.g. ``path`` is a folder).
        Exception: whatever ``writer`` raised (the temporary file is removed first).

    Example:
        >>> write_file_atomic("notes.txt", lambda tmp: tmp.write_text("done\\n"))  # doctest: +SKIP
        PosixPath('notes.txt')
    """
    target = Path(path)
    name = target.name
    if suffix is None:
        suffix = target.suffix
        if suffix in _COMPRESSION_SUFFIXES:
            suffix = Path(target.stem).suffix + suffix
    if not name.endswith(suffix) or len(suffix) >= len(name):
        raise ValueError(f"{target}: {suffix!r} is not a suffix of the file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: folder {target.parent} does not exist")
    tmp = target.with_name(f".{name[: len(name) - len(suffix)]}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        writer(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = 2,
                      trailing_newline: bool = True) -> Path:
    """Write ``data`` as UTF-8 JSON to ``path`` atomically (:func:`write_file_atomic`); NaN and infinities are
    refused (``allow_nan=False``), so every file written is standard JSON.

    A caller that wants undefined values as ``null`` converts first:
    ``write_json_atomic(path, to_jsonable(data, nan_as_none=True))`` (:func:`lunglesionai.core.findings.to_jsonable`,
    which also turns numpy values into plain ones).

    Args:
        path: the target file; its folder must exist.
        data: plain JSON types (dict, list, str, int, finite float, bool, None).
        indent: ``json.dumps`` indentation (None: one line).
        trailing_newline: end the file with a newline.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``data`` holds a NaN or an infinite float (nothing is written; an existing file stays).
        TypeError: ``data`` holds a value JSON cannot represent (e.g. a numpy array).
        FileNotFoundError: the folder of ``path`` does not exist.
        OSError: as :func:`write_file_atomic`.
    """
    text = json.dumps(data, indent=indent, allow_nan=False) + ("\n" if trailing_newline else "")
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_manifest(folder: Path, command: str, files: Iterable[str]) -> None:
    document = {"schema": MANIFEST_SCHEMA_ID, "command": command, "files": sorted(set(files) - {MANIFEST_NAME})}
    write_json_atomic(folder / MANIFEST_NAME, document, indent=1)


def _relative_files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()]


def _refuse_protected(path: Path, shown: str, inputs: Sequence[str | os.PathLike]) -> None:
    protected = {Path("/"): "the file-system root", Path.home().resolve(): "your home folder"}
    for parent in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        protected.setdefault(parent, "the current folder or a parent of it")
    for item in inputs:
        source = Path(item).expanduser().resolve()
        for parent in (source, *source.parents):
            protected.setdefault(parent, "the input or a folder holding it")
    reason = protected.get(path)
    if reason is not None:
        raise OutputPathError(f"{shown}: refusing to write here: it is {reason}; give a new folder (e.g. -o "
                              f"{path.name or 'out'}_lunglesionai)")


def _refuse_foreign_entries(path: Path, shown: str) -> None:
    listed = read_manifest(path)
    if listed is None:
        raise OutputPathError(f"{shown}: output folder exists and was not written by lunglesionai (no manifest); "
                              f"--overwrite replaces only folders lunglesionai wrote: choose another folder")
    foreign = sorted(name for name in _relative_files(path) if name not in listed and name != MANIFEST_NAME)
    if foreign:
        examples = ", ".join(sanitize_text(n, 60) for n in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputPathError(f"{shown}: output folder holds {len(foreign)} file(s) lunglesionai did not write "
                              f"({examples}{more}); --overwrite would delete them: refused")


def _check_writable_parent(path: Path, shown: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder in which a folder can be created (a real probe:
    ``os.access`` is true for root even on a read-only file system)."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{shown}: {sanitize_text(parent)} is a file, not a folder")
    probe = parent / f".lunglesionai-write-test-{secrets.token_hex(6)}"
    try:
        probe.mkdir()
    except OSError as exc:
        why = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc)).lower()
        raise OutputPathError(f"{shown}: cannot write in {sanitize_text(parent)} ({why})") from exc
    probe.rmdir()


def _swap_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename ``staging`` onto ``target``; an existing target (overwrite, manifest-covered) is set aside first
    and removed only after the new folder is in place."""
    if not target.exists():
        staging.rename(target)
        return
    if not overwrite or not target.is_dir():
        raise OutputPathError(f"{sanitize_text(target)}: output path appeared while writing; nothing replaced")
    _refuse_foreign_entries(target, sanitize_text(target))
    old = staging.with_name(staging.name.removesuffix(_STAGING_SUFFIX) + ".old")
    target.rename(old)
    try:
        staging.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
