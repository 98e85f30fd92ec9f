"""Composite sets: host CTs (the real chest crop or a procedural phantom), many composites per set with
LUNA16-style truth, and the set written as a folder (``<case>.nii.gz``, ``masks/``, ``annotations.csv``,
``seriesuids.csv``, ``truth.json``) through an atomic output folder with a manifest.

**Composites are not clinical scans** (see :mod:`lunglesionai.datagen.composites`, which pastes one nodule).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lunglesionai.core.output_folder import atomic_output_folder, check_output_folder
from lunglesionai.datagen.composites import (
    Composite,
    CompositeConfig,
    Host,
    NoduleSource,
    _mask_bbox_lps,
    compose,
    logger,
)

__all__ = [
    "COMPOSITES_SCHEMA_ID",
    "HOST_KINDS",
    "NOT_CLINICAL_NOTE",
    "PHANTOM_TRIES",
    "build_composite_set",
    "phantom_host",
    "real_host",
    "write_composite_set",
]

COMPOSITES_SCHEMA_ID = "lunglesionai-composites/1"
NOT_CLINICAL_NOTE = (
    "Composite CTs: real LIDC-IDRI nodules pasted into a real chest CT crop or a procedural phantom. Not clinical "
    "scans; detection metrics on them are not clinical performance."
)
HOST_KINDS = ("real", "phantom", "both")
PHANTOM_TRIES = 3
"""Phantom seeds tried per composite case before giving up (see ``_phantom_host_retrying``)."""


def real_host(path: str | os.PathLike) -> Host:
    """A real CT as host: loaded with :func:`lunglesionai.io.ct_files.load_volume`, lungs from
    :func:`lunglesionai.stages.lung_mask.segment_lungs`, no truth (the scan has no annotations).

    Raises:
        lunglesionai.io.ct_files.CTInputError: the file cannot be read as CT.
    """
    from lunglesionai.io.ct_files import load_volume
    from lunglesionai.stages.lung_mask import segment_lungs

    volume = load_volume(path)
    return Host("real:" + Path(path).name, volume, segment_lungs(volume))


def phantom_host(seed: int, preset: str = "small") -> Host:
    """A procedural phantom as host (:func:`lunglesionai.synth.make_phantom`), its nodules as truth.

    Args:
        seed: phantom seed.
        preset: "small" (100×160×160) or "clinical" (280×512×512).

    Raises:
        ValueError: unknown preset.
    """
    from lunglesionai.synth import PhantomConfig, make_phantom

    presets = {"small": PhantomConfig.small, "clinical": PhantomConfig.clinical}
    if preset not in presets:
        raise ValueError(f"unknown phantom preset {preset!r}; choose one of {sorted(presets)}")
    phantom = make_phantom(presets[preset](seed=seed))
    truth, masks = [], []
    for n in phantom.nodules:
        kji = np.argwhere(n.mask.array) + np.asarray(n.mask.offset_kji)
        extent = np.linalg.norm(phantom.volume.kji_to_lps(kji) - np.asarray(n.center_lps_mm), axis=1).max()
        truth.append({
            "id": f"P-{n.id}", "origin": "phantom", "source": f"phantom {preset} seed={seed}",
            "center_lps_mm": [round(float(c), 3) for c in n.center_lps_mm],
            "diameter_mm": round(float(n.diameter_mm), 3), "diameter_source": "mask-equivalent",
            "mask_diameter_mm": round(float(n.diameter_mm), 3), "texture": n.texture, "attachment": n.attachment,
            "bbox_lps_mm": _mask_bbox_lps(phantom.volume, n.mask),
            "extent_radius_mm": round(float(extent + 0.5 * np.linalg.norm(phantom.volume.spacing_mm)), 3),
        })
        masks.append(n.mask)
    return Host(f"phantom-{preset}-{seed}", phantom.volume, phantom.lung_mask, tuple(truth), tuple(masks))


def build_composite_set(
    n_cases: int,
    nodules_source: NoduleSource,
    config: CompositeConfig = CompositeConfig(),
    *,
    host: str = "both",
    real_ct_path: str | os.PathLike | None = None,
    phantom_preset: str = "small",
) -> Iterator[Composite]:
    """Composites 0…n_cases−1, made lazily and deterministically from ``config.seed``.

    Case ``i`` draws its composite seed (and phantom seed) from ``SeedSequence(config.seed).spawn``'s child ``i``, so
    a case does not depend on ``n_cases``; when the phantom generator cannot place its own nodules for a seed
    (RuntimeError), the case's next seed is used (at most :data:`PHANTOM_TRIES`, each logged). With
    ``host="both"`` even cases use the real CT, odd cases a phantom. The case id (file stem, LUNA16 seriesuid) is
    ``composite-<split>-<seed>-<i:03d>-<real|phantom>``.

    Args:
        n_cases: number of composites (>= 1).
        nodules_source: VOIs of ``config.split``.
        config: paste settings (``seed`` is the set's seed).
        host: "real", "phantom" or "both".
        real_ct_path: the real host CT (needed unless ``host == "phantom"``).
        phantom_preset: "small" or "clinical".

    Yields:
        Composite, in case order.

    Raises:
        ValueError: ``n_cases`` < 1, unknown host kind, or no ``real_ct_path`` where one is needed.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if host not in HOST_KINDS:
        raise ValueError(f"host must be one of {HOST_KINDS}, got {host!r}")
    if host != "phantom" and real_ct_path is None:
        raise ValueError(f"host={host!r} needs real_ct_path (the real chest CT)")
    return _iter_composites(n_cases, nodules_source, config, host, real_ct_path, phantom_preset)


def _iter_composites(n_cases, nodules_source, config, host, real_ct_path, phantom_preset) -> Iterator[Composite]:
    real: Host | None = None
    for i, child in enumerate(np.random.SeedSequence(config.seed).spawn(n_cases)):
        case_seed, *phantom_seeds = (int(v) for v in child.generate_state(1 + PHANTOM_TRIES))
        kind = host if host != "both" else ("real" if i % 2 == 0 else "phantom")
        if kind == "real":
            real = real or real_host(real_ct_path)
            case_host = real
        else:
            case_host = _phantom_host_retrying(phantom_seeds, phantom_preset)
        case_config = replace(config, seed=case_seed)
        composite = compose(case_host.volume, case_host.lung_mask, nodules_source, case_config,
                            existing_truth=case_host.truth, existing_masks=case_host.masks)
        case_id = f"composite-{config.split}-{config.seed}-{i:03d}-{kind}"
        logger.info("case %d/%d: %s (%d nodules)", i + 1, n_cases, case_id, len(composite.truth))
        yield replace(composite, case_id=case_id, host=case_host.name,
                      volume=replace(composite.volume, source=case_id))


def _phantom_host_retrying(seeds: Sequence[int], preset: str) -> Host:
    """:func:`phantom_host` with the first seed whose phantom can be made (the phantom's own nodule placement
    gives up with a RuntimeError on a few seeds); deterministic, each skipped seed is logged."""
    for n, seed in enumerate(seeds, start=1):
        try:
            return phantom_host(seed, preset)
        except RuntimeError as error:
            if n == len(seeds):
                raise
            logger.warning("phantom %s seed=%d failed (%s); trying the next seed", preset, seed, error)
    raise ValueError("no phantom seed given")


def write_composite_set(out_dir: str | os.PathLike, composites: Iterable[Composite], *, overwrite: bool = False) -> Path:
    """Write composites as a LUNA16-style folder, atomically (a temporary sibling folder renamed into place).

    Layout: ``<case_id>.nii.gz`` (the CT), ``masks/<case_id>.nii.gz`` (uint16 labelmap, label n = truth row n of
    the case), ``annotations.csv`` (``seriesuid,coordX,coordY,coordZ,diameter_mm``, LPS mm), ``seriesuids.csv``
    (every case, also those without nodules) and ``truth.json`` (schema :data:`COMPOSITES_SCHEMA_ID`: the note that
    these are not clinical scans, and per case its host, config and full truth with boxes).

    Args:
        out_dir: target folder (must not exist unless ``overwrite``); missing parents are created.
        composites: the cases (consumed once; may be a generator).
        overwrite: replace an existing folder that lunglesionai wrote (only after the new one is complete).

    Returns:
        ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False (a FileExistsError too).
        OutputPathError: ``out_dir`` is a file, protected, not writable, or holds files lunglesionai did not write.
        ValueError: two composites share a case id, or none is given.
    """
    from lunglesionai.datasets.luna16 import write_luna16_csv
    from lunglesionai.io.ct_files import save_volume

    out = check_output_folder(out_dir, overwrite=overwrite)
    with atomic_output_folder(out, overwrite=overwrite, command="make-composites") as tmp:
        (tmp / "masks").mkdir()
        rows, cases = [], {}
        for c in composites:
            if c.case_id in cases or not c.case_id:
                raise ValueError(f"case id {c.case_id!r} is empty or repeated")
            save_volume(c.volume, tmp / f"{c.case_id}.nii.gz")
            save_volume(c.volume.with_array(c.labelmap()), tmp / "masks" / f"{c.case_id}.nii.gz")
            rows += [(c.case_id, *t["center_lps_mm"], t["diameter_mm"]) for t in c.truth]
            cases[c.case_id] = {"host": c.host, "config": asdict(c.config) if c.config else None, "nodules": c.truth}
        if not cases:
            raise ValueError("no composite to write")
        write_luna16_csv(tmp / "annotations.csv", rows)
        (tmp / "seriesuids.csv").write_text("".join(f"{case}\n" for case in cases), encoding="utf-8")
        document = {"schema": COMPOSITES_SCHEMA_ID, "note": NOT_CLINICAL_NOTE, "cases": cases}
        (tmp / "truth.json").write_text(json.dumps(document, indent=1, allow_nan=False), encoding="utf-8")
    return out
