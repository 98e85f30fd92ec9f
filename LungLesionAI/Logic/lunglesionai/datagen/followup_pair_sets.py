"""Sets of prior/current pairs from phantoms or real CTs: the builder behind ``lunglesionai make-followup-pairs``.

Each pair is one host turned into two scans by :func:`lunglesionai.datagen.followup_pairs.make_pair` (a
breathing-like deformation, a repositioning, new noise, nodules pasted with known growth, one new, one resolved).
The deformation of every pair is drawn uniformly from ``deformation_range_mm`` (the issue asks for 5–15 mm) and the
shift from ``shift_range_mm``, so a set covers the range rather than one amount. Hosts:

* ``phantom``: a procedural phantom without nodules of its own (:func:`lunglesionai.synth.make_phantom`, seed
  ``seed + n``), so the truth is exact;
* ``real``: one real CT (``--real-ct``); its own nodules, if any, are unknown and simply not in the truth (the
  evaluation counts truth nodules only).

Nodules are real LIDC-IDRI VOIs (:class:`~lunglesionai.datagen.composites.NoduleSource`, a split of ``lidc_voi``;
use ``val`` for evaluation: the models never trained on it) or synthetic ellipsoids when no source is given.
**Pairs are test data, not clinical follow-ups**: the same anatomy warped, not a patient scanned twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from lunglesionai.datagen.composites import NoduleSource
from lunglesionai.datagen.followup_pairs import FollowupPair, FollowupPairConfig, make_pair

__all__ = ["PAIR_HOST_KINDS", "iter_followup_pairs"]

PAIR_HOST_KINDS = ("phantom", "real")
"""Host kinds of :func:`iter_followup_pairs`."""


def iter_followup_pairs(n_pairs: int, *, host: str = "phantom", real_ct: Optional[str | os.PathLike] = None,
                        nodules: Optional[NoduleSource] = None, config: FollowupPairConfig = FollowupPairConfig(),
                        deformation_range_mm: tuple[float, float] = (5.0, 15.0),
                        shift_range_mm: tuple[float, float] = (4.0, 12.0), phantom_preset: str = "clinical",
                        seed: int = 0, case_prefix: str = "") -> Iterator[FollowupPair]:
    """Make ``n_pairs`` pairs one at a time (memory holds one host and one pair).

    Args:
        n_pairs: number of pairs (>= 1).
        host: "phantom" (a nodule-free procedural phantom per pair) or "real" (``real_ct`` for every pair, with a
            different deformation, placement and nodules each time).
        real_ct: the real host CT (any input ``analyze`` reads); needed for ``host="real"``.
        nodules: LIDC VOIs to paste (None: synthetic ellipsoids).
        config: pair settings; its ``deformation_mm`` and ``shift_mm`` are replaced per pair by draws from the two
            ranges below.
        deformation_range_mm: (min, max) largest breathing-like displacement over the lungs, mm (within 0–30).
        shift_range_mm: (min, max) repositioning shift, mm (>= 0).
        phantom_preset: "clinical" (280×512×512, 0.7×0.7×1.25 mm) or "small" (its lungs reach the field-of-view
            edge under large deformations: use it for quick tests only).
        seed: seed of the set; pair n uses ``seed + n`` (phantom seed and random generator).
        case_prefix: folder names are ``<prefix>pair_<n>`` (e.g. the host's name).

    Yields:
        :class:`~lunglesionai.datagen.followup_pairs.FollowupPair` with ``case_id`` set; the truth records
        ``"host"``.

    Raises:
        ValueError: ``n_pairs`` < 1, an unknown host kind or preset, ``host="real"`` without ``real_ct``, or a range
            out of bounds; the errors of :func:`~lunglesionai.datagen.followup_pairs.make_pair`.
        lunglesionai.io.ct_files.CTInputError: ``real_ct`` cannot be read as CT.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if host not in PAIR_HOST_KINDS:
        raise ValueError(f"unknown host kind {host!r}; choose one of {PAIR_HOST_KINDS}")
    if host == "real" and real_ct is None:
        raise ValueError("host 'real' needs a real CT (--real-ct)")
    lo, hi = deformation_range_mm
    if not 0.0 <= lo <= hi <= 30.0:
        raise ValueError(f"deformation_range_mm must satisfy 0 <= min <= max <= 30, got {deformation_range_mm}")
    if not 0.0 <= shift_range_mm[0] <= shift_range_mm[1]:
        raise ValueError(f"shift_range_mm must satisfy 0 <= min <= max, got {shift_range_mm}")
    real = _real_host(real_ct) if host == "real" else None
    for n in range(n_pairs):
        rng = np.random.default_rng(seed + n)
        if real is not None:
            name, volume, lung = real
        else:
            name, volume, lung = _phantom_host(seed + n, phantom_preset)
        pair_config = replace(config, deformation_mm=float(rng.uniform(lo, hi)),
                              shift_mm=float(rng.uniform(*shift_range_mm)))
        pair = make_pair(volume, lung, rng, nodules=nodules, config=pair_config,
                         case_id=f"{case_prefix}pair_{n:03d}")
        pair.truth["host"] = name
        yield pair


def _real_host(path: str | os.PathLike) -> tuple[str, object, np.ndarray]:
    from lunglesionai.io.ct_files import load_volume
    from lunglesionai.stages.lung_mask import segment_lungs

    volume = load_volume(path)
    return "real:" + Path(path).name, volume, segment_lungs(volume)


def _phantom_host(seed: int, preset: str) -> tuple[str, object, np.ndarray]:
    from lunglesionai.synth import PhantomConfig, make_phantom

    presets = {"small": PhantomConfig.small, "clinical": PhantomConfig.clinical}
    if preset not in presets:
        raise ValueError(f"unknown phantom preset {preset!r}; choose one of {sorted(presets)}")
    phantom = make_phantom(presets[preset](seed=seed, n_nodules=0))
    return f"phantom-{preset}-{seed}", phantom.volume, phantom.lung_mask
