"""Universal lesion detection scored in the DeepLesion protocol, on DeepLesion itself or on composite cases.

Protocol (Yan K et al., "DeepLesion: automated mining of large-scale lesion annotations and universal lesion
detection with deep learning", J Med Imaging 5(3):036501, 2018, doi:10.1117/1.JMI.5.3.036501; as 3DCE, MULAN and
MP3D report it): every key slice is one *image*; the detector's boxes on it are matched to the annotated lesion
boxes of that image. All boxes of all images are taken in decreasing score; a box whose IoU with an annotated box
of its image is >= 0.5 *hits* every such lesion not hit yet; a box that overlaps no lesion that well is a false
positive; a box that only overlaps lesions already hit is neither (a duplicate). Sensitivity at ``r`` FPs per image
is the hit fraction at the lowest score threshold whose false positives per image are <= ``r`` (a step FROC; the
3DCE code interpolates linearly between thresholds, which can differ by less than one lesion's share). Reported at
0.5, 1, 2 and 4 FPs per image and their mean; per lesion type, the same thresholds are applied to the lesions of
that type.

IoU: boxes are in continuous pixel coordinates with pixel edges at half-integers (``(x0, y0, x1, y1)``, MONAI
``StandardMode``); DeepLesion's integer pixel boxes are taken as inclusive pixel ranges (the box of pixels i0…i1 is
i0 − 0.5 … i1 + 0.5, as 3DCE's ``+1`` convention has it).

``lunglesionai evaluate uld --data DIR --info DL_info.csv --out metrics.json [--split 2|3] [--model DIR]`` scores
a trained model on a DeepLesion-layout folder (:mod:`lunglesionai.datasets.deeplesion`); :func:`evaluate_cases` scores the
composite validation set (:mod:`lunglesionai.datagen.uld_cases`) the same way. **Composite numbers are not clinical
performance**: the lesions are synthetic (LIDC nodules for lung) and the hosts are two real CTs and phantoms.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FP_RATES",
    "IOU_THRESHOLD",
    "ImageDetections",
    "evaluate_cases",
    "evaluate_deeplesion",
    "match_images",
    "sensitivity_at_fp",
    "uld_metrics",
]

logger = logging.getLogger(__name__)

FP_RATES = (0.5, 1.0, 2.0, 4.0)
IOU_THRESHOLD = 0.5
PROTOCOL = ("DeepLesion: per key slice, IoU >= 0.5 with an annotated box; duplicates on a hit lesion are not FPs; "
            "sensitivity at the lowest score threshold with FPs/image <= rate (step FROC)")


@dataclass(frozen=True)
class ImageDetections:
    """One image (key slice): predicted and annotated boxes, (x0, y0, x1, y1) in the same pixel frame.

    Args:
        image_id: a name for messages.
        boxes: (N, 4) predicted boxes; scores: (N,) their scores.
        gt_boxes: (M, 4) annotated boxes; gt_types: M lesion types (None where unknown).
    """

    image_id: str
    boxes: np.ndarray
    scores: np.ndarray
    gt_boxes: np.ndarray
    gt_types: tuple = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, float).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, float).reshape(-1))
        object.__setattr__(self, "gt_boxes", np.asarray(self.gt_boxes, float).reshape(-1, 4))
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"{self.image_id}: {len(self.boxes)} boxes but {len(self.scores)} scores")
        types = tuple(self.gt_types) if self.gt_types else (None,) * len(self.gt_boxes)
        if len(types) != len(self.gt_boxes):
            raise ValueError(f"{self.image_id}: {len(self.gt_boxes)} lesion boxes but {len(types)} types")
        object.__setattr__(self, "gt_types", types)


@dataclass(frozen=True)
class Matching:
    """Result of :func:`match_images`: per score threshold (distinct scores, decreasing) the hits and FPs so far,
    and per annotated lesion (images in order) the score of the box that first hit it (-inf: never) and its type."""

    thresholds: np.ndarray
    hits: np.ndarray
    false_positives: np.ndarray
    lesion_hit_scores: np.ndarray
    lesion_types: tuple
    n_images: int


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    from monai.data.box_utils import box_iou

    if len(others) == 0:
        return np.zeros(0)
    return np.asarray(box_iou(box[None].astype(np.float32), others.astype(np.float32)))[0]


def match_images(images: Sequence[ImageDetections], iou_threshold: float = IOU_THRESHOLD) -> Matching:
    """Greedy matching in decreasing score over all images (the rule of the module docstring).

    Raises:
        ValueError: no image, or ``iou_threshold`` outside (0, 1].
    """
    if not images:
        raise ValueError("no image to evaluate")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    offsets = np.cumsum([0] + [len(im.gt_boxes) for im in images])
    hit_scores = np.full(offsets[-1], -np.inf)
    entries = [(s, i, b) for i, im in enumerate(images) for b, s in enumerate(im.scores)]
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    thresholds, hits, fps = [], [], []
    n_hits = n_fp = 0
    for score, i, b in entries:
        overlaps = _iou(images[i].boxes[b], images[i].gt_boxes)
        good = np.flatnonzero(overlaps >= iou_threshold)
        if good.size == 0:
            n_fp += 1
        for j in good:
            if hit_scores[offsets[i] + j] == -np.inf:
                hit_scores[offsets[i] + j] = score
                n_hits += 1
        if thresholds and thresholds[-1] == score:
            hits[-1], fps[-1] = n_hits, n_fp
        else:
            thresholds.append(score), hits.append(n_hits), fps.append(n_fp)
    types = tuple(t for im in images for t in im.gt_types)
    return Matching(np.asarray(thresholds, float), np.asarray(hits, int), np.asarray(fps, int), hit_scores, types,
                    len(images))


def sensitivity_at_fp(matching: Matching, rates: Sequence[float] = FP_RATES) -> tuple[dict, dict, dict]:
    """Overall and per-type sensitivity at each FP rate, and the score threshold of each rate.

    Returns:
        (``{rate: sensitivity}``, ``{type: {rate: sensitivity}}``, ``{rate: score threshold or None}``) with rate
        keys as strings ("0.5", "1", …); types None are left out of the per-type table. Sensitivity is NaN when
        there is no lesion; the threshold is None when even the best box is a false positive beyond the rate.
    """
    n = len(matching.lesion_hit_scores)
    fps_per_image = matching.false_positives / matching.n_images
    overall, thresholds = {}, {}
    for rate in rates:
        ok = np.flatnonzero(fps_per_image <= rate + 1e-12)
        threshold = matching.thresholds[ok[-1]] if ok.size else np.inf
        thresholds[rate] = threshold
        overall[_key(rate)] = float(np.sum(matching.lesion_hit_scores >= threshold) / n) if n else float("nan")
    per_type: dict[str, dict] = {}
    types = np.asarray([str(t) if t is not None else "" for t in matching.lesion_types])
    for name in sorted(set(types) - {""}):
        scores = matching.lesion_hit_scores[types == name]
        per_type[name] = {_key(r): float(np.mean(scores >= thresholds[r])) for r in rates}
    score_at = {_key(r): (None if np.isinf(t) else float(t)) for r, t in thresholds.items()}
    return overall, per_type, score_at


def uld_metrics(images: Sequence[ImageDetections], rates: Sequence[float] = FP_RATES,
                iou_threshold: float = IOU_THRESHOLD) -> dict:
    """The ``metrics.json`` content: ``sensitivity_at_fp`` (``{"0.5": s, "1": s, "2": s, "4": s}``),
    ``mean_sensitivity``, ``per_type`` (``{type: {"n", "sensitivity_at_fp", "mean_sensitivity"}}``),
    ``score_at_fp`` (the score threshold of each rate), ``n_images``, ``n_lesions``, ``n_boxes``, ``protocol``.

    Example:
        >>> im = ImageDetections("a", [[0, 0, 10, 10]], [0.9], [[0, 0, 10, 10]], ("liver",))
        >>> uld_metrics([im])["mean_sensitivity"]
        1.0
    """
    matching = match_images(images, iou_threshold)
    overall, per_type, score_at = sensitivity_at_fp(matching, rates)
    types = [t for t in matching.lesion_types if t is not None]
    return {
        "protocol": PROTOCOL, "iou_threshold": iou_threshold,
        "n_images": len(images), "n_lesions": len(matching.lesion_hit_scores),
        "n_boxes": int(sum(len(im.boxes) for im in images)),
        "sensitivity_at_fp": overall, "mean_sensitivity": float(np.mean(list(overall.values()))),
        "score_at_fp": score_at,
        "per_type": {name: {"n": types.count(name), "sensitivity_at_fp": sens,
                            "mean_sensitivity": float(np.mean(list(sens.values())))}
                     for name, sens in per_type.items()},
    }


def evaluate_cases(detector, cases, config, *, device: str = "cpu") -> dict:
    """Score a detector on composite cases (:class:`lunglesionai.datagen.uld_cases.ULDCase`), one image per distinct key
    slice of each case; its annotated boxes are all lesions with a box on that slice.

    Args:
        detector: a MONAI detector from :func:`lunglesionai.nets.mp3d.build_uld_detector` (eval mode).
        cases: the cases (grid + lesions).
        config: the :class:`~lunglesionai.nets.mp3d.ULDConfig` the detector was built with.
        device: torch device.

    Returns:
        :func:`uld_metrics` plus ``note`` (what composite numbers mean).
    """
    import torch

    from lunglesionai.nets.mp3d import predict_slices

    images = []
    for case in cases:
        keys = sorted({lesion.key_slice for lesion in case.lesions})
        if not keys:
            continue
        volume = torch.from_numpy(case.grid.windowed_volume(config))
        for k, out in zip(keys, predict_slices(detector, volume, centres=np.asarray(keys), device=device)):
            boxes, labels = case.targets(k)
            images.append(ImageDetections(f"{case.case_id}:{k}", out["boxes"], out["scores"], boxes,
                                          tuple(config.lesion_types[int(label)] for label in labels)))
    metrics = uld_metrics(images)
    metrics["note"] = ("composite validation set: synthetic lesions and pasted LIDC nodules in two real CTs and "
                       "phantoms; not clinical performance")
    return metrics


def evaluate_deeplesion(model, data_dir: str | os.PathLike, info_csv: str | os.PathLike, *, split: int = 3,
                        limit: int | None = None, progress: Callable[[int, int], None] | None = None,
                        mode: str = "auto") -> dict:
    """Score a :class:`lunglesionai.stages.universal_lesions.detector.UniversalLesionDetector` on DeepLesion key slices of one split.

    Args:
        model: the loaded detector (its config gives the grid and windows).
        data_dir: folder holding ``Images_png/``.
        info_csv: ``DL_info.csv``.
        split: ``Train_Val_Test`` value (1 train, 2 validation, 3 test).
        limit: score only the first ``limit`` key images (None: all).
        progress: ``progress(i, n)`` after each image.
        mode: slab mode of :func:`lunglesionai.datasets.deeplesion.load_key_slab`: "auto" (3-D context when the
            neighbouring slices are stored, else the key slice replicated), "3d-context" or "key-slice".

    Returns:
        :func:`uld_metrics` plus ``split``, ``n_skipped`` (images whose slices could not be read), ``mode`` (the
        mode every image ran in: "3d-context" or "key-slice"; "mixed" when both ran) and ``n_images_by_mode``.

    Raises:
        lunglesionai.datasets.deeplesion.DeepLesionError: malformed table, or no record of ``split``.
        ValueError: unknown ``mode``.
    """
    from lunglesionai.datasets.deeplesion import SLAB_MODES, DeepLesionError, key_images, load_key_slab, read_dl_info

    records = read_dl_info(info_csv, split=split)
    groups = key_images(records)
    if limit is not None:
        groups = groups[:limit]
    images, skipped, modes = [], 0, {m: 0 for m in SLAB_MODES}
    for n, group in enumerate(groups, start=1):
        try:
            slab = load_key_slab(data_dir, group, model.config, mode)
        except DeepLesionError as error:
            logger.warning("skipped %s: %s", group[0].file_name, error)
            skipped += 1
            continue
        modes[slab.mode] += 1
        boxes, scores, _ = model.predict_slab(slab.image)
        images.append(ImageDetections(group[0].file_name, slab.to_original(boxes), scores,
                                      np.asarray([r.box_edges for r in group]),
                                      tuple(r.lesion_type for r in group)))
        if progress:
            progress(n, len(groups))
        logger.info("image %d/%d", n, len(groups))
    metrics = uld_metrics(images)
    ran = [m for m, count in modes.items() if count]
    metrics.update(split=split, n_skipped=skipped, mode=ran[0] if len(ran) == 1 else "mixed",
                   n_images_by_mode=modes)
    return metrics


def _key(rate: float) -> str:
    return f"{rate:g}"
