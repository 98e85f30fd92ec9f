"""Lung registration of a prior CT to a current CT: rigid → affine → B-spline, at a reduced resolution.

Used to compare a follow-up scan with an earlier one (issue 16): prior nodule centres are mapped into the current
scan (:meth:`LungRegistration.map_points`) and matched to the current findings; the prior can be shown on the
current grid (:meth:`LungRegistration.resample_prior`).

Method (SimpleITK registration framework: Lowekamp et al., "The design of SimpleITK", Front Neuroinform 7:45, 2013,
doi:10.3389/fninf.2013.00045; Yaniv et al., "SimpleITK image-analysis notebooks", J Digit Imaging 31:290–303, 2018,
doi:10.1007/s10278-017-0037-8):

1. **Working images.** Each CT is cropped to its lung mask's bounding box plus ``margin_mm``, clipped to the
   :data:`REGISTRATION_HU_WINDOW` (air to soft tissue: lung parenchyma, vessels and the pleural boundary carry the
   signal; bone and contrast do not dominate), averaged by integer bin shrinking and resampled onto an isotropic
   ``working_spacing_mm`` grid (3 mm by default). The metric only counts voxels of the current lung mask dilated
   by ``mask_dilation_mm`` (so the lung boundary contributes, the abdomen and the arms do not).
2. **Rigid** (Euler 3-D): started by aligning the centroids of the two lung masks, rotation about the current
   lungs' centroid.
3. **Affine**, started from the rigid result (breath-hold depth changes scale the chest).
4. **B-spline free-form deformation** (Rueckert et al., "Nonrigid registration using free-form deformations:
   application to breast MR images", IEEE TMI 18(8):712–721, 1999, doi:10.1109/42.796284) on a control-point mesh
   of about ``bspline_mesh_spacing_mm``, optimised with L-BFGS-B, composed after the affine.

Metric: mean squares of the windowed HU by default (both scans are CT of one patient, so HU correspond), or Mattes
mutual information (Mattes et al., "PET-CT image registration in the chest using free-form deformations", IEEE TMI
22(1):120–128, 2003, doi:10.1109/TMI.2003.809072) for scans of different kernels or dose. Rigid and affine use
multi-resolution (``shrink_factors``) with conjugate-gradient line search and physical-shift optimiser scales.

The transform maps **current LPS mm → prior LPS mm** (ITK's fixed → moving convention, fixed = current); prior
points are mapped to the current scan by inverting it numerically (a Newton-type iteration with the affine part's
matrix; the B-spline part is smooth and small, so it converges in a few steps to ``inverse_tolerance_mm``).

Threads: SimpleITK's global default (``sitk.ProcessObject.SetGlobalDefaultNumberOfThreads``); this module never sets
it. Measured with the defaults on 2 threads (a shared 2-core machine, load average about 3) on pairs of
:mod:`lunglesionai.datagen.followup_pairs` (12 mm breathing-like deformation, 8 mm shift, rotation up to 3°):
a clinical-size phantom (280 × 512 × 512, 0.7 × 0.7 × 1.25 mm) took 10–16 s, with nodule-centre errors of mean
0.4–0.5 mm, max 1.1 mm (7 nodules, 4.7–7.9 mm true displacement); the real 1.5 mm chest crop of ``../shared/data/ct``
(164 × 126 × 120) took 8 s, mean 0.4 mm, max 0.5 mm (LIDC nodules, 9–16 mm displacement). These are synthetic
deformations of one scan, not real follow-up pairs (where anatomy, inspiration and reconstruction differ more).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from lunglesionai.core.sitk_bridge import volume_from_sitk, volume_to_sitk
from lunglesionai.core.volume import Volume

__all__ = [
    "METRICS",
    "REGISTRATION_HU_WINDOW",
    "REGISTRATION_STAGES",
    "LungRegistration",
    "RegistrationConfig",
    "register_lungs",
]

logger = logging.getLogger(__name__)

REGISTRATION_HU_WINDOW = (-1000.0, 200.0)
"""HU range the working images are clipped to (air … soft tissue), HU."""
REGISTRATION_STAGES = ("rigid", "affine", "bspline")
"""The transforms that can run, in this order."""
METRICS = ("mean_squares", "mattes")
"""Similarity metrics: mean squared HU difference, or Mattes mutual information."""
OUTSIDE_HU = -1000.0
"""HU given to voxels that map outside the prior in :meth:`LungRegistration.resample_prior` (air)."""


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of :func:`register_lungs` (method: module docstring).

    Args:
        working_spacing_mm: isotropic voxel size of the working images, mm (> 0; 2–3 mm keeps nodule-centre errors
            around 1–2 mm on the project's pairs).
        margin_mm: added around each lung mask's bounding box before cropping, mm (>= 0).
        mask_dilation_mm: the metric mask is the current lung mask dilated by this, mm (>= 0).
        stages: transforms to run, a non-empty ordered subset of :data:`REGISTRATION_STAGES`.
        metric: one of :data:`METRICS`.
        histogram_bins: Mattes histogram bins (>= 8).
        sampling_fraction: share of the masked fixed voxels the metric samples, in (0, 1].
        max_metric_samples: …but at most about this many voxels (>= 1000): the cost of every stage is linear in
            the samples, so a large scan takes no longer than a small one at ``working_spacing_mm``.
        shrink_factors: multi-resolution shrink factors of the rigid and affine stages (each >= 1, last 1).
        smoothing_sigmas_mm: Gaussian sigma per level, mm (same length as ``shrink_factors``).
        rigid_iterations, affine_iterations, bspline_iterations: optimiser iterations per level (>= 1).
        bspline_mesh_spacing_mm: control-point spacing of the B-spline mesh, mm (> 0). ITK's metric works with the
            full parameter Jacobian, so the B-spline stage costs samples × control points: a finer mesh is slower.
        inverse_tolerance_mm: :meth:`LungRegistration.map_points` stops when a point maps back within this, mm.
        inverse_iterations: at most this many inversion steps.
        seed: seed of the metric's random sampling (same seed, same result on one thread; with several threads
            the sums run in another order and nodule-centre errors vary by a few tenths of a mm between runs).

    Raises:
        ValueError: a field is out of range (the message names it and its value).
    """

    working_spacing_mm: float = 3.0
    margin_mm: float = 15.0
    mask_dilation_mm: float = 9.0
    stages: tuple[str, ...] = REGISTRATION_STAGES
    metric: str = "mean_squares"
    histogram_bins: int = 32
    sampling_fraction: float = 0.3
    max_metric_samples: int = 5000
    shrink_factors: tuple[int, ...] = (2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 0.0)
    rigid_iterations: int = 60
    affine_iterations: int = 60
    bspline_iterations: int = 30
    bspline_mesh_spacing_mm: float = 60.0
    inverse_tolerance_mm: float = 0.01
    inverse_iterations: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        checks = {
            "working_spacing_mm": self.working_spacing_mm > 0,
            "margin_mm": self.margin_mm >= 0,
            "mask_dilation_mm": self.mask_dilation_mm >= 0,
            "stages": bool(stages) and list(stages) == [s for s in REGISTRATION_STAGES if s in stages],
            "metric": self.metric in METRICS,
            "histogram_bins": self.histogram_bins >= 8,
            "sampling_fraction": 0 < self.sampling_fraction <= 1,
            "max_metric_samples": self.max_metric_samples >= 1000,
            "shrink_factors": bool(self.shrink_factors) and min(self.shrink_factors) >= 1
            and self.shrink_factors[-1] == 1,
            "smoothing_sigmas_mm": len(self.smoothing_sigmas_mm) == len(self.shrink_factors)
            and min(self.smoothing_sigmas_mm) >= 0,
            "rigid_iterations": self.rigid_iterations >= 1,
            "affine_iterations": self.affine_iterations >= 1,
            "bspline_iterations": self.bspline_iterations >= 1,
            "bspline_mesh_spacing_mm": self.bspline_mesh_spacing_mm > 0,
            "inverse_tolerance_mm": self.inverse_tolerance_mm > 0,
            "inverse_iterations": self.inverse_iterations >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"RegistrationConfig.{name} is out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class LungRegistration:
    """The result of :func:`register_lungs`: a transform from current LPS mm to prior LPS mm, and its use.

    Args:
        transform: SimpleITK transform, current LPS mm → prior LPS mm (fixed → moving).
        affine: the rigid/affine part alone (3×3 matrix used by the inversion), or None when only B-spline ran.
        current_geometry: (shape (Z, Y, X), spacing (x, y, z) mm, origin LPS mm, direction row-major) of the current.
        seconds: wall time of the registration, s.
        stages: the transforms that ran, in order (names of :data:`REGISTRATION_STAGES`).
        metric_value: the final metric value of the last stage (mean squares: HU²; Mattes: negative MI).
        config: the settings used.
    """

    transform: sitk.Transform
    affine: sitk.AffineTransform | None
    current_geometry: tuple
    seconds: float
    stages: list[str]
    metric_value: float
    config: RegistrationConfig = field(default_factory=RegistrationConfig)

    def current_to_prior(self, current_lps_mm: np.ndarray) -> np.ndarray:
        """Map (N, 3) current LPS points (mm) to (N, 3) prior LPS points (mm): the forward transform."""
        points = np.atleast_2d(np.asarray(current_lps_mm, dtype=float))
        return np.array([self.transform.TransformPoint(tuple(p)) for p in points]).reshape(-1, 3)

    def map_points(self, prior_lps_mm: np.ndarray) -> np.ndarray:
        """Map prior points into the current scan (the inverse transform, solved numerically).

        Args:
            prior_lps_mm: (N, 3) or (3,) points, prior LPS mm.

        Returns:
            (N, 3) float array, current LPS mm. A point whose inversion did not reach ``inverse_tolerance_mm``
            (logged as a warning) keeps the best estimate found.

        Raises:
            ValueError: the points are not (N, 3) finite numbers.

        Example:
            >>> reg = register_lungs(prior, prior_lung, current, current_lung)  # doctest: +SKIP
            >>> reg.map_points([[10.0, -40.0, 120.0]])  # doctest: +SKIP
            array([[ 11.8, -37.2, 131.5]])
        """
        points = np.asarray(prior_lps_mm, dtype=float)
        if points.ndim == 1:
            points = points[None, :]
        if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
            raise ValueError(f"map_points needs finite (N, 3) LPS points, got shape {np.shape(prior_lps_mm)}")
        step = np.eye(3) if self.affine is None else np.linalg.inv(np.asarray(self.affine.GetMatrix()).reshape(3, 3))
        start = points if self.affine is None else self._affine_inverse(points)
        return np.array([self._invert_one(p, c, step) for p, c in zip(points, start)]).reshape(-1, 3)

    def _affine_inverse(self, points: np.ndarray) -> np.ndarray:
        inverse = self.affine.GetInverse()
        return np.array([inverse.TransformPoint(tuple(p)) for p in points])

    def _invert_one(self, target: np.ndarray, guess: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Solve transform(c) = target for c by c ← c + step · (target − transform(c))."""
        current = np.array(guess, dtype=float)
        error = np.inf
        for _ in range(self.config.inverse_iterations):
            residual = target - np.asarray(self.transform.TransformPoint(tuple(current)))
            error = float(np.linalg.norm(residual))
            if error <= self.config.inverse_tolerance_mm:
                return current
            current = current + step @ residual
        logger.warning("registration inverse: point %s maps back within %.3f mm only", target.round(2), error)
        return current

    def resample_prior(self, prior: Volume) -> Volume:
        """The prior on the current grid (linear interpolation, :data:`OUTSIDE_HU` outside the prior), for pictures.

        Args:
            prior: the prior CT registered here (any dtype; kept in the output).

        Returns:
            Volume with the current grid's shape (Z, Y, X), spacing, origin and direction.
        """
        shape_zyx, spacing, origin, direction = self.current_geometry
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize([int(n) for n in shape_zyx[::-1]])
        resampler.SetOutputSpacing(spacing)
        resampler.SetOutputOrigin(origin)
        resampler.SetOutputDirection(direction)
        resampler.SetTransform(self.transform)
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetDefaultPixelValue(OUTSIDE_HU)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
        image = resampler.Execute(volume_to_sitk(prior))
        hu = sitk.GetArrayFromImage(image)
        if np.issubdtype(np.asarray(prior.hu).dtype, np.integer):
            info = np.iinfo(prior.hu.dtype)
            hu = np.clip(np.rint(hu), info.min, info.max).astype(prior.hu.dtype)
        return volume_from_sitk(_as_image(hu, spacing, origin, direction), prior.source)


def register_lungs(prior: Volume, prior_lung: np.ndarray, current: Volume, current_lung: np.ndarray, *,
                   config: RegistrationConfig = RegistrationConfig()) -> LungRegistration:
    """Register the prior CT to the current CT on the lungs (rigid → affine → B-spline; module docstring).

    Args:
        prior: the earlier CT, HU (Z, Y, X), any grid and direction.
        prior_lung: (Z, Y, X) lung mask on the prior's grid (> 0 = lung).
        current: the follow-up CT, HU.
        current_lung: (Z, Y, X) lung mask on the current's grid (> 0 = lung).
        config: settings.

    Returns:
        :class:`LungRegistration` (transform current LPS mm → prior LPS mm, its inverse for points).

    Raises:
        ValueError: a mask's shape differs from its volume's, or a mask is empty.

    Example:
        >>> reg = register_lungs(prior, prior_lung, current, current_lung)  # doctest: +SKIP
        >>> reg.stages, round(reg.seconds)  # doctest: +SKIP
        (['rigid', 'affine', 'bspline'], 9)
    """
    started = time.perf_counter()
    for name, volume, lung in (("prior", prior, prior_lung), ("current", current, current_lung)):
        if np.shape(lung) != volume.shape_zyx:
            raise ValueError(f"{name} lung mask shape {np.shape(lung)} differs from the {name} CT's {volume.shape_zyx}")
        if not np.any(lung):
            raise ValueError(f"{name} lung mask ({volume.source or name}) is empty: nothing to register on")
    fixed, fixed_mask, fixed_centre = _working_image(current, current_lung, config, with_mask=True)
    moving, _, moving_centre = _working_image(prior, prior_lung, config, with_mask=False)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(fixed_centre))
    rigid.SetTranslation(tuple(moving_centre - fixed_centre))
    affine = _as_affine(rigid)
    stages: list[str] = []
    metric_value = float("nan")
    for stage in config.stages:
        if stage == "rigid":
            rigid, metric_value = _run_linear(fixed, fixed_mask, moving, rigid, config.rigid_iterations, config)
            affine = _as_affine(rigid)
        elif stage == "affine":
            affine, metric_value = _run_linear(fixed, fixed_mask, moving, affine, config.affine_iterations, config)
        stages.append(stage)
    transform: sitk.Transform = sitk.AffineTransform(affine)
    if "bspline" in config.stages:
        bspline, metric_value = _run_bspline(fixed, fixed_mask, moving, affine, config)
        transform = sitk.CompositeTransform([sitk.AffineTransform(affine), bspline])
    seconds = time.perf_counter() - started
    geometry = (current.shape_zyx, current.spacing_mm, current.origin_lps_mm, current.direction)
    logger.info("registration %s: %.1f s, metric %.4g", "→".join(stages), seconds, metric_value)
    return LungRegistration(transform, sitk.AffineTransform(affine), geometry, seconds, stages, metric_value, config)


# ----------------------------------------------------------------------------------------------- working images


def _working_image(volume: Volume, lung: np.ndarray, config: RegistrationConfig, *, with_mask: bool):
    """(windowed isotropic float32 image, dilated lung mask image or None, lung centroid LPS mm)."""
    inside = np.asarray(lung) > 0
    nonzero = [np.flatnonzero(inside.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    spacing_zyx = np.asarray(volume.spacing_mm[::-1], float)
    pad = np.ceil(config.margin_mm / spacing_zyx).astype(int)
    lo = np.maximum([n[0] for n in nonzero] - pad, 0)
    hi = np.minimum(np.array([n[-1] for n in nonzero]) + pad + 1, volume.shape_zyx)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = tuple(volume.kji_to_lps([lo])[0].tolist())
    hu = np.clip(np.asarray(volume.hu[box], dtype=np.float32), *REGISTRATION_HU_WINDOW)
    factors = [max(1, int(config.working_spacing_mm // s)) for s in volume.spacing_mm]
    image = sitk.BinShrink(_as_image(hu, volume.spacing_mm, origin, volume.direction), factors)
    reference = _isotropic_reference(image, config.working_spacing_mm)
    image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, REGISTRATION_HU_WINDOW[0])
    mask = _as_image(inside[box].astype(np.float32), volume.spacing_mm, origin, volume.direction)
    mask = sitk.Resample(sitk.BinShrink(mask, factors), reference, sitk.Transform(), sitk.sitkLinear, 0.0) >= 0.5
    coarse = np.argwhere(sitk.GetArrayViewFromImage(mask))
    if len(coarse) == 0:  # a lung thinner than the working grid: its crop's centre
        coarse = (np.asarray(mask.GetSize()[::-1]) - 1)[None, :] / 2.0
    centre = np.asarray(mask.TransformContinuousIndexToPhysicalPoint(tuple(coarse.mean(axis=0)[::-1].tolist())))
    if not with_mask:
        return image, None, centre
    radius = round(config.mask_dilation_mm / config.working_spacing_mm)
    if radius > 0:
        mask = sitk.BinaryDilate(mask, [radius] * 3, sitk.sitkBall)
    return image, sitk.Cast(mask, sitk.sitkUInt8), centre


def _isotropic_reference(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """An empty image covering ``image``'s extent (same origin corner and direction) at an isotropic spacing."""
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    size = [max(2, int(np.ceil(e / spacing_mm))) for e in extent]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing([spacing_mm] * 3)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    corner = np.asarray(image.GetOrigin()) - direction @ (np.asarray(image.GetSpacing()) / 2)
    reference.SetOrigin(tuple((corner + direction @ np.full(3, spacing_mm / 2)).tolist()))
    reference.SetDirection(image.GetDirection())
    return reference


def _as_image(array: np.ndarray, spacing, origin, direction) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


# ----------------------------------------------------------------------------------------------- stages


def _method(fixed_mask: sitk.Image, config: RegistrationConfig, *, multires: bool) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    if config.metric == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.histogram_bins)
    else:
        method.SetMetricAsMeanSquares()
    masked = max(1, int(sitk.GetArrayViewFromImage(fixed_mask).sum()))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(min(config.sampling_fraction, config.max_metric_samples / masked), config.seed)
    method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    if multires:
        method.SetShrinkFactorsPerLevel(list(config.shrink_factors))
        method.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas_mm))
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _run_linear(fixed, fixed_mask, moving, transform, iterations: int, config: RegistrationConfig):
    """Optimise a rigid or affine transform (in place on a copy); return (transform, final metric value)."""
    method = _method(fixed_mask, config, multires=True)
    method.SetOptimizerAsConjugateGradientLineSearch(learningRate=1.0, numberOfIterations=iterations,
                                                     convergenceMinimumValue=1e-6, convergenceWindowSize=10)
    method.SetOptimizerScalesFromPhysicalShift()
    result = type(transform)(transform)
    method.SetInitialTransform(result, inPlace=True)
    method.Execute(fixed, moving)
    return result, float(method.GetMetricValue())


def _run_bspline(fixed, fixed_mask, moving, affine: sitk.AffineTransform, config: RegistrationConfig):
    """B-spline FFD on the fixed image's domain, after ``affine``; return (B-spline transform, metric value)."""
    extent = np.asarray(fixed.GetSize()) * np.asarray(fixed.GetSpacing())
    mesh = [max(1, round(float(e) / config.bspline_mesh_spacing_mm)) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, 3)
    method = _method(fixed_mask, config, multires=False)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=config.bspline_iterations,
                                maximumNumberOfCorrections=5,
                                maximumNumberOfFunctionEvaluations=4 * config.bspline_iterations,
                                costFunctionConvergenceFactor=1e7)
    method.SetMovingInitialTransform(sitk.AffineTransform(affine))
    method.SetInitialTransform(bspline, inPlace=True)
    method.Execute(fixed, moving)
    return bspline, float(method.GetMetricValue())


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """The same map as a rigid (or affine) transform, as an AffineTransform with the same centre."""
    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine
