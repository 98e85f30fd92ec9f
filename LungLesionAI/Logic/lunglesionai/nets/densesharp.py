"""DenseSharp-style multi-task 3D network: nodule segmentation plus malignancy, texture and invasiveness heads.

After Zhao W, Yang J, Sun Y, et al., "3D Deep Learning from CT Scans Predicts Tumor Invasiveness of
Subcentimeter Pulmonary Adenocarcinomas", Cancer Research 78(24):6881-6889, 2018 (doi:10.1158/0008-5472.CAN-18-0696):
one 3-D DenseNet encoder (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017,
doi:10.1109/CVPR.2017.243) is shared by a segmentation decoder and classification heads, and trained on both
tasks at once, so the mask acts as a regulariser of the grading ("DenseSharp").

Differences from the paper, for CPU inference on small LIDC-IDRI nodules:

* a U-Net style decoder (skip connections from every encoder level) instead of plain up-sampling, for sharper
  masks;
* a narrow full-resolution stem and a strided convolution before the first dense block (most CPU time is
  spent at full resolution);
* the heads see the encoder's global average pool, a pool weighted by the predicted mask (the nodule's own
  features), the log of the predicted mask's soft volume, the intensity histogram inside the predicted mask and
  log(diameter_mm) given with the crop (radiologists' malignancy ratings follow size closely; the malignancy
  head can start at a diameter-only logistic regression). The mask enters the heads detached, so grading
  losses do not bend the segmentation;
* an auxiliary head regresses LIDC semantic ratings (calcification, lobulation, margin, sphericity,
  spiculation, subtlety) as a multi-task regulariser;
* optional LIDC attribute heads (``lidc_attribute_heads``): one ordinal head per 1-5 rating of
  :data:`lunglesionai.core.vocabulary.LIDC_RATED_ATTRIBUTES` (spiculation, lobulation, margin, sphericity), a
  cumulative-logit (proportional-odds) model P(rating > k) = sigmoid(s - θ_k), k = 1..4, with one linear score s
  and ordered cut points θ_1 < θ_2 < θ_3 < θ_4 per attribute (McCullagh, "Regression Models for Ordinal Data",
  J R Stat Soc B 42(2):109-142, 1980; as a network head: Cao, Mirjalili, Raschka, "Rank consistent ordinal
  regression for neural networks", Pattern Recognit Lett 140:325-331, 2020, doi:10.1016/j.patrec.2020.11.008;
  the cut points are kept ordered by construction, so the probabilities are rank consistent), and a 6-way
  softmax head over the LIDC calcification ratings (:data:`lunglesionai.core.vocabulary.LIDC_CALCIFICATION_PATTERNS`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

from lunglesionai.core.vocabulary import LIDC_CALCIFICATION_PATTERNS, LIDC_RATED_ATTRIBUTES

__all__ = ["DenseSharpConfig", "DenseSharpNet", "DenseSharpOutput"]

LOG_VOLUME_CENTER = 5.0
"""Centre of the heads' size feature log(1 + mask voxels): e^5 ≈ 150 voxels, a 6.6 mm nodule on a 1 mm grid."""
LOG_VOLUME_SCALE = 2.0
"""Scale of the heads' size feature."""
LOG_DIAMETER_CENTER = math.log(7.0)
"""Centre of the heads' diameter feature log(diameter_mm) (7 mm, the median LIDC nodule)."""
LOG_DIAMETER_SCALE = 0.5
"""Scale of the heads' diameter feature."""
RATING_LEVELS = 5
"""Levels of an LIDC semantic rating (1-5); the ordinal heads have RATING_LEVELS - 1 cut points."""


@dataclass(frozen=True)
class DenseSharpConfig:
    """Architecture of :class:`DenseSharpNet`.

    Args:
        in_channels: input channels (1: windowed HU).
        stem_channels: channels of the full-resolution 3×3×3 stem convolution.
        down_channels: channels of the strided 3×3×3 convolution that halves the size before the first block.
        growth_rate: channels each dense layer adds.
        block_layers: dense layers per dense block; block ``n`` (from 1) works at 1/2**n of the input size.
        bottleneck_factor: a dense layer's 1×1×1 bottleneck has ``bottleneck_factor × growth_rate`` channels.
        compression: a transition keeps this fraction of the channels (DenseNet-BC θ).
        decoder_channels: channels of the decoder levels, from full resolution down (one per dense block).
        dropout: dropout on the pooled deep features before the heads (not on the size and histogram features).
        histogram_bins: the heads also get the histogram of the input intensity inside the predicted mask in
            this many equal bins of [0, 1] (the windowed HU range), plus its mean and standard deviation: the
            solid / ground-glass / calcified make-up that radiologists read as texture (0 disables).
        mask_prior: initial foreground probability of the mask head (its bias starts at logit(prior), so the
            background starts near its target instead of at 0.5: a nodule fills ~1 % of a crop).
        n_rating: classes of the 1-5 malignancy rating head.
        n_texture: classes of the texture head.
        n_invasiveness: classes of the invasiveness-surrogate head.
        n_attributes: outputs of the auxiliary head that regresses LIDC semantic ratings (calcification,
            lobulation, margin, sphericity, spiculation, subtlety; a multi-task regulariser after Hussein et al.,
            "Risk Stratification of Lung Nodules Using 3D CNN-Based Multi-task Learning", IPMI 2017,
            doi:10.1007/978-3-319-59050-9_20); 0 disables.
        diameter_input: the heads also get log(diameter_mm) given with each crop (the size a radiologist or the
            pipeline measured; LIDC malignancy ratings follow size closely), scaled like the volume feature.
        lidc_attribute_heads: add the LIDC attribute heads (ordinal spiculation, lobulation, margin, sphericity;
            6-way calcification pattern). False for graders trained before they existed (their config.json
            lacks the key), so those still load.

    Raises:
        ValueError: a count is not positive, compression is outside (0, 1], or dropout is outside [0, 1).
    """

    in_channels: int = 1
    stem_channels: int = 8
    down_channels: int = 24
    growth_rate: int = 12
    block_layers: tuple[int, ...] = (3, 4, 4)
    bottleneck_factor: int = 2
    compression: float = 0.5
    decoder_channels: tuple[int, ...] = (8, 16, 24)
    dropout: float = 0.2
    histogram_bins: int = 8
    mask_prior: float = 0.01
    n_rating: int = 5
    n_texture: int = 3
    n_invasiveness: int = 3
    n_attributes: int = 6
    diameter_input: bool = True
    lidc_attribute_heads: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_layers", tuple(int(n) for n in self.block_layers))
        object.__setattr__(self, "decoder_channels", tuple(int(n) for n in self.decoder_channels))
        counts = ("in_channels", "stem_channels", "down_channels", "growth_rate", "bottleneck_factor", "n_rating")
        for name in counts + ("n_texture", "n_invasiveness"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DenseSharpConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.block_layers or min(self.block_layers) < 1:
            raise ValueError(f"DenseSharpConfig.block_layers needs >= 1 block of >= 1 layer, got {self.block_layers}")
        if len(self.decoder_channels) != len(self.block_layers) or min(self.decoder_channels) < 1:
            raise ValueError(
                f"DenseSharpConfig.decoder_channels needs one positive count per dense block "
                f"({len(self.block_layers)}), got {self.decoder_channels}"
            )
        if not 0 < self.compression <= 1:
            raise ValueError(f"DenseSharpConfig.compression must be in (0, 1], got {self.compression}")
        if self.histogram_bins < 0 or self.n_attributes < 0:
            raise ValueError(f"DenseSharpConfig histogram_bins / n_attributes must be >= 0: {self}")
        if not 0 < self.mask_prior < 1:
            raise ValueError(f"DenseSharpConfig.mask_prior must be in (0, 1), got {self.mask_prior}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"DenseSharpConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this (2 ** number of dense blocks)."""
        return 2 ** len(self.block_layers)

    def to_dict(self) -> dict:
        """JSON-ready dict (the inverse is ``DenseSharpConfig(**d)``)."""
        d = asdict(self)
        d["block_layers"] = list(self.block_layers)
        d["decoder_channels"] = list(self.decoder_channels)
        return d


@dataclass
class DenseSharpOutput:
    """Outputs of :class:`DenseSharpNet` for a batch of B crops of size (D, H, W).

    Attributes:
        mask_logits: (B, 1, D, H, W) nodule-mask logits (sigmoid gives the probability).
        malignancy_logit: (B,) logit of "malignant" (LIDC ``Diagnosis_value`` = 1).
        rating_logits: (B, n_rating) logits of the 1-5 malignancy rating.
        texture_logits: (B, n_texture) logits of ground-glass, part-solid, solid.
        invasiveness_logits: (B, n_invasiveness) logits of pre-invasive, minimally-invasive, invasive.
        attributes: (B, n_attributes) predicted LIDC semantic ratings, scaled to about [-1, 1] (auxiliary).
        attribute_cut_logits: (B, A, 4) logits of P(rating > k), k = 1..4, for the A = 4 attributes of
            ``LIDC_RATED_ATTRIBUTES`` in that order (None without ``lidc_attribute_heads``).
        calcification_logits: (B, 6) logits of the LIDC calcification ratings 1-6 in the order of
            ``LIDC_CALCIFICATION_PATTERNS`` (None without ``lidc_attribute_heads``).
    """

    mask_logits: torch.Tensor
    malignancy_logit: torch.Tensor
    rating_logits: torch.Tensor
    texture_logits: torch.Tensor
    invasiveness_logits: torch.Tensor
    attributes: torch.Tensor
    attribute_cut_logits: Optional[torch.Tensor] = None
    calcification_logits: Optional[torch.Tensor] = None


class _OrdinalHeads(nn.Module):
    """Cumulative-logit heads, one per rated attribute: logits (B, A, K-1) of P(rating > k) = sigmoid(s_a - θ_a,k).

    s_a is a linear score of the features; the cut points θ_a,1 < ... < θ_a,K-1 are kept ordered as θ_a,1 plus
    cumulative softplus gaps (McCullagh 1980; Cao et al. 2020).
    """

    def __init__(self, n_features: int, n_attributes: int, n_levels: int) -> None:
        super().__init__()
        self.score = nn.Linear(n_features, n_attributes)
        self.first_cut = nn.Parameter(torch.zeros(n_attributes, 1))
        self.cut_gaps = nn.Parameter(torch.full((n_attributes, n_levels - 2), math.log(math.expm1(1.0))))

    def cuts(self) -> torch.Tensor:
        """(A, K-1) ordered cut points θ."""
        gaps = nn.functional.softplus(self.cut_gaps)
        return torch.cat([self.first_cut, self.first_cut + torch.cumsum(gaps, dim=1)], dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features)[:, :, None] - self.cuts()[None]

    @torch.no_grad()
    def set_cuts(self, cuts: torch.Tensor) -> None:
        """Set θ from an (A, K-1) tensor (sorted; gaps below 1e-3 are raised to 1e-3)."""
        cuts = torch.sort(torch.as_tensor(cuts, dtype=self.first_cut.dtype), dim=1).values
        gaps = torch.diff(cuts, dim=1).clamp(min=1e-3)
        self.first_cut.copy_(cuts[:, :1])
        self.cut_gaps.copy_(torch.log(torch.expm1(gaps)))


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1 bottleneck then BN-ReLU-Conv3; its output is concatenated to its input (DenseNet-BC)."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck_factor: int) -> None:
        super().__init__()
        mid = bottleneck_factor * growth_rate
        self.layers = nn.Sequential(
            nn.BatchNorm3d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(in_channels, mid, kernel_size=1, bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, growth_rate, kernel_size=3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


def _dense_block(in_channels: int, n_layers: int, growth_rate: int, bottleneck_factor: int) -> nn.Sequential:
    return nn.Sequential(
        *(_DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck_factor) for i in range(n_layers))
    )


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """BN-ReLU-Conv1 compression then 2× average pooling (DenseNet transition layer)."""
    return nn.Sequential(
        nn.BatchNorm3d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.AvgPool3d(kernel_size=2, stride=2),
    )


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class DenseSharpNet(nn.Module):
    """Multi-task 3-D DenseNet (DenseSharp, Zhao et al., Cancer Research 2018, doi:10.1158/0008-5472.CAN-18-0696).

    Encoder: a full-resolution 3×3×3 stem, a strided 3×3×3 convolution to half size, then
    ``len(block_layers)`` dense blocks separated by transitions (1×1×1 compression, 2× average pooling), so the
    deepest features are at 1/2**len(block_layers) of the input. Decoder: transposed convolutions back to the
    input size, each followed by a 3×3×3 convolution over the concatenated skip features of that level (stem,
    then each dense block but the last). Heads: linear layers on ``[global average pool, mask-weighted pool,
    log soft mask volume]`` of the deepest features and the intensity histogram inside the predicted mask (with
    ``lidc_attribute_heads`` also ordinal cumulative-logit heads for four 1-5 LIDC ratings and a calcification
    pattern head on the same features). The full-resolution layers are kept narrow: on a CPU they cost most.

    Args:
        config: see :class:`DenseSharpConfig`.

    Example:
        >>> net = DenseSharpNet(DenseSharpConfig()).eval()
        >>> out = net(torch.zeros(2, 1, 32, 32, 32), torch.tensor([6.0, 12.0]))
        >>> tuple(out.mask_logits.shape), tuple(out.texture_logits.shape)
        ((2, 1, 32, 32, 32), (2, 3))
    """

    def __init__(self, config: DenseSharpConfig = DenseSharpConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.stem = _conv_bn_relu(c.in_channels, c.stem_channels)
        self.down = nn.Sequential(
            nn.Conv3d(c.stem_channels, c.down_channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(c.down_channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        skip_channels = [c.stem_channels]
        channels = c.down_channels
        for level, n_layers in enumerate(c.block_layers):
            self.blocks.append(_dense_block(channels, n_layers, c.growth_rate, c.bottleneck_factor))
            channels += n_layers * c.growth_rate
            if level < len(c.block_layers) - 1:
                skip_channels.append(channels)
                reduced = max(1, int(channels * c.compression))
                self.transitions.append(_transition(channels, reduced))
                channels = reduced
        self.final_norm = nn.Sequential(nn.BatchNorm3d(channels), nn.ReLU(inplace=True))
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        below = channels
        for skip, width in zip(reversed(skip_channels), reversed(c.decoder_channels)):
            self.ups.append(nn.ConvTranspose3d(below, width, kernel_size=2, stride=2))
            self.fuse.append(_conv_bn_relu(width + skip, width))
            below = width
        self.mask_head = nn.Conv3d(below, 1, kernel_size=1)
        nn.init.constant_(self.mask_head.bias, math.log(c.mask_prior / (1.0 - c.mask_prior)))
        n_features = 2 * channels + 1 + (c.histogram_bins + 2 if c.histogram_bins else 0) + int(c.diameter_input)
        self.dropout = nn.Dropout(c.dropout)
        self.n_deep_features = 2 * channels
        self.malignancy_head = nn.Linear(n_features, 1)
        self.rating_head = nn.Linear(n_features, c.n_rating)
        self.texture_head = nn.Linear(n_features, c.n_texture)
        self.invasiveness_head = nn.Linear(n_features, c.n_invasiveness)
        self.attribute_head = nn.Linear(n_features, c.n_attributes) if c.n_attributes else None
        self.ordinal_heads = (
            _OrdinalHeads(n_features, len(LIDC_RATED_ATTRIBUTES), RATING_LEVELS) if c.lidc_attribute_heads else None
        )
        self.calcification_head = (
            nn.Linear(n_features, len(LIDC_CALCIFICATION_PATTERNS)) if c.lidc_attribute_heads else None
        )

    def forward(self, x: torch.Tensor, diameter_mm: Optional[torch.Tensor] = None) -> DenseSharpOutput:
        """Segment and grade a batch of crops.

        Args:
            x: (B, in_channels, D, H, W) float tensor; each of D, H, W a multiple of ``config.size_divisor``.
            diameter_mm: (B,) nodule diameters in mm given with the crops (required when
                ``config.diameter_input``; ignored otherwise).

        Returns:
            :class:`DenseSharpOutput` (mask logits at the input size; head logits per crop).

        Raises:
            ValueError: ``x`` is not 5-D, has the wrong channel count, or a size is not a multiple of the
                divisor; ``diameter_mm`` is missing, not (B,) or not positive when the config needs it.
        """
        self._check_input(x, diameter_mm)
        deep, mask_logits = self._segment(x)
        features = self._head_features(x, deep, mask_logits.detach(), diameter_mm)
        attributes = (
            self.attribute_head(features) if self.attribute_head is not None else features.new_zeros(len(x), 0)
        )
        return DenseSharpOutput(
            mask_logits=mask_logits,
            malignancy_logit=self.malignancy_head(features).squeeze(1),
            rating_logits=self.rating_head(features),
            texture_logits=self.texture_head(features),
            invasiveness_logits=self.invasiveness_head(features),
            attributes=attributes,
            attribute_cut_logits=None if self.ordinal_heads is None else self.ordinal_heads(features),
            calcification_logits=None if self.calcification_head is None else self.calcification_head(features),
        )

    @torch.no_grad()
    def set_attribute_priors(self, exceed_fractions: torch.Tensor, pattern_fractions: torch.Tensor) -> None:
        """Start the LIDC attribute heads at the training split's rating frequencies (image weights near 0).

        Args:
            exceed_fractions: (A, 4) fraction of nodules with rating > k, k = 1..4, per attribute of
                ``LIDC_RATED_ATTRIBUTES``; clipped to [1e-3, 1 - 1e-3].
            pattern_fractions: (6,) fraction of each calcification rating; clipped to >= 1e-3.

        Raises:
            ValueError: the config has no attribute heads, or a shape is wrong.
        """
        if self.ordinal_heads is None or self.calcification_head is None:
            raise ValueError("set_attribute_priors needs DenseSharpConfig.lidc_attribute_heads=True")
        exceed = torch.as_tensor(exceed_fractions, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
        patterns = torch.as_tensor(pattern_fractions, dtype=torch.float32).clamp(min=1e-3)
        expected = ((len(LIDC_RATED_ATTRIBUTES), RATING_LEVELS - 1), (len(LIDC_CALCIFICATION_PATTERNS),))
        if (tuple(exceed.shape), tuple(patterns.shape)) != expected:
            raise ValueError(f"need fractions of shapes {expected}, got {tuple(exceed.shape)}, {tuple(patterns.shape)}")
        self.ordinal_heads.set_cuts(-torch.logit(exceed))
        self.ordinal_heads.score.bias.zero_()
        self.calcification_head.bias.copy_(torch.log(patterns / patterns.sum()))

    def pretrained_parameter_names(self) -> set[str]:
        """Names of the parameters a grader without LIDC attribute heads also has (the "old parts")."""
        return {name for name, _ in self.named_parameters()
                if not name.startswith(("ordinal_heads.", "calcification_head."))}

    @torch.no_grad()
    def set_malignancy_diameter_prior(self, slope: float, intercept: float) -> None:
        """Start the malignancy head at a diameter-only logistic regression: logit = slope·log(d) + intercept.

        The image features then only learn what size does not explain (their weights start near 0).

        Args:
            slope, intercept: coefficients on log(diameter_mm), e.g. from
                :func:`lunglesionai.evaluation.metrics.classification.fit_logistic` on the training split.

        Raises:
            ValueError: the config has ``diameter_input=False``.
        """
        if not self.config.diameter_input:
            raise ValueError("set_malignancy_diameter_prior needs DenseSharpConfig.diameter_input=True")
        self.malignancy_head.weight[0, -1] = slope * LOG_DIAMETER_SCALE
        self.malignancy_head.bias[0] = intercept + slope * LOG_DIAMETER_CENTER

    def _segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder and decoder: (deepest features (B, C, d, h, w), mask logits (B, 1, D, H, W))."""
        h = self.stem(x)
        skips = [h]
        h = self.down(h)
        for level, block in enumerate(self.blocks):
            h = block(h)
            if level < len(self.transitions):
                skips.append(h)
                h = self.transitions[level](h)
        deep = self.final_norm(h)
        d = deep
        for up, fuse, skip in zip(self.ups, self.fuse, reversed(skips)):
            d = fuse(torch.cat([up(d), skip], dim=1))
        return deep, self.mask_head(d)

    def _head_features(self, x, deep, mask_logits, diameter_mm) -> torch.Tensor:
        """Dropout(pooled deep features) + size, histogram and diameter features (no dropout on those)."""
        pooled = _pooled_features(deep, mask_logits)
        n_deep = self.n_deep_features
        parts = [self.dropout(pooled[:, :n_deep]), pooled[:, n_deep:]]
        if self.config.histogram_bins:
            parts.append(_mask_histogram(x[:, :1], mask_logits, self.config.histogram_bins))
        if self.config.diameter_input:
            log_diameter = torch.log(diameter_mm.to(x.dtype).reshape(-1, 1))
            parts.append((log_diameter - LOG_DIAMETER_CENTER) / LOG_DIAMETER_SCALE)
        return torch.cat(parts, dim=1)

    def _check_input(self, x: torch.Tensor, diameter_mm: Optional[torch.Tensor]) -> None:
        if x.ndim != 5:
            raise ValueError(f"DenseSharpNet needs a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"DenseSharpNet expects {self.config.in_channels} channel(s), got {x.shape[1]}")
        divisor = self.config.size_divisor
        if any(int(s) % divisor for s in x.shape[2:]):
            raise ValueError(f"DenseSharpNet needs spatial sizes divisible by {divisor}, got {tuple(x.shape[2:])}")
        if self.config.diameter_input:
            if diameter_mm is None or tuple(diameter_mm.shape) != (x.shape[0],):
                shape = None if diameter_mm is None else tuple(diameter_mm.shape)
                raise ValueError(f"DenseSharpNet (diameter_input) needs diameter_mm of shape ({x.shape[0]},), got "
                                 f"{shape}")
            if not bool((diameter_mm > 0).all()):
                raise ValueError(f"diameter_mm must be > 0, got {diameter_mm.tolist()}")


def _pooled_features(deep: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """(B, 2C+1): global average pool, pool weighted by the (downsampled) soft mask, scaled log soft volume.

    The size feature is (log(1 + soft mask voxels) - LOG_VOLUME_CENTER) / LOG_VOLUME_SCALE: about -1..2 for
    nodules of 3-30 mm on a 1 mm grid.
    """
    prob = torch.sigmoid(mask_logits)
    weights = nn.functional.adaptive_avg_pool3d(prob, deep.shape[2:])
    global_pool = deep.mean(dim=(2, 3, 4))
    mask_pool = (deep * weights).sum(dim=(2, 3, 4)) / (weights.sum(dim=(2, 3, 4)) + 1e-3)
    log_volume = (torch.log1p(prob.sum(dim=(2, 3, 4))) - LOG_VOLUME_CENTER) / LOG_VOLUME_SCALE
    return torch.cat([global_pool, mask_pool, log_volume], dim=1)


def _mask_histogram(x: torch.Tensor, mask_logits: torch.Tensor, n_bins: int) -> torch.Tensor:
    """(B, n_bins + 2): soft-mask-weighted histogram of the first input channel over [0, 1], its mean and std."""
    weights = torch.sigmoid(mask_logits).flatten(1)
    values = x.flatten(1).clamp(0.0, 1.0)
    total = weights.sum(dim=1, keepdim=True) + 1e-3
    bins = (values * n_bins).long().clamp(max=n_bins - 1)
    histogram = torch.zeros(x.shape[0], n_bins, dtype=x.dtype, device=x.device).scatter_add_(1, bins, weights)
    mean = (weights * values).sum(dim=1, keepdim=True) / total
    std = ((weights * (values - mean) ** 2).sum(dim=1, keepdim=True) / total).sqrt()
    return torch.cat([histogram / total, mean, std], dim=1)
