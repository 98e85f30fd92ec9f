"""Training of the DenseSharp nodule grader on LIDC-IDRI VOIs: ``lunglesionai train grader``.

Losses (:class:`GraderLoss`): Dice + binary cross-entropy on the soft consensus mask (``monai.losses.DiceCELoss``,
per-nodule Dice so small nodules count as much as big ones); binary cross-entropy for malignancy; cross-entropy
for the 1-5 rating; class-balanced cross-entropy for texture and the invasiveness surrogate. Class imbalance
(about 53 ground-glass, 50 part-solid, 464 solid training nodules) is handled by weighting each class by the
inverse of its "effective number of samples" (1 - β^n) / (1 - β) (Cui et al., "Class-Balanced Loss Based on
Effective Number of Samples", CVPR 2019, doi:10.1109/CVPR.2019.00949), normalised to mean 1; with β = 0.999
the weights are close to inverse frequency. Malignancy (about 35 % positive) is left unweighted so that its
probability stays calibrated; its head starts at the diameter-only logistic regression fit on the training
split (:meth:`DenseSharpNet.set_malignancy_diameter_prior`), so the image features learn what size does not
explain. An auxiliary mean-squared-error term regresses the LIDC semantic ratings (:data:`lidc.ATTRIBUTES`).

LIDC attribute heads (``network.lidc_attribute_heads``): the ordinal spiculation / lobulation / margin /
sphericity heads are trained by binary cross-entropy on each cut "rating > k", k = 1..4 (the cumulative-logit
likelihood; unweighted, so the probabilities stay calibrated for the rules that read them), the calcification
pattern head by unweighted cross-entropy over the six LIDC calcification ratings; both start at the training
split's rating frequencies. Fine-tuning (``init_from``): backbone and old heads start from a saved grader, the
attribute heads at those frequencies; ``pretrained_lr_factor`` scales the learning rate of the old parts (0
freezes them, BatchNorm statistics included, so only the new heads learn).

Reproducible: fixed seeds (torch, numpy, MONAI transforms), single-process data loading, a fixed thread count;
the resolved config is saved as JSON next to the weights. Model selection on ``val`` by the mean of Dice
(isotropic grid), malignancy AUC and the two macro-F1s; then temperature scaling of the malignancy logit
(Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) is fit on ``val`` and kept only when it
lowers the val expected calibration error. Only ``split == train`` rows are trained on.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from lunglesionai.core.output_folder import write_json_atomic
from lunglesionai.core.vocabulary import TEXTURE_CLASSES
from lunglesionai.datasets.lidc import HU_WINDOW, read_nodule_table
from lunglesionai.datasets.lidc_crops import PAD_HU, AugmentationConfig, CropSet, build_crop_set, training_transforms
from lunglesionai.evaluation.metrics.classification import (
    confusion_matrix,
    expected_calibration_error,
    fit_logistic,
    macro_f1,
    roc_auc,
)
from lunglesionai.nets.densesharp import DenseSharpConfig, DenseSharpNet, DenseSharpOutput
from lunglesionai.stages.grading import (
    WEIGHTS_FILE,
    NoduleGrader,
    predict_crops,
    save_grader,
    stacked_logit,
    stacking_features,
)
from lunglesionai.training.grader_attributes import (
    AttributeLabels,
    attribute_config,
    attribute_head_losses,
    attribute_val_metrics,
)
from lunglesionai.training.grader_calibration import calibrate_temperature, fit_malignancy_stacker

__all__ = [
    "LossWeights",
    "GraderTrainingConfig",
    "GraderLoss",
    "TrainResult",
    "class_balanced_weights",
    "train_grader",
]

logger = logging.getLogger(__name__)

RESULT_FILE = "train_result.json"
@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (mask, malignancy, rating, texture, invasiveness, auxiliary attributes, LIDC
    attribute heads: ordinal ratings and calcification pattern)."""

    mask: float = 1.0
    malignancy: float = 1.0
    rating: float = 0.5
    texture: float = 0.5
    invasiveness: float = 0.5
    attributes: float = 0.5
    ordinal_attributes: float = 0.5
    calcification: float = 0.5


@dataclass(frozen=True)
class GraderTrainingConfig:
    """Everything that defines a training run (saved as ``config.json`` beside the weights).

    Args:
        data_dir: folder in the ``lidc_voi`` layout.
        out_dir: where ``grader.pt``, ``config.json`` and ``train_result.json`` go.
        epochs: passes over the training split.
        seed: seed of torch, numpy and the MONAI transforms.
        batch_size: crops per step.
        learning_rate, weight_decay: AdamW; cosine decay after ``warmup_epochs`` of linear warm-up.
        spacing_mm: isotropic crop spacing (mm).
        crop_size: network input size per side (voxels; a multiple of ``network.size_divisor``).
        cache_margin: extra voxels per side cached around the crop (room for rotations and shifts).
        hu_window: (low, high) HU mapped to [0, 1].
        class_balance_beta: β of the class-balanced texture / invasiveness weights (0 = unweighted).
        diameter_jitter: the diameters given to the network in training are the table's times
            exp(N(0, jitter²)) (a measured diameter is never exact).
        eval_every: validate every this many epochs (and after the last).
        num_threads: torch CPU threads (1 is fastest when other work shares the cores).
        max_minutes: stop starting new epochs after this much wall time (the best epoch so far is kept).
        cache_dir: optional folder for the cropped-VOI cache (.npz; never commit it).
        init_from: optional grader folder to fine-tune from (its network config must equal ``network`` apart
            from ``lidc_attribute_heads``); its weights initialise every part it has, new heads start at the
            training split's rating frequencies.
        pretrained_lr_factor: learning-rate factor of the parts taken from ``init_from`` (0 freezes them).
        network, augmentation, loss_weights: see their classes.

    Raises:
        ValueError: a count is not positive, or ``crop_size`` does not suit the network.
    """

    data_dir: str
    out_dir: str = "models/grader"
    epochs: int = 60
    seed: int = 0
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    spacing_mm: float = 1.0
    crop_size: int = 32
    cache_margin: int = 8
    hu_window: tuple[float, float] = HU_WINDOW
    class_balance_beta: float = 0.999
    diameter_jitter: float = 0.1
    eval_every: int = 1
    num_threads: int = 1
    max_minutes: float = 55.0
    cache_dir: Optional[str] = None
    init_from: Optional[str] = None
    pretrained_lr_factor: float = 1.0
    network: DenseSharpConfig = field(default_factory=lambda: DenseSharpConfig(lidc_attribute_heads=True))
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    loss_weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "crop_size", "eval_every", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GraderTrainingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size % self.network.size_divisor:
            raise ValueError(
                f"crop_size {self.crop_size} must be a multiple of the network's {self.network.size_divisor}"
            )
        if self.spacing_mm <= 0 or self.cache_margin < 0 or self.max_minutes <= 0 or self.diameter_jitter < 0:
            raise ValueError(f"spacing_mm, max_minutes must be > 0, cache_margin, diameter_jitter >= 0: {self}")
        if self.pretrained_lr_factor < 0:
            raise ValueError(f"pretrained_lr_factor must be >= 0, got {self.pretrained_lr_factor}")
        if not 0 <= self.class_balance_beta < 1:
            raise ValueError(f"class_balance_beta must be in [0, 1), got {self.class_balance_beta}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it. ``cache_dir`` is left out: where the crop cache lives
        does not change the model (and would put a machine's path into the model card)."""
        d = asdict(self)
        d.pop("cache_dir")
        d["network"] = self.network.to_dict()
        d["hu_window"] = list(self.hu_window)
        d["augmentation"]["rotate_deg"] = list(self.augmentation.rotate_deg)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GraderTrainingConfig":
        """Rebuild from :meth:`to_dict` output (unknown keys raise TypeError)."""
        d = dict(d)
        d["network"] = DenseSharpConfig(**d.get("network", {}))
        augmentation = dict(d.get("augmentation", {}))
        if "rotate_deg" in augmentation:
            augmentation["rotate_deg"] = tuple(augmentation["rotate_deg"])
        d["augmentation"] = AugmentationConfig(**augmentation)
        d["loss_weights"] = LossWeights(**d.get("loss_weights", {}))
        d["hu_window"] = tuple(d.get("hu_window", HU_WINDOW))
        return cls(**d)


def class_balanced_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """Per-class weights (1 - β) / (1 - β^n), normalised to mean 1 (Cui et al., CVPR 2019).

    Args:
        counts: (C,) samples per class (a class with 0 samples gets the largest weight).
        beta: in [0, 1); 0 gives equal weights.

    Returns:
        (C,) float64 weights.

    Example:
        >>> class_balanced_weights(np.array([10, 90]), 0.0).tolist()
        [1.0, 1.0]
    """
    counts = np.maximum(np.asarray(counts, dtype=float), 1.0)
    effective = (1.0 - np.power(beta, counts)) / (1.0 - beta) if beta > 0 else np.ones_like(counts)
    weights = 1.0 / effective
    return weights / weights.mean()


class GraderLoss(nn.Module):
    """Weighted sum of the DenseSharp losses; labels of -1 are ignored.

    Args:
        texture_weights: (3,) class weights of the texture and invasiveness cross-entropies.
        weights: term weights.

    Returns (forward):
        (total loss, {term: float}) for a :class:`DenseSharpOutput` and a batch dict with "mask"
        (B, 1, D, H, W) soft targets, "malignant", "rating" (0-4), "texture" (B,) int64 labels (-1 = none),
        "attributes" (B, A) float targets (NaN = none; mean squared error) and, for a net with LIDC attribute
        heads, "attribute_ratings" (B, 4) int64 1-5 ratings (0 = none; binary cross-entropy of every cut
        "rating > k") and "calcification" (B,) int64 pattern index 0-5 (-1 = none; cross-entropy).
    """

    def __init__(self, texture_weights: torch.Tensor, weights: LossWeights = LossWeights()) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.weights = weights
        self.mask_loss = DiceCELoss(sigmoid=True)
        self.class_loss = nn.CrossEntropyLoss(weight=texture_weights.float(), ignore_index=-1)
        self.rating_loss = nn.CrossEntropyLoss(ignore_index=-1)

    def forward(self, out: DenseSharpOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = {"mask": self.mask_loss(out.mask_logits, batch["mask"])}
        malignant = batch["malignant"]
        if (malignant >= 0).any():
            valid = malignant >= 0
            terms["malignancy"] = nn.functional.binary_cross_entropy_with_logits(
                out.malignancy_logit[valid], malignant[valid].float()
            )
        if (batch["rating"] >= 0).any():
            terms["rating"] = self.rating_loss(out.rating_logits, batch["rating"])
        if (batch["texture"] >= 0).any():
            terms["texture"] = self.class_loss(out.texture_logits, batch["texture"])
            terms["invasiveness"] = self.class_loss(out.invasiveness_logits, batch["texture"])
        wanted = batch["attributes"]
        known = torch.isfinite(wanted)
        if out.attributes.shape[1] and known.any():
            terms["attributes"] = nn.functional.mse_loss(out.attributes[known], wanted[known])
        terms.update(attribute_head_losses(out, batch))
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        return total, {name: float(value.detach()) for name, value in terms.items()}


@dataclass
class TrainResult:
    """What :func:`train_grader` produced.

    Attributes:
        out_dir: folder holding ``grader.pt``, ``config.json``, ``train_result.json``.
        weights_sha256: SHA-256 of ``grader.pt``.
        best_epoch: epoch (from 1) whose weights were kept.
        epochs_run: epochs trained (fewer than configured when ``max_minutes`` ran out).
        val_metrics: the kept epoch's val metrics (isotropic-grid Dice, AUC, F1s, ECE after calibration).
        temperature: malignancy temperature (1.0 when scaling did not lower the val ECE).
        ece_before, ece_after: val ECE of the malignancy probability without / with the temperature.
        seconds: wall time.
        history: per-epoch training losses and val metrics.
    """

    out_dir: Path
    weights_sha256: str
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, Any]
    temperature: float
    ece_before: Optional[float]
    ece_after: Optional[float]
    seconds: float
    history: list[dict[str, Any]]


def train_grader(config: GraderTrainingConfig) -> TrainResult:
    """Train the DenseSharp grader on ``split == train`` rows, select on ``val``, calibrate, save.

    Args:
        config: see :class:`GraderTrainingConfig`.

    Returns:
        :class:`TrainResult`.

    Raises:
        LidcTableError: the data folder is not in the ``lidc_voi`` layout, or lacks train / val rows.

    Example:
        >>> train_grader(GraderTrainingConfig(data_dir="../shared/data/lidc_voi", epochs=2))  # doctest: +SKIP
    """
    start = time.monotonic()
    torch.set_num_threads(config.num_threads)
    _seed_everything(config.seed)
    size = config.crop_size + 2 * config.cache_margin
    train, val = (
        build_crop_set(config.data_dir, read_nodule_table(config.data_dir, s), config.spacing_mm, size,
                       config.hu_window, config.cache_dir)
        for s in ("train", "val")
    )
    logger.info("train %d nodules, val %d nodules, crops %d^3 at %.2f mm", len(train.files), len(val.files),
                config.crop_size, config.spacing_mm)
    labels = {s: AttributeLabels.from_records(read_nodule_table(config.data_dir, s)) for s in ("train", "val")}
    net, pretrained = _initial_network(config, labels["train"])
    counts = np.bincount(train.texture[train.texture >= 0], minlength=len(TEXTURE_CLASSES))
    loss_fn = GraderLoss(torch.as_tensor(class_balanced_weights(counts, config.class_balance_beta)),
                         config.loss_weights)
    optimizer = _optimizer(net, pretrained, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: _lr_factor(e, config))
    transform = training_transforms(config.augmentation, config.crop_size, config.spacing_mm, config.hu_window)
    transform.set_random_state(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    history, best = [], None
    for epoch in range(1, config.epochs + 1):
        losses = _train_epoch(net, loss_fn, optimizer, train, transform, rng, config, labels["train"])
        schedule.step()
        entry = {"epoch": epoch, "lr": optimizer.param_groups[-1]["lr"], **losses}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            metrics = _val_metrics(_predict(net, val, config), val, labels=labels["val"])
            entry.update(metrics)
            if best is None or metrics["selection_score"] > best[1]["selection_score"]:
                best = (epoch, metrics, copy.deepcopy(net.state_dict()))
        history.append(entry)
        logger.info("epoch %d/%d %s", epoch, config.epochs, _format_entry(entry))
        if (time.monotonic() - start) / 60.0 * (epoch + 1) / epoch > config.max_minutes:
            logger.warning("stopping after epoch %d: max_minutes %.0f would be exceeded", epoch, config.max_minutes)
            break
    if best is None:  # stopped before any validation
        best = (epoch, _val_metrics(_predict(net, val, config), val, labels=labels["val"]),
                copy.deepcopy(net.state_dict()))
    net.load_state_dict(best[2])
    return _finish(net, config, train, val, best[0], len(history), history, start, labels["val"])


def _initial_network(config: GraderTrainingConfig, labels: "AttributeLabels") -> tuple[DenseSharpNet, set[str]]:
    """The network to train and the names of its parameters loaded from ``config.init_from`` (empty without).

    Raises:
        ValueError: ``init_from``'s network differs from ``config.network`` other than in the attribute heads.
    """
    net = DenseSharpNet(config.network)
    if config.network.lidc_attribute_heads:
        exceed, patterns = labels.priors()
        net.set_attribute_priors(torch.as_tensor(exceed), torch.as_tensor(patterns))
    if config.init_from is None:
        if config.network.diameter_input:
            (slope,), intercept = _diameter_logistic(config.data_dir)
            net.set_malignancy_diameter_prior(float(slope), intercept)
        return net, set()
    source = NoduleGrader.load(config.init_from)
    theirs = {**source.net.config.to_dict(), "lidc_attribute_heads": config.network.lidc_attribute_heads}
    if theirs != config.network.to_dict():
        raise ValueError(f"{config.init_from}: its network {source.net.config} differs from {config.network}")
    state = source.net.state_dict()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(name in net.pretrained_parameter_names() for name in missing):
        raise ValueError(f"{config.init_from}: weights do not fit (missing {missing}, unexpected {unexpected})")
    logger.info("initialised from %s (sha256 %s); new parameters: %s", config.init_from, source.sha256[:12],
                sorted({name.split(".")[0] for name in missing}))
    return net, {name for name, _ in net.named_parameters() if name in state}


def _optimizer(net: DenseSharpNet, pretrained: set[str], config: GraderTrainingConfig) -> torch.optim.Optimizer:
    """AdamW with the learning rate × ``pretrained_lr_factor`` for ``pretrained`` (frozen when the factor is 0)."""
    old = [p for name, p in net.named_parameters() if name in pretrained]
    new = [p for name, p in net.named_parameters() if name not in pretrained]
    groups = [{"params": new, "lr": config.learning_rate}]
    if old and config.pretrained_lr_factor > 0:
        groups.insert(0, {"params": old, "lr": config.learning_rate * config.pretrained_lr_factor})
    for p in old:
        p.requires_grad_(config.pretrained_lr_factor > 0)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _diameter_logistic(data_dir: str) -> tuple[np.ndarray, float]:
    """((slope,), intercept) of malignancy ~ log(diameter_mm) on the train split (the diameter-only baseline)."""
    train = [r for r in read_nodule_table(data_dir, "train") if r.malignant is not None]
    return fit_logistic(np.log([r.diameter_mm for r in train]), [r.malignant for r in train])


def _seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    torch.manual_seed(seed)
    np.random.seed(seed)


def _lr_factor(epoch: int, config: GraderTrainingConfig) -> float:
    if epoch < config.warmup_epochs:
        return (epoch + 1) / (config.warmup_epochs + 1)
    progress = (epoch - config.warmup_epochs) / max(1, config.epochs - config.warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _train_epoch(net, loss_fn, optimizer, crops: CropSet, transform, rng, config,
                 labels: Optional[AttributeLabels] = None) -> dict[str, float]:
    frozen = config.init_from is not None and config.pretrained_lr_factor == 0
    net.train(not frozen)  # frozen old parts: BatchNorm statistics and dropout stay as trained
    order = rng.permutation(len(crops.files))
    sums: dict[str, float] = {}
    n_batches = 0
    for first in range(0, len(order), config.batch_size):
        idx = order[first : first + config.batch_size]
        if len(idx) < 2:  # BatchNorm needs more than one sample
            continue
        batch = _augmented_batch(crops, idx, transform, labels)
        jitter = np.exp(rng.normal(0.0, config.diameter_jitter, len(idx))) if config.diameter_jitter else 1.0
        diameters = torch.as_tensor(crops.diameter_mm[idx] * jitter, dtype=torch.float32)
        total, terms = loss_fn(net(batch["image"], diameters), batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        n_batches += 1
        for name, value in {"loss": float(total.detach()), **terms}.items():
            sums[name] = sums.get(name, 0.0) + value
    return {f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}


def _augmented_batch(crops: CropSet, idx: np.ndarray, transform,
                     labels: Optional[AttributeLabels] = None) -> dict[str, torch.Tensor]:
    samples = [
        transform({"image": crops.images[i][None].astype(np.float32), "mask": crops.masks[i][None].astype(np.float32)})
        for i in idx
    ]
    return {
        "image": torch.stack([torch.as_tensor(s["image"]) for s in samples]).float(),
        "mask": torch.stack([torch.as_tensor(s["mask"]) for s in samples]).float().clamp(0, 1),
        "malignant": torch.as_tensor(crops.malignant[idx]),
        "rating": torch.as_tensor(crops.rating[idx]),
        "texture": torch.as_tensor(crops.texture[idx]),
        "attributes": torch.as_tensor(crops.attributes[idx]),
        **({} if labels is None else {"attribute_ratings": torch.as_tensor(labels.ratings[idx]),
                                      "calcification": torch.as_tensor(labels.calcification[idx])}),
    }


@torch.no_grad()
def _predict(net: DenseSharpNet, crops: CropSet, config: GraderTrainingConfig) -> dict[str, np.ndarray]:
    """Centre crops (no augmentation): mask probabilities and head outputs for every nodule."""
    net.eval()
    m, s = config.cache_margin, config.crop_size
    parts: dict[str, list[np.ndarray]] = {}
    for first in range(0, len(crops.files), config.batch_size):
        images = torch.as_tensor(crops.images[first : first + config.batch_size, m : m + s, m : m + s, m : m + s])
        diameters = torch.as_tensor(crops.diameter_mm[first : first + config.batch_size], dtype=torch.float32)
        out = net(images[:, None].float(), diameters)
        for name, value in (
            ("mask", torch.sigmoid(out.mask_logits[:, 0])),
            ("malignancy_logit", out.malignancy_logit),
            ("rating", torch.softmax(out.rating_logits, 1)),
            ("texture", torch.softmax(out.texture_logits, 1)),
            ("invasiveness", torch.softmax(out.invasiveness_logits, 1)),
            ("attribute_exceed", None if out.attribute_cut_logits is None else torch.sigmoid(out.attribute_cut_logits)),
            ("calcification", None if out.calcification_logits is None else torch.softmax(out.calcification_logits, 1)),
        ):
            if value is not None:
                parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def _val_metrics(pred: dict[str, np.ndarray], crops: CropSet, temperature: float = 1.0,
                 labels: Optional[AttributeLabels] = None) -> dict[str, Any]:
    m = (crops.images.shape[1] - pred["mask"].shape[1]) // 2
    s = pred["mask"].shape[1]
    truth = crops.masks[:, m : m + s, m : m + s, m : m + s] > 0.5
    hit = pred["mask"] > 0.5
    dice = 2 * (truth & hit).sum((1, 2, 3)) / np.maximum(truth.sum((1, 2, 3)) + hit.sum((1, 2, 3)), 1)
    known = crops.malignant >= 0
    prob = 1.0 / (1.0 + np.exp(-pred["malignancy_logit"][known] / temperature))
    metrics: dict[str, Any] = {"dice_iso_mean": float(dice.mean())}
    metrics["malignancy_auc"] = roc_auc(prob, crops.malignant[known]) if known.any() else None
    metrics["malignancy_ece"] = expected_calibration_error(prob, crops.malignant[known]) if known.any() else None
    rated = crops.rating >= 0
    expected = pred["rating"][rated] @ np.arange(1, pred["rating"].shape[1] + 1)
    metrics["rating_mae"] = float(np.abs(expected - (crops.rating[rated] + 1)).mean()) if rated.any() else None
    labelled = crops.texture >= 0
    for head in ("texture", "invasiveness"):
        matrix = confusion_matrix(crops.texture[labelled], pred[head][labelled].argmax(1), len(TEXTURE_CLASSES))
        metrics[f"{head}_macro_f1"] = macro_f1(matrix)
    selected = ["dice_iso_mean", "malignancy_auc", "texture_macro_f1", "invasiveness_macro_f1"]
    if labels is not None and "attribute_exceed" in pred:
        metrics.update(attribute_val_metrics(pred, labels))
        selected.append("attribute_kappa_mean")
    scores = [metrics[k] for k in selected]
    metrics["selection_score"] = float(np.mean([v for v in scores if v is not None]))
    return metrics


def _format_entry(entry: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in entry.items() if isinstance(v, float))


def _finish(net, config, train: CropSet, val: CropSet, best_epoch: int, epochs_run: int, history,
            start: float, val_labels: Optional[AttributeLabels] = None) -> TrainResult:
    """Stack (fit on train), calibrate (on val, kept only when it lowers the ECE), save weights + config."""
    train_pred, val_pred = (_predict_mirrored(net, crops, config) for crops in (train, val))
    known = train.malignant >= 0
    stacker = fit_malignancy_stacker(
        {k: v[known] for k, v in stacking_features(train_pred, train.diameter_mm).items()}, train.malignant[known]
    )
    val_pred["malignancy_logit"] = stacked_logit(stacker, stacking_features(val_pred, val.diameter_mm))
    calibration = calibrate_temperature(val_pred["malignancy_logit"], val.malignant)
    metrics = _val_metrics(val_pred, val, calibration["temperature"], labels=val_labels)
    (a,), b = _diameter_logistic(config.data_dir)
    preprocessing = {
        "spacing_mm": config.spacing_mm,
        "crop_size": config.crop_size,
        "hu_window": list(config.hu_window),
        "pad_hu": PAD_HU,
        "orientation": "crop axes along the volume's own axes (LPS world geometry kept)",
    }
    out_dir = Path(config.out_dir)
    sha = save_grader(net, out_dir, preprocessing, {
        "malignancy_stacker": stacker,
        "calibration": calibration,
        "diameter_baseline": {"a": float(a), "b": b, "feature": "log(diameter_mm)", "fit_on": "train"},
        "best_epoch": best_epoch,
        "training": config.to_dict(),
        **attribute_config(net, config.init_from, config.pretrained_lr_factor),
    })
    result = TrainResult(out_dir, sha, best_epoch, epochs_run, metrics, calibration["temperature"],
                         calibration["val_ece_before"], calibration["val_ece_after"], time.monotonic() - start,
                         history)
    write_json_atomic(out_dir / RESULT_FILE,
                      {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()})
    logger.info("saved %s (sha256 %s), best epoch %d, %.0f s", out_dir / WEIGHTS_FILE, sha[:12], best_epoch,
                result.seconds)
    return result


def _predict_mirrored(net: DenseSharpNet, crops: CropSet, config: GraderTrainingConfig) -> dict[str, np.ndarray]:
    """:func:`lunglesionai.stages.grading.predict_crops` (with the mirror) on the centre crops, in batches."""
    m, s = config.cache_margin, config.crop_size
    parts: dict[str, list[np.ndarray]] = {}
    for first in range(0, len(crops.files), config.batch_size):
        chunk = slice(first, first + config.batch_size)
        images = crops.images[chunk, m : m + s, m : m + s, m : m + s].astype(np.float32)
        for name, value in predict_crops(net, images, crops.diameter_mm[chunk]).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}
