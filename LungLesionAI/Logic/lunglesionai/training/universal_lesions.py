"""``lunglesionai train uld``: the MP3D-style universal lesion detector trained on composite cases.

Data (:mod:`lunglesionai.datagen.uld_cases`): real CTs (the chest crop and the upper-abdomen series of ``--data-ct``) and
phantoms with real LIDC-IDRI ``train``-split nodules in their lungs and synthetic lesions of the other DeepLesion
classes (:mod:`lunglesionai.datagen.synthetic_lesions`); a held-out validation set of the same kind built from the ``val``
split and other seeds, never trained on, picks the operating point and is scored in the DeepLesion protocol
(:func:`lunglesionai.evaluation.deeplesion_protocol.evaluate_cases`).

Each step draws ``batch_size`` slabs (positives on lesion slices, negatives on lesion-free slices; half of each
batch positive), crops ``crop_size`` × ``crop_size`` pixels holding a random target box (or anywhere in the body
for negatives), shifts the HU by a small random offset, mirrors left–right with probability 1/2, and takes one
AdamW step on MONAI's RetinaNet loss (focal loss normalised by positives + smooth-L1 box loss; ATSS matching),
with a linear warm-up and cosine decay, on the CPU or (``--device cuda``) a GPU. Seeds fix everything (same
device and thread count → same weights). The
model folder holds ``uld.pt`` and ``config.json`` (format ``lunglesionai-uld/1``: network, training and data
configs, validation metrics, operating point).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lunglesionai.core.hu_windows import window_hu_channels
from lunglesionai.datagen.uld_cases import (
    SlabSample,
    ULDCase,
    ULDDataConfig,
    sample_slabs,
)
from lunglesionai.nets.mp3d import build_uld_detector
from lunglesionai.training.schedules import scheduled_step

__all__ = ["TrainResult", "ULDTrainConfig", "make_batch", "train_uld"]

logger = logging.getLogger(__name__)

BODY_HU = -500.0
MIN_BOX_KEEP = 0.5
"""A box cut by the crop is kept when at least this share of its area stays inside."""
CHECKPOINT_EVERY = 100
"""Steps between checkpoints (``train_uld(checkpoint=...)``)."""
OPERATING_FP_RATE = 0.5
"""The stored operating point: the lowest score whose validation FPs per image stay at or below this (DeepLesion's
strictest reported rate: a whole scan has many slices, and linked lesions add up their slices' false positives)."""


@dataclass(frozen=True)
class ULDTrainConfig:
    """Settings of :func:`train_uld`.

    Args:
        steps: optimiser steps; batch_size: slabs per step; crop_size: crop side in pixels (multiple of 32).
        lr, weight_decay, warmup_steps: AdamW peak learning rate (cosine decay to 1 %), decay, warm-up steps.
        hu_shift: largest random HU offset added to a slab (intensity augmentation).
        flip: mirror left–right with probability 1/2.
        seed: seed of sampling, augmentation and initialisation; threads: torch CPU threads.
        device: "cpu" or "cuda" (a lent GPU; the CUDA path was not tested here).
        n_val_cases: validation cases (0: no validation).
        data: training cases and the network (``data.network``).

    Raises:
        ValueError: a field is out of range.
    """

    steps: int = 5000
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    hu_shift: float = 20.0
    flip: bool = True
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    n_val_cases: int = 30
    data: ULDDataConfig = field(default_factory=lambda: ULDDataConfig(n_cases=120))

    def __post_init__(self) -> None:
        checks = {"steps": self.steps >= 1, "batch_size": self.batch_size >= 1,
                  "crop_size": self.crop_size >= 32 and self.crop_size % 32 == 0, "lr": self.lr > 0,
                  "threads": self.threads >= 1, "n_val_cases": self.n_val_cases >= 0,
                  "device": self.device in ("cpu", "cuda")}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ULDTrainConfig.{name} is out of range: {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What :func:`train_uld` did: the trained detector (eval mode), per-step losses, seconds, validation metrics
    (or None) and the chosen operating point."""

    detector: object
    losses: list[float]
    seconds: float
    validation: dict | None
    min_score: float


def make_batch(cases: list[ULDCase], samples: list[SlabSample], config: ULDTrainConfig,
               rng: np.random.Generator) -> tuple[list[torch.Tensor], list[dict]]:
    """Cropped, augmented slabs and their targets for one step.

    Returns:
        (images: (C·n, crop, crop) float32 tensors, targets: ``{"boxes": (N, 4) float32, "labels": (N,) int64}``
        in crop pixels; N may be 0).
    """
    from monai.apps.detection.transforms.box_ops import flip_boxes
    from monai.data.box_utils import clip_boxes_to_image

    network, size = config.data.network, config.crop_size
    images, targets = [], []
    for sample in samples:
        case = cases[sample.case_index]
        boxes, labels = case.targets(sample.slice_index)
        row0, col0 = _crop_origin(case, sample, boxes, size, rng)
        shift = float(rng.uniform(-config.hu_shift, config.hu_shift))
        grid = case.grid
        stack = np.full((network.n_slices, size, size), -1024.0, np.float32)
        rows = slice(max(row0, 0), min(row0 + size, grid.shape_zyx[1]))
        cols = slice(max(col0, 0), min(col0 + size, grid.shape_zyx[2]))
        part = grid.hu[grid.slab_indices(sample.slice_index, network.n_slices)][:, rows, cols]
        stack[:, rows.start - row0:rows.stop - row0, cols.start - col0:cols.stop - col0] = part + shift
        image = window_hu_channels(stack, network.hu_windows).transpose(0, 1, 3, 2).reshape(-1, size, size)
        shifted = boxes - np.array([col0, row0, col0, row0], np.float32)
        kept_boxes, kept_labels = _boxes_in_crop(shifted, labels, size, clip_boxes_to_image)
        image_t = torch.from_numpy(np.ascontiguousarray(image))
        boxes_t = torch.from_numpy(kept_boxes)
        if config.flip and rng.random() < 0.5:
            image_t = torch.flip(image_t, dims=[1])
            boxes_t = flip_boxes(boxes_t, spatial_size=(size, size), flip_axes=[0]) if len(boxes_t) else boxes_t
        images.append(image_t)
        targets.append({"boxes": boxes_t.float(), "labels": torch.from_numpy(kept_labels)})
    return images, targets


def _crop_origin(case: ULDCase, sample: SlabSample, boxes: np.ndarray, size: int, rng) -> tuple[int, int]:
    """(row0, col0) of a crop: around a random target box (positives), or centred on a random body pixel."""
    if sample.positive and len(boxes):
        x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        free_x, free_y = max(size - (x1 - x0), 0.0), max(size - (y1 - y0), 0.0)
        col0 = int(np.floor(cx - (x1 - x0) / 2 - rng.uniform(0.1, 0.9) * free_x))
        row0 = int(np.floor(cy - (y1 - y0) / 2 - rng.uniform(0.1, 0.9) * free_y))
        return row0, col0
    body = np.argwhere(case.grid.hu[sample.slice_index] > BODY_HU)
    if len(body) == 0:
        return 0, 0
    r, c = body[int(rng.integers(len(body)))]
    return int(r) - size // 2, int(c) - size // 2


def _boxes_in_crop(boxes: np.ndarray, labels: np.ndarray, size: int, clip) -> tuple[np.ndarray, np.ndarray]:
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    clipped, _ = clip(torch.from_numpy(boxes), (size, size), remove_empty=False)
    clipped = np.asarray(clipped, np.float32)
    area = lambda b: np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    ok = area(clipped) >= MIN_BOX_KEEP * area(boxes)
    return clipped[ok].reshape(-1, 4), labels[ok].astype(np.int64)


def train_uld(train_cases: list[ULDCase], config: ULDTrainConfig, val_cases: list[ULDCase] | None = None,
              progress_every: int = 50, *, init_state: dict | None = None,
              checkpoint: str | os.PathLike | None = None, checkpoint_every: int = CHECKPOINT_EVERY) -> TrainResult:
    """Train the detector on ``train_cases`` and score it on ``val_cases`` (method: module docstring).

    Args:
        train_cases, config, val_cases: data and settings.
        progress_every: log the mean loss every this many steps.
        init_state: network weights to start from (fine-tuning a released model); None: random initialisation.
        checkpoint: a file where the network, optimiser and sampler state are saved every ``checkpoint_every``
            steps (atomically); when it exists, training resumes from it (same config and cases assumed).

    Raises:
        ValueError: no training case holds a lesion.
    """
    from monai.utils import set_determinism

    from lunglesionai.evaluation.deeplesion_protocol import evaluate_cases

    torch.set_num_threads(config.threads)
    set_determinism(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    samples = sample_slabs(train_cases, config.data, rng)
    positives = [s for s in samples if s.positive]
    negatives = [s for s in samples if not s.positive] or positives
    if not positives:
        raise ValueError("no training case holds a lesion box; nothing to learn")
    detector = build_uld_detector(config.data.network, training=True)
    if init_state is not None:
        detector.network.load_state_dict(init_state)
    detector.network.to(config.device)
    detector.train()
    optimiser = torch.optim.AdamW(detector.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    start = time.monotonic()
    n_pos = (config.batch_size + 1) // 2
    first = _resume(checkpoint, detector, optimiser, rng, losses)
    for step in range(first, config.steps):
        batch = ([positives[i] for i in rng.integers(len(positives), size=n_pos)]
                 + [negatives[i] for i in rng.integers(len(negatives), size=config.batch_size - n_pos)])
        images, targets = make_batch(train_cases, batch, config, rng)
        if config.device != "cpu":
            images = [im.to(config.device) for im in images]
            targets = [{k: v.to(config.device) for k, v in t.items()} for t in targets]
        terms = detector(images, targets)
        loss = terms[detector.cls_key] + terms[detector.box_reg_key]
        losses.append(scheduled_step(optimiser, loss, step, config.steps, config.warmup_steps, config.lr,
                                     clip_norm=10.0))
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == config.steps):
            _save_checkpoint(checkpoint, step + 1, detector, optimiser, rng, losses)
        if (step + 1) % progress_every == 0:
            logger.info("step %d/%d loss %.4f %.0f s", step + 1, config.steps, np.mean(losses[-progress_every:]),
                        time.monotonic() - start)
    seconds = time.monotonic() - start
    detector.eval()
    validation, min_score = None, config.data.network.score_threshold
    if val_cases:
        validation = evaluate_cases(detector, val_cases, config.data.network, device=config.device)
        chosen = validation["score_at_fp"].get(f"{OPERATING_FP_RATE:g}")
        min_score = chosen if chosen is not None else min_score
    return TrainResult(detector, losses, seconds, validation, float(min_score))


def _save_checkpoint(path, step: int, detector, optimiser, rng: np.random.Generator, losses: list[float]) -> None:
    """Network, optimiser, sampler state and losses after ``step`` steps, written atomically."""
    from lunglesionai.core.output_folder import write_file_atomic

    state = {"step": step, "network": detector.network.state_dict(), "optimiser": optimiser.state_dict(),
             "rng": rng.bit_generator.state, "losses": list(losses)}
    write_file_atomic(Path(path), lambda tmp: torch.save(state, tmp))


def _resume(path, detector, optimiser, rng: np.random.Generator, losses: list[float]) -> int:
    """Load a checkpoint of :func:`_save_checkpoint` when ``path`` exists; returns the step to continue from."""
    if path is None or not Path(path).is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    detector.network.load_state_dict(state["network"])
    optimiser.load_state_dict(state["optimiser"])
    rng.bit_generator.state = state["rng"]
    losses.extend(state["losses"])
    logger.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])
