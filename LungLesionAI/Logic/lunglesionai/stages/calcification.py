"""Calcification of a lung nodule from its HU: an attenuation rule, not a model.

Calcified voxels are the nodule's voxels at or above :data:`CALCIFICATION_MIN_HU` (200 HU) after a 3×3 in-plane
median: on low-dose CT, noise alone lifts single voxels of a soft-tissue nodule (about 40 HU) over 200 HU, and the
median removes those while keeping calcifications about two voxels across or larger.

Sources:

* Siegelman et al., "CT of the solitary pulmonary nodule", AJR 135(1):1-13, 1980 (doi:10.2214/ajr.135.1.1): no
  malignant nodule had a representative CT number above 147 HU; nodules at 164 HU or more were taken as benign
  (diffuse calcification). 200 HU sits above both, with margin for scanner calibration.
* Siegelman et al., "Solitary pulmonary nodules: CT assessment", Radiology 160(2):307-312, 1986
  (doi:10.1148/radiology.160.2.3726105): a nodule is benign when high attenuation is distributed diffusely
  throughout a section through its centre (and it has a well-defined edge, which this rule does not check);
  13 % of primary lung cancers held localised calcification.
* Khan et al., "The calcified lung nodule: what does it mean?", Ann Thorac Med 5(2):67-79, 2010
  (doi:10.4103/1817-1737.62469): diffuse, central, laminated and popcorn calcifications are benign patterns;
  other patterns (eccentric, punctate, amorphous) are not a sign of benignity. Lung-RADS v2022 (ACR) puts
  nodules with benign calcification in category 1.

The rule (:func:`calcification_pattern`): "diffuse" when at least :data:`DIFFUSE_CALCIFICATION_MIN_FRACTION` of
the nodule's voxels are calcified; "central" when at least :data:`CALCIFICATION_MIN_FRACTION` are and their
centroid lies within :data:`CENTRAL_MAX_OFFSET_RADII` of the nodule's equivalent radius from the nodule's
centroid; "eccentric" when that share is reached off-centre; "punctate" when calcified voxels cover less than
:data:`CALCIFICATION_MIN_FRACTION` (wherever they are); "none" without. Only "diffuse" and "central" are benign
(:data:`BENIGN_CALCIFICATION_PATTERNS`, ``Finding.calcified``). The shares and the centring radius are this
project's choices (conservative: an eccentric calcification must not make a cancer category 1), not fitted.

What it cannot tell: laminated (concentric) and popcorn calcification are not recognised as such (they count as
benign only when they also meet the share and centring rule); calcifications smaller than about two voxels are
missed (partial volume); intravenous contrast, beam hardening next to bone or metal can lift soft tissue over
200 HU; and a nodule mask that includes rib or vessel wall calcification would be misread (the pipeline's masks
are clipped to the lung mask).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume

__all__ = [
    "BENIGN_CALCIFICATION_PATTERNS",
    "CALCIFICATION_MIN_FRACTION",
    "CALCIFICATION_MIN_HU",
    "CALCIFICATION_PATTERNS",
    "CENTRAL_MAX_OFFSET_RADII",
    "DIFFUSE_CALCIFICATION_MIN_FRACTION",
    "calcification_pattern",
    "is_calcified",
]

#: Voxels at or above this HU (after the in-plane 3×3 median) are calcified.
CALCIFICATION_MIN_HU = 200.0
#: Share of the nodule's voxels that must be calcified for "diffuse" calcification (any position).
DIFFUSE_CALCIFICATION_MIN_FRACTION = 0.5
#: Share of the nodule's voxels that must be calcified for "central" calcification (with the centring rule).
CALCIFICATION_MIN_FRACTION = 0.05
#: "Central": the calcified voxels' centroid lies within this fraction of the nodule's equivalent-sphere radius
#: from the nodule's centroid (distances in mm).
CENTRAL_MAX_OFFSET_RADII = 1.0 / 3.0
#: :func:`calcification_pattern` results.
CALCIFICATION_PATTERNS = ("none", "diffuse", "central", "eccentric", "punctate")
#: The patterns that count as benign calcification (``Finding.calcified``).
BENIGN_CALCIFICATION_PATTERNS = ("diffuse", "central")
#: Median filter size (k, j, i): in-plane only, so thick slices do not erase calcifications.
_IN_PLANE_MEDIAN = (1, 3, 3)


def calcification_pattern(volume: Volume, mask: FindingMask) -> str:
    """Calcification of a nodule: "none", "diffuse", "central", "eccentric" or "punctate" (rule in the module
    docstring).

    The median uses the voxels around the mask too (the crop is widened by one voxel in-plane, within the volume);
    only voxels inside the mask count.

    Args:
        volume: CT in HU; ``spacing_mm`` (x, y, z) gives the distances of the centring rule.
        mask: nodule mask on ``volume``'s grid: (dz, dy, dx) boolean crop and its (k, j, i) offset.

    Returns:
        One of :data:`CALCIFICATION_PATTERNS`.

    Raises:
        ValueError: the mask is not 3-D, is empty, or reaches outside the volume.

    Example:
        >>> import numpy as np
        >>> hu = np.full((9, 9, 9), -850.0, np.float32); hu[2:7, 2:7, 2:7] = 40.0; hu[3:6, 3:6, 3:6] = 600.0
        >>> vol = Volume(hu, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        >>> calcification_pattern(vol, FindingMask((2, 2, 2), np.ones((5, 5, 5), bool)))
        'central'
    """
    array = np.asarray(mask.array).astype(bool)
    offset = np.asarray(mask.offset_kji, dtype=int).reshape(-1)
    if array.ndim != 3 or offset.size != 3 or not array.any():
        raise ValueError(f"calcification needs a non-empty 3-D mask with a (k, j, i) offset, got shape "
                         f"{array.shape}, offset {tuple(offset)}")
    if np.any(offset < 0) or np.any(offset + array.shape > np.asarray(volume.shape_zyx)):
        raise ValueError(f"mask at offset {tuple(offset)} with shape {array.shape} reaches outside the volume "
                         f"of shape {volume.shape_zyx}")
    lo = np.maximum(offset - (0, 1, 1), 0)
    hi = np.minimum(offset + array.shape + (0, 1, 1), volume.shape_zyx)
    hu = np.asarray(volume.hu[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
    hu = ndi.median_filter(hu, size=_IN_PLANE_MEDIAN, mode="nearest")
    inner = tuple(slice(o - a, o - a + n) for o, a, n in zip(offset, lo, array.shape))
    dense = array & (hu[inner] >= CALCIFICATION_MIN_HU)
    share = float(dense.sum()) / float(array.sum())
    if share == 0.0:
        return "none"
    if share >= DIFFUSE_CALCIFICATION_MIN_FRACTION:
        return "diffuse"
    if share < CALCIFICATION_MIN_FRACTION:
        return "punctate"
    spacing_zyx = np.asarray(volume.spacing_mm[::-1], dtype=np.float64)
    shift_mm = float(np.linalg.norm((np.argwhere(dense).mean(axis=0) - np.argwhere(array).mean(axis=0))
                                    * spacing_zyx))
    radius_mm = (3.0 * float(array.sum()) * volume.voxel_volume_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    if shift_mm <= CENTRAL_MAX_OFFSET_RADII * radius_mm:
        return "central"
    return "eccentric"


def is_calcified(volume: Volume, mask: FindingMask) -> bool:
    """True when :func:`calcification_pattern` finds a benign pattern (:data:`BENIGN_CALCIFICATION_PATTERNS`).

    Args:
        volume: CT in HU.
        mask: nodule mask on ``volume``'s grid.

    Raises:
        ValueError: the mask is not 3-D, is empty, or reaches outside the volume.

    Example:
        >>> is_calcified(volume, finding.mask)   # doctest: +SKIP
        False
    """
    return calcification_pattern(volume, mask) in BENIGN_CALCIFICATION_PATTERNS
