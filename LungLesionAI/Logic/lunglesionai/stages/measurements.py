"""Size, position, density and texture of a segmented nodule, in LPS millimetres and HU.

Axes follow the Fleischner Society's recommendations for measuring pulmonary nodules (Bankier et al.,
Radiology 285(2):584-600, 2017, doi:10.1148/radiol.2017162894) and RECIST 1.1 (Eisenhauer et al., Eur J Cancer
45(2):228-247, 2009, doi:10.1016/j.ejca.2008.10.026): on the axial slice where the nodule is largest, the long
axis is its longest diameter and the short axis the longest diameter perpendicular to it. Both are measured on
the mask's boundary contour (marching squares at the 0.5 level, i.e. midway between inside and outside voxel
centres, with :func:`skimage.measure.find_contours`), so they are exact to within a voxel.

Texture is a CT-appearance rule, not pathology: the fraction of the nodule's interior voxels at or above
:data:`SOLID_COMPONENT_MIN_HU` decides "solid", "part-solid" or "ground-glass". The thresholds were fitted for
the macro F1 against the majority texture rating of the LIDC-IDRI radiologists on the training split of
``../shared/data/lidc_voi`` (Solid and Solid/Mixed -> solid, Part Solid/Mixed -> part-solid, Non-Solid/GGO and
Non-Solid/Mixed -> ground-glass). Texture is used in this project as a radiological surrogate of invasiveness
(ground-glass ~ pre-invasive, part-solid ~ minimally invasive, solid ~ invasive).

The guideline measurements (:func:`with_guideline_measurements`) are rules on the mask and its HU, not models:

* mean diameter = (long axis + short axis) / 2, the size Lung-RADS v2022 (ACR) and Fleischner 2017 (MacMahon et
  al., Radiology 284(1):228-243, 2017, doi:10.1148/radiol.2017161659) use; left unrounded here.
* solid component of a part-solid nodule (:func:`solid_component`): the nodule's voxels at or above
  :data:`SOLID_COMPONENT_MIN_HU` (−400 HU), largest 6-connected group. Fixed HU thresholds for the solid part of
  subsolid nodules were studied by Scholten et al. (Eur Radiol 25(2):488-496, 2015, doi:10.1007/s00330-014-3427-z;
  −300 HU detected a solid component with 90 % sensitivity, 88 % specificity, and −130 HU gave solid-part
  diameters matching manual ones) and Lee et al. (PLoS One 2018, doi:10.1371/journal.pone.0205490; −400 HU as
  the "low" and −160 HU as the "high" threshold). −400 HU is the inclusive end of that range: it takes in the
  denser ground glass, so the solid component tends to come out larger than a reader measuring at a mediastinal
  window finds (an over- rather than an under-estimate).
* calcification: :func:`lunglesionai.stages.calcification.calcification_pattern` (an HU rule).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import find_contours

from lunglesionai.core.findings import Finding, FindingMask, equivalent_diameter_mm
from lunglesionai.core.volume import Volume
from lunglesionai.stages.calcification import BENIGN_CALCIFICATION_PATTERNS, calcification_pattern

__all__ = [
    "GROUND_GLASS_MAX_FRACTION",
    "SOLID_COMPONENT_MIN_HU",
    "SOLID_MIN_FRACTION",
    "TEXTURES",
    "NoduleMeasurements",
    "SolidComponent",
    "axial_axes_mm",
    "slice_axes_endpoints",
    "classify_texture",
    "mean_diameter_mm",
    "measure_mask",
    "solid_component",
    "solid_fraction",
    "with_guideline_measurements",
]

#: Voxels at or above this HU belong to the nodule's solid component.
SOLID_COMPONENT_MIN_HU = -400.0
#: A nodule whose interior is at least this fraction solid is "solid".
SOLID_MIN_FRACTION = 0.44
#: A nodule whose interior is at most this fraction solid is "ground-glass"; in between: "part-solid".
GROUND_GLASS_MAX_FRACTION = 0.36
TEXTURES = ("solid", "part-solid", "ground-glass")
#: The interior (mask eroded by one voxel in-plane) is used for texture when it keeps at least this many voxels.
_MIN_INTERIOR_VOXELS = 8
_IN_PLANE_CROSS = np.zeros((3, 3, 3), bool)
_IN_PLANE_CROSS[1] = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class NoduleMeasurements:
    """What :func:`measure_mask` reports about one nodule mask.

    Args:
        center_lps_mm: centroid (x, y, z) in LPS mm.
        bbox_lps_mm: ((x0, y0, z0), (x1, y1, z1)) LPS mm, min and max corners of the box enclosing the voxels'
            full extent (voxel edges, not centres), taken over the 8 transformed corners of the index box.
        diameter_mm: diameter of the sphere of the same volume.
        long_axis_mm, short_axis_mm: axial long axis and longest perpendicular diameter (Fleischner / RECIST).
        mean_diameter_mm: their mean (:func:`mean_diameter_mm`).
        volume_mm3: voxel count × voxel volume.
        mean_hu: mean HU inside the mask.
        texture: "solid", "part-solid" or "ground-glass" (:func:`classify_texture`).
        solid_fraction: the interior's fraction at or above :data:`SOLID_COMPONENT_MIN_HU`.
    """

    center_lps_mm: tuple[float, float, float]
    bbox_lps_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    diameter_mm: float
    long_axis_mm: float
    short_axis_mm: float
    volume_mm3: float
    mean_hu: float
    texture: str
    solid_fraction: float

    @property
    def mean_diameter_mm(self) -> float:
        """(long_axis_mm + short_axis_mm) / 2, unrounded."""
        return mean_diameter_mm(self.long_axis_mm, self.short_axis_mm)

    def finding_fields(self) -> dict:
        """The :class:`lunglesionai.core.findings.Finding` fields these numbers set (centre, box, diameter, axes,
        mean diameter, volume, mean HU; not texture, whose source the caller decides), for ``dataclasses.replace``."""
        return dict(
            center_lps_mm=tuple(self.center_lps_mm),
            bbox_lps_mm=tuple(tuple(c) for c in self.bbox_lps_mm),
            diameter_mm=self.diameter_mm,
            long_axis_mm=self.long_axis_mm,
            short_axis_mm=self.short_axis_mm,
            mean_diameter_mm=self.mean_diameter_mm,
            volume_mm3=self.volume_mm3,
            mean_hu=self.mean_hu,
        )


def measure_mask(volume: Volume, mask: FindingMask) -> NoduleMeasurements:
    """Measure a nodule mask on ``volume``'s grid.

    Args:
        volume: CT in HU; its spacing and direction give the physical sizes and LPS positions (the axial plane
            is the array's (j, i) plane, so reorient to LPS first for oblique acquisitions).
        mask: boolean crop and (k, j, i) offset on the volume's grid; it must lie inside the volume.

    Returns:
        :class:`NoduleMeasurements` (mm, mm³, HU, LPS).

    Raises:
        ValueError: the mask is not 3-D, is empty, or reaches outside the volume.

    Example:
        >>> m = measure_mask(volume, segment_nodule(volume, centre_kji, 4.0))   # doctest: +SKIP
        >>> round(m.diameter_mm, 1), m.texture                                  # doctest: +SKIP
    """
    array, offset = _checked_mask(volume, mask)
    box = tuple(slice(o, o + n) for o, n in zip(offset, array.shape))
    hu = np.asarray(volume.hu[box], dtype=np.float64)
    kji = np.argwhere(array) + offset
    volume_mm3 = float(len(kji) * volume.voxel_volume_mm3)
    centre = volume.kji_to_lps(kji.mean(axis=0, keepdims=True))[0]
    long_axis, short_axis = axial_axes_mm(array, volume.spacing_mm[:2])
    interior = ndi.binary_erosion(array, _IN_PLANE_CROSS)
    texture_values = hu[interior] if interior.sum() >= _MIN_INTERIOR_VOXELS else hu[array]
    return NoduleMeasurements(
        center_lps_mm=tuple(float(c) for c in centre),
        bbox_lps_mm=_bbox_lps(volume, kji.min(axis=0), kji.max(axis=0)),
        diameter_mm=equivalent_diameter_mm(volume_mm3),
        long_axis_mm=long_axis,
        short_axis_mm=short_axis,
        volume_mm3=volume_mm3,
        mean_hu=float(hu[array].mean()),
        texture=classify_texture(texture_values),
        solid_fraction=solid_fraction(texture_values),
    )


def _checked_mask(volume: Volume, mask: FindingMask) -> tuple[np.ndarray, np.ndarray]:
    """(boolean crop, (k, j, i) offset) of ``mask``; ValueError unless it is 3-D, not empty and inside ``volume``."""
    array = np.asarray(mask.array).astype(bool)
    offset = np.asarray(mask.offset_kji, dtype=int).reshape(-1)
    if array.ndim != 3 or offset.size != 3:
        raise ValueError(f"mask must be 3-D with a (k, j, i) offset, got shape {array.shape}, offset {offset}")
    if not array.any():
        raise ValueError("mask is empty: nothing to measure")
    if np.any(offset < 0) or np.any(offset + array.shape > np.asarray(volume.shape_zyx)):
        raise ValueError(f"mask at offset {tuple(offset)} with shape {array.shape} reaches outside the volume "
                         f"of shape {volume.shape_zyx}")
    return array, offset


def mean_diameter_mm(long_axis_mm: float, short_axis_mm: float) -> float:
    """Mean axial diameter (mm): (long axis + perpendicular short axis) / 2, unrounded.

    Lung-RADS v2022 (ACR) rounds it to 0.1 mm, Fleischner 2017 (MacMahon et al., Radiology 284(1):228-243,
    doi:10.1148/radiol.2017161659; measuring: Bankier et al., Radiology 285(2):584-600, 2017) to the nearest mm;
    the rules do the rounding.

    Raises:
        ValueError: an axis is negative or not finite, or the short axis exceeds the long one.

    Example:
        >>> mean_diameter_mm(8.0, 6.5)
        7.25
    """
    long_axis, short_axis = float(long_axis_mm), float(short_axis_mm)
    if not (np.isfinite(long_axis) and np.isfinite(short_axis)) or min(long_axis, short_axis) < 0:
        raise ValueError(f"axes must be finite and >= 0 mm, got {long_axis_mm}, {short_axis_mm}")
    if short_axis > long_axis + 1e-9:
        raise ValueError(f"short axis {short_axis_mm} mm exceeds the long axis {long_axis_mm} mm")
    return (long_axis + short_axis) / 2.0


@dataclass(frozen=True)
class SolidComponent:
    """The solid component of a (part-solid) nodule, from :func:`solid_component`.

    Args:
        mask: its voxels on the volume's grid (cropped boolean (dz, dy, dx) and (k, j, i) offset).
        long_axis_mm, short_axis_mm: its axial long axis and longest perpendicular diameter, on its own largest
            axial slice (:func:`axial_axes_mm`).
        mean_diameter_mm: their mean, unrounded.
        volume_mm3: voxel count × voxel volume.
    """

    mask: FindingMask
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    volume_mm3: float

    def finding_fields(self) -> dict:
        """The ``solid_component_*`` fields of :class:`lunglesionai.core.findings.Finding`."""
        return dict(
            solid_component_long_axis_mm=self.long_axis_mm,
            solid_component_short_axis_mm=self.short_axis_mm,
            solid_component_mean_diameter_mm=self.mean_diameter_mm,
            solid_component_volume_mm3=self.volume_mm3,
        )


def solid_component(volume: Volume, mask: FindingMask) -> Optional[SolidComponent]:
    """The solid component of a nodule: its largest 6-connected group of voxels at or above
    :data:`SOLID_COMPONENT_MIN_HU` (an HU rule, not a model; the thresholds' sources are in the module docstring).

    Args:
        volume: CT in HU (spacing (x, y, z) mm; the axial plane is the array's (j, i) plane, so LPS-oriented).
        mask: the whole nodule's mask on ``volume``'s grid.

    Returns:
        :class:`SolidComponent` (mm, mm³), or None when no voxel of the nodule reaches the threshold.

    Raises:
        ValueError: the mask is not 3-D, is empty, or reaches outside the volume.

    Example:
        >>> part = solid_component(volume, finding.mask)             # doctest: +SKIP
        >>> part.mean_diameter_mm if part else None                  # doctest: +SKIP
    """
    array, offset = _checked_mask(volume, mask)
    box = tuple(slice(o, o + n) for o, n in zip(offset, array.shape))
    dense = array & (np.asarray(volume.hu[box]) >= SOLID_COMPONENT_MIN_HU)
    labels, n = ndi.label(dense)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == int(np.argmax(sizes)) + 1
    long_axis, short_axis = axial_axes_mm(largest, volume.spacing_mm[:2])
    return SolidComponent(
        mask=FindingMask.cropped(largest, tuple(int(o) for o in offset)),
        long_axis_mm=long_axis,
        short_axis_mm=short_axis,
        mean_diameter_mm=mean_diameter_mm(long_axis, short_axis),
        volume_mm3=float(largest.sum() * volume.voxel_volume_mm3),
    )


def with_guideline_measurements(volume: Volume, finding: Finding) -> Finding:
    """``finding`` with the measurements Lung-RADS and Fleischner use, from its mask and texture.

    Sets ``mean_diameter_mm`` (from the finding's axial axes), the ``solid_component_*`` fields (only for texture
    "part-solid"; None otherwise or when no voxel reaches :data:`SOLID_COMPONENT_MIN_HU`), ``calcified`` and
    ``extra["calcification"]`` (the pattern, :func:`lunglesionai.stages.calcification.calcification_pattern`).
    Without a mask only the mean diameter is set (``calcified`` stays None: not determined).

    Args:
        volume: CT in HU, LPS-oriented (the axial plane is the array's (j, i) plane); the mask's grid.
        finding: a nodule or mass with its final mask and texture.

    Returns:
        A new Finding (``finding`` is not modified).

    Raises:
        ValueError: the mask reaches outside the volume or is not 3-D.

    Example:
        >>> measured = with_guideline_measurements(lps_volume, finding)   # doctest: +SKIP
        >>> measured.mean_diameter_mm, measured.calcified                 # doctest: +SKIP
    """
    fields: dict = dict(solid_component_long_axis_mm=None, solid_component_short_axis_mm=None,
                        solid_component_mean_diameter_mm=None, solid_component_volume_mm3=None)
    if finding.long_axis_mm is not None and finding.short_axis_mm is not None:
        fields["mean_diameter_mm"] = mean_diameter_mm(finding.long_axis_mm, finding.short_axis_mm)
    if finding.mask is None or finding.mask.voxel_count == 0:
        return replace(finding, **fields)
    if finding.texture == "part-solid":
        part = solid_component(volume, finding.mask)
        if part is not None:
            fields.update(part.finding_fields())
    pattern = calcification_pattern(volume, finding.mask)
    fields["calcified"] = pattern in BENIGN_CALCIFICATION_PATTERNS
    return replace(finding, **fields, extra={**finding.extra, "calcification": pattern})


def _bbox_lps(volume: Volume, kji_min: np.ndarray, kji_max: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """LPS min/max corners over the 8 corners of the voxel-edge box [min − ½, max + ½] (any direction)."""
    lo, hi = kji_min - 0.5, kji_max + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    lps = volume.kji_to_lps(corners)
    return tuple(float(v) for v in lps.min(axis=0)), tuple(float(v) for v in lps.max(axis=0))


def solid_fraction(hu_values: np.ndarray) -> float:
    """Fraction of ``hu_values`` at or above :data:`SOLID_COMPONENT_MIN_HU`.

    Raises:
        ValueError: ``hu_values`` is empty.
    """
    values = np.asarray(hu_values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("hu_values is empty")
    return float(np.mean(values >= SOLID_COMPONENT_MIN_HU))


def classify_texture(hu_values: np.ndarray) -> str:
    """CT texture of a nodule from the HU values inside it (a CT-appearance rule, not pathology).

    Args:
        hu_values: HU of the nodule's voxels (any shape; :func:`measure_mask` passes the interior, i.e. the
            mask eroded by one voxel in-plane, to limit partial volume at the border).

    Returns:
        "solid" if the solid fraction (share ≥ :data:`SOLID_COMPONENT_MIN_HU`) is ≥ :data:`SOLID_MIN_FRACTION`,
        "ground-glass" if it is ≤ :data:`GROUND_GLASS_MAX_FRACTION`, else "part-solid".

    Raises:
        ValueError: ``hu_values`` is empty.

    Example:
        >>> classify_texture(np.full(100, 20.0)), classify_texture(np.full(100, -650.0))
        ('solid', 'ground-glass')
    """
    fraction = solid_fraction(hu_values)
    if fraction >= SOLID_MIN_FRACTION:
        return "solid"
    if fraction <= GROUND_GLASS_MAX_FRACTION:
        return "ground-glass"
    return "part-solid"


def axial_axes_mm(mask: np.ndarray, spacing_xy_mm: tuple[float, float]) -> tuple[float, float]:
    """Long and short axis (mm) on the axial slice (array axis 0) where ``mask`` has the largest area.

    Args:
        mask: (Z, Y, X) boolean, not empty.
        spacing_xy_mm: in-plane voxel size (x, y) in mm.

    Returns:
        (long_axis_mm, short_axis_mm): the longest distance between two points of the slice's boundary contour,
        and the longest chord of the contour perpendicular to it. Ties between slices go to the first largest.

    Raises:
        ValueError: the mask is not 3-D or is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(f"axial_axes_mm needs a non-empty 3-D mask, got shape {mask.shape}")
    k = int(np.argmax(mask.sum(axis=(1, 2))))
    long_ends, short_ends = slice_axes_endpoints(mask[k], (spacing_xy_mm[1], spacing_xy_mm[0]))
    return (float(np.linalg.norm(long_ends[1] - long_ends[0])), float(np.linalg.norm(short_ends[1] - short_ends[0])))


def slice_axes_endpoints(section: np.ndarray, spacing_yx_mm: tuple[float, float],
                         n_steps: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """End points of the long axis and of the longest chord perpendicular to it, on one axial slice.

    Args:
        section: (Y, X) boolean slice of a mask, not empty.
        spacing_yx_mm: its pixel size (y = row, x = column) in mm.
        n_steps: lines perpendicular to the long axis tried for the short axis.

    Returns:
        ``(long_ends, short_ends)``, each (2, 2) points (y, x) in mm from the slice's pixel (0, 0) centre: the long
        axis joins the two farthest points of the boundary contour (marching squares at 0.5), the short axis is the
        longest chord of the contour perpendicular to it (identical points when the slice is a single pixel).
    """
    contours = [c - 1.0 for c in find_contours(np.pad(np.asarray(section, np.float64), 1), 0.5)]
    polygons = [c * np.asarray(spacing_yx_mm, float) for c in contours]  # contour points are (row, col) = (y, x)
    points = np.vstack(polygons)
    dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    a, b = np.unravel_index(np.argmax(dist), dist.shape)
    long_ends = points[[a, b]]
    if dist[a, b] == 0:
        return long_ends, long_ends.copy()
    u = (points[b] - points[a]) / dist[a, b]
    v = np.array([-u[1], u[0]])
    edges = np.vstack([np.stack([p[:-1], p[1:]], axis=1) for p in polygons])  # (E, 2 ends, 2 coords)
    eu, ev = edges @ u, edges @ v
    ts = np.linspace(eu.min(), eu.max(), n_steps)[1:-1]
    lo, hi = eu.min(axis=1), eu.max(axis=1)
    crosses = (lo[None, :] <= ts[:, None]) & (ts[:, None] <= hi[None, :]) & (hi > lo)[None, :]
    frac = (ts[:, None] - eu[None, :, 0]) / np.where(hi > lo, eu[:, 1] - eu[:, 0], 1.0)[None, :]
    at = ev[None, :, 0] + frac * (ev[:, 1] - ev[:, 0])[None, :]
    top = np.where(crosses, at, -np.inf).max(axis=1)
    bottom = np.where(crosses, at, np.inf).min(axis=1)
    width = np.where(np.isfinite(top) & np.isfinite(bottom), top - bottom, 0.0)
    if not width.size or width.max() <= 0:
        return long_ends, np.repeat(long_ends[:1], 2, axis=0)
    n = int(np.argmax(width))
    return long_ends, np.array([ts[n] * u + bottom[n] * v, ts[n] * u + top[n] * v])
