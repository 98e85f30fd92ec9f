"""The SimpleITK bridge: a :class:`~lunglesionai.core.volume.Volume` as a SimpleITK image and back.

ITK keeps every image in LPS (DICOM's patient frame), as :class:`Volume` does, so no axis flips are needed: the
(Z, Y, X) numpy array is ITK's (x, y, z) image, spacing and origin (x, y, z) mm, direction row-major.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lunglesionai.core.ct_checks import CTInputError, _as_hu_dtype, _check_orthonormal
from lunglesionai.core.volume import Volume

__all__ = ["volume_from_sitk", "volume_to_sitk"]


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Convert a Volume to a SimpleITK image (voxels copied; spacing, origin, direction in LPS)."""
    image = sitk.GetImageFromArray(np.asarray(volume.hu))
    image.SetSpacing(volume.spacing_mm)
    image.SetOrigin(volume.origin_lps_mm)
    image.SetDirection(volume.direction)
    return image


def volume_from_sitk(image: sitk.Image, source: str = "") -> Volume:
    """Convert a 3-D scalar SimpleITK image (LPS, as ITK always is) to a Volume.

    No CT checks are made here (any slice count, any intensities), so it also suits small crops.

    Args:
        image: 3-D scalar image.
        source: stored as ``Volume.source``.

    Returns:
        Volume with ``hu`` (Z, Y, X) int16 when integral and within int16, else float32.

    Raises:
        CTInputError: not 3-D, not scalar, or non-orthonormal direction cosines.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CTInputError(
            f"{source or 'image'}: need a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel"
        )
    _check_orthonormal(source or "image", np.asarray(image.GetDirection()).reshape(3, 3))
    hu = _as_hu_dtype(sitk.GetArrayFromImage(image))
    return Volume(hu, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), source)
