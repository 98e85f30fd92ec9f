"""``lunglesionai train detector``: the RetinaNet nodule detector trained on composite chest CTs.

No full annotated chest CT is available offline, so the training set is made (:mod:`lunglesionai.datagen.composites`):
real LIDC-IDRI nodules of the ``train`` split only, pasted into the lungs of (a) the real chest CT and (b)
procedural phantoms (whose own nodules are truth too). Each composite is resampled to the detector's grid
(:func:`lunglesionai.stages.retina_detector.detection_grid`) with its nodules' boxes; MONAI's detection transforms then
draw patches (2 around nodules, 1 anywhere, per case and draw: ``RandCropBoxByPosNegLabeld``), zoom, flip along the
three axes, rotate by multiples of 90° in the axial plane, and jitter intensity. The network
(:func:`lunglesionai.nets.retina_unet.build_detector`) learns with MONAI's ATSS matcher, hard-negative sampler,
binary cross-entropy (or focal) classification loss and a smooth-L1 box loss, plus the Retina U-Net segmentation loss (MONAI's Dice + cross-entropy
against ellipsoids inscribed in the truth boxes, :func:`box_ellipsoids`); AdamW with a linear warm-up and a cosine
schedule; fixed seeds.

Training never sees ``val`` nodules: they are kept for the composite validation set
(``lunglesionai make-composites --split val``) that ``evaluate detection`` scores.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.datagen.composite_sets import build_composite_set
from lunglesionai.datagen.composites import Composite, CompositeConfig, NoduleSource
from lunglesionai.nets.model_store import save_model
from lunglesionai.nets.retina_unet import DetectorConfig, build_detector
from lunglesionai.stages.lung_mask import segment_lungs
from lunglesionai.stages.retina_detector import DETECTOR_FORMAT, WEIGHTS_FILE, detection_grid
from lunglesionai.training.schedules import scheduled_step

__all__ = ["DetectorTrainConfig", "TrainingCase", "case_from_composite", "training_cases", "luna16_cases",
           "patch_transforms", "box_ellipsoids", "initial_weights",
           "train_detector"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Settings of :func:`train_detector`.

    Args:
        steps: optimiser steps.
        batch_size: patches per step.
        lr: peak AdamW learning rate (after ``warmup_steps``), cosine decay to 1 % of it.
        weight_decay: AdamW weight decay.
        n_real, n_phantom: composites on the real host CT and on phantoms.
        nodules_per_case: LIDC train nodules pasted per composite.
        juxta_pleural_fraction: share of pasted nodules placed on the pleura.
        seed: seed of composites, sampling, augmentation and initialisation.
        threads: torch CPU threads.
        segmentation_weight: weight of the Retina U-Net segmentation loss (needs ``network.segmentation_head``).
        classification_loss: "bce" or "focal" (:func:`lunglesionai.nets.retina_unet.build_detector`).
        checkpoint_every: also write the model every this many steps (0: only at the end).
        init_from: a trained detector folder whose weights start the training (fine-tuning, e.g. on another grid
            spacing); its architecture must equal ``network``'s apart from ``spacing_mm`` and the box-selector
            settings. None: random initialisation.
        network: the detector's architecture and grid.
    """

    steps: int = 4000
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    n_real: int = 60
    n_phantom: int = 60
    nodules_per_case: int = 6
    juxta_pleural_fraction: float = 0.2
    seed: int = 0
    threads: int = 2
    segmentation_weight: float = 1.0
    classification_loss: str = "bce"
    checkpoint_every: int = 0
    init_from: Optional[str] = None
    network: DetectorConfig = field(default_factory=lambda: DetectorConfig(fpn_channels=16, patch_size=(64, 64, 64),
                                                                           segmentation_head=True))


@dataclass(frozen=True)
class TrainingCase:
    """One composite on the detector grid: ``image`` (1, X, Y, Z) float32 in [0, 1]; ``boxes`` (N, 6) xyzxyz grid
    voxels; ``case_id``."""

    case_id: str
    image: np.ndarray
    boxes: np.ndarray


def case_from_composite(composite: Composite, spacing_mm: float) -> Optional[TrainingCase]:
    """Resample a composite to the detector grid around its lungs and convert its truth boxes (``bbox_lps_mm``,
    voxel-edge LPS boxes) to grid voxel units. Returns None when no lung is found."""
    lung = segment_lungs(composite.volume)
    grid = detection_grid(composite.volume, lung, spacing_mm)
    if grid is None:
        return None
    boxes = []
    for truth in composite.truth:
        lo, hi = (grid.lps_to_index(np.asarray(corner, float)[None])[0] for corner in truth["bbox_lps_mm"])
        boxes.append(np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi)]))
    return TrainingCase(composite.case_id, grid.image[None], np.asarray(boxes, np.float32).reshape(-1, 6))


def luna16_cases(images_dir: str | os.PathLike, annotations_csv: str | os.PathLike, spacing_mm: float,
                 seriesuids: list[str] | None = None) -> list[TrainingCase]:
    """LUNA16-style scans (``subsetN/<seriesuid>.mhd`` or ``<seriesuid>.nii.gz`` …) with ``annotations.csv`` as
    training cases: each nodule's box is the cube of its diameter around its centre (LPS mm, as LUNA16 gives).

    Args:
        images_dir: the images folder (:func:`lunglesionai.datasets.luna16.find_images`).
        annotations_csv: ``seriesuid,coordX,coordY,coordZ,diameter_mm``.
        spacing_mm: the detector grid.
        seriesuids: scans to use (default: every annotated scan with an image; scans without nodules in the
            annotations are skipped: they give no positive patches).

    Raises:
        FileNotFoundError: no image for a requested seriesuid.
        lunglesionai.datasets.luna16.Luna16TableError: a malformed table.
    """
    from lunglesionai.datasets.luna16 import find_images, read_annotations
    from lunglesionai.io.ct_files import load_volume

    annotations = read_annotations(annotations_csv)
    wanted = seriesuids if seriesuids is not None else sorted(annotations)
    images = find_images(images_dir, wanted)
    missing = [uid for uid in wanted if uid not in images] if seriesuids is not None else []
    if missing:
        raise FileNotFoundError(f"{images_dir}: no image for {missing[:3]} ({len(missing)} missing)")
    cases = []
    for uid, path in images.items():
        nodules = annotations.get(uid, np.zeros((0, 4)))
        if len(nodules) == 0:
            continue
        volume = load_volume(path)
        grid = detection_grid(volume, segment_lungs(volume), spacing_mm)
        if grid is None:
            logger.warning("%s: no lungs found; skipped", path)
            continue
        centres = grid.lps_to_index(nodules[:, :3])
        half = (nodules[:, 3:4] / 2.0) / spacing_mm
        cases.append(TrainingCase(uid, grid.image[None], np.hstack([centres - half, centres + half]).astype(np.float32)))
    return cases


def training_cases(lidc_dir: str | os.PathLike, real_ct: str | os.PathLike | None, config: DetectorTrainConfig,
                   cache_dir: str | os.PathLike | None = None) -> list[TrainingCase]:
    """All training composites on the detector grid (real host first, then phantoms), optionally cached as .npz.

    Raises:
        ValueError: ``n_real`` > 0 without ``real_ct``, or no case could be made.
    """
    if config.n_real and real_ct is None:
        raise ValueError("n_real > 0 needs the real host CT (--real-ct)")
    cache = Path(cache_dir) if cache_dir else None
    key = f"{config.seed}-{config.nodules_per_case}-{config.juxta_pleural_fraction}-{config.network.spacing_mm}"
    cases: list[TrainingCase] = []
    source = NoduleSource(lidc_dir, "train")
    for host, n in (("real", config.n_real), ("phantom", config.n_phantom)):
        if n == 0:
            continue
        path = cache / f"detector-{host}-{n}-{key}.npz" if cache else None
        if path is not None and path.is_file():
            cases += read_cases(path)
            continue
        paste = CompositeConfig(n_nodules=config.nodules_per_case, seed=config.seed + (0 if host == "real" else 1),
                                split="train", juxta_pleural_fraction=config.juxta_pleural_fraction)
        made = [c for c in (case_from_composite(comp, config.network.spacing_mm) for comp in
                            build_composite_set(n, source, paste, host=host, real_ct_path=real_ct)) if c is not None]
        if path is not None:
            write_cases(path, made)
        cases += made
    if not cases:
        raise ValueError("no training composite could be made (no lungs found in the hosts)")
    return cases


def write_cases(path: Path, cases: list[TrainingCase]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for n, c in enumerate(cases):
        arrays[f"image_{n}"] = c.image.astype(np.float16)
        arrays[f"boxes_{n}"] = c.boxes
    ids = np.array([c.case_id for c in cases])
    write_file_atomic(path, lambda tmp: np.savez(tmp, ids=ids, **arrays))


def read_cases(path: Path) -> list[TrainingCase]:
    with np.load(path) as data:
        return [TrainingCase(str(case_id), data[f"image_{n}"].astype(np.float32), data[f"boxes_{n}"])
                for n, case_id in enumerate(data["ids"])]


def patch_transforms(patch_size: tuple[int, int, int], samples_per_case: int = 3):
    """MONAI detection transforms from a case dict ``{"image": (1, X, Y, Z), "box": (N, 6), "label": (N,)}`` to
    ``samples_per_case`` augmented patches (a list of such dicts)."""
    from monai.apps.detection.transforms.dictionary import (
        ClipBoxToImaged,
        RandCropBoxByPosNegLabeld,
        RandFlipBoxd,
        RandRotateBox90d,
        RandZoomBoxd,
    )
    from monai.transforms import (
        Compose,
        EnsureTyped,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = {"image_keys": "image", "box_keys": "box"}
    return Compose([
        EnsureTyped(keys=["image", "box"], dtype=torch.float32),
        EnsureTyped(keys=["label"], dtype=torch.long),
        RandCropBoxByPosNegLabeld(**keys, label_keys="label", spatial_size=patch_size, whole_box=True,
                                  num_samples=samples_per_case, pos=2, neg=1),
        RandZoomBoxd(**keys, box_ref_image_keys="image", prob=0.3, min_zoom=0.85, max_zoom=1.15, keep_size=True,
                     padding_mode="constant"),
        ClipBoxToImaged(box_keys="box", label_keys="label", box_ref_image_keys="image", remove_empty=True),
        RandFlipBoxd(**keys, box_ref_image_keys="image", prob=0.5, spatial_axis=0),
        RandFlipBoxd(**keys, box_ref_image_keys="image", prob=0.5, spatial_axis=1),
        RandFlipBoxd(**keys, box_ref_image_keys="image", prob=0.5, spatial_axis=2),
        RandRotateBox90d(**keys, box_ref_image_keys="image", prob=0.75, max_k=3, spatial_axes=(0, 1)),
        RandScaleIntensityd(keys="image", factors=0.05, prob=0.3),
        RandShiftIntensityd(keys="image", offsets=0.03, prob=0.3),
        RandGaussianNoised(keys="image", std=0.01, prob=0.3),
    ])


def box_ellipsoids(boxes: np.ndarray | torch.Tensor, shape: tuple[int, int, int], stride: int = 1) -> torch.Tensor:
    """Segmentation target of the Retina U-Net head: the ellipsoid inscribed in each box, on a grid ``stride``
    times coarser than the boxes' (output voxel i covers box-grid voxel ``stride * i``).

    Args:
        boxes: (N, 6) ``(x0, y0, z0, x1, y1, z1)`` in voxel units of the patch.
        shape: (X, Y, Z) of the output grid.
        stride: box-grid voxels per output voxel.

    Returns:
        (1, X, Y, Z) float32 tensor, 1 inside any ellipsoid (semi-axes at least one output voxel), else 0.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 6)
    axes = [torch.arange(n, dtype=torch.float32) * stride for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    mask = torch.zeros(shape, dtype=torch.bool)
    for box in boxes:
        centre = 0.5 * (box[:3] + box[3:])
        semi = torch.clamp(0.5 * (box[3:] - box[:3]), min=float(stride))
        mask |= ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + \
            ((z - centre[2]) / semi[2]) ** 2 <= 1.0
    return mask[None].float()


def _patch_stream(cases: list[TrainingCase], transforms, rng: np.random.Generator) -> Iterator[dict]:
    while True:
        case = cases[int(rng.integers(len(cases)))]
        item = {"image": case.image, "box": case.boxes, "label": np.zeros(len(case.boxes), np.int64)}
        yield from transforms(item)


def _channels_last(image) -> torch.Tensor:
    """A (C, X, Y, Z) patch as a plain tensor in channels-last 3-D memory order (MONAI's metadata dropped: the
    detector needs none, and every operation on a MetaTensor pays for carrying it)."""
    plain = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    return plain[None].contiguous(memory_format=torch.channels_last_3d)[0]


@dataclass
class DetectorTrainResult:
    """What :func:`train_detector` did: ``out_dir``, ``sha256``, ``seconds``, ``final_loss`` (mean of the last
    100 steps), ``n_cases``, ``n_boxes``."""

    out_dir: Path
    sha256: str
    seconds: float
    final_loss: float
    n_cases: int
    n_boxes: int


def train_detector(cases: list[TrainingCase], out_dir: str | os.PathLike, config: DetectorTrainConfig,
                   progress_every: int = 50, hosts: Optional[dict[str, str]] = None) -> DetectorTrainResult:
    """Train the detector on ``cases`` and write ``detector.pt`` + ``config.json`` (with the training config).

    ``hosts`` (name → path of the host CTs of :mod:`lunglesionai.training.detector_hosts`, when the cases came from
    there) is recorded in ``config.json`` with the data description.

    Reproducible: seeds torch, numpy and MONAI's transforms from ``config.seed`` (same CPU and thread count →
    same weights).

    Raises:
        ValueError: no case, or ``steps`` < 1.
    """
    from monai.utils import set_determinism

    if not cases or config.steps < 1:
        raise ValueError(f"need cases and steps >= 1, got {len(cases)} cases, {config.steps} steps")
    torch.set_num_threads(config.threads)
    set_determinism(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    transforms = patch_transforms(config.network.patch_size)
    transforms.set_random_state(seed=config.seed)
    detector = build_detector(config.network, training=True, classification_loss=config.classification_loss)
    init_sha256 = None
    if config.init_from is not None:
        state, init_sha256 = initial_weights(config.init_from, config.network)
        detector.network.load_state_dict(state)
    detector.train()
    # channels-last 3-D layout (as at inference): oneDNN's faster convolutions, about a fifth less time per step
    detector.network.to(memory_format=torch.channels_last_3d)
    backbone = detector.network.feature_extractor
    segmentation_loss = None
    if config.segmentation_weight > 0 and config.network.segmentation_head:
        from monai.losses import DiceCELoss

        segmentation_loss = DiceCELoss(sigmoid=True, batch=True)
    optimiser = torch.optim.AdamW(detector.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stream = _patch_stream(cases, transforms, rng)
    losses: list[float] = []
    start = time.monotonic()
    for step in range(config.steps):
        batch = [next(stream) for _ in range(config.batch_size)]
        terms = detector([_channels_last(b["image"]) for b in batch],
                         [{"boxes": torch.as_tensor(b["box"]), "labels": b["label"]} for b in batch])
        loss = terms["classification"] + terms["box_regression"]
        if segmentation_loss is not None:
            logits = backbone.segmentation_logits
            target = torch.stack([box_ellipsoids(b["box"], tuple(logits.shape[2:]), stride=2) for b in batch])
            terms["segmentation"] = segmentation_loss(logits, target)
            loss = loss + config.segmentation_weight * terms["segmentation"]
        losses.append(scheduled_step(optimiser, loss, step, config.steps, config.warmup_steps, config.lr,
                                     clip_norm=10.0))
        if (step + 1) % progress_every == 0:
            logger.info("step %d/%d loss %.4f (%s) %.0f s", step + 1, config.steps, np.mean(losses[-progress_every:]),
                        ", ".join(f"{k} {float(v.detach()):.4f}" for k, v in terms.items()), time.monotonic() - start)
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            _save_detector(out_dir, detector, config, step + 1, time.monotonic() - start, init_sha256, hosts)
    seconds = time.monotonic() - start
    sha = _save_detector(out_dir, detector, config, config.steps, seconds, init_sha256, hosts)
    return DetectorTrainResult(Path(out_dir), sha, seconds, float(np.mean(losses[-100:])), len(cases),
                               int(sum(len(c.boxes) for c in cases)))


ARCHITECTURE_FIELDS = ("channels", "fpn_channels", "base_anchor_shapes", "segmentation_head")
"""The :class:`DetectorConfig` fields that must match for weights to carry over (:func:`initial_weights`)."""


def initial_weights(folder: str | os.PathLike, network: DetectorConfig) -> tuple[dict, str]:
    """(state dict, SHA-256 of its weights file) of the trained detector in ``folder``, to start training
    ``network`` from it.

    The grid spacing may differ (the network is convolutional: a model trained at 1.5 mm fine-tunes at 1.0 mm,
    where the same nodule spans 1.5× more voxels).

    Raises:
        lunglesionai.nets.model_store.ModelFileError: the folder holds no valid detector, or its architecture
            (:data:`ARCHITECTURE_FIELDS`) differs from ``network``'s (the message names the fields).
    """
    from lunglesionai.nets.model_store import ModelFileError, load_model

    saved, state, sha = load_model(folder, DETECTOR_FORMAT, "lunglesionai train detector --out DIR")
    other = DetectorConfig.from_dict(saved["network"])
    differing = [f for f in ARCHITECTURE_FIELDS if getattr(other, f) != getattr(network, f)]
    if differing:
        raise ModelFileError(f"{folder}: cannot start from this detector, its {', '.join(differing)} differ from "
                             f"the network being trained")
    return state, sha


def _save_detector(out_dir, detector, config: DetectorTrainConfig, steps_done: int, seconds: float,
                   init_sha256: Optional[str] = None, hosts: Optional[dict[str, str]] = None) -> str:
    training = asdict(config)
    training["network"] = config.network.to_dict()
    training["steps_done"] = steps_done
    if init_sha256 is not None:
        training["init_sha256"] = init_sha256
    data = []
    if config.n_real or config.n_phantom:
        data.append("composites: LIDC-IDRI train-split nodules pasted into the real chest CT and phantom lungs")
    if hosts:
        data.append("host composites: LIDC-IDRI train-split nodules pasted into each host CT at its own grid, "
                    "scanner-augmented (lunglesionai.training.detector_hosts)")
    extra = {"hosts": dict(hosts)} if hosts else {}
    return save_model(out_dir, detector.network.state_dict(), WEIGHTS_FILE, {
        "format": DETECTOR_FORMAT,
        "network": config.network.to_dict(),
        "training": training,
        "train_seconds": round(seconds, 1),
        "data": "; ".join(data) or "LUNA16-style scans",
        **extra,
    })
