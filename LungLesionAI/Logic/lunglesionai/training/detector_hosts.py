"""Training composites for the detector in many real host CTs, each at its own grid and re-rendered as other
scanners would have made it.

The first detector learned its background from one real CT (the 1.5 mm crop) and the phantom. Here each host
(``--host NAME=PATH``: a real CT, or ``phantom:<seed>`` for a clinical phantom with infection-like opacities, see
:func:`lunglesionai.training.fpr_hosts.load_host`) gives ``n_cases`` composites. One case:

1. LIDC-IDRI ``train``-split nodules are pasted into the host **at its own grid**
   (:func:`lunglesionai.datagen.composites.compose`), so a nodule in a 2.5 mm-slice host is as blurred along z as
   the host's own vessels;
2. the composite is re-rendered by one randomly drawn scanner
   (:func:`lunglesionai.datagen.scanner_augmentation.augment_scan`: kernel, noise, slice thickness, in-plane pixel,
   vessel contrast; the pasted nodules are protected from the vessel-contrast shift), cropped to the lungs;
3. it is resampled to the detector grid (:func:`lunglesionai.stages.retina_detector.detection_grid`) and every
   truth box (pasted nodules and, in a phantom, its own nodules) is converted to grid voxels.

Everything in a real host that is not a pasted nodule is background for the detector: a real nodule of a host would
be taught as background (the hosts were looked at on ``evaluate false-positives`` contact sheets; see the card).
The cases are cached per host (``<cache>/detector-host-<name>-<n>-<key>.npz``), so an interrupted data build
resumes host by host.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lunglesionai.datagen.composites import CompositeConfig, NoduleSource, compose
from lunglesionai.datagen.scanner_augmentation import ScannerAugmentation, augment_scan
from lunglesionai.stages.retina_detector import detection_grid
from lunglesionai.training.detector import TrainingCase, read_cases, write_cases
from lunglesionai.training.fpr_hosts import load_host

__all__ = ["HOST_AUGMENTATION", "host_cases", "hosts_training_cases", "mark_boxes_lps"]

logger = logging.getLogger(__name__)

HOST_AUGMENTATION = ScannerAugmentation(crop_to_lungs_margin_mm=20.0)
"""Scanner augmentation of the detector's host composites: the module's default ranges, cropped to the lungs + 20 mm
(the detection grid's margin is 10 mm)."""


def mark_boxes_lps(marks: np.ndarray) -> list[list[list[float]]]:
    """Cube boxes of a host's own nodules ≥ 3 mm: ``marks`` (M, 5) ``[x, y, z, radius_mm, is_nodule]`` (LPS mm, as
    :func:`lunglesionai.training.fpr_hosts.load_host` gives) → ``[[x0, y0, z0], [x1, y1, z1]]`` per mark with
    ``is_nodule`` 1 (the centre ± the radius)."""
    marks = np.asarray(marks, float).reshape(-1, 5)
    return [[list(m[:3] - m[3]), list(m[:3] + m[3])] for m in marks if m[4] == 1]


def host_cases(host_path: str | os.PathLike, source: NoduleSource, n_cases: int, spacing_mm: float, *,
               nodules_per_case: int = 6, juxta_pleural_fraction: float = 0.2, seed: int = 0,
               augmentation: ScannerAugmentation = HOST_AUGMENTATION, name: str = "host") -> list[TrainingCase]:
    """``n_cases`` detector training cases made in one host (module docstring).

    Args:
        host_path: a real CT (file or DICOM folder) or ``phantom:<seed>``.
        source: LIDC VOIs of the ``train`` split.
        n_cases: composites to make.
        spacing_mm: the detector grid's isotropic spacing.
        nodules_per_case: nodules pasted per composite.
        juxta_pleural_fraction: share of pasted nodules placed on the pleura.
        seed: seed of the pasting and the augmentation.
        augmentation: the scanner re-rendering (``ScannerAugmentation(probability 0 …)`` for none).
        name: the host's name, in the case ids ``<name>-<n>``.

    Returns:
        Cases with ``image`` (1, X, Y, Z) in [0, 1] and ``boxes`` (N, 6) grid voxels xyzxyz; a case without lungs
        or without a box is skipped (with a warning).

    Raises:
        lunglesionai.core.ct_checks.CTInputError: the host is not a usable CT.
        ValueError: ``source`` is not the ``train`` split.
    """
    if source.split != "train":
        raise ValueError(f"detector training pastes train-split nodules only, got split {source.split!r}")
    start = time.monotonic()
    volume, lung, marks = load_host(host_path)
    own_boxes = mark_boxes_lps(marks)
    rng = np.random.default_rng(seed)
    cases: list[TrainingCase] = []
    for n in range(n_cases):
        paste = CompositeConfig(n_nodules=nodules_per_case, seed=int(rng.integers(2**31)), split="train",
                                juxta_pleural_fraction=juxta_pleural_fraction)
        composite = compose(volume, lung, source, paste)
        protect = composite.labelmap() > 0
        augmented, lung_aug, _ = augment_scan(composite.volume, lung, rng, augmentation, protect_mask=protect)
        grid = detection_grid(augmented, lung_aug, spacing_mm)
        boxes_lps = own_boxes + [t["bbox_lps_mm"] for t in composite.truth]
        if grid is None or not boxes_lps:
            logger.warning("%s case %d: no lungs or no nodule box; skipped", name, n)
            continue
        boxes = []
        for corners in boxes_lps:
            lo, hi = (grid.lps_to_index(np.asarray(c, float)[None])[0] for c in corners)
            boxes.append(np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi)]))
        cases.append(TrainingCase(f"{name}-{n}", grid.image[None], np.asarray(boxes, np.float32).reshape(-1, 6)))
    logger.info("%s: %d detector cases in %.0f s", name, len(cases), time.monotonic() - start)
    return cases


def hosts_training_cases(hosts: Sequence[tuple[str, str]], lidc_dir: str | os.PathLike, n_cases: int,
                         spacing_mm: float, *, cache_dir: Optional[str | os.PathLike] = None, seed: int = 0,
                         nodules_per_case: int = 6) -> list[TrainingCase]:
    """:func:`host_cases` for every ``(name, path)`` host, cached per host in ``cache_dir`` (an existing cache file
    is read instead of rebuilt: delete it after changing a host's file).

    Raises:
        ValueError: no host, or no case could be made.
        lunglesionai.core.ct_checks.CTInputError: a host is not a usable CT.
    """
    if not hosts:
        raise ValueError("detector training on hosts needs at least one --host NAME=PATH")
    source = NoduleSource(lidc_dir, "train")
    cache = Path(cache_dir) if cache_dir else None
    cases: list[TrainingCase] = []
    for offset, (name, path) in enumerate(hosts):
        file = cache / f"detector-host-{name}-{n_cases}-{seed}-{nodules_per_case}-{spacing_mm}.npz" if cache else None
        if file is not None and file.is_file():
            cases += read_cases(file)
            continue
        made = host_cases(path, source, n_cases, spacing_mm, nodules_per_case=nodules_per_case,
                          seed=seed + 1000 * offset, name=name)
        if file is not None:
            write_cases(file, made)
        cases += made
    if not cases:
        raise ValueError("no detector training case could be made in the hosts (no lungs found)")
    return cases
