"""Lesion appearance borrowed from real tissue: the host's own noise texture and necrotic centres.

Painted lesions (:mod:`lunglesionai.datagen.synthetic_lesions`) used to carry Gaussian noise of the host's measured
standard deviation; a detector can learn that synthetic grain. Here

* **texture residual from the host**: the high-pass residual of the host's own homogeneous soft tissue (HU minus
  its in-plane Gaussian smoothing of :data:`RESIDUAL_SMOOTHING_MM`) is cut out at a random place and used as the
  lesion's noise, so the lesion has the scanner's real noise power spectrum and kernel. Homogeneous: smoothed HU
  within :data:`SOFT_TISSUE_HU`, at least :data:`TISSUE_MARGIN_MM` inside such tissue, and an organ-scale gradient
  (Gaussian of :data:`HOMOGENEITY_SMOOTHING_MM`) below :data:`MAX_GRADIENT_HU_PER_MM`, so organ edges stay out and
  the noise inside is kept whole;
* **necrotic centres**: lesions of :data:`NECROTIC_CLASSES` of at least :data:`NECROSIS_MIN_DIAMETER_MM` get, with
  probability ``necrosis_probability``, a central core of :data:`NECROSIS_CORE_SCALE` of their size at near-water
  HU (:data:`NECROSIS_HU_RANGE`; liquefactive necrosis in large metastases and sarcomas: Sica, Ji & Ros, AJR
  2000;174:691-698; Kransdorf & Murphey, RadioGraphics 2016;36:1931-1948).

The edge profile stays the partial-volume rendering plus the class's margin blur of
:func:`lunglesionai.datagen.synthetic_lesions.paint_lesion`. Training data, not clinical images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "NECROSIS_CORE_SCALE",
    "NECROSIS_HU_RANGE",
    "NECROSIS_MIN_DIAMETER_MM",
    "HOMOGENEITY_SMOOTHING_MM",
    "MAX_GRADIENT_HU_PER_MM",
    "NECROTIC_CLASSES",
    "TISSUE_MARGIN_MM",
    "RESIDUAL_SMOOTHING_MM",
    "SOFT_TISSUE_HU",
    "LesionAppearance",
    "draw_necrosis",
    "residual_patch",
    "tissue_residual",
]

RESIDUAL_SMOOTHING_MM = 1.5
"""In-plane Gaussian sigma (mm) whose residual is the texture: noise and sub-2-mm grain, not organ structure."""
SOFT_TISSUE_HU = (-150.0, 200.0)
"""Smoothed HU of the homogeneous tissue the residual is taken from (fat, muscle, parenchyma)."""
HOMOGENEITY_SMOOTHING_MM = 3.0
"""In-plane Gaussian sigma (mm) of the image whose gradient decides where tissue is homogeneous (organ scale)."""
MAX_GRADIENT_HU_PER_MM = 5.0
"""Organ-scale gradient below which tissue counts as homogeneous: a 150 HU organ edge smoothed by 3 mm peaks near
20 HU/mm, 30 HU noise on 0.7 mm pixels smoothed the same way stays under 1 HU/mm."""
TISSUE_MARGIN_MM = 2.0
"""Residual is taken at least this far inside soft tissue (its edges hold structure, not noise)."""
NECROTIC_CLASSES = ("liver_metastasis", "soft_tissue_mass", "kidney_mass", "lymph_node_mediastinal",
                    "lymph_node_retroperitoneal")
"""Classes that may have a necrotic centre (necrotic nodes: metastatic and lymphoma nodes)."""
NECROSIS_MIN_DIAMETER_MM = 20.0
"""Smallest long axis (mm) given a necrotic centre."""
NECROSIS_CORE_SCALE = (0.35, 0.65)
"""Size of the core relative to the lesion (uniform)."""
NECROSIS_HU_RANGE = (0.0, 30.0)
"""HU of the necrotic core: near-water fluid."""
MIN_VALID_SHARE = 0.6
"""A residual patch is used when at least this share of its voxels is homogeneous tissue (best of the tries)."""
PATCH_TRIES = 20


@dataclass(frozen=True)
class LesionAppearance:
    """What :func:`lunglesionai.datagen.synthetic_lesions.place_lesions` borrows from real tissue.

    Args:
        real_texture: use the host's residual (:func:`tissue_residual`) as the lesion's noise.
        necrosis_probability: chance that a lesion of :data:`NECROTIC_CLASSES` >= :data:`NECROSIS_MIN_DIAMETER_MM`
            gets a necrotic centre.

    Raises:
        ValueError: ``necrosis_probability`` outside [0, 1].
    """

    real_texture: bool = True
    necrosis_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.necrosis_probability <= 1.0:
            raise ValueError(f"LesionAppearance.necrosis_probability must be in [0, 1], got {self.necrosis_probability}")


def tissue_residual(hu: np.ndarray, body: np.ndarray, spacing_zyx_mm) -> tuple[np.ndarray, np.ndarray]:
    """The host's high-pass residual and where it is homogeneous soft tissue.

    Args:
        hu: (Z, Y, X) HU.
        body: (Z, Y, X) bool, the voxels to consider (e.g. body without lungs).
        spacing_zyx_mm: voxel size (z, y, x), mm.

    Returns:
        (residual (Z, Y, X) float32 HU = HU − in-plane Gaussian smoothing, valid (Z, Y, X) bool).

    Raises:
        ValueError: ``body``'s shape differs from ``hu``'s.

    Example:
        >>> r, ok = tissue_residual(np.zeros((4, 16, 16)), np.ones((4, 16, 16), bool), (2.0, 1.0, 1.0))
        >>> r.shape, bool(ok.any())
        ((4, 16, 16), True)
    """
    if np.shape(body) != np.shape(hu):
        raise ValueError(f"body mask shape {np.shape(body)} differs from the image's {np.shape(hu)}")
    hu = np.asarray(hu, np.float32)
    in_plane = np.array([0.0, 1.0 / spacing_zyx_mm[1], 1.0 / spacing_zyx_mm[2]])
    smooth = ndi.gaussian_filter(hu, RESIDUAL_SMOOTHING_MM * in_plane)
    coarse = ndi.gaussian_filter(hu, HOMOGENEITY_SMOOTHING_MM * in_plane)
    gy, gx = np.gradient(coarse, *spacing_zyx_mm[1:], axis=(1, 2))
    gradient = np.hypot(gy, gx)  # HU/mm, in-plane
    tissue = np.asarray(body, bool) & (smooth >= SOFT_TISSUE_HU[0]) & (smooth <= SOFT_TISSUE_HU[1])
    if not tissue.any():
        return np.zeros(hu.shape, np.float32), tissue
    margin = np.maximum(np.round(TISSUE_MARGIN_MM * in_plane).astype(int), 0)
    inner = ndi.binary_erosion(tissue, np.ones(2 * margin + 1, bool)) if margin.any() else tissue
    if not inner.any():
        return (hu - smooth).astype(np.float32), inner
    valid = inner & (gradient <= MAX_GRADIENT_HU_PER_MM)
    return (hu - smooth).astype(np.float32), valid


def residual_patch(residual: np.ndarray, valid: np.ndarray, shape: tuple[int, int, int],
                   rng: np.random.Generator) -> np.ndarray | None:
    """A ``shape`` patch of ``residual`` at a random place, zero where it is not homogeneous tissue.

    The best of :data:`PATCH_TRIES` random corners (most valid voxels) is used when at least
    :data:`MIN_VALID_SHARE` of it is valid; else None (the caller falls back to synthetic noise).

    Returns:
        (shape) float32 HU, or None.
    """
    limits = np.asarray(residual.shape) - np.asarray(shape)
    if np.any(limits < 0) or not valid.any():
        return None
    best, best_share = None, MIN_VALID_SHARE
    for _ in range(PATCH_TRIES):
        corner = [int(rng.integers(0, m + 1)) for m in limits]
        box = tuple(slice(c, c + s) for c, s in zip(corner, shape))
        share = float(valid[box].mean())
        if share >= best_share:
            best, best_share = box, share
    return None if best is None else np.where(valid[best], residual[best], 0.0).astype(np.float32)


def draw_necrosis(lesion_class: str, long_axis_mm: float, appearance: LesionAppearance | None,
                  rng: np.random.Generator) -> tuple[float, float] | None:
    """(core scale, core HU) of a necrotic centre, or None (class, size or chance say no).

    One random number is drawn for every call with an appearance (the stream does not depend on the class).
    """
    if appearance is None:
        return None
    draws = rng.random(3)
    if (lesion_class not in NECROTIC_CLASSES or long_axis_mm < NECROSIS_MIN_DIAMETER_MM
            or draws[0] >= appearance.necrosis_probability):
        return None
    scale = NECROSIS_CORE_SCALE[0] + draws[1] * (NECROSIS_CORE_SCALE[1] - NECROSIS_CORE_SCALE[0])
    core_hu = NECROSIS_HU_RANGE[0] + draws[2] * (NECROSIS_HU_RANGE[1] - NECROSIS_HU_RANGE[0])
    return float(scale), float(core_hu)
