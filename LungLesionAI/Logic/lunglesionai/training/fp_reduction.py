"""``lunglesionai train fpr``: the false-positive-reduction classifier trained on the detector's own candidates.

Data: the detector's training composites (:func:`lunglesionai.training.detector.training_cases`, LIDC ``train``
nodules only, in the real chest CT and in phantoms), on the classifier's 1.5 mm grid
(:data:`lunglesionai.stages.fp_reduction.DEFAULT_GRID_SPACING_MM`). The trained detector runs on each (on its own grid spacing,
resampled when it differs); a candidate whose centre
lies inside a truth box (grown by 1 voxel) is a positive, every other candidate is a hard negative (vessel ends
and bifurcations, pleura, airway walls, the heart border: whatever the detector fires on), and each truth box's
centre adds one more positive. Crops (:func:`lunglesionai.stages.fp_reduction.grid_crops`) are augmented by flips along the three
axes, axial 90° rotations and ±1 voxel shifts; batches are drawn half positive, half negative. BCE loss, AdamW,
cosine schedule, fixed seed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from lunglesionai.nets.model_store import save_model
from lunglesionai.stages.fp_reduction import FPR_FORMAT, WEIGHTS_FILE, FprConfig, FprNet, network_input
from lunglesionai.training.schedules import scheduled_step

if TYPE_CHECKING:
    from lunglesionai.training.detector import TrainingCase

__all__ = ["FprTrainConfig", "learned_proposer", "classical_proposer", "combined_proposer", "mine_candidates", "train_fpr"]

logger = logging.getLogger(__name__)

RANDOM_NEGATIVES = 20
"""Random lung-density negatives added per training case (easy negatives beside the mined hard ones)."""
LUNG_WINDOW = (50.0 / 1400.0, 500.0 / 1400.0)
"""Windowed intensity range of "lung-like" voxels (-950 to -500 HU under the detector's [-1000, 400] window)."""


@dataclass(frozen=True)
class FprTrainConfig:
    """Settings of :func:`train_fpr`: optimiser ``steps``, ``batch_size`` (half positives), peak ``lr``,
    ``weight_decay``, ``seed``, ``threads`` and the ``network``."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2
    network: FprConfig = field(default_factory=FprConfig)


def candidate_labels(centres_xyz: np.ndarray, truth_boxes: np.ndarray, grow: float = 1.0) -> np.ndarray:
    """1 where a candidate centre lies inside a truth box grown by ``grow`` voxels on every side, else 0.

    Args:
        centres_xyz: (N, 3) grid voxel coordinates.
        truth_boxes: (M, 6) xyzxyz grid voxel boxes.

    Returns:
        (N,) int64.
    """
    c = np.asarray(centres_xyz, float).reshape(-1, 1, 3)
    b = np.asarray(truth_boxes, float).reshape(1, -1, 6)
    if b.shape[1] == 0:
        return np.zeros(len(c), np.int64)
    inside = np.all((c >= b[..., :3] - grow) & (c <= b[..., 3:] + grow), axis=2)
    return inside.any(axis=1).astype(np.int64)


def learned_proposer(detector, case_spacing_mm: float) -> Callable[[TrainingCase], np.ndarray]:
    """Candidate centres (N, 3) in grid voxels of a case from the learned detector.

    The case's grid (isotropic ``case_spacing_mm``, the classifier's) is resampled to the detector's spacing
    when they differ (linear, same origin; sides rounded up to multiples of 8), and the box centres are mapped
    back: index on the case grid = index on the detector grid × detector spacing / case spacing.
    """
    from lunglesionai.stages.retina_detector import DetectionGrid

    ratio = detector.config.spacing_mm / case_spacing_mm

    def propose(case) -> np.ndarray:
        image = case.image[0]
        if ratio != 1.0:
            image = _resampled(image, case_spacing_mm, detector.config.spacing_mm)
        boxes, _ = detector.predict_grid(DetectionGrid(image, np.zeros(3), detector.config.spacing_mm))
        return 0.5 * (boxes[:, :3] + boxes[:, 3:]) * ratio if len(boxes) else np.zeros((0, 3))

    return propose


def _resampled(image_xyz: np.ndarray, spacing_mm: float, new_spacing_mm: float, multiple: int = 8) -> np.ndarray:
    """An (X, Y, Z) isotropic grid resampled (SimpleITK, linear, same origin, 0 outside) to ``new_spacing_mm``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(image_xyz.transpose(2, 1, 0), dtype=np.float32))
    image.SetSpacing([float(spacing_mm)] * 3)
    size = np.ceil(np.array(image_xyz.shape) * spacing_mm / new_spacing_mm / multiple).astype(int) * multiple
    reference = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    reference.SetSpacing([float(new_spacing_mm)] * 3)
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


def classical_proposer(spacing_mm: float) -> Callable[[TrainingCase], np.ndarray]:
    """Candidate centres (N, 3) in grid voxels from the classical blob detector, run on the case's grid as a CT
    (HU restored from the window, isotropic ``spacing_mm``) with its own lung mask."""
    from lunglesionai.core.volume import Volume
    from lunglesionai.nets.retina_unet import HU_WINDOW
    from lunglesionai.stages.blob_detector import detect_candidates
    from lunglesionai.stages.lung_mask import segment_lungs

    low, high = HU_WINDOW

    def propose(case) -> np.ndarray:
        hu = (case.image[0].transpose(2, 1, 0) * (high - low) + low).astype(np.float32)
        volume = Volume(hu, (spacing_mm,) * 3, (0.0, 0.0, 0.0))
        candidates = detect_candidates(volume, segment_lungs(volume))
        return np.array([c.center_kji[::-1] for c in candidates], float).reshape(-1, 3)

    return propose


def combined_proposer(*proposers: Callable[[TrainingCase], np.ndarray]) -> Callable[[TrainingCase], np.ndarray]:
    """Candidate centres (N, 3) of several proposers, concatenated (the pipeline's "combined" detector)."""

    def propose(case) -> np.ndarray:
        return np.concatenate([np.asarray(p(case), float).reshape(-1, 3) for p in proposers])

    return propose


def mine_candidates(propose: Callable[[TrainingCase], np.ndarray], cases, network: FprConfig,
                    n_random: int = RANDOM_NEGATIVES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Propose candidates on every training case; crops (with a 2-voxel margin for shift augmentation) and labels.

    Besides the proposed candidates and the truth centres, ``n_random`` random voxels of lung-like density
    (:data:`LUNG_WINDOW`, outside the truth boxes) per case are added as easy negatives.

    Args:
        propose: case -> (N, 3) candidate centres in grid voxels (:func:`learned_proposer`,
            :func:`classical_proposer`).
        cases: :class:`lunglesionai.training.detector.TrainingCase` list.
        network: the classifier's settings (crop side, context channel).
        n_random: random lung negatives per case.
        seed: seed of the random negatives.

    Returns:
        (crops (N, C, S+2, S+2, S+2) float16 (:func:`lunglesionai.stages.fp_reduction.network_input` with a
        1-voxel margin), labels (N,) int64).
    """
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for case in cases:
        centres = propose(case)
        truth_centres = 0.5 * (case.boxes[:, :3] + case.boxes[:, 3:])
        lung_like = np.argwhere((case.image[0] >= LUNG_WINDOW[0]) & (case.image[0] <= LUNG_WINDOW[1]))
        random_centres = lung_like[rng.choice(len(lung_like), min(n_random, len(lung_like)), replace=False)]
        random_centres = random_centres[candidate_labels(random_centres, case.boxes, grow=3.0) == 0]
        all_centres = np.concatenate([centres, truth_centres, random_centres])
        y = np.concatenate([candidate_labels(centres, case.boxes), np.ones(len(truth_centres), np.int64),
                            np.zeros(len(random_centres), np.int64)])
        crops.append(network_input(case.image[0], all_centres, network, margin=1).astype(np.float16))
        labels.append(y)
    return np.concatenate(crops), np.concatenate(labels)


def _augment(crops: np.ndarray, rng: np.random.Generator, size: int) -> torch.Tensor:
    """(N, C, S+2, S+2, S+2) crops → (N, C, S, S, S): one ±1-voxel shift, flips along x, y, z and an axial 90°
    rotation per crop, the same for all its channels."""
    out = np.empty((len(crops), crops.shape[1], size, size, size), np.float32)
    for n, crop in enumerate(crops):
        o = rng.integers(0, 3, size=3)
        c = crop[:, o[0]:o[0] + size, o[1]:o[1] + size, o[2]:o[2] + size].astype(np.float32)
        for axis in (1, 2, 3):
            if rng.random() < 0.5:
                c = np.flip(c, axis)
        out[n] = np.rot90(c, k=int(rng.integers(4)), axes=(1, 2))
    return torch.from_numpy(out)


@dataclass
class FprTrainResult:
    """``out_dir``, ``sha256``, ``seconds``, ``n_positive``, ``n_negative`` (mined rows), ``final_loss``."""

    out_dir: str
    sha256: str
    seconds: float
    n_positive: int
    n_negative: int
    final_loss: float


def train_fpr(crops: np.ndarray, labels: np.ndarray, out_dir: str | os.PathLike, config: FprTrainConfig,
              extra: dict | None = None, weights: np.ndarray | None = None) -> FprTrainResult:
    """Train :class:`lunglesionai.stages.fp_reduction.FprNet` on mined crops and write ``fpr.pt`` + ``config.json``.

    Args:
        crops: (N, C, S+2, S+2, S+2) mined crops (:func:`mine_candidates`), C = ``config.network.in_channels``.
        labels: (N,) 1 nodule, 0 not a nodule; other values (e.g. -1, "ignore") are never drawn.
        out_dir: model folder to write.
        config: training settings.
        extra: more ``config.json`` fields (data description, operating point).
        weights: (N,) relative chance of each row to be drawn within its class (e.g. to balance host CTs); None:
            uniform.

    Raises:
        ValueError: a class is missing, or the crops' channels do not match the network.
    """
    if crops.ndim != 5 or crops.shape[1] != config.network.in_channels:
        raise ValueError(f"crops must be (N, {config.network.in_channels}, S+2, S+2, S+2), got {crops.shape}")
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need positive and negative crops, got {len(pos)} and {len(neg)}")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    net = FprNet(config.network)
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    half = config.batch_size // 2
    size = config.network.crop_size
    p_pos = p_neg = None
    if weights is not None:
        p_pos, p_neg = (np.asarray(weights, float)[rows] / np.asarray(weights, float)[rows].sum() for rows in (pos, neg))
    losses = []
    start = time.monotonic()
    for step in range(config.steps):
        rows = np.concatenate([rng.choice(pos, half, p=p_pos), rng.choice(neg, config.batch_size - half, p=p_neg)])
        x = _augment(crops[rows], rng, size)
        y = torch.from_numpy(labels[rows].astype(np.float32))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        losses.append(scheduled_step(optimiser, loss, step, config.steps, 0, config.lr))
        if (step + 1) % 100 == 0:
            logger.info("fpr step %d/%d loss %.4f", step + 1, config.steps, np.mean(losses[-100:]))
    seconds = time.monotonic() - start
    training = asdict(config)
    training["network"] = config.network.to_dict()
    sha = save_model(out_dir, net.state_dict(), WEIGHTS_FILE, {
        "format": FPR_FORMAT, "network": config.network.to_dict(), "training": training,
        "train_seconds": round(seconds, 1), "mined": {"positive": int(len(pos)), "negative": int(len(neg))},
        **(extra or {}),
    })
    return FprTrainResult(str(out_dir), sha, seconds, int(len(pos)), int(len(neg)), float(np.mean(losses[-100:])))
