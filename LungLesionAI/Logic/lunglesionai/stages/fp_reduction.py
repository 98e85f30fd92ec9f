"""Decoupled false-positive reduction: a small 3-D CNN that re-scores each detector candidate from a crop.

The idea is NoduleNet's (Tang et al., "NoduleNet: Decoupled False Positive Reduction for Pulmonary Nodule Detection
and Segmentation", MICCAI 2019): the detector's features serve localisation; a separate classifier with a smaller
receptive field, trained on the detector's own hard negatives, decides nodule vs not. Here the classifier reads a
``crop_size``³ crop of the detector's input grid (:class:`lunglesionai.stages.retina_detector.DetectionGrid`, isotropic
``spacing_mm``, HU window → [0, 1]) centred on the candidate, so no second resampling of the CT is needed.

Crops are (B, C, X, Y, Z) tensors in the grid's (x, y, z) axis order; outside the grid they are padded with 0
(= -1000 HU, air). Channel 0 is the ``crop_size``³ crop at the grid spacing; with ``FprConfig.context`` channel 1 is
the context: a crop twice as wide, averaged 2×2×2 down to the same ``crop_size``³ (so at 1.5 mm, 36 mm of detail and
72 mm of surroundings: enough to see whether a dense structure continues as a vessel or airway wall, or lies in a
patch of diffuse opacity, beyond the 36 mm a single crop shows).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from lunglesionai.nets.model_store import ModelFileError, load_model, model_dir

__all__ = ["FPR_FORMAT", "FprConfig", "FprNet", "grid_crops", "context_crops", "network_input", "FalsePositiveReducer"]

FPR_FORMAT = "lunglesionai-fpr/1"
WEIGHTS_FILE = "fpr.pt"
DEFAULT_GRID_SPACING_MM = 1.5
"""The classifier's grid spacing, mm: ``train fpr`` builds its composites at it (whatever the detector's grid), and
a model whose config.json names none is assumed to use it."""
FALLBACK_MIN_SCORE = 0.5
"""Operating point on the combined score when the model's config.json names none."""


@dataclass(frozen=True)
class FprConfig:
    """Architecture of :class:`FprNet`.

    Args:
        crop_size: voxels per side of the crop (even, divisible by 4).
        channels: widths of the three convolution stages.
        dropout: dropout before the final linear layer.
        context: add the context channel (module docstring); False = the single-crop network of the first models.
    """

    crop_size: int = 24
    channels: tuple[int, int, int] = (8, 16, 32)
    dropout: float = 0.2
    context: bool = False

    @property
    def in_channels(self) -> int:
        """Input channels: 1, or 2 with the context channel."""
        return 2 if self.context else 1

    def __post_init__(self) -> None:
        if self.crop_size % 4 or self.crop_size < 8:
            raise ValueError(f"FprConfig.crop_size must be a multiple of 4 and >= 8, got {self.crop_size}")
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"FprConfig.channels must be 3 positive widths, got {self.channels}")

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FprConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "channels": tuple(data.get("channels", cls.channels))})


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class FprNet(nn.Module):
    """(B, C, S, S, S) crops in [0, 1] (C = ``config.in_channels``) → (B,) logits of "nodule". Three conv stages
    (two 3×3×3 conv + BN + ReLU each) with 2× max-pooling between them, global average and max pooling, dropout,
    linear."""

    def __init__(self, config: FprConfig = FprConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.features = nn.Sequential(_block(config.in_channels, c1), nn.MaxPool3d(2), _block(c1, c2), nn.MaxPool3d(2), _block(c2, c3))
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * c3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3, 4)), f.amax(dim=(2, 3, 4))], dim=1)
        return self.head(pooled)[:, 0]


def grid_crops(image: np.ndarray, centres_xyz: np.ndarray, size: int) -> np.ndarray:
    """Cubes of ``size`` voxels centred (nearest voxel, clipped into the image) on each centre, zero-padded outside
    the image; the centre voxel is at index ``size // 2``.

    Args:
        image: (X, Y, Z) grid image.
        centres_xyz: (N, 3) fractional voxel coordinates (x, y, z).
        size: crop side, voxels.

    Returns:
        (N, size, size, size) float32.
    """
    centres = np.round(np.asarray(centres_xyz, dtype=float).reshape(-1, 3)).astype(int)
    centres = np.clip(centres, 0, np.array(image.shape) - 1)  # a centre outside the image uses the nearest voxel
    half = size // 2
    padded = np.pad(image, half)
    out = np.empty((len(centres), size, size, size), np.float32)
    for n, (x, y, z) in enumerate(centres):  # padded index of voxel c - half is c
        out[n] = padded[x:x + size, y:y + size, z:z + size]
    return out


def context_crops(image: np.ndarray, centres_xyz: np.ndarray, size: int) -> np.ndarray:
    """Context crops: cubes of ``2 * size`` voxels centred as in :func:`grid_crops`, averaged over 2×2×2 blocks to
    ``size``³ (twice the field of view at half the resolution; zero padding outside the image).

    Args:
        image: (X, Y, Z) grid image.
        centres_xyz: (N, 3) fractional voxel coordinates (x, y, z).
        size: output side, voxels (the crop read is ``2 * size``).

    Returns:
        (N, size, size, size) float32.
    """
    wide = grid_crops(image, centres_xyz, 2 * size)
    return wide.reshape(len(wide), size, 2, size, 2, size, 2).mean(axis=(2, 4, 6), dtype=np.float32)


def network_input(image: np.ndarray, centres_xyz: np.ndarray, config: FprConfig, margin: int = 0) -> np.ndarray:
    """The classifier's input for each centre: (N, C, S, S, S) float32, C = ``config.in_channels``, S =
    ``config.crop_size + 2 * margin`` (a margin leaves room for shift augmentation in training; the centre voxel
    stays at index S // 2).

    Args:
        image: (X, Y, Z) detection grid image in [0, 1].
        centres_xyz: (N, 3) fractional voxel coordinates (x, y, z) of the candidates.
        config: the network's settings (crop size, context channel).
        margin: voxels added on every side.
    """
    size = config.crop_size + 2 * margin
    channels = [grid_crops(image, centres_xyz, size)]
    if config.context:
        channels.append(context_crops(image, centres_xyz, size))
    return np.stack(channels, axis=1)


class FalsePositiveReducer:
    """The trained :class:`FprNet` (CPU, evaluation mode). Build it with :meth:`load`."""

    def __init__(self, net: FprNet, sha256: str, info: dict) -> None:
        self.net = net.eval()
        self.sha256 = sha256
        self.info = info

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None, *, verify_sha256: bool = True) -> "FalsePositiveReducer":
        """Read a folder written by ``lunglesionai train fpr`` (default: ``models/fpr``).

        Raises:
            lunglesionai.nets.model_store.ModelFileError: missing, wrong format, checksum or network mismatch.
        """
        folder = model_dir("fpr") if folder is None else folder
        config, state, sha = load_model(folder, FPR_FORMAT, "lunglesionai train fpr --lidc DIR --out DIR",
                                        verify_sha256=verify_sha256)
        try:
            net = FprNet(FprConfig.from_dict(config["network"]))
            net.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{folder}: weights do not fit the configured network ({exc})") from exc
        return cls(net, sha, config)

    def model_info(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}`` for ``Report.models``."""
        return {"name": "fpr-classifier", "version": FPR_FORMAT, "sha256": self.sha256}

    @property
    def grid_spacing_mm(self) -> float:
        """Spacing of the isotropic grid the classifier was trained on (``config.json``'s ``grid_spacing_mm``)."""
        return float(self.info.get("grid_spacing_mm", DEFAULT_GRID_SPACING_MM))

    @property
    def default_min_score(self) -> float:
        """The default operating point on the combined score: ``config.json``'s ``operating_point.min_score``
        (chosen on the composite validation set, see the model card), else :data:`FALLBACK_MIN_SCORE`."""
        return float(self.info.get("operating_point", {}).get("min_score", FALLBACK_MIN_SCORE))

    @torch.no_grad()
    def probabilities(self, image: np.ndarray, centres_xyz: np.ndarray, batch: int = 64) -> np.ndarray:
        """P(nodule) per centre, averaged over the crop and its mirror along x.

        Args:
            image: (X, Y, Z) detection grid image in [0, 1].
            centres_xyz: (N, 3) candidate centres in grid voxel coordinates.
            batch: crops per network call.

        Returns:
            (N,) float64 probabilities (empty when N = 0).
        """
        crops = network_input(image, centres_xyz, self.net.config)
        out = []
        for start in range(0, len(crops), batch):
            x = torch.from_numpy(crops[start:start + batch])
            logits = 0.5 * (self.net(x) + self.net(torch.flip(x, dims=(2,))))
            out.append(torch.sigmoid(logits).numpy())
        return np.concatenate(out).astype(float) if out else np.zeros(0)
