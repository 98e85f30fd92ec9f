"""``lunglesionai bench --registration``: seconds and accuracy of the prior-to-current lung registration of
``analyze --prior`` on a clinical-size phantom pair (issue 16's target: ≤ 30 s on 2 cores for 512×512×300).

The pair is :func:`lunglesionai.datagen.followup_pairs.make_pair` on a nodule-free phantom of the given size (a
breathing-like deformation of ``deformation_mm``, a shift and a small rotation, synthetic nodules with known
growth). Each run times the two lung masks (:func:`lunglesionai.stages.lung_mask.segment_lungs`, part of every
comparison) and :func:`lunglesionai.stages.registration.register_lungs` apart, then maps the true prior nodule
centres into the current scan and measures their distance to the true current centres (mm). Medians over
``repeats`` runs; the phantom and the pair are made once and not timed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

__all__ = ["format_registration_benchmark", "run_registration_benchmark"]


def run_registration_benchmark(shape_zyx: tuple[int, int, int] = (300, 512, 512),
                               spacing_mm: tuple[float, float, float] = (0.7, 0.7, 1.0), *, repeats: int = 3,
                               seed: int = 0, deformation_mm: float = 12.0, shift_mm: float = 8.0,
                               small_phantom: bool = False) -> dict[str, Any]:
    """Time and score the lung registration on a phantom pair.

    Args:
        shape_zyx: phantom size (Z, Y, X).
        spacing_mm: (x, y, z) voxel size, mm.
        repeats: registrations timed (>= 1); medians are reported.
        seed: phantom and pair seed.
        deformation_mm: largest breathing-like displacement over the lungs, mm (5–15 is realistic).
        shift_mm: repositioning shift, mm.
        small_phantom: use the small test phantom (``PhantomConfig.small``; ``shape_zyx`` and ``spacing_mm`` are
            then ignored). Its child-size chest fills the field of view: keep the deformation and shift small
            (about 6 and 4 mm) or the current scan's lungs leave the image.

    Returns:
        dict: ``volume_shape_zyx``, ``spacing_mm``, ``deformation_mm``, ``repeats``, ``lung_masks_s`` and
        ``registration_s`` (medians), ``total_s`` (median of per-run sums), ``nodule_error_mm`` (mean and max of
        the last run, over the nodules present in both scans), ``stages``, ``runs``, ``threads``.

    Raises:
        ValueError: ``repeats`` < 1; the errors of ``make_pair``.
    """
    import SimpleITK as sitk

    from lunglesionai.datagen.followup_pairs import FollowupPairConfig, make_pair
    from lunglesionai.stages.lung_mask import segment_lungs
    from lunglesionai.stages.registration import register_lungs
    from lunglesionai.synth import PhantomConfig, make_phantom

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    phantom_config = (PhantomConfig.small(seed=seed, n_nodules=0) if small_phantom else
                      PhantomConfig(shape_zyx=shape_zyx, spacing_mm=spacing_mm, seed=seed, n_nodules=0))
    phantom = make_phantom(phantom_config)
    config = FollowupPairConfig(deformation_mm=deformation_mm, shift_mm=shift_mm,
                                max_rotation_deg=1.0 if small_phantom else 3.0)
    pair = make_pair(phantom.volume, phantom.lung_mask, np.random.default_rng(seed), config=config, case_id="bench")
    both = [n for n in pair.truth["nodules"] if n["prior_lps_mm"] and n["current_lps_mm"]]
    prior_points = np.array([n["prior_lps_mm"] for n in both], float)
    current_points = np.array([n["current_lps_mm"] for n in both], float)
    runs, errors, stages = [], np.zeros(0), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prior_lung, current_lung = segment_lungs(pair.prior), segment_lungs(pair.current)
        t1 = time.perf_counter()
        registration = register_lungs(pair.prior, prior_lung, pair.current, current_lung)
        t2 = time.perf_counter()
        runs.append({"lung_masks": t1 - t0, "registration": t2 - t1, "total": t2 - t0})
        errors = np.linalg.norm(registration.map_points(prior_points) - current_points, axis=1)
        stages = list(registration.stages)
    return {
        "volume_shape_zyx": list(pair.current.shape_zyx),
        "spacing_mm": [round(float(s), 6) for s in pair.current.spacing_mm],
        "deformation_mm": pair.truth["deformation_mm"],
        "repeats": repeats,
        "threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "lung_masks_s": round(statistics.median(r["lung_masks"] for r in runs), 3),
        "registration_s": round(statistics.median(r["registration"] for r in runs), 3),
        "total_s": round(statistics.median(r["total"] for r in runs), 3),
        "nodule_error_mm": {"mean": round(float(errors.mean()), 3), "max": round(float(errors.max()), 3),
                            "n": int(len(errors))},
        "stages": stages,
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
    }


def format_registration_benchmark(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`run_registration_benchmark`'s result."""
    shape = "×".join(str(n) for n in result["volume_shape_zyx"])
    error = result["nodule_error_mm"]
    return "\n".join([
        f"registration bench: phantom pair {shape} (z×y×x), deformation {result['deformation_mm']:g} mm, "
        f"median of {result['repeats']} runs, {result['threads']} ITK threads",
        f"lung masks (both scans) {result['lung_masks_s']:.1f} s; registration ({' → '.join(result['stages'])}) "
        f"{result['registration_s']:.1f} s; total {result['total_s']:.1f} s",
        f"nodule centres after registration: {error['mean']:.2f} mm mean, {error['max']:.2f} mm max "
        f"({error['n']} nodules)",
    ])
