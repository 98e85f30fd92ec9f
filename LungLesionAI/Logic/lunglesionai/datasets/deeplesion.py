"""Read the NIH DeepLesion data set (for users who have it): ``DL_info.csv`` and its 16-bit PNG slices.

DeepLesion (Yan K, Wang X, Lu L, Summers RM, "DeepLesion: automated mining of large-scale lesion annotations and
universal lesion detection with deep learning", J Med Imaging 5(3):036501, 2018, doi:10.1117/1.JMI.5.3.036501)
ships ``Images_png/<patient>_<study>_<series>/<slice:03d>.png``: one axial slice per file, uint16 = HU + 32768;
and ``DL_info.csv``, one row per lesion with (among others) ``File_name`` (``<patient>_<study>_<series>_<slice>.png``,
the key slice), ``Key_slice_index``, ``Bounding_boxes`` (``x0, y0, x1, y1``, 0-based pixels, inclusive),
``Coarse_lesion_type`` (1 bone, 2 abdomen, 3 mediastinum, 4 liver, 5 lung, 6 kidney, 7 soft tissue, 8 pelvis;
−1 unknown, as in the training split), ``Slice_range`` (first and last slice index present around the key slice),
``Spacing_mm_px_`` (x, y pixel size and slice interval, mm) and ``Train_Val_Test`` (1, 2, 3).

:func:`load_key_slab` makes the universal lesion detector's input from a key slice: ``n_slices`` slices at the
model's slice spacing around the key slice (linear interpolation between the stored slices, clamped to
``Slice_range``), resampled in-plane to the model's pixel size (Gaussian anti-aliasing, then linear), windowed.
Its :meth:`KeySlab.to_original` maps boxes back to the PNG's pixel frame.

**Key-slice-only data** (some DeepLesion-format exports hold only the key slice of each lesion): the documented
fallback is the key slice replicated as its own context (all ``n_slices`` slab slices equal to it), the input the
network sees for a lesion thinner than one slice; :data:`SLAB_MODES` names the two modes, and ``mode="auto"`` picks
"key-slice" when a context slice the slab needs is missing (or ``Slice_range`` holds only the key slice). The
network was trained with 3-D context, so key-slice scores are lower than with context (measured in
``models/uld/uld.card.md``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.hu_windows import window_hu_channels
from lunglesionai.core.vocabulary import DEEPLESION_TYPES

__all__ = [
    "PNG_HU_OFFSET",
    "REQUIRED_COLUMNS",
    "SLAB_MODES",
    "DeepLesionError",
    "DeepLesionRecord",
    "KeySlab",
    "key_images",
    "load_key_slab",
    "load_slice_hu",
    "read_dl_info",
    "slice_path",
]

PNG_HU_OFFSET = 32768
"""DeepLesion PNG value = HU + this."""
REQUIRED_COLUMNS = ("File_name", "Key_slice_index", "Bounding_boxes", "Coarse_lesion_type", "Slice_range",
                    "Spacing_mm_px_", "Train_Val_Test")
SLAB_MODES = ("3d-context", "key-slice")
"""How a key slab is made: neighbouring slices as context, or the key slice replicated (key-slice-only data)."""
FWHM_PER_SIGMA = 2.3548
AIR_HU = -1024.0


class DeepLesionError(ValueError):
    """A DeepLesion table or image is missing or malformed (the message names the file and the problem)."""


@dataclass(frozen=True)
class DeepLesionRecord:
    """One row of ``DL_info.csv``.

    Args:
        file_name: e.g. "000001_01_01_109.png"; folder: "000001_01_01"; key_slice: 109.
        box: (4,) ``x0, y0, x1, y1`` as the table gives them (0-based inclusive pixels).
        lesion_type: coarse type name, or None when unknown (code −1).
        slice_range: (first, last) slice index stored around the key slice.
        spacing_mm: (x, y, z) pixel size and slice interval, mm.
        split: ``Train_Val_Test`` (1 train, 2 validation, 3 test).
        row: 1-based data row number in the table (for messages).
    """

    file_name: str
    folder: str
    key_slice: int
    box: np.ndarray
    lesion_type: str | None
    slice_range: tuple[int, int]
    spacing_mm: tuple[float, float, float]
    split: int
    row: int

    @property
    def box_edges(self) -> np.ndarray:
        """The box as pixel edges (``x0 − 0.5, y0 − 0.5, x1 + 0.5, y1 + 0.5``), the detector's convention."""
        return self.box + np.array([-0.5, -0.5, 0.5, 0.5])


def read_dl_info(path: str | os.PathLike, split: int | None = None) -> list[DeepLesionRecord]:
    """Parse ``DL_info.csv``.

    Args:
        path: the table.
        split: keep only rows whose ``Train_Val_Test`` equals this (None: all).

    Returns:
        The records in table order.

    Raises:
        DeepLesionError: missing file or column, a malformed value (file, row and column named), or no row of
            ``split``.

    Example:
        >>> records = read_dl_info("DL_info.csv", split=3)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DeepLesionError(f"{path}: no such DeepLesion table")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DeepLesionError(f"{path}: missing column(s) {missing}")
        records = [_record(path, n, row) for n, row in enumerate(reader, start=1)]
    if split is not None:
        records = [r for r in records if r.split == split]
        if not records:
            raise DeepLesionError(f"{path}: no row with Train_Val_Test == {split}")
    return records


def _record(path: Path, n: int, row: dict) -> DeepLesionRecord:
    def numbers(column: str, count: int) -> list[float]:
        try:
            values = [float(v) for v in str(row[column]).replace(";", ",").split(",") if v.strip()]
        except ValueError as exc:
            raise DeepLesionError(f"{path}: row {n}, column {column}: not numbers ({row[column]!r})") from exc
        if len(values) < count:
            raise DeepLesionError(f"{path}: row {n}, column {column}: need {count} numbers, got {row[column]!r}")
        return values

    name = str(row["File_name"]).strip()
    parts = name[:-4].split("_") if name.endswith(".png") else []
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise DeepLesionError(f"{path}: row {n}, column File_name: expected <patient>_<study>_<series>_<slice>.png, "
                              f"got {name!r}")
    box = np.asarray(numbers("Bounding_boxes", 4)[:4], float)
    if box[2] < box[0] or box[3] < box[1]:
        raise DeepLesionError(f"{path}: row {n}, column Bounding_boxes: x1 < x0 or y1 < y0 ({row['Bounding_boxes']!r})")
    code = int(numbers("Coarse_lesion_type", 1)[0])
    lo, hi = (int(v) for v in numbers("Slice_range", 2)[:2])
    spacing = tuple(numbers("Spacing_mm_px_", 3)[:3])
    if min(spacing) <= 0:
        raise DeepLesionError(f"{path}: row {n}, column Spacing_mm_px_: spacing must be positive, got {spacing}")
    return DeepLesionRecord(name, "_".join(parts[:3]), int(numbers("Key_slice_index", 1)[0]), box,
                            DEEPLESION_TYPES[code - 1] if 1 <= code <= len(DEEPLESION_TYPES) else None,
                            (min(lo, hi), max(lo, hi)), spacing, int(numbers("Train_Val_Test", 1)[0]), n)


def key_images(records: list[DeepLesionRecord]) -> list[list[DeepLesionRecord]]:
    """Records grouped by key slice image (``File_name``), in order of first appearance: one image, its lesions."""
    groups: dict[str, list[DeepLesionRecord]] = {}
    for r in records:
        groups.setdefault(r.file_name, []).append(r)
    return list(groups.values())


def slice_path(data_dir: str | os.PathLike, folder: str, index: int) -> Path:
    """``<data_dir>/Images_png/<folder>/<index:03d>.png`` (``data_dir`` may also be the Images_png folder)."""
    root = Path(data_dir)
    if (root / "Images_png").is_dir():
        root = root / "Images_png"
    return root / folder / f"{int(index):03d}.png"


def load_slice_hu(data_dir: str | os.PathLike, folder: str, index: int) -> np.ndarray:
    """One slice in HU: (Y, X) float32 = PNG value − :data:`PNG_HU_OFFSET`.

    Raises:
        DeepLesionError: the PNG is missing, unreadable or not 16-bit single-channel.
    """
    from PIL import Image, UnidentifiedImageError

    path = slice_path(data_dir, folder, index)
    if not path.is_file():
        raise DeepLesionError(f"{path}: slice missing")
    try:
        with Image.open(path) as image:
            if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise DeepLesionError(f"{path}: expected a 16-bit grey PNG (HU + 32768), got mode {image.mode}")
            array = np.asarray(image, dtype=np.int32)
    except (OSError, UnidentifiedImageError) as exc:
        raise DeepLesionError(f"{path}: cannot read the PNG ({exc})") from exc
    return (array - PNG_HU_OFFSET).astype(np.float32)


@dataclass(frozen=True)
class KeySlab:
    """The detector's input made from a DeepLesion key slice.

    Args:
        image: (C·n, X, Y) float32 windowed slab (X, Y multiples of 32).
        scale: (sx, sy) original pixels per slab pixel.
        shape_yx: the PNG's (rows, columns).
        mode: "3d-context" or "key-slice" (:data:`SLAB_MODES`).
    """

    image: np.ndarray
    scale: tuple[float, float]
    shape_yx: tuple[int, int]
    mode: str = "3d-context"

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) slab-pixel boxes (x0, y0, x1, y1) → the PNG's pixel frame (edges at half-integers)."""
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        scale = np.array([self.scale[0], self.scale[1]] * 2)
        return (boxes + 0.5) * scale - 0.5


class SlabGrid(Protocol):
    """The slab geometry :func:`load_key_slab` reads (the universal lesion detector's ``ULDConfig`` has it; the
    reader does not depend on the network)."""

    n_slices: int
    slice_spacing_mm: float
    pixel_spacing_mm: float
    size_divisible: int
    hu_windows: tuple[tuple[float, float], ...]


def load_key_slab(data_dir: str | os.PathLike, group: list[DeepLesionRecord], config: "SlabGrid",
                  mode: str = "auto") -> KeySlab:
    """The slab of ``config.n_slices`` slices at ``config.slice_spacing_mm`` around one key slice.

    Args:
        data_dir: the DeepLesion folder (or its Images_png folder).
        group: the records of one key image (:func:`key_images`); the first gives geometry and slice range.
        config: grid, slices and windows of the model (a ``lunglesionai.nets.mp3d.ULDConfig``).
        mode: "3d-context" (neighbours required), "key-slice" (the key slice replicated as its own context) or
            "auto" (context when every needed neighbour is stored, else key-slice; module docstring).

    Returns:
        :class:`KeySlab` (its ``mode`` says which ran).

    Raises:
        DeepLesionError: a needed slice is missing or unreadable, or slices differ in size.
        ValueError: unknown ``mode``.
    """
    if mode not in ("auto", *SLAB_MODES):
        raise ValueError(f"slab mode must be 'auto', {' or '.join(repr(m) for m in SLAB_MODES)}; got {mode!r}")
    record = group[0]
    half = config.n_slices // 2
    offsets = (np.arange(config.n_slices) - half) * config.slice_spacing_mm / record.spacing_mm[2]
    positions = np.clip(record.key_slice + offsets, *record.slice_range)
    if mode == "auto":
        needed = {int(np.floor(z)) + d for z in positions for d in (0, 1) if d == 0 or z - np.floor(z) > 1e-6}
        context = record.slice_range[1] > record.slice_range[0] and all(
            slice_path(data_dir, record.folder, k).is_file() for k in needed)
        mode = "3d-context" if context else "key-slice"
    if mode == "key-slice":
        positions = np.full(config.n_slices, float(record.key_slice))
    cache: dict[int, np.ndarray] = {}

    def stored(index: int) -> np.ndarray:
        if index not in cache:
            cache[index] = load_slice_hu(data_dir, record.folder, index)
        return cache[index]

    slices = []
    for z in positions:
        lo, w = int(np.floor(z)), float(z - np.floor(z))
        a = stored(lo)
        b = stored(lo + 1) if w > 1e-6 else a
        if a.shape != b.shape:
            raise DeepLesionError(f"{record.folder}: slices {lo} and {lo + 1} differ in size ({a.shape}, {b.shape})")
        slices.append((1 - w) * a + w * b)
    stack = np.stack(slices)
    scale = (config.pixel_spacing_mm / record.spacing_mm[0], config.pixel_spacing_mm / record.spacing_mm[1])
    resampled = _resample_in_plane(stack, scale, config.size_divisible)
    channels = window_hu_channels(resampled, config.hu_windows)  # (C, n, Y, X)
    image = channels.transpose(0, 1, 3, 2).reshape(-1, resampled.shape[2], resampled.shape[1])
    return KeySlab(np.ascontiguousarray(image), scale, tuple(stack.shape[1:]), mode)


def _resample_in_plane(stack: np.ndarray, scale: tuple[float, float], divisor: int) -> np.ndarray:
    """(n, Y, X) HU → (n, Y', X') on pixels ``scale`` times larger (x, y), padded with air to multiples of
    ``divisor``; slab pixel u covers original pixels (u − 0.5)·s … (u + 0.5)·s, centred at (u + 0.5)·s − 0.5."""
    sx, sy = scale
    sigma = [0.0, np.sqrt(max(sy**2 - 1, 0)) / FWHM_PER_SIGMA, np.sqrt(max(sx**2 - 1, 0)) / FWHM_PER_SIGMA]
    smooth = ndi.gaussian_filter(stack, sigma) if max(sigma) > 0 else stack
    ny, nx = (int(np.ceil(stack.shape[1] / sy)), int(np.ceil(stack.shape[2] / sx)))
    py, px = (int(np.ceil(ny / divisor)) * divisor, int(np.ceil(nx / divisor)) * divisor)
    rows = (np.arange(py) + 0.5) * sy - 0.5
    cols = (np.arange(px) + 0.5) * sx - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = np.empty((stack.shape[0], py, px), np.float32)
    for n, image in enumerate(smooth):
        out[n] = ndi.map_coordinates(image, [rr, cc], order=1, mode="constant", cval=AIR_HU)
    return out
