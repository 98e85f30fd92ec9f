"""Nodule-centred isotropic crops of a CT (the grader's input, at training and at inference), their augmentation for
training (MONAI dictionary transforms) and the cached crop set of a ``lidc_voi`` split.

A crop is a cube of ``size`` voxels at ``spacing_mm`` around an LPS centre, resampled with SimpleITK (linear;
``PAD_HU`` outside the volume) and windowed to [0, 1] (:data:`lunglesionai.core.hu_windows.NODULE_WINDOW_HU`).
The VOIs and their table are read by :mod:`lunglesionai.datasets.lidc`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from lunglesionai.core.hu_windows import window_hu
from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.core.volume import Volume, ijk_to_lps_matrix
from lunglesionai.datasets.lidc import ATTRIBUTES, HU_WINDOW, NoduleRecord, load_voi

__all__ = [
    "AugmentationConfig",
    "CropGeometry",
    "CropSet",
    "PAD_HU",
    "build_crop_set",
    "crop_geometry",
    "crop_to_volume",
    "extract_crop",
    "training_transforms",
]

logger = logging.getLogger(__name__)

PAD_HU = -1000.0
"""HU written outside the VOI (air)."""
_CACHE_VERSION = 2
"""Bumped whenever :class:`CropSet`'s content changes (old cache files are then ignored)."""


@dataclass(frozen=True)
class CropGeometry:
    """An isotropic cube grid in LPS: ``size`` voxels of ``spacing_mm`` along the volume's own axes.

    Args:
        origin_lps_mm: LPS (x, y, z) of voxel (0, 0, 0)'s centre.
        spacing_mm: isotropic voxel size (mm).
        size: voxels per side (the array is (size, size, size), (z, y, x) order).
        direction: 3×3 direction cosines, row-major (the volume's).
    """

    origin_lps_mm: tuple[float, float, float]
    spacing_mm: float
    size: int
    direction: tuple[float, ...]

    def to_sitk_reference(self) -> sitk.Image:
        """An empty float32 SimpleITK image with this grid (for ``sitk.Resample``)."""
        image = sitk.Image([self.size] * 3, sitk.sitkFloat32)
        image.SetOrigin(self.origin_lps_mm)
        image.SetSpacing([self.spacing_mm] * 3)
        image.SetDirection(self.direction)
        return image


def crop_geometry(volume: Volume, center_lps_mm, spacing_mm: float, size: int) -> CropGeometry:
    """The isotropic cube centred on ``center_lps_mm`` with the volume's axis directions.

    Args:
        volume: the volume the crop is taken from (its direction is kept).
        center_lps_mm: (x, y, z) LPS mm.
        spacing_mm: isotropic spacing (> 0).
        size: voxels per side (> 0).

    Raises:
        ValueError: non-positive spacing or size, or a centre that is not 3 finite numbers.
    """
    center = np.asarray(center_lps_mm, dtype=float).reshape(-1)
    if center.size != 3 or not np.all(np.isfinite(center)):
        raise ValueError(f"center_lps_mm must be 3 finite numbers, got {center_lps_mm}")
    if spacing_mm <= 0 or size < 1:
        raise ValueError(f"crop needs spacing_mm > 0 and size >= 1, got {spacing_mm}, {size}")
    half = (size - 1) / 2.0 * spacing_mm
    origin = center - volume.direction_matrix @ np.full(3, half)
    return CropGeometry(tuple(origin.tolist()), float(spacing_mm), int(size), volume.direction)


def extract_crop(volume: Volume, geometry: CropGeometry, pad_hu: float = PAD_HU) -> np.ndarray:
    """Resample the volume onto the crop grid (linear interpolation), ``pad_hu`` outside the volume.

    Only the part of ``volume`` under the crop is converted, so this is cheap on full-size CTs.

    Args:
        volume: CT in HU (or a 0/1 mask as a Volume; then use ``pad_hu=0`` for a soft mask).
        geometry: from :func:`crop_geometry`.
        pad_hu: value outside the volume.

    Returns:
        (size, size, size) float32 array, (z, y, x) order, in the volume's units.
    """
    lo, hi = _covering_box(volume, geometry, margin=1)
    if np.any(hi <= lo):
        return np.full((geometry.size,) * 3, pad_hu, np.float32)
    sub = np.asarray(volume.hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    image = sitk.GetImageFromArray(sub)
    image.SetSpacing(volume.spacing_mm)
    image.SetOrigin(tuple(volume.kji_to_lps([lo])[0].tolist()))
    image.SetDirection(volume.direction)
    out = sitk.Resample(image, geometry.to_sitk_reference(), sitk.Transform(), sitk.sitkLinear, float(pad_hu))
    return sitk.GetArrayFromImage(out)


def crop_to_volume(crop: np.ndarray, geometry: CropGeometry, volume: Volume) -> tuple[tuple[int, int, int], np.ndarray]:
    """Inverse of :func:`extract_crop`: resample crop values back onto the volume's own grid (linear).

    Args:
        crop: (size, size, size) array on ``geometry`` (e.g. a mask probability).
        geometry: the crop's grid.
        volume: the target grid.

    Returns:
        ((k, j, i) offset in the volume, float32 (dz, dy, dx) array of the volume voxels the crop covers;
        0 where the crop does not reach). An empty (0-sized) array when the crop misses the volume.

    Raises:
        ValueError: ``crop``'s shape is not the geometry's.
    """
    if np.shape(crop) != (geometry.size,) * 3:
        raise ValueError(f"crop shape {np.shape(crop)} is not the geometry's {(geometry.size,) * 3}")
    lo, hi = _covering_box(volume, geometry, margin=0)
    if np.any(hi <= lo):
        return (0, 0, 0), np.zeros((0, 0, 0), np.float32)
    image = sitk.GetImageFromArray(np.asarray(crop, dtype=np.float32))
    image.SetOrigin(geometry.origin_lps_mm)
    image.SetSpacing([geometry.spacing_mm] * 3)
    image.SetDirection(geometry.direction)
    reference = sitk.Image([int(n) for n in (hi - lo)[::-1]], sitk.sitkFloat32)
    reference.SetSpacing(volume.spacing_mm)
    reference.SetOrigin(tuple(volume.kji_to_lps([lo])[0].tolist()))
    reference.SetDirection(volume.direction)
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    return tuple(int(v) for v in lo), sitk.GetArrayFromImage(out)


def _covering_box(volume: Volume, geometry: CropGeometry, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) (k, j, i) index box of volume voxels under the crop cube, clipped to the volume."""
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float) * (geometry.size - 1)
    matrix = ijk_to_lps_matrix((geometry.spacing_mm,) * 3, geometry.origin_lps_mm, geometry.direction)
    lps = corners @ matrix[:3, :3].T + matrix[:3, 3]
    kji = volume.lps_to_kji(lps)
    lo = np.maximum(np.floor(kji.min(axis=0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(kji.max(axis=0)).astype(int) + 1 + margin, volume.shape_zyx)
    return lo, hi


@dataclass(frozen=True)
class AugmentationConfig:
    """Random augmentation of training crops (MONAI dictionary transforms on "image" and "mask").

    Args:
        rotate_deg: (about z, about y, about x) maximum rotation in degrees (uniform in ±).
        shift_mm: maximum shift of the crop centre along each axis (mm; the detector's centre is not exact).
        scale: maximum relative zoom (uniform in 1 ± scale).
        flip_prob: probability of a flip along each axis.
        hu_shift: maximum intensity shift in HU (window units after conversion).
        hu_scale: maximum relative intensity scaling.
        noise_std_hu: standard deviation of Gaussian noise in HU (applied with probability 0.5).

    Raises:
        ValueError: a negative amount or a probability outside [0, 1].
    """

    rotate_deg: tuple[float, float, float] = (180.0, 15.0, 15.0)
    shift_mm: float = 2.0
    scale: float = 0.05
    flip_prob: float = 0.5
    hu_shift: float = 30.0
    hu_scale: float = 0.05
    noise_std_hu: float = 20.0

    def __post_init__(self) -> None:
        amounts = (*self.rotate_deg, self.shift_mm, self.scale, self.hu_shift, self.hu_scale, self.noise_std_hu)
        if min(amounts) < 0 or len(self.rotate_deg) != 3:
            raise ValueError(f"AugmentationConfig amounts must be >= 0 (rotate_deg 3 values): {self}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"AugmentationConfig.flip_prob must be in [0, 1], got {self.flip_prob}")


def training_transforms(
    augmentation: AugmentationConfig, crop_size: int, spacing_mm: float, window: tuple[float, float] = HU_WINDOW
):
    """MONAI dictionary transforms for training: affine (rotation, zoom, shift, crop to ``crop_size``), flips,
    HU shift/scale and Gaussian noise.

    Input dicts hold "image" (1, S, S, S) windowed [0, 1] crops (S >= ``crop_size``, padding already 0 = air)
    and "mask" (1, S, S, S) soft masks; the affine resamples both (bilinear, zero padding = air / background)
    to (1, crop_size, crop_size, crop_size) around the centre.

    Args:
        augmentation: amounts.
        crop_size: output size per side (voxels).
        spacing_mm: the crops' isotropic spacing (converts ``shift_mm`` to voxels).
        window: HU window of the crops (converts the HU amounts).

    Returns:
        ``monai.transforms.Compose``; seed it with ``set_random_state``.
    """
    from monai import transforms as mt

    a = augmentation
    width = float(window[1] - window[0])
    keys = ("image", "mask")
    return mt.Compose(
        [
            mt.RandAffined(
                keys,
                spatial_size=(crop_size,) * 3,
                prob=1.0,
                rotate_range=[math.radians(d) for d in a.rotate_deg],
                translate_range=[a.shift_mm / spacing_mm] * 3,
                scale_range=[a.scale] * 3,
                mode=("bilinear", "bilinear"),
                padding_mode="zeros",
            ),
            mt.RandFlipd(keys, prob=a.flip_prob, spatial_axis=0),
            mt.RandFlipd(keys, prob=a.flip_prob, spatial_axis=1),
            mt.RandFlipd(keys, prob=a.flip_prob, spatial_axis=2),
            mt.RandScaleIntensityd("image", factors=a.hu_scale, prob=0.5),
            mt.RandShiftIntensityd("image", offsets=a.hu_shift / width, prob=0.5),
            mt.RandGaussianNoised("image", prob=0.5, std=a.noise_std_hu / width),
            mt.ToTensord(keys, track_meta=False),
        ]
    )


@dataclass(frozen=True)
class CropSet:
    """Nodule-centred isotropic crops of many VOIs, with their labels (arrays indexed by nodule n).

    Attributes:
        images: (N, S, S, S) float16 windowed crops in [0, 1] (0 = air, also the padding).
        masks: (N, S, S, S) float16 soft consensus masks in [0, 1].
        malignant, rating, texture: (N,) int64 labels, -1 where the table has none (rating 1-5 stored as 0-4).
        attributes: (N, len(ATTRIBUTES)) float32 scaled semantic ratings, NaN where the table has none.
        diameter_mm: (N,) float64 table diameters.
        files: the N file names.
    """

    images: np.ndarray
    masks: np.ndarray
    malignant: np.ndarray
    rating: np.ndarray
    texture: np.ndarray
    attributes: np.ndarray
    diameter_mm: np.ndarray
    files: tuple[str, ...]


def build_crop_set(
    data_dir: str | os.PathLike,
    records: list[NoduleRecord],
    spacing_mm: float,
    size: int,
    window: tuple[float, float] = HU_WINDOW,
    cache_dir: Optional[str | os.PathLike] = None,
) -> CropSet:
    """Crop every record's VOI and mask around its table centre (isotropic, padded, windowed).

    Args:
        data_dir: the ``lidc_voi`` folder.
        records: rows from :func:`read_nodule_table`.
        spacing_mm: isotropic spacing (mm).
        size: voxels per side.
        window: HU window.
        cache_dir: when given, the result is stored there as ``.npz`` (keyed by the files and parameters) and
            read back on the next call (never commit it).

    Returns:
        :class:`CropSet`.

    Raises:
        LidcTableError: a VOI or mask is missing or unreadable.
    """
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(data_dir, records, spacing_mm, size, window)
        cache_path = Path(cache_dir) / f"lidc_crops_{key}.npz"
        if cache_path.is_file():
            with np.load(cache_path) as data:
                return CropSet(**{k: data[k] for k in data.files if k != "files"}, files=tuple(data["files"]))
    images = np.zeros((len(records),) + (size,) * 3, np.float16)
    masks = np.zeros_like(images)
    for n, record in enumerate(records):
        volume, mask = load_voi(data_dir, record)
        geometry = crop_geometry(volume, record.center_lps_mm, spacing_mm, size)
        images[n] = window_hu(extract_crop(volume, geometry), window)
        masks[n] = extract_crop(volume.with_array(mask.astype(np.float32)), geometry, pad_hu=0.0)
        if (n + 1) % 100 == 0 or n + 1 == len(records):
            logger.info("cropped case %d/%d", n + 1, len(records))
    crops = CropSet(
        images=images,
        masks=masks,
        malignant=np.array([_label(r.malignant) for r in records], np.int64),
        rating=np.array([_label(r.rating, -1) for r in records], np.int64),
        texture=np.array([_label(r.texture) for r in records], np.int64),
        attributes=np.array([r.attributes for r in records], np.float32).reshape(len(records), len(ATTRIBUTES)),
        diameter_mm=np.array([r.diameter_mm for r in records], np.float64),
        files=tuple(r.file for r in records),
    )
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in crops.__dict__.items() if k != "files"}
        write_file_atomic(cache_path, lambda tmp: np.savez(tmp, **arrays, files=np.array(crops.files)))
    return crops


def _label(value: Optional[int], shift: int = 0) -> int:
    return -1 if value is None else int(value) + shift


def _cache_key(data_dir, records, spacing_mm, size, window) -> str:
    import hashlib

    text = repr((_CACHE_VERSION, str(Path(data_dir).resolve()), records, spacing_mm, size, tuple(window)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
