"""The FP reduction trained and validated across real host CTs: hard negatives mined from real scans of many
scanners, LIDC-IDRI nodules pasted at each host's own grid, and leave-one-host-out validation.

Why: a classifier that learned its negatives from one real CT (the first ``models/fpr``) knows that CT's vessels, not
vessels; on unseen full-size chest CTs it let dozens of structures through. Here every real host contributes:

- **real rows** (part ``"real"``): every candidate of the pipeline's detectors (``detector="combined"``, FP
  reduction off, :func:`lunglesionai.stages.nodule_detection.detect_nodules`) on the unmodified host. A candidate
  within a reader's mark (``HostScan.marks``, e.g. an LIDC XML) is ``IGNORE`` (-1) or, on a nodule ≥ 3 mm, a positive;
  every other is a negative: on a real scan without marks, *every* detection counts as a false positive (a host may
  hold real nodules: look at them before trusting a host's count; the contact sheets of ``evaluate false-positives``
  show them).
- **train rows** (part ``"train"``): the same on scanner-augmented copies of the host
  (:func:`lunglesionai.datagen.scanner_augmentation.augment_scan`: kernel, noise, slice thickness, in-plane
  resolution, vessel contrast), and the positives: LIDC ``train``-split nodules pasted at the host's (augmented)
  grid (:func:`lunglesionai.datagen.composites.compose`), cropped at their centres.
- **eval rows** (parts ``"eval0"``, ``"eval1"``, …): LIDC ``val``-split nodules pasted into the unmodified host, the
  detectors run on the composite, every candidate kept with its detector score and its label by the LUNA16 hit rule;
  their truth is kept for a FROC (:func:`lunglesionai.evaluation.luna16_protocol.froc_luna16`).

:func:`leave_one_host_out` trains on every host but one (real + train rows) and measures on the one left out: CPM of
its eval composites and the findings per real scan on its real rows at each operating point. Candidate-level numbers
(scores after a greedy duplicate suppression that stands in for the pipeline's merging of findings); the whole
pipeline's numbers come from ``lunglesionai evaluate detection`` and ``evaluate false-positives``.

Crops are read from the FP reduction's own 1.5 mm grid (:func:`lunglesionai.stages.retina_detector.detection_grid`,
:func:`lunglesionai.stages.fp_reduction.network_input` with a 1-voxel margin for shift augmentation), exactly as at
inference.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from lunglesionai.core.volume import Volume
from lunglesionai.stages.fp_reduction import DEFAULT_GRID_SPACING_MM, FprConfig, network_input

__all__ = ["IGNORE", "HostScan", "HostRows", "load_host", "mine_host", "load_rows", "mine_pasted", "concatenate_rows", "apply_marks", "suppress_duplicates",
           "host_findings_per_scan", "host_froc", "leave_one_host_out"]

logger = logging.getLogger(__name__)

IGNORE = -1
"""Label of a row that is neither positive nor negative (a candidate on a reader's mark that is not a nodule ≥ 3 mm)."""
NEGATIVE_CLEARANCE_MM = 10.0
"""A host candidate closer than this to a pasted nodule's surface is not used as a negative in that composite."""
RANDOM_NEGATIVES = 20
"""Random lung-density voxels added as easy negatives per host variant."""
DUPLICATE_RADIUS_MM = 5.0
"""Greedy suppression radius of :func:`suppress_duplicates` (at least; larger when a candidate's radius is)."""


@dataclass(frozen=True)
class HostScan:
    """A real CT used as a host.

    Args:
        name: short host name (cache file stem, table row), e.g. ``"tcga_thca"``.
        path: CT file or DICOM folder (:func:`lunglesionai.io.ct_files.load_volume`).
        marks: (M, 5) reader marks ``[x, y, z, radius_mm, is_nodule]`` in LPS mm (``is_nodule`` 1 for a nodule
            ≥ 3 mm, 0 for a nodule < 3 mm or a non-nodule); empty for scans without annotations.
    """

    name: str
    path: str
    marks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))


@dataclass
class HostRows:
    """Mined rows of one host.

    Attributes:
        name: host name.
        crops: (N, C, S+2, S+2, S+2) float16 network input with a 1-voxel margin.
        labels: (N,) int64: 1 nodule, 0 not a nodule, :data:`IGNORE`.
        detector_scores: (N,) float32 (1.0 for pasted-nodule centres and random negatives, which no detector made).
        centres_lps: (N, 3) LPS mm.
        radii_mm: (N,) detector radius, mm.
        parts: (N,) str: "real", "train", "eval0", ….
        truth: eval part -> (T, 4) ``[x, y, z, diameter_mm]`` of its pasted nodules.
        info: JSON-ready description (variants, seconds, augmentation parameters).
    """

    name: str
    crops: np.ndarray
    labels: np.ndarray
    detector_scores: np.ndarray
    centres_lps: np.ndarray
    radii_mm: np.ndarray
    parts: np.ndarray
    truth: dict[str, np.ndarray]
    info: dict

    def select(self, parts: Sequence[str]) -> np.ndarray:
        """Boolean (N,) mask of the rows in ``parts``."""
        return np.isin(self.parts, list(parts))

    def save(self, path: str | os.PathLike) -> None:
        """Write to an ``.npz`` (atomically: a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part.npz")
        np.savez(tmp, crops=self.crops, labels=self.labels, detector_scores=self.detector_scores,
                 centres_lps=self.centres_lps, radii_mm=self.radii_mm, parts=self.parts.astype(str),
                 truth_keys=np.array(list(self.truth), dtype=str),
                 **{f"truth_{k}": v for k, v in self.truth.items()},
                 info=np.array(json.dumps({"name": self.name, **self.info})))
        os.replace(tmp, path)


def load_rows(path: str | os.PathLike) -> HostRows:
    """Read a :class:`HostRows` written by :meth:`HostRows.save`.

    Raises:
        FileNotFoundError: no such file.
        KeyError: not a mined-rows file.
    """
    with np.load(path) as data:
        info = json.loads(str(data["info"]))
        truth = {str(k): data[f"truth_{k}"] for k in data["truth_keys"]}
        return HostRows(info.pop("name"), data["crops"], data["labels"], data["detector_scores"],
                        data["centres_lps"], data["radii_mm"], data["parts"], truth, info)


PHANTOM_PREFIX = "phantom:"
"""A host path ``phantom:<seed>`` is a procedural phantom (clinical preset) with infection-like opacities."""


def load_host(path: str | os.PathLike) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The host CT reoriented to LPS (:func:`lunglesionai.core.orientation.reorient_to_lps`, as the pipeline does),
    its lung mask (:func:`lunglesionai.stages.lung_mask.segment_lungs`), (Z, Y, X), and its own marks (M, 5) as
    ``HostScan.marks`` (none for a real CT).

    ``phantom:<seed>``: :func:`lunglesionai.synth.make_phantom` (clinical preset) with 4 patches of diffuse ground
    glass and 2 consolidations (structures that are not nodules: every detection on them is a negative); its own
    nodules are the marks (nodules ≥ 3 mm).

    Raises:
        lunglesionai.core.ct_checks.CTInputError: the file is not a usable CT.
        ValueError: a phantom seed that is not an integer.
    """
    from lunglesionai.core.orientation import reorient_to_lps
    from lunglesionai.io.ct_files import load_volume
    from lunglesionai.stages.lung_mask import segment_lungs

    text = str(path)
    if text.startswith(PHANTOM_PREFIX):
        from lunglesionai.synth import PhantomConfig, make_phantom

        phantom = make_phantom(replace(PhantomConfig.clinical(seed=int(text[len(PHANTOM_PREFIX):])),
                                       ground_glass_patches=4, consolidations=2))
        marks = np.array([[*n.center_lps_mm, n.diameter_mm / 2, 1.0] for n in phantom.nodules], float).reshape(-1, 5)
        volume = phantom.volume.with_array(np.asarray(phantom.volume.hu, np.float32))
        return volume, np.asarray(phantom.lung_mask, np.uint8), marks
    volume, _ = reorient_to_lps(load_volume(path))
    volume = volume.with_array(np.asarray(volume.hu, np.float32))
    return volume, segment_lungs(volume), np.zeros((0, 5))


def _candidates(volume: Volume, lung: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's candidates (combined detectors, no FP reduction): (N, 3) LPS, (N,) scores, (N,) radii."""
    import torch

    from lunglesionai.pipeline import PipelineConfig
    from lunglesionai.stages.nodule_detection import detect_nodules

    torch.set_num_threads(threads)
    result = detect_nodules(volume, lung, PipelineConfig(detector="combined", fpr=False, device="cpu", grade=False))
    cands = result.candidates
    if not cands:
        return np.zeros((0, 3)), np.zeros(0, np.float32), np.zeros(0, np.float32)
    lps = volume.kji_to_lps(np.array([c.center_kji for c in cands], float))
    return (lps, np.array([c.score for c in cands], np.float32),
            np.array([c.radius_mm for c in cands], np.float32))


def _mark_labels(centres_lps: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """0 for candidates on no mark; 1 within a nodule ≥ 3 mm mark; :data:`IGNORE` within another mark."""
    labels = np.zeros(len(centres_lps), np.int64)
    if len(marks) == 0 or len(centres_lps) == 0:
        return labels
    d = np.linalg.norm(centres_lps[:, None, :] - marks[None, :, :3], axis=2)
    inside = d < np.maximum(marks[None, :, 3], 3.0)
    labels[(inside & (marks[None, :, 4] == 0)).any(1)] = IGNORE
    labels[(inside & (marks[None, :, 4] == 1)).any(1)] = 1
    return labels


def _truth_labels(centres_lps: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1 for a candidate strictly within a truth nodule's radius (the project's one LUNA16 hit rule,
    :func:`lunglesionai.evaluation.metrics.luna16_hits.match_luna16`), else 0; ``truth`` is (T, 4) [x, y, z, d]."""
    from lunglesionai.evaluation.metrics.luna16_hits import match_luna16

    centres = np.asarray(centres_lps, float).reshape(-1, 3)
    truth = np.asarray(truth, float).reshape(-1, 4)
    match = match_luna16(centres, np.zeros(len(centres)), truth[:, :3], truth[:, 3])
    return match.hits.any(axis=1).astype(np.int64) if len(truth) else np.zeros(len(centres), np.int64)


def _crops(volume: Volume, lung: np.ndarray, centres_lps: np.ndarray, network: FprConfig) -> np.ndarray:
    from lunglesionai.stages.retina_detector import detection_grid

    size = network.crop_size + 2
    if len(centres_lps) == 0:
        return np.zeros((0, network.in_channels, size, size, size), np.float16)
    grid = detection_grid(volume, lung, DEFAULT_GRID_SPACING_MM)
    return network_input(grid.image, grid.lps_to_index(centres_lps), network, margin=1).astype(np.float16)


def _random_lung_points(volume: Volume, lung: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random lung voxels of lung density (-950…-500 HU), LPS mm."""
    kji = np.argwhere((lung > 0) & (volume.hu > -950) & (volume.hu < -500))
    if len(kji) == 0:
        return np.zeros((0, 3))
    return volume.kji_to_lps(kji[rng.choice(len(kji), min(n, len(kji)), replace=False)].astype(float))


def _pasted(volume: Volume, lung: np.ndarray, source, n: int, seed: int, juxta: float):
    from lunglesionai.datagen.composites import CompositeConfig, compose

    composite = compose(volume, lung, source, CompositeConfig(n_nodules=n, seed=seed, split=source.split,
                                                              juxta_pleural_fraction=juxta))
    truth = np.array([[*t["center_lps_mm"], t["diameter_mm"]] for t in composite.truth], float).reshape(-1, 4)
    return composite.volume, truth


def mine_host(host: HostScan, train_source, val_source, network: FprConfig, *, n_augmented: int = 2,
              train_composites: int = 3, nodules_per_composite: int = 10, eval_composites: int = 2,
              eval_nodules: int = 8, seed: int = 0, threads: int = 1, augmentation=None,
              include_real: bool = True) -> HostRows:
    """Mine one host's rows (module docstring): real, train (``n_augmented`` scanner-augmented copies, each with
    ``train_composites`` composites of ``nodules_per_composite`` train-split nodules) and ``eval_composites`` eval
    composites of ``eval_nodules`` val-split nodules.

    Args:
        host: the host scan and its reader marks.
        train_source, val_source: :class:`lunglesionai.datagen.composites.NoduleSource` of the train / val split.
        network: the classifier's settings (crop size, context channel).
        seed: seed of composites, augmentation and random negatives.
        threads: torch threads for the detectors.
        augmentation: :class:`lunglesionai.datagen.scanner_augmentation.ScannerAugmentation` (None: its defaults).
        include_real: mine the unmodified host too (False: only augmented copies and eval composites, e.g. to add
            variants to a host mined before; use another ``seed``).

    Returns:
        The rows (crops on the FP reduction's 1.5 mm grid).

    Raises:
        lunglesionai.core.ct_checks.CTInputError: the host is not a usable CT.
    """
    start = time.monotonic()
    rng = np.random.default_rng(seed)
    volume, lung, own_marks = load_host(host.path)
    if len(own_marks):
        host = replace(host, marks=np.concatenate([np.asarray(host.marks, float).reshape(-1, 5), own_marks]))
    rows: dict[str, list] = {k: [] for k in ("crops", "labels", "scores", "centres", "radii", "parts")}
    truth: dict[str, np.ndarray] = {}
    info: dict = {"path": str(host.path), "shape_zyx": list(volume.shape_zyx),
                  "spacing_mm": [round(float(s), 3) for s in volume.spacing_mm], "variants": []}

    def add(crops, labels, scores, centres, radii, part):
        rows["crops"].append(crops)
        rows["labels"].append(np.asarray(labels, np.int64))
        rows["scores"].append(np.asarray(scores, np.float32))
        rows["centres"].append(np.asarray(centres, float).reshape(-1, 3))
        rows["radii"].append(np.asarray(radii, np.float32))
        rows["parts"].append(np.full(len(labels), part))

    variants = [("real", volume, lung, {})] if include_real else []
    if n_augmented:
        from lunglesionai.datagen.scanner_augmentation import ScannerAugmentation, augment_scan

        for _ in range(n_augmented):
            v, m, params = augment_scan(volume, lung, rng, augmentation or ScannerAugmentation())
            variants.append(("train", v, m, params))
    for part, v, m, params in variants:
        centres, scores, radii = _candidates(v, m, threads)
        labels = _mark_labels(centres, host.marks)
        randoms = _random_lung_points(v, m, rng, RANDOM_NEGATIVES)
        randoms = randoms[_mark_labels(randoms, host.marks) == 0]
        crops = _crops(v, m, np.concatenate([centres.reshape(-1, 3), randoms.reshape(-1, 3)]), network)  # one grid
        add(crops[:len(centres)], labels, scores, centres, radii, part)
        add(crops[len(centres):], np.zeros(len(randoms)), np.ones(len(randoms)), randoms, np.zeros(len(randoms)),
            "train")
        for c in range(train_composites):
            composite, pasted = _pasted(v, m, train_source, nodules_per_composite, int(rng.integers(2**31)), 0.2)
            add(_crops(composite, m, pasted[:, :3], network), np.ones(len(pasted)), np.ones(len(pasted)),
                pasted[:, :3], pasted[:, 3] / 2, "train")
        info["variants"].append({"part": part, "candidates": int(len(centres)),
                                 "augmentation": {k: (round(float(x), 3) if isinstance(x, (float, np.floating)) else x)
                                                  for k, x in params.items()}})
        logger.info("%s %s: %d candidates", host.name, part, len(centres))
    for k in range(eval_composites):
        composite, pasted = _pasted(volume, lung, val_source, eval_nodules, int(rng.integers(2**31)), 0.2)
        centres, scores, radii = _candidates(composite, lung, threads)
        labels = _truth_labels(centres, pasted)
        marks = _mark_labels(centres, host.marks)
        labels[(labels == 0) & (marks != 0)] = IGNORE  # a reader's mark: neither TP nor FP
        add(_crops(composite, lung, centres, network), labels, scores, centres, radii, f"eval{k}")
        truth[f"eval{k}"] = pasted
    info["seconds"] = round(time.monotonic() - start, 1)
    return HostRows(host.name, np.concatenate(rows["crops"]), np.concatenate(rows["labels"]),
                    np.concatenate(rows["scores"]), np.concatenate(rows["centres"]), np.concatenate(rows["radii"]),
                    np.concatenate(rows["parts"]), truth, info)


def concatenate_rows(parts: Sequence[HostRows]) -> HostRows:
    """Rows of one host mined in several runs (e.g. the unmodified host first, augmented copies later) as one.

    Raises:
        ValueError: no rows, rows of different hosts, or two runs with the same eval part.
    """
    if not parts:
        raise ValueError("no rows to concatenate")
    if len({p.name for p in parts}) != 1:
        raise ValueError(f"rows of different hosts: {sorted({p.name for p in parts})}")
    truth: dict[str, np.ndarray] = {}
    for p in parts:
        if set(p.truth) & set(truth):
            raise ValueError(f"{p.name}: eval parts {sorted(set(p.truth) & set(truth))} mined twice")
        truth.update(p.truth)
    return HostRows(parts[0].name, *(np.concatenate([getattr(p, a) for p in parts]) for a in
                                     ("crops", "labels", "detector_scores", "centres_lps", "radii_mm", "parts")),
                    truth, {**parts[0].info, "runs": [p.info for p in parts]})


def apply_marks(rows: HostRows, marks: np.ndarray) -> HostRows:
    """The rows relabelled by a host's reader marks (``HostScan.marks``): a detector candidate within a nodule
    ≥ 3 mm mark becomes a positive, within another mark :data:`IGNORE`; pasted nodules and candidates on pasted
    nodules keep their labels. Mining does not need the marks, so a cache mined before stays valid.

    Args:
        rows: mined rows. marks: (M, 5) ``[x, y, z, radius_mm, is_nodule]`` LPS mm.

    Returns:
        New rows (the crops are shared, not copied).
    """
    labels = rows.labels.copy()
    on_mark = _mark_labels(rows.centres_lps, np.asarray(marks, float).reshape(-1, 5))
    detected = rows.detector_scores < 1.0  # pasted centres and random negatives carry 1.0 (no detector made them)
    labels[detected & (labels == 0) & (on_mark != 0)] = on_mark[detected & (labels == 0) & (on_mark != 0)]
    eval_rows = np.char.startswith(rows.parts.astype(str), "eval")
    labels[eval_rows & (on_mark == 1) & (rows.labels == 0)] = IGNORE  # a real nodule is no FP of an eval composite
    return HostRows(rows.name, rows.crops, labels, rows.detector_scores, rows.centres_lps, rows.radii_mm, rows.parts,
                    rows.truth, rows.info)


def mine_pasted(host: HostScan, train_source, network: FprConfig, *, n_variants: int = 4,
                composites_per_variant: int = 3, nodules_per_composite: int = 10, seed: int = 0,
                augmentation=None) -> HostRows:
    """More positives for a host: train-split nodules pasted into ``n_variants`` scanner-augmented copies of it
    (cropped to the lungs for speed), no detector run. Rows: part "train", label 1, detector score 1.0.

    Args: as :func:`mine_host`.

    Raises:
        lunglesionai.core.ct_checks.CTInputError: the host is not a usable CT.
    """
    from lunglesionai.datagen.scanner_augmentation import ScannerAugmentation, augment_scan

    start = time.monotonic()
    rng = np.random.default_rng(seed)
    volume, lung, _ = load_host(host.path)
    config = augmentation or ScannerAugmentation(crop_to_lungs_margin_mm=40.0)
    crops, centres, radii = [], [], []
    for _ in range(n_variants):
        v, m, _ = augment_scan(volume, lung, rng, config)
        for _ in range(composites_per_variant):
            composite, pasted = _pasted(v, m, train_source, nodules_per_composite, int(rng.integers(2**31)), 0.2)
            crops.append(_crops(composite, m, pasted[:, :3], network))
            centres.append(pasted[:, :3])
            radii.append(pasted[:, 3] / 2)
    n = sum(len(c) for c in centres)
    return HostRows(host.name, np.concatenate(crops), np.ones(n, np.int64), np.ones(n, np.float32),
                    np.concatenate(centres), np.concatenate(radii).astype(np.float32), np.full(n, "train"), {},
                    {"path": str(host.path), "pasted_seconds": round(time.monotonic() - start, 1)})


def suppress_duplicates(centres_lps: np.ndarray, scores: np.ndarray, radii_mm: np.ndarray) -> np.ndarray:
    """Indices of the candidates kept by a greedy suppression, best score first: a candidate within
    max(:data:`DUPLICATE_RADIUS_MM`, either radius) of a kept one is dropped (a stand-in for the pipeline's
    merging of findings that describe one structure).

    Args:
        centres_lps: (N, 3) LPS mm. scores: (N,). radii_mm: (N,).

    Returns:
        (K,) int indices into the inputs, by decreasing score.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept: list[int] = []
    for i in order:
        if kept:
            d = np.linalg.norm(centres_lps[kept] - centres_lps[i], axis=1)
            if np.any(d < np.maximum(DUPLICATE_RADIUS_MM, np.maximum(radii_mm[kept], radii_mm[i]))):
                continue
        kept.append(int(i))
    return np.array(kept, int)


def host_findings_per_scan(rows: HostRows, scores: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    """Findings on the host's real scan (rows "real", labels 0: on no reader mark) at each threshold of the final
    score, after :func:`suppress_duplicates`.

    Args:
        rows: the host's rows. scores: (N,) final scores of all its rows. thresholds: operating points.

    Returns:
        {f"{t:.2f}": findings} per threshold.
    """
    real = np.flatnonzero(rows.select(["real"]))
    kept = real[suppress_duplicates(rows.centres_lps[real], scores[real], rows.radii_mm[real])]
    unmarked = kept[rows.labels[kept] == 0]
    return {f"{t:.2f}": int(np.sum(scores[unmarked] >= t)) for t in thresholds}


def host_froc(rows: HostRows, scores: np.ndarray) -> dict:
    """LUNA16 FROC/CPM of the host's eval composites from the rows' final scores (duplicates suppressed first;
    ``IGNORE`` rows dropped).

    Returns:
        :func:`lunglesionai.evaluation.luna16_protocol.froc_luna16`'s dict (no bootstrap).
    """
    from lunglesionai.evaluation.luna16_protocol import froc_luna16

    predictions, annotations = {}, {}
    for part, truth in rows.truth.items():
        idx = np.flatnonzero(rows.select([part]) & (rows.labels != IGNORE))
        idx = idx[suppress_duplicates(rows.centres_lps[idx], scores[idx], rows.radii_mm[idx])]
        predictions[part] = np.column_stack([rows.centres_lps[idx], scores[idx]])
        annotations[part] = truth
    return froc_luna16(predictions, annotations, None, len(rows.truth), n_bootstrap=0)


def _probabilities(model, rows: HostRows, batch: int = 128) -> np.ndarray:
    """P(nodule) of every row (crops trimmed of their margin; mean with the x-mirrored crop, as at inference)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows.labels), batch):
            x = torch.from_numpy(rows.crops[start:start + batch, :, 1:-1, 1:-1, 1:-1].astype(np.float32))
            logits = 0.5 * (model(x) + model(torch.flip(x, dims=(2,))))
            out.append(torch.sigmoid(logits).numpy())
    return (np.concatenate(out) if out else np.zeros(0)).astype(float)


def training_arrays(hosts: Sequence[HostRows]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops, labels, weights) of the hosts' real and train rows; weights make every host draw equally often
    within each class."""
    crops, labels, weights = [], [], []
    for rows in hosts:
        use = rows.select(["real", "train"]) & (rows.labels != IGNORE)
        y = rows.labels[use]
        w = np.zeros(len(y))
        for cls in (0, 1):
            n = int(np.sum(y == cls))
            if n:
                w[y == cls] = 1.0 / n
        crops.append(rows.crops[use])
        labels.append(y)
        weights.append(w)
    return np.concatenate(crops), np.concatenate(labels), np.concatenate(weights)


def leave_one_host_out(hosts: Sequence[HostRows], config, out_dir: str | os.PathLike,
                       thresholds: Sequence[float] = tuple(np.round(np.arange(0.30, 0.951, 0.05), 2)),
                       held_out: Optional[Sequence[str]] = None) -> dict:
    """Train on all hosts but one, measure on the one left out, for each host (or those in ``held_out``).

    Args:
        hosts: every host's mined rows.
        config: :class:`lunglesionai.training.fp_reduction.FprTrainConfig`.
        out_dir: each fold's model goes to ``out_dir/<host>``, the held-out rows' P(nodule) to
            ``out_dir/<host>-probabilities.npy``.
        thresholds: operating points at which findings per real scan are counted.
        held_out: hosts to leave out in turn (default: all).

    Returns:
        JSON-ready ``{"folds": {host: {"cpm", "froc", "n_nodules", "findings_per_scan": {t: n}}},
        "mean_findings_per_scan": {t: mean}, "mean_cpm"}``.
    """
    from lunglesionai.stages.fp_reduction import FalsePositiveReducer
    from lunglesionai.stages.retina_detector import combine_scores
    from lunglesionai.training.fp_reduction import train_fpr

    folds = {}
    for rows in hosts:
        if held_out is not None and rows.name not in held_out:
            continue
        others = [h for h in hosts if h.name != rows.name]
        crops, labels, weights = training_arrays(others)
        fold_dir = Path(out_dir) / rows.name
        train_fpr(crops, labels, fold_dir, config, weights=weights,
                  extra={"grid_spacing_mm": DEFAULT_GRID_SPACING_MM, "held_out_host": rows.name})
        probabilities = _probabilities(FalsePositiveReducer.load(fold_dir).net, rows)
        np.save(Path(out_dir) / f"{rows.name}-probabilities.npy", probabilities)  # beside the fold's model folder
        scores = combine_scores(rows.detector_scores.astype(float), probabilities)
        fold = {"findings_per_scan": host_findings_per_scan(rows, scores, thresholds)}
        if sum(len(t) for t in rows.truth.values()):
            froc = host_froc(rows, scores)
            fold.update(cpm=round(froc["cpm"], 3), froc=froc["froc"], n_nodules=froc["n_nodules"])
        folds[rows.name] = fold
        logger.info("held out %s: %s", rows.name, json.dumps(fold))
    keys = [f"{t:.2f}" for t in thresholds]
    return {"folds": folds,
            "mean_findings_per_scan": {k: round(float(np.mean([f["findings_per_scan"][k] for f in folds.values()])), 2)
                                       for k in keys},
            "mean_cpm": round(float(np.mean([f["cpm"] for f in folds.values() if "cpm" in f])), 3)}

