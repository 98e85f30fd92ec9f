"""Synthetic lung tumours with exact truth, pasted into a host CT (for the mass tests).

A tumour is a lobulated soft-tissue body (an ellipsoid with a few spherical lobes) with thin spicules radiating from
its surface, at about 40 HU with noise, blended into the host over about one voxel (partial volume). The truth mask
is the body (spicules excluded), on the host's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lunglesionai import Volume

TUMOUR_HU = 40.0
TUMOUR_NOISE_HU = 15.0


@dataclass(frozen=True)
class PastedTumour:
    volume: Volume
    truth: np.ndarray  # (Z, Y, X) bool, the body without spicules
    centre_lps_mm: tuple[float, float, float]
    diameter_mm: float  # equivalent diameter of ``truth``


def tumour_fields(volume: Volume, centre_lps_mm, diameter_mm: float, seed: int = 0,
                  n_lobes: int = 4, n_spicules: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(body, spicules): (Z, Y, X) float occupancy in [0, 1] on ``volume``'s grid (voxel centres, then a Gaussian
    blur of half a voxel for the partial volume)."""
    rng = np.random.default_rng(seed)
    radius = diameter_mm / 2
    sub = 1
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    body = np.zeros(volume.shape_zyx, np.float32)
    spicules = np.zeros(volume.shape_zyx, np.float32)
    axes = radius * np.array([1.0, 0.85, 1.1])
    lobes = [(rng.normal(size=3), radius * rng.uniform(0.45, 0.6)) for _ in range(n_lobes)]
    lobes = [(d / np.linalg.norm(d) * radius * 0.65, r) for d, r in lobes]
    spikes = [(d / np.linalg.norm(d), rng.uniform(10.0, 16.0)) for d in rng.normal(size=(n_spicules, 3))]
    reach = radius * 1.3 + 18.0
    c_kji = volume.lps_to_kji([centre_lps_mm])[0]
    half = np.ceil(reach / np.asarray(volume.spacing_mm[::-1])).astype(int)
    lo = np.maximum(np.round(c_kji).astype(int) - half, 0)
    hi = np.minimum(np.round(c_kji).astype(int) + half + 1, volume.shape_zyx)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    shape = tuple(hi - lo)
    kji = (np.indices(shape).reshape(3, -1).T + lo).astype(float)
    for dk in offsets:
        for dj in offsets:
            for di in offsets:
                p = volume.kji_to_lps(kji + [dk, dj, di]) - np.asarray(centre_lps_mm)
                inside = np.sum((p / axes) ** 2, axis=1) <= 1.0
                for centre, r in lobes:
                    inside |= np.sum((p - centre) ** 2, axis=1) <= r**2
                spike = np.zeros(len(p), bool)
                for direction, length in spikes:
                    t = p @ direction
                    dist = np.linalg.norm(p - np.outer(t, direction), axis=1)
                    spike |= (t > 0) & (t < radius + length) & (dist <= 1.2 * (1 - t / (radius + length)) + 0.4)
                body[box] += inside.reshape(shape)
                spicules[box] += (spike & ~inside).reshape(shape)
    return ndi.gaussian_filter(body, 0.5), np.clip(ndi.gaussian_filter(spicules, 0.5) * 2, 0, 1)


def paste_tumour(volume: Volume, centre_lps_mm, diameter_mm: float, seed: int = 0) -> PastedTumour:
    """The host with a tumour pasted at ``centre_lps_mm`` (LPS mm) of nominal ``diameter_mm`` (before lobes)."""
    rng = np.random.default_rng(seed + 1)
    body, spicules = tumour_fields(volume, centre_lps_mm, diameter_mm, seed)
    weight = np.clip(body + spicules, 0.0, 1.0)
    tumour = TUMOUR_HU + ndi.gaussian_filter(rng.normal(0, TUMOUR_NOISE_HU * 2, volume.shape_zyx), 0.8)
    hu = np.asarray(volume.hu, dtype=np.float32)
    pasted = weight * tumour + (1 - weight) * hu
    truth = body >= 0.5
    voxels = truth.sum() * volume.voxel_volume_mm3
    return PastedTumour(
        volume.with_array(pasted.astype(np.int16)),
        truth,
        tuple(float(c) for c in centre_lps_mm),
        float((6 * voxels / np.pi) ** (1 / 3)),
    )


#: Where the crop test tumour goes: the left lung beside the heart (k, j, i of chest_ct_crop_1p5mm.nii.gz), touching
#: the mediastinum; its nominal diameter (mm).
CROP_TUMOUR_KJI = (100, 70, 88)
CROP_TUMOUR_DIAMETER_MM = 45.0
PHANTOM_TUMOUR_DIAMETER_MM = 36.0


def crop_with_tumour(path) -> tuple[Volume, PastedTumour]:
    """(host, host with a 45 mm lobulated tumour touching the mediastinum) from the real 1.5 mm chest CT crop."""
    from lunglesionai.io import load_volume

    host = load_volume(str(path))
    return host, paste_tumour(host, host.kji_to_lps([CROP_TUMOUR_KJI])[0], CROP_TUMOUR_DIAMETER_MM, seed=0)


def phantom_with_tumour() -> tuple[Volume, PastedTumour]:
    """(small procedural phantom without nodules, the same with a 36 mm tumour in the middle of its left lung)."""
    from lunglesionai.stages.lung_mask import LEFT_LUNG_LABEL, segment_lungs
    from lunglesionai.synth import PhantomConfig, make_phantom

    host = make_phantom(PhantomConfig.small(n_nodules=0)).volume
    centre_kji = np.argwhere(segment_lungs(host) == LEFT_LUNG_LABEL).mean(axis=0)
    return host, paste_tumour(host, host.kji_to_lps([centre_kji])[0], PHANTOM_TUMOUR_DIAMETER_MM, seed=1)


def thick_slices(volume: Volume, truth: np.ndarray, slice_mm: float) -> tuple[Volume, np.ndarray]:
    """The volume reconstructed at ``slice_mm`` thick, contiguous axial slices (mean over each slab, SimpleITK
    resampling of the z-blurred volume), and the truth mask on that grid (nearest neighbour)."""
    import SimpleITK as sitk

    from lunglesionai.core.sitk_bridge import volume_from_sitk, volume_to_sitk

    sigma_vox = slice_mm / volume.spacing_mm[2] / 2.355
    blurred = ndi.gaussian_filter1d(np.asarray(volume.hu, np.float32), sigma_vox, axis=0)
    image = volume_to_sitk(volume.with_array(blurred))
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    new_size = [size[0], size[1], int(size[2] * spacing[2] // slice_mm)]
    out_spacing = [spacing[0], spacing[1], slice_mm]
    origin = np.array(image.GetOrigin()) + np.array(image.GetDirection()).reshape(3, 3)[:, 2] * (
        (slice_mm - spacing[2]) / 2)
    resample = lambda img, interp, pixel: sitk.Resample(  # noqa: E731
        img, new_size, sitk.Transform(), interp, tuple(origin), out_spacing, image.GetDirection(), 0, pixel)
    thick = volume_from_sitk(resample(image, sitk.sitkLinear, sitk.sitkFloat32))
    mask_image = sitk.GetImageFromArray(truth.astype(np.uint8))
    mask_image.CopyInformation(image)
    mask = sitk.GetArrayFromImage(resample(mask_image, sitk.sitkNearestNeighbor, sitk.sitkUInt8)) > 0
    return thick.with_array(np.round(thick.hu).astype(np.int16)), mask
