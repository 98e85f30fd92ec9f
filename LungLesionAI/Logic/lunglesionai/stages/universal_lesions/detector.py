"""Universal lesion detection on a whole CT: per-slice boxes (MP3D-style network) linked into 3-D lesions.

Steps (each a named function): :func:`lunglesionai.stages.universal_lesions.grid.slice_grid` (the CT resampled to the model's
in-plane and slice spacing, LPS-aligned) → :func:`lunglesionai.nets.mp3d.predict_slices` (the pseudo-3-D backbone
run once over the scan, boxes on every ``stride``-th slice, class-agnostic NMS) → :func:`link_slices` (boxes on
consecutive detected slices with IoU >= ``link_iou`` become one lesion; greedy, highest score first) →
:func:`drop_known_findings` (lesions that coincide with nodules already reported are dropped) →
:func:`lesions_to_findings` (``Finding(kind="lesion")`` with the 3-D box in LPS mm).

The model is trained on composites (synthetic lesions and pasted LIDC nodules in two real CTs and phantoms; see
:mod:`lunglesionai.datagen.uld_cases`): its score is a RetinaNet class probability, not a calibrated probability of a
lesion, and its lesion type is the class it scored highest (DeepLesion's coarse types).

Model: Zhang S et al., "Revisiting 3D Context Modeling with Supervised Pre-training for Universal Lesion
Detection in CT Slices", MICCAI 2020; data protocol: Yan K et al., J Med Imaging 5(3):036501, 2018,
doi:10.1117/1.JMI.5.3.036501.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from lunglesionai.core.findings import Finding
from lunglesionai.core.volume import Volume
from lunglesionai.nets.model_store import load_model, model_dir
from lunglesionai.nets.mp3d import ULDConfig, build_uld_detector, merge_classes, predict_slices
from lunglesionai.stages.universal_lesions.grid import SliceGrid, slice_grid

__all__ = [
    "ULD_FORMAT",
    "WEIGHTS_FILE",
    "InferenceSettings",
    "LinkedLesion",
    "UniversalLesionDetector",
    "drop_known_findings",
    "drop_lung_lesions",
    "lesions_to_findings",
    "link_slices",
    "merge_linked",
    "postprocess_lesions",
]

logger = logging.getLogger(__name__)

ULD_FORMAT = "lunglesionai-uld/1"
WEIGHTS_FILE = "uld.pt"
MODEL_NAME = "uld"
TRAIN_COMMAND = "lunglesionai train uld --data-ct DIR --lidc DIR --out DIR"


@dataclass(frozen=True)
class InferenceSettings:
    """How a whole scan is processed.

    Args:
        stride: detect on every ``stride``-th slice of the 2-mm grid (1: all). Lesions of at least
            ``stride × slice_spacing_mm`` extent along z are still crossed by a detected slice.
        min_score: boxes below this score are ignored before linking.
        link_iou: boxes on consecutive detected slices join one lesion when their IoU is at least this.
        max_gap: a lesion's chain may skip this many detected slices without a box.
        chunk: slices per backbone run (memory).
        max_lesions: keep at most this many lesions (highest score first).
        min_slices: a lesion needs boxes on at least this many detected slices (1: any box). Lesions of 5 mm or
            more cross two 2-mm slices; single-slice boxes on real scans were mostly normal anatomy.
        merge_overlap: linked lesions whose 3-D boxes overlap by at least this share of the smaller box are one
            lesion (:func:`merge_linked`; a large lesion whose boxes change size from slice to slice is reported
            once); 1.0 merges only nested boxes.
        known_overlap: a lesion is the same as a reported nodule or mass when the share of the lesion's 3-D box
            inside the finding's box (or of the finding's box inside the lesion's) is at least this, or one's
            centre lies in the other's box (:func:`drop_known_findings`).
        lung_lesions: also report lesions the network labels "lung" or whose centre lies in the lung mask. False
            (default): the lungs are the lung pipeline's (nodules and masses, trained on real LIDC nodules and
            with its own false-positive reduction); on real scans most ULD lung lesions were vessels
            (``models/uld/uld.card.md``).

    Raises:
        ValueError: a field is out of range.
    """

    stride: int = 1
    min_score: float = 0.3
    link_iou: float = 0.3
    max_gap: int = 1
    chunk: int = 16
    max_lesions: int = 50
    min_slices: int = 1
    merge_overlap: float = 0.3
    known_overlap: float = 0.3
    lung_lesions: bool = False

    def __post_init__(self) -> None:
        for name, ok in {"stride": self.stride >= 1, "min_score": 0.0 <= self.min_score <= 1.0,
                         "link_iou": 0.0 < self.link_iou <= 1.0, "max_gap": self.max_gap >= 0,
                         "chunk": self.chunk >= 1, "max_lesions": self.max_lesions >= 1,
                         "min_slices": self.min_slices >= 1, "merge_overlap": 0.0 < self.merge_overlap <= 1.0,
                         "known_overlap": 0.0 < self.known_overlap <= 1.0}.items():
            if not ok:
                raise ValueError(f"InferenceSettings.{name} is out of range: {getattr(self, name)!r}")


@dataclass
class LinkedLesion:
    """A 3-D lesion made of per-slice boxes: ``slices`` (grid slice indices, ascending), ``boxes`` (len(slices), 4)
    grid pixels, ``scores``, ``labels`` (class index of each box)."""

    slices: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The highest box score."""
        return float(max(self.scores))

    @property
    def key(self) -> int:
        """Index (into ``slices``) of the highest-scored box: the key slice."""
        return int(np.argmax(self.scores))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_slices(per_slice: Sequence[dict], slice_indices: Sequence[int], settings: InferenceSettings) -> list[LinkedLesion]:
    """Link per-slice boxes into 3-D lesions.

    Boxes at or above ``settings.min_score`` are taken in decreasing score; each joins the open lesion whose last
    box lies on one of the previous ``max_gap + 1`` detected slices and overlaps it by IoU >= ``link_iou`` (the
    best such lesion), or starts a new one. Processing slices in order keeps each chain ordered in z.

    Args:
        per_slice: per detected slice, ``{"boxes": (N, 4), "scores": (N,), "labels": (N,)}``.
        slice_indices: the grid slice index of each entry (ascending).
        settings: thresholds.

    Returns:
        Lesions by decreasing score.

    Example:
        >>> box = np.array([10.0, 10, 20, 20])
        >>> out = [{"boxes": box[None], "scores": np.array([0.9]), "labels": np.array([3])}] * 3
        >>> [len(l.slices) for l in link_slices(out, [4, 5, 6], InferenceSettings())]
        [3]
    """
    lesions: list[LinkedLesion] = []
    open_until: list[int] = []  # position (in slice order) of each lesion's last box
    for position, (k, out) in enumerate(zip(slice_indices, per_slice)):
        keep = np.flatnonzero(np.asarray(out["scores"]) >= settings.min_score)
        taken: set[int] = set()
        for b in keep[np.argsort(-np.asarray(out["scores"])[keep])]:
            box = np.asarray(out["boxes"][b], float)
            best, best_iou = None, settings.link_iou
            for n, lesion in enumerate(lesions):
                if n in taken or position - open_until[n] > settings.max_gap + 1 or open_until[n] == position:
                    continue
                overlap = _iou(box, lesion.boxes[-1])
                if overlap >= best_iou:
                    best, best_iou = n, overlap
            if best is None:
                lesions.append(LinkedLesion())
                open_until.append(position)
                best = len(lesions) - 1
            lesion = lesions[best]
            lesion.slices.append(int(k)), lesion.boxes.append(box)
            lesion.scores.append(float(out["scores"][b])), lesion.labels.append(int(out["labels"][b]))
            open_until[best] = position
            taken.add(best)
    return sorted(lesions, key=lambda les: -les.score)


def _box3d(lesion: LinkedLesion, stride: int) -> np.ndarray:
    """(6,) grid box (x0, y0, z0, x1, y1, z1) of a linked lesion: the union of its boxes, slices ± stride / 2."""
    boxes = np.asarray(lesion.boxes, float)
    half = 0.5 * stride
    return np.array([boxes[:, 0].min(), boxes[:, 1].min(), min(lesion.slices) - half,
                     boxes[:, 2].max(), boxes[:, 3].max(), max(lesion.slices) + half])


def _overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection volume of two (6,) boxes over the smaller box's volume (0 when either is empty)."""
    inter = np.prod(np.maximum(np.minimum(a[3:], b[3:]) - np.maximum(a[:3], b[:3]), 0.0))
    smaller = min(np.prod(a[3:] - a[:3]), np.prod(b[3:] - b[:3]))
    return float(inter / smaller) if smaller > 0 else 0.0


def _pairwise_overlap(boxes: np.ndarray) -> np.ndarray:
    """(N, N) :func:`_overlap_of_smaller` of (N, 6) boxes."""
    lo = np.maximum(boxes[:, None, :3], boxes[None, :, :3])
    hi = np.minimum(boxes[:, None, 3:], boxes[None, :, 3:])
    inter = np.prod(np.maximum(hi - lo, 0.0), axis=-1)
    volume = np.prod(boxes[:, 3:] - boxes[:, :3], axis=-1)
    smaller = np.minimum(volume[:, None], volume[None, :])
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0)


def merge_linked(lesions: Sequence[LinkedLesion], overlap: float, stride: int = 1) -> list[LinkedLesion]:
    """Merge linked lesions whose 3-D boxes overlap by at least ``overlap`` of the smaller one, until none do.

    A large lesion often gives several chains (its per-slice boxes change size, or a second box covers part of
    it); they become one lesion holding all their boxes (per slice, the best-scored box is its key candidate).

    Args:
        lesions: from :func:`link_slices`.
        overlap: share of the smaller 3-D box (in (0, 1]).
        stride: detection stride (z extent of a box).

    Returns:
        Lesions by decreasing score; each merged lesion's slices stay ascending (boxes of one slice kept in
        score order).

    Example:
        >>> a = LinkedLesion([4, 5], [np.array([0.0, 0, 10, 10])] * 2, [0.9, 0.8], [3, 3])
        >>> b = LinkedLesion([5, 6], [np.array([2.0, 2, 8, 8])] * 2, [0.5, 0.4], [3, 3])
        >>> [l.slices for l in merge_linked([a, b], 0.3)]
        [[4, 5, 5, 6]]
    """
    groups = [[lesion] for lesion in sorted(lesions, key=lambda les: -les.score)]
    while len(groups) > 1:
        members = [np.asarray([_box3d(les, stride) for les in g]) for g in groups]
        boxes = np.asarray([np.concatenate([m[:, :3].min(axis=0), m[:, 3:].max(axis=0)]) for m in members])
        pairs = np.argwhere(np.triu(_pairwise_overlap(boxes) >= overlap, k=1))
        if not len(pairs):
            break
        _, component = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                                                       shape=(len(groups),) * 2), directed=False)
        merged: dict[int, list] = {}
        for g, c in zip(groups, component):  # groups stay in order of their best score
            merged.setdefault(int(c), []).extend(g)
        groups = list(merged.values())
    out = []
    for group in groups:
        entries = sorted(((k, -s, n, les) for n, les in enumerate(group)
                          for k, s in zip(les.slices, les.scores)), key=lambda e: (e[0], e[1]))
        combined = LinkedLesion()
        for k, neg_score, n, les in entries:
            index = [m for m, (kk, ss) in enumerate(zip(les.slices, les.scores)) if kk == k and ss == -neg_score][0]
            combined.slices.append(int(k)), combined.boxes.append(les.boxes[index])
            combined.scores.append(float(-neg_score)), combined.labels.append(les.labels[index])
        out.append(combined)
    return sorted(out, key=lambda les: -les.score)


def postprocess_lesions(per_slice: Sequence[dict], slice_indices: Sequence[int],
                        settings: InferenceSettings) -> list[LinkedLesion]:
    """:func:`link_slices` → :func:`merge_linked` → lesions with boxes on fewer than ``settings.min_slices``
    detected slices dropped. Returns lesions by decreasing score."""
    lesions = merge_linked(link_slices(per_slice, slice_indices, settings), settings.merge_overlap, settings.stride)
    return [les for les in lesions if len(set(les.slices)) >= settings.min_slices]


def _lesion_box_lps(lesion: LinkedLesion, grid: SliceGrid, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(LPS min corner, LPS max corner) of a linked lesion: the union of its boxes in x, y; its slices ± half the
    detection stride in z."""
    boxes = np.asarray(lesion.boxes)
    half = 0.5 * stride
    lo = np.array([boxes[:, 0].min(), boxes[:, 1].min(), min(lesion.slices) - half])
    hi = np.array([boxes[:, 2].max(), boxes[:, 3].max(), max(lesion.slices) + half])
    return grid.xyz_to_lps(lo)[0], grid.xyz_to_lps(hi)[0]


def drop_known_findings(lesions: list[LinkedLesion], grid: SliceGrid, findings: Sequence[Finding],
                        stride: int = 1, overlap: float = 0.3) -> list[LinkedLesion]:
    """Drop lesions that coincide with ``findings`` (the nodules and masses the lung pipeline already reported), so
    nothing is reported twice: a lesion is dropped when its box centre lies in a finding's box, a finding's centre
    lies in the lesion's box, or their 3-D boxes overlap by at least ``overlap`` of the smaller one (LPS mm)."""
    known = [(np.min(f.bbox_lps_mm, axis=0), np.max(f.bbox_lps_mm, axis=0), np.asarray(f.center_lps_mm, float))
             for f in findings]
    kept = []
    for lesion in lesions:
        lo, hi = _lesion_box_lps(lesion, grid, stride)
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        centre = 0.5 * (lo + hi)
        same = any(np.all((centre >= f_lo) & (centre <= f_hi)) or np.all((f_c >= lo) & (f_c <= hi))
                   or _overlap_of_smaller(np.concatenate([lo, hi]), np.concatenate([f_lo, f_hi])) >= overlap
                   for f_lo, f_hi, f_c in known)
        if not same:
            kept.append(lesion)
    return kept


def drop_lung_lesions(lesions: Sequence[LinkedLesion], grid: SliceGrid, config: ULDConfig, lung_mask_lookup=None,
                      stride: int = 1) -> list[LinkedLesion]:
    """Leave the lungs to the lung pipeline: drop lesions whose best box is labelled "lung" and, when
    ``lung_mask_lookup(lps) -> bool`` is given, lesions whose 3-D box centre (LPS) lies in the lung mask."""
    lung = config.lesion_types.index("lung") if "lung" in config.lesion_types else -1
    kept = []
    for lesion in lesions:
        if lesion.labels[lesion.key] == lung:
            continue
        lo, hi = _lesion_box_lps(lesion, grid, stride)
        if lung_mask_lookup is not None and lung_mask_lookup(0.5 * (lo + hi)):
            continue
        kept.append(lesion)
    return kept


def lesions_to_findings(lesions: Sequence[LinkedLesion], grid: SliceGrid, config: ULDConfig, stride: int = 1,
                        lung_mask_lookup=None) -> list[Finding]:
    """``Finding(kind="lesion")`` per lesion, ids "L1", "L2", … by decreasing score.

    ``bbox_lps_mm`` is the lesion's 3-D box (:func:`_lesion_box_lps`), ``center_lps_mm`` its centre,
    ``detection_score`` the best box score; ``extra``: ``lesion_type`` (class of the best box), ``slices``
    (number of detected slices), ``key_slice_z_mm`` (LPS z of the best box), ``key_slice_box_lps_mm``
    ([[x0, y0], [x1, y1]] of that box), ``box_size_mm`` (x, y, z extent of the 3-D box),
    ``key_box_long_side_mm`` (the key box's longer side: a box size, not a RECIST diameter), ``detector`` and,
    when ``lung_mask_lookup(lps) -> bool`` is given, ``in_lung``. No mask is made, so ``diameter_mm`` and the axes
    stay None.
    """
    findings = []
    for n, lesion in enumerate(lesions, start=1):
        lo, hi = _lesion_box_lps(lesion, grid, stride)
        key = lesion.key
        box = lesion.boxes[key]
        z = float(grid.xyz_to_lps([[0, 0, lesion.slices[key]]])[0][2])
        key_lo, key_hi = grid.xyz_to_lps([[box[0], box[1], 0]])[0], grid.xyz_to_lps([[box[2], box[3], 0]])[0]
        centre = 0.5 * (lo + hi)
        size = np.abs(np.asarray(hi) - np.asarray(lo))
        extra = {"lesion_type": config.lesion_types[lesion.labels[key]], "slices": len(set(lesion.slices)),
                 "box_size_mm": [round(float(v), 1) for v in size],
                 "key_box_long_side_mm": round(float(max(box[2] - box[0], box[3] - box[1])
                                                     * grid.spacing_mm[0]), 1),
                 "key_slice_z_mm": round(z, 2),
                 "key_slice_box_lps_mm": [[round(float(key_lo[0]), 2), round(float(key_lo[1]), 2)],
                                          [round(float(key_hi[0]), 2), round(float(key_hi[1]), 2)]],
                 "detector": "mp3d-retinanet"}
        if lung_mask_lookup is not None:
            extra["in_lung"] = bool(lung_mask_lookup(centre))
        findings.append(Finding(id=f"L{n}", kind="lesion", center_lps_mm=tuple(float(v) for v in centre),
                                bbox_lps_mm=(tuple(float(v) for v in lo), tuple(float(v) for v in hi)),
                                detection_score=round(lesion.score, 4), extra=extra))
    return findings


class UniversalLesionDetector:
    """The trained MP3D-style lesion detector (:mod:`lunglesionai.nets.mp3d`). Build it with :meth:`load`.

    Example:
        >>> uld = UniversalLesionDetector.load()  # doctest: +SKIP
        >>> lesions = uld.detect_lesions(volume, lung_mask, exclude_findings=report.nodules())  # doctest: +SKIP
    """

    def __init__(self, config: ULDConfig, state_dict: dict, sha256: str, info: dict) -> None:
        self.config = config
        self.detector = build_uld_detector(config)
        self.detector.network.load_state_dict(state_dict)
        self.detector.eval()
        self.sha256 = sha256
        self.info = info

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None, *, verify_sha256: bool = True) -> UniversalLesionDetector:
        """Read a folder written by ``lunglesionai train uld`` (default: ``model_dir("uld")``).

        Raises:
            lunglesionai.nets.model_store.ModelFileError: missing, wrong format, checksum mismatch, or the weights do
                not fit the configured network.
        """
        from lunglesionai.nets.model_store import ModelFileError

        folder = model_dir(MODEL_NAME) if folder is None else folder
        config, state, sha = load_model(folder, ULD_FORMAT, TRAIN_COMMAND, verify_sha256=verify_sha256)
        try:
            return cls(ULDConfig.from_dict(config["network"]), state, sha, config)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{folder}: weights do not fit the configured network ({exc})") from exc

    def model_info(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}`` for ``Report.models``."""
        return {"name": "uld-mp3d", "version": ULD_FORMAT, "sha256": self.sha256}

    def settings(self, **overrides) -> InferenceSettings:
        """Inference settings: the model's ``operating_point`` (``min_score`` and, when stored, ``min_slices``;
        ``models/uld/uld.card.md`` says how they were chosen) unless overridden."""
        point = self.info.get("operating_point", {})
        base = {"min_score": float(point.get("min_score", 0.3))}
        if "min_slices" in point:
            base["min_slices"] = int(point["min_slices"])
        return InferenceSettings(**{**base, **overrides})

    @torch.no_grad()
    def predict_slab(self, slab: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes on one slab's centre slice.

        Args:
            slab: (C·n, X, Y) float32 windowed slab (X, Y multiples of 32).
            device: torch device.

        Returns:
            (boxes (N, 4) slab pixels, scores (N,), labels (N,)), class-agnostic NMS applied, best first.
        """
        self.detector.network.to(device)
        out = self.detector(torch.from_numpy(np.ascontiguousarray(slab, np.float32))[None].to(device))[0]
        merged = merge_classes(out, self.config.nms_iou)
        return merged["boxes"], merged["scores"], merged["labels"]

    def detect_lesions(self, volume: Volume, lung_mask: np.ndarray | None = None,
                       exclude_findings: Sequence[Finding] = (), *, settings: InferenceSettings | None = None,
                       device: str = "cpu") -> list[Finding]:
        """Lesions anywhere in ``volume`` as findings of kind "lesion" (LPS mm; method: module docstring).

        Args:
            volume: CT in HU, any direction ((Z, Y, X) array).
            lung_mask: optional (Z, Y, X) lung mask on ``volume``'s grid; sets ``extra["in_lung"]``.
            exclude_findings: findings (e.g. the nodules) whose lesions are dropped (:func:`drop_known_findings`).
            settings: stride, thresholds (default :meth:`settings`).
            device: "cpu" or "cuda".

        Returns:
            Findings "L1", "L2", … by decreasing score.

        Raises:
            ValueError: ``lung_mask``'s shape differs from the volume's.
        """
        settings = settings or self.settings()
        if lung_mask is not None and np.shape(lung_mask) != volume.shape_zyx:
            raise ValueError(f"lung mask shape {np.shape(lung_mask)} differs from the volume's {volume.shape_zyx}")
        grid = slice_grid(volume, self.config)
        centres = np.arange(0, grid.shape_zyx[0], settings.stride)
        per_slice = predict_slices(self.detector, torch.from_numpy(grid.windowed_volume(self.config)),
                                   centres=centres, chunk=settings.chunk, device=device)
        lesions = postprocess_lesions(per_slice, centres, settings)
        lesions = drop_known_findings(lesions, grid, exclude_findings, settings.stride, settings.known_overlap)
        lookup = None if lung_mask is None else _mask_lookup(volume, lung_mask)
        if not settings.lung_lesions:
            lesions = drop_lung_lesions(lesions, grid, self.config, lookup, settings.stride)
        lesions = lesions[:settings.max_lesions]
        logger.info("ULD: %d slices detected, %d lesions", len(centres), len(lesions))
        return lesions_to_findings(lesions, grid, self.config, settings.stride, lookup)


def _mask_lookup(volume: Volume, mask: np.ndarray):
    """A function LPS point → whether the nearest voxel of ``volume``'s grid is set in ``mask``."""

    def inside(lps: np.ndarray) -> bool:
        kji = np.round(volume.lps_to_kji(np.asarray(lps)[None])[0]).astype(int)
        return bool(np.all(kji >= 0) and np.all(kji < volume.shape_zyx) and mask[tuple(kji)] > 0)

    return inside
