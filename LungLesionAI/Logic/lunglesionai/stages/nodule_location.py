"""Where a lung finding lies: side, craniocaudal zone (not lobe) and attachment to the pleura.

Rules on the lung mask (:func:`lunglesionai.stages.lung_mask.segment_lungs`: 1 = right lung, 2 = left lung, from
world geometry), not models:

* **Side**: the lung label most of the finding's voxels carry; a finding outside the lung mask (or without a
  mask) takes the side of the lungs' midline it lies on (LPS x, +x = patient's left): halfway between the right
  lung's leftmost and the left lung's rightmost voxel column, or the volume's centre when a lung is missing.
* **Zone**: "upper", "middle" or "lower" third of that lung's craniocaudal (LPS z) extent in the scan, by the
  finding's centre. This is a ZONE, not a lobe: lobes are bounded by the fissures, which are not segmented, so
  ``lobe`` is always None. Equal thirds of the craniocaudal extent are a common simplification in quantitative
  CT of regional lung disease; visual emphysema scores place their three zones at anatomical levels instead
  (Goddard et al., Clin Radiol 33(4):379-387, 1982: near the aortic arch, the carina and above the diaphragm).
  The Brock model's "upper lobe" (McWilliams et al., NEJM 369:910-919, 2013, doi:10.1056/NEJMoa1214726) is
  approximated by the upper zone: the upper lobes reach below the upper third posteriorly and the right middle
  lobe and lingula reach the middle third, so the approximation errs both ways near the zone borders. When the
  scan cuts a lung (``Report.exam["lungs_fully_covered"]`` False) the thirds are of what was scanned.
* **Attachment**: "juxta-pleural" when at most :data:`PLEURA_CONTACT_MM` (1.5 mm) of lung lies between the
  finding and a voxel outside the lung mask (centre distance ≤ 1.5 mm + the smallest voxel edge), or a finding
  voxel is next to one (6-neighbourhood; this covers slices thicker than 1.5 mm), i.e. it touches the pleural
  surface: costal, mediastinal and diaphragmatic. Vessels and bronchi the lung mask leaves out are not pleura:
  the mask's holes in each axial slice are filled first (:func:`pleural_lung_mask`); those that reach the
  mediastinum in-plane (at the hilum) stay boundary, so a nodule touching a hilar vessel or bronchus, or dense
  consolidation the lung segmentation left out, also counts as juxta-pleural. The volume's edge is not pleura.
  Fissural (perifissural) attachment cannot be told without fissure segmentation: "none" means "not attached to
  the lung mask's boundary", not "not perifissural". Lung-RADS v2022 (ACR) puts solid juxtapleural nodules
  under 10 mm mean diameter with smooth margins and an oval, lentiform or triangular shape in category 2; shape
  and margins are not checked here, the rules decide what to do with the attachment.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.findings import Finding, FindingMask
from lunglesionai.core.volume import Volume
from lunglesionai.stages.lung_mask import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL

__all__ = [
    "PLEURA_CONTACT_MM",
    "LungExtents",
    "lung_extents",
    "finding_side",
    "finding_zone",
    "pleural_attachment",
    "pleural_lung_mask",
    "with_location",
]

#: A finding separated from the lung mask's boundary by at most this much lung (mm) touches the pleura.
PLEURA_CONTACT_MM = 1.5
_SIDE_OF_LABEL = {RIGHT_LUNG_LABEL: "right", LEFT_LUNG_LABEL: "left"}
_ZONES_LOW_TO_HIGH = ("lower", "middle", "upper")
#: In-plane 4-connectivity without links between slices: labels every axial slice separately in one call.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndi.generate_binary_structure(2, 1)

#: Per lung label: ((k_min, k_max), (i_min, i_max)) index extents of its voxels; labels without voxels are absent.
LungExtents = dict[int, tuple[tuple[int, int], tuple[int, int]]]


def lung_extents(lung_labels: np.ndarray) -> LungExtents:
    """Slice (k) and column (i) index range of each lung label, computed once per scan.

    Args:
        lung_labels: (Z, Y, X) labels, 1 right lung, 2 left lung, 0 elsewhere.

    Returns:
        ``{label: ((k_min, k_max), (i_min, i_max))}`` (inclusive) for each label that has voxels.

    Raises:
        ValueError: ``lung_labels`` is not 3-D.
    """
    labels = np.asarray(lung_labels)
    if labels.ndim != 3:
        raise ValueError(f"lung labels must be (Z, Y, X), got shape {labels.shape}")
    extents: LungExtents = {}
    for label in _SIDE_OF_LABEL:
        present = labels == label
        ks, is_ = np.flatnonzero(present.any(axis=(1, 2))), np.flatnonzero(present.any(axis=(0, 1)))
        if ks.size:
            extents[label] = ((int(ks[0]), int(ks[-1])), (int(is_[0]), int(is_[-1])))
    return extents


def finding_side(volume: Volume, lung_labels: np.ndarray, finding: Finding,
                 extents: Optional[LungExtents] = None) -> Optional[str]:
    """"right" or "left": the lung label of most of the finding's voxels, else the side of the lungs' midline.

    Args:
        volume: the analysed CT (LPS-oriented grid of ``lung_labels``).
        lung_labels: (Z, Y, X) lung labels on ``volume``'s grid (1 right, 2 left).
        finding: with ``center_lps_mm`` and, if present, its mask on ``volume``'s grid.
        extents: :func:`lung_extents` of ``lung_labels`` (computed when None).

    Returns:
        The side, or None when no lung was segmented.

    Raises:
        ValueError: ``lung_labels`` is not on ``volume``'s grid.
    """
    _check_grid(volume, lung_labels)
    extents = lung_extents(lung_labels) if extents is None else extents
    if not extents:
        return None
    if finding.mask is not None and finding.mask.voxel_count:
        inside = _labels_under(lung_labels, finding.mask)
        counts = {label: int(np.count_nonzero(inside == label)) for label in _SIDE_OF_LABEL}
        if max(counts.values()) > 0:
            return _SIDE_OF_LABEL[max(counts, key=counts.get)]
    centre_kji = volume.lps_to_kji(np.asarray([finding.center_lps_mm], dtype=np.float64))[0]
    if RIGHT_LUNG_LABEL in extents and LEFT_LUNG_LABEL in extents:
        right_i, left_i = extents[RIGHT_LUNG_LABEL][1], extents[LEFT_LUNG_LABEL][1]
        midline_i = (max(right_i) + min(left_i)) / 2.0 if max(right_i) < min(left_i) else (
            (sum(right_i) + sum(left_i)) / 4.0)
    else:
        midline_i = (volume.shape_zyx[2] - 1) / 2.0
    midline_lps = volume.kji_to_lps(np.asarray([[centre_kji[0], centre_kji[1], midline_i]]))[0]
    return "left" if finding.center_lps_mm[0] > midline_lps[0] else "right"


def finding_zone(volume: Volume, finding: Finding, side: str, extents: LungExtents) -> Optional[str]:
    """"upper", "middle" or "lower" third of the ``side`` lung's craniocaudal extent, by the finding's centre.

    A zone, not a lobe (module docstring). The extent runs over the voxel edges of the lung's first and last
    slices; a centre beyond it is clipped into the nearest zone. When ``side``'s lung has no voxels the extent of
    all lungs is used.

    Args:
        volume: the analysed CT (its direction tells which way k runs in LPS z).
        finding: with ``center_lps_mm``.
        side: "right" or "left".
        extents: :func:`lung_extents` of the lung labels.

    Returns:
        The zone, or None when ``extents`` is empty.

    Raises:
        ValueError: ``side`` is not "right" or "left".
    """
    labels = [label for label, name in _SIDE_OF_LABEL.items() if name == side]
    if not labels:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if not extents:
        return None
    k_ranges = [extents[labels[0]][0]] if labels[0] in extents else [e[0] for e in extents.values()]
    k_lo, k_hi = min(r[0] for r in k_ranges) - 0.5, max(r[1] for r in k_ranges) + 0.5
    k = float(volume.lps_to_kji(np.asarray([finding.center_lps_mm], dtype=np.float64))[0][0])
    fraction = float(np.clip((k - k_lo) / (k_hi - k_lo), 0.0, 1.0))
    step = volume.kji_to_lps(np.asarray([[1.0, 0.0, 0.0]]))[0] - volume.kji_to_lps(np.asarray([[0.0, 0.0, 0.0]]))[0]
    if step[2] < 0:  # k runs superior -> inferior
        fraction = 1.0 - fraction
    return _ZONES_LOW_TO_HIGH[min(int(fraction * 3.0), 2)]


def pleural_lung_mask(lung_labels: np.ndarray) -> np.ndarray:
    """The lung mask whose boundary is the pleura: lung voxels plus every axial slice's holes in them.

    A vessel or bronchus the lung segmentation left out shows as a hole in the axial slices it crosses (a region
    not in the lung that does not reach the slice's border in-plane); filling those leaves only the costal,
    mediastinal and diaphragmatic surfaces (and the hilum, where vessels and bronchi join the mediastinum in-plane)
    as boundary.

    Args:
        lung_labels: (Z, Y, X) lung labels or mask (non-zero = lung).

    Returns:
        (Z, Y, X) boolean mask.

    Raises:
        ValueError: ``lung_labels`` is not 3-D.

    Example:
        >>> labels = np.zeros((1, 5, 5), np.uint8); labels[0, 1:4, 1:4] = 1; labels[0, 2, 2] = 0
        >>> int(pleural_lung_mask(labels).sum())
        9
    """
    lung = np.asarray(lung_labels) != 0
    if lung.ndim != 3:
        raise ValueError(f"lung labels must be (Z, Y, X), got shape {lung.shape}")
    regions, _ = ndi.label(~lung, structure=_IN_PLANE)
    on_border = np.unique(np.concatenate([regions[:, 0].ravel(), regions[:, -1].ravel(),
                                          regions[:, :, 0].ravel(), regions[:, :, -1].ravel()]))
    return lung | ((regions > 0) & ~np.isin(regions, on_border))


def pleural_attachment(volume: Volume, lung_labels: np.ndarray, mask: FindingMask) -> Optional[str]:
    """"juxta-pleural" when at most :data:`PLEURA_CONTACT_MM` of lung, or no lung voxel, separates the mask from
    the lung mask's boundary (module docstring), else "none". The volume's edge is not a boundary.

    Args:
        volume: the analysed CT (spacing (x, y, z) mm).
        lung_labels: (Z, Y, X) lung labels on ``volume``'s grid (0 = not lung), with the in-plane holes filled
            (:func:`pleural_lung_mask`; otherwise vessels and bronchi left out of the mask count as pleura).
        mask: the finding's mask on ``volume``'s grid.

    Returns:
        "juxta-pleural", "none", or None (not determined) when the mask is empty or no lung voxel lies near it.

    Raises:
        ValueError: ``lung_labels`` is not on ``volume``'s grid.

    Example:
        >>> pleural_attachment(lps_volume, lung_labels, finding.mask)   # doctest: +SKIP
        'juxta-pleural'
    """
    _check_grid(volume, lung_labels)
    if mask.voxel_count == 0:
        return None
    spacing_zyx = np.asarray(volume.spacing_mm[::-1], dtype=np.float64)
    margin = np.ceil((PLEURA_CONTACT_MM + spacing_zyx.min()) / spacing_zyx).astype(int) + 1
    offset = np.asarray(mask.offset_kji, dtype=int)
    lo = np.maximum(offset - margin, 0)
    hi = np.minimum(offset + mask.array.shape + margin, volume.shape_zyx)
    lung = np.asarray(lung_labels[tuple(slice(a, b) for a, b in zip(lo, hi))]) > 0
    if not lung.any():
        return None
    nodule = np.zeros(lung.shape, np.uint8)
    FindingMask(tuple(int(o - a) for o, a in zip(offset, lo)), mask.array).paste_into(nodule, 1)
    nodule = nodule.astype(bool)
    outside = ~lung
    if not outside.any():
        return "none"
    # gap between voxel surfaces ~ centre distance - one (in-plane) voxel edge
    near_outside = ndi.binary_dilation(outside) | (
        ndi.distance_transform_edt(lung, sampling=spacing_zyx) <= PLEURA_CONTACT_MM + spacing_zyx.min())
    return "juxta-pleural" if bool((nodule & near_outside).any()) else "none"


def with_location(volume: Volume, lung_labels: np.ndarray, findings: list[Finding]) -> list[Finding]:
    """Findings with ``location`` ({"side", "lobe": None, "zone"}) and ``attachment`` set (the attachment against
    :func:`pleural_lung_mask` of ``lung_labels``).

    Args:
        volume: the analysed CT, LPS-oriented, HU.
        lung_labels: (Z, Y, X) lung labels on ``volume``'s grid (1 right, 2 left).
        findings: lung findings whose masks lie on ``volume``'s grid.

    Returns:
        New findings in the same order; ``location`` stays None when no lung was segmented, ``attachment`` when
        a finding has no mask or no lung near it.

    Raises:
        ValueError: ``lung_labels`` is not on ``volume``'s grid.

    Example:
        >>> located = with_location(lps_volume, lung_labels, report.lung_findings())   # doctest: +SKIP
        >>> located[0].location                                                         # doctest: +SKIP
        {'side': 'right', 'lobe': None, 'zone': 'upper'}
    """
    _check_grid(volume, lung_labels)
    extents = lung_extents(lung_labels)
    pleural = pleural_lung_mask(lung_labels) if findings else None
    located = []
    for finding in findings:
        side = finding_side(volume, lung_labels, finding, extents)
        location = None if side is None else {"side": side, "lobe": None,
                                              "zone": finding_zone(volume, finding, side, extents)}
        attachment = (pleural_attachment(volume, pleural, finding.mask) if finding.mask is not None else None)
        located.append(replace(finding, location=location, attachment=attachment))
    return located


def _labels_under(lung_labels: np.ndarray, mask: FindingMask) -> np.ndarray:
    """Lung labels of the mask's voxels (those inside the labelmap)."""
    offset = np.asarray(mask.offset_kji, dtype=int)
    lo = np.maximum(offset, 0)
    hi = np.minimum(offset + mask.array.shape, lung_labels.shape)
    if np.any(hi <= lo):
        return np.zeros(0, dtype=np.asarray(lung_labels).dtype)
    crop = np.asarray(lung_labels[tuple(slice(a, b) for a, b in zip(lo, hi))])
    sub = mask.array[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset))]
    return crop[sub]


def _check_grid(volume: Volume, lung_labels: np.ndarray) -> None:
    if tuple(np.shape(lung_labels)) != tuple(volume.shape_zyx):
        raise ValueError(f"lung labels of shape {np.shape(lung_labels)} are not on the volume's grid "
                         f"{volume.shape_zyx}")
