"""Learned nodule detection on a CT: the lung box resampled to the detector's grid, RetinaNet, boxes back to the CT.

Steps (each a named function): :func:`detection_grid` (the lung mask's LPS bounding box plus a margin, resampled
with SimpleITK to an isotropic, axis-aligned LPS grid; HU window → [0, 1]) → the network
(:func:`lunglesionai.nets.retina_unet.build_detector`; whole grid at once, optionally also its mirror images along
x, y and z, merged by MONAI's NMS) → :func:`boxes_to_candidates` (box centre → LPS → the CT's (k, j, i), box size →
radius).

The detector was trained on composites (real LIDC nodules pasted into real and phantom lungs, see
``models/detector/detector.card.md``); its score is a RetinaNet class probability, not a calibrated probability of
malignancy or of a nodule.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from lunglesionai.core.sitk_bridge import volume_to_sitk
from lunglesionai.core.volume import Volume
from lunglesionai.nets.model_store import load_model, model_dir
from lunglesionai.nets.retina_unet import HU_WINDOW, DetectorConfig, build_detector
from lunglesionai.stages.blob_detector import LEARNED_METHOD_NAME, Candidate

__all__ = ["DETECTOR_FORMAT", "DetectionGrid", "LearnedDetector", "detection_grid", "boxes_to_candidates",
           "combine_scores"]

logger = logging.getLogger(__name__)

DETECTOR_FORMAT = "lunglesionai-detector/1"
WEIGHTS_FILE = "detector.pt"
GRID_MARGIN_MM = 10.0
"""Margin added around the lung box on every side before resampling."""
NEAR_LUNG_VOXELS = 2
"""Boxes whose centre lies further than this many face-neighbour steps of the CT from the lung mask are dropped."""


@dataclass(frozen=True)
class DetectionGrid:
    """The detector's input: ``image`` (X, Y, Z) float32 in [0, 1] on an axis-aligned LPS grid.

    Args:
        image: windowed CT, axes (x, y, z) = (L, P, S) directions; X, Y, Z multiples of 8.
        origin_lps_mm: LPS (x, y, z) of voxel (0, 0, 0)'s centre.
        spacing_mm: isotropic voxel size.
    """

    image: np.ndarray
    origin_lps_mm: np.ndarray
    spacing_mm: float

    def index_to_lps(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) voxel coordinates (x, y, z) of this grid → (N, 3) LPS mm."""
        return self.origin_lps_mm + np.asarray(xyz, dtype=float) * self.spacing_mm

    def lps_to_index(self, lps_mm: np.ndarray) -> np.ndarray:
        """(N, 3) LPS mm → (N, 3) fractional voxel coordinates (x, y, z) of this grid."""
        return (np.asarray(lps_mm, dtype=float) - self.origin_lps_mm) / self.spacing_mm


def detection_grid(volume: Volume, lung_mask: np.ndarray, spacing_mm: float,
                   margin_mm: float = GRID_MARGIN_MM, multiple: int = 8) -> DetectionGrid | None:
    """Resample the lungs' bounding box (plus ``margin_mm``) to an isotropic axis-aligned LPS grid.

    Args:
        volume: CT in HU, any direction.
        lung_mask: (Z, Y, X) on ``volume``'s grid, > 0 = lung.
        spacing_mm: grid spacing, mm.
        margin_mm: margin around the lung box, mm.
        multiple: each grid side is rounded up to a multiple of this (the network's size divisor).

    Returns:
        The grid (linear interpolation, -1000 HU outside the volume, then :data:`HU_WINDOW` → [0, 1]), or None
        when the mask is empty.

    Raises:
        ValueError: mask shape differs from the volume's.
    """
    if lung_mask.shape != volume.shape_zyx:
        raise ValueError(f"lung mask shape {lung_mask.shape} differs from the volume's {volume.shape_zyx}")
    kji = np.argwhere(lung_mask > 0)
    if kji.size == 0:
        return None
    lo, hi = kji.min(0), kji.max(0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
    lps = volume.kji_to_lps(corners)
    start = lps.min(0) - margin_mm
    size = np.ceil((lps.max(0) + margin_mm - start) / spacing_mm).astype(int) + 1
    size = (np.ceil(size / multiple) * multiple).astype(int)
    reference = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    reference.SetSpacing([float(spacing_mm)] * 3)
    reference.SetOrigin([float(v) for v in start])
    image = sitk.Resample(sitk.Cast(volume_to_sitk(volume), sitk.sitkFloat32), reference, sitk.Transform(),
                          sitk.sitkLinear, -1000.0)
    hu_zyx = sitk.GetArrayViewFromImage(image)
    low, high = HU_WINDOW
    windowed = np.clip((hu_zyx - low) / (high - low), 0.0, 1.0).astype(np.float32)
    return DetectionGrid(np.ascontiguousarray(windowed.transpose(2, 1, 0)), start.astype(float), float(spacing_mm))


def combine_scores(detector_scores: np.ndarray, fpr_probabilities: np.ndarray) -> np.ndarray:
    """Final candidate score: the geometric mean sqrt(detector score × FPR probability), in [0, 1].

    Both stages must agree for a high score (a product-style fusion of the two stages' outputs).
    """
    return np.sqrt(np.clip(detector_scores, 0, 1) * np.clip(fpr_probabilities, 0, 1))


def boxes_to_candidates(volume: Volume, grid: DetectionGrid, boxes: np.ndarray, scores: np.ndarray,
                        lung_mask: np.ndarray | None = None,
                        details: Sequence[dict] | None = None) -> list[Candidate]:
    """Detector boxes on the grid → candidates on the volume, highest score first.

    Args:
        volume: the CT the candidates refer to.
        grid: the grid the boxes are on.
        boxes: (N, 6) ``(x0, y0, z0, x1, y1, z1)`` in grid voxel units (voxel centres at integers).
        scores: (N,) detector scores in [0, 1].
        lung_mask: when given, boxes whose centre falls outside the volume or more than
            :data:`NEAR_LUNG_VOXELS` voxels outside the lung mask are dropped.
        details: per box, a dict stored as the candidate's ``details``.

    Returns:
        Candidates (centre (k, j, i) on ``volume``, radius = half the mean box side in mm, method "retinanet").
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 6)
    centres_lps = grid.index_to_lps(0.5 * (boxes[:, :3] + boxes[:, 3:]))
    radii = 0.5 * (boxes[:, 3:] - boxes[:, :3]).mean(1) * grid.spacing_mm
    kji = volume.lps_to_kji(centres_lps) if len(boxes) else np.zeros((0, 3))
    details = list(details) if details is not None else [{} for _ in range(len(boxes))]
    out = []
    for c, r, s, d in sorted(zip(kji, radii, np.asarray(scores, float), details), key=lambda t: -t[2]):
        idx = np.round(c).astype(int)
        if np.any(idx < 0) or np.any(idx >= volume.shape_zyx):
            continue
        if lung_mask is not None and not _near_mask(lung_mask, idx, NEAR_LUNG_VOXELS):
            continue
        out.append(Candidate(tuple(float(v) for v in c), float(max(r, 1.0)), float(s), LEARNED_METHOD_NAME, dict(d)))
    return out


def _near_mask(mask: np.ndarray, index: np.ndarray, steps: int) -> bool:
    """True when a voxel of ``mask`` lies within ``steps`` face-neighbour steps (L1 distance) of ``index``: the
    same test as ``scipy.ndimage.binary_dilation(mask, iterations=steps)[index]``, without dilating the volume."""
    lo = np.maximum(index - steps, 0)
    hi = np.minimum(index + steps + 1, mask.shape)
    window = np.asarray(mask[tuple(slice(a, b) for a, b in zip(lo, hi))]) > 0
    if not window.any():
        return False
    offsets = np.argwhere(window) + lo - index
    return bool(np.any(np.abs(offsets).sum(1) <= steps))


class LearnedDetector:
    """The trained RetinaNet nodule detector (:mod:`lunglesionai.nets.retina_unet`), CPU inference.

    Build it with :meth:`load`.

    Example:
        >>> detector = LearnedDetector.load()  # doctest: +SKIP
        >>> candidates = detector.detect(volume, lung_mask)  # doctest: +SKIP
    """

    def __init__(self, config: DetectorConfig, state_dict: dict, sha256: str, info: dict) -> None:
        self.config = config
        self.network = build_detector(config)
        self.network.network.load_state_dict(state_dict)
        self.network.eval()
        self.sha256 = sha256
        self.info = info

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None, *, verify_sha256: bool = True) -> "LearnedDetector":
        """Read a folder written by ``lunglesionai train detector`` (default: ``models/detector``).

        Raises:
            lunglesionai.nets.model_store.ModelFileError: missing, wrong format, checksum mismatch, or the weights do
                not fit the configured network.
        """
        from lunglesionai.nets.model_store import ModelFileError

        folder = model_dir("detector") if folder is None else folder
        config, state, sha = load_model(folder, DETECTOR_FORMAT, "lunglesionai train detector --out DIR",
                                        verify_sha256=verify_sha256)
        try:
            return cls(DetectorConfig.from_dict(config["network"]), state, sha, config)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{folder}: weights do not fit the configured network ({exc})") from exc

    def model_info(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}`` for ``Report.models``."""
        return {"name": "retinanet-detector", "version": DETECTOR_FORMAT, "sha256": self.sha256}

    @property
    def default_min_score(self) -> float:
        """Operating point without FP reduction: ``config.json``'s ``operating_point.min_score`` (chosen on the
        composite validation set), else the box selector's score threshold."""
        return float(self.info.get("operating_point", {}).get("min_score", self.config.score_threshold))

    @torch.no_grad()
    def predict_grid(self, grid: DetectionGrid, flips: Sequence[tuple[int, ...]] = ((),),
                     device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores on a grid.

        Args:
            grid: from :func:`detection_grid`.
            flips: test-time augmentation: each entry is a tuple of spatial axes (0 = x, 1 = y, 2 = z) to mirror
                before the network (and its boxes back after); results are merged by MONAI's NMS at the
                config's IoU. ``((),)``: no augmentation.
            device: torch device of the network run ("cpu" or "cuda").

        Returns:
            (boxes (N, 6) xyzxyz grid voxels, scores (N,)), highest score first.
        """
        from monai.apps.detection.transforms.box_ops import flip_boxes
        from monai.data.box_utils import non_max_suppression

        # channels-last 3-D memory layout: oneDNN's (and cuDNN's) fastest convolution path; on a 2-core CPU the
        # network pass over a 256 x 184 x 288 grid takes about 10 s instead of 15 s, with the same boxes.
        self.network.network.to(device=device, memory_format=torch.channels_last_3d)
        image = torch.from_numpy(grid.image)[None].to(device)
        shape = image.shape[1:]
        all_boxes, all_scores = [], []
        for axes in flips:
            x = torch.flip(image, dims=[a + 1 for a in axes]) if axes else image
            x = x[None].contiguous(memory_format=torch.channels_last_3d)[0]
            out = self.network([x], use_inferer=False)[0]
            boxes = out["boxes"].float().cpu()
            if axes:
                boxes = flip_boxes(boxes, spatial_size=shape, flip_axes=list(axes))
            all_boxes.append(boxes)
            all_scores.append(out["labels_scores"].float().cpu())
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        if len(flips) > 1 and len(boxes):
            keep = non_max_suppression(boxes, scores, nms_thresh=self.config.nms_iou,
                                       max_proposals=self.config.detections_per_image)
            boxes, scores = boxes[keep], scores[keep]
        order = torch.argsort(scores, descending=True)
        return boxes[order].numpy(), scores[order].numpy()

    def predict(self, volume: Volume, lung_mask: np.ndarray, *, tta: bool = False,
                device: str = "cpu") -> tuple[DetectionGrid | None, np.ndarray, np.ndarray]:
        """The grid of ``volume``'s lungs and the boxes and scores on it (see :meth:`predict_grid`).

        Args:
            volume: CT in HU (any direction; (Z, Y, X) array).
            lung_mask: (Z, Y, X) lung mask on the same grid.
            tta: also run on the x-, y- and z-mirrored grid and merge (about 4× slower).
            device: "cpu" or "cuda".

        Returns:
            (grid or None when the lung mask is empty, boxes (N, 6), scores (N,)).
        """
        grid = detection_grid(volume, lung_mask, self.config.spacing_mm)
        if grid is None:
            return None, np.zeros((0, 6)), np.zeros(0)
        flips = ((), (0,), (1,), (2,)) if tta else ((),)
        return (grid, *self.predict_grid(grid, flips, device))

    def detect(self, volume: Volume, lung_mask: np.ndarray, *, tta: bool = False,
               device: str = "cpu") -> list[Candidate]:
        """Nodule candidates in the lungs of ``volume``, highest detector score first ([] without lungs)."""
        grid, boxes, scores = self.predict(volume, lung_mask, tta=tta, device=device)
        return [] if grid is None else boxes_to_candidates(volume, grid, boxes, scores, lung_mask)
