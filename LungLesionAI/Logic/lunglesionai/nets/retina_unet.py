"""The learned nodule detector's network: a small 3-D residual backbone, MONAI's feature pyramid and RetinaNet.

RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) in 3-D as MONAI ships it for LUNA16
(``monai.apps.detection``: anchor generator, ATSS matcher, hard-negative sampler, box coder, NMS, sliding-window
inference). Classification loss: binary cross-entropy on hard-negative-mined anchors as in MONAI's LUNA16 recipe
and nnDetection (default), or RetinaNet's sigmoid focal loss (γ = 2) on the same anchors. Only the backbone is ours, sized for a laptop CPU: MONAI's ResNet/FPN extractor needs
torchvision (not available here) and its 256-channel heads cost minutes per CT on a CPU.

Grid: the CT's lung bounding box resampled to an isotropic ``spacing_mm`` grid (default 1.5 mm), HU window
:data:`HU_WINDOW` → [0, 1]. Tensors are (B, 1, X, Y, Z) with MONAI's box convention: a box is
``(x0, y0, z0, x1, y1, z1)`` in voxel units of that grid (``StandardMode``, ``xyzxyz``), here with x, y, z
meaning the tensor's first, second and third spatial axes. :mod:`lunglesionai.stages.retina_detector` maps them to
and from LPS mm.

Feature maps (strides in voxels of the grid): the stem and ``layer1`` at 1/2, ``layer2`` at 1/4, and MONAI's
``LastLevelMaxPool`` adds 1/8. Anchors: ``base_anchor_shapes`` at 1/2, scaled ×2 and ×4 on the coarser maps
(MONAI's ``AnchorGeneratorWithAnchorShape``).

Retina U-Net (Jaeger et al., "Retina U-Net: Embarrassingly Simple Exploitation of Segmentation Supervision for
Medical Object Detection", ML4H 2019; the detector of nnDetection, Baumgartner et al., MICCAI 2021): with
``segmentation_head`` a 1×1×1 convolution on the finest pyramid level predicts nodule-voxel logits at 1/2 of the
grid. Training adds a Dice + cross-entropy loss on it, which gives the small backbone dense supervision that the
few positive anchors of a nodule patch cannot; inference ignores it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from lunglesionai.core.hu_windows import NODULE_WINDOW_HU

HU_WINDOW = NODULE_WINDOW_HU
"""HU mapped linearly to [0, 1] (clipped) before the network."""


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and box settings of the learned detector (saved beside the weights as ``config.json``).

    Args:
        spacing_mm: isotropic grid the detector runs on, mm.
        channels: backbone widths at 1/2 (stem, layer1) and 1/4 (layer2); FPN outputs ``fpn_channels``.
        fpn_channels: channels of every pyramid level and of the RetinaNet heads (multiple of 8: GroupNorm).
        base_anchor_shapes: anchor sizes (voxels along the three axes) on the finest level.
        score_threshold, topk_per_level, nms_iou, detections_per_image: MONAI box selector settings.
        patch_size: sliding-window patch (voxels) for inference and training crops.
        window_overlap: sliding-window overlap fraction.
        segmentation_head: add the Retina U-Net segmentation head (training uses it; inference does not).

    Raises:
        ValueError: a field is out of range (named in the message).
    """

    spacing_mm: float = 1.5
    channels: tuple[int, int] = (16, 32)
    fpn_channels: int = 24
    base_anchor_shapes: tuple[tuple[int, int, int], ...] = ((3, 3, 3), (5, 5, 5))
    score_threshold: float = 0.05
    topk_per_level: int = 200
    nms_iou: float = 0.1
    detections_per_image: int = 60
    patch_size: tuple[int, int, int] = (96, 96, 96)
    window_overlap: float = 0.25
    segmentation_head: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "spacing_mm": self.spacing_mm > 0,
            "fpn_channels": self.fpn_channels > 0 and self.fpn_channels % 8 == 0,
            "channels": len(self.channels) == 2 and min(self.channels) > 0,
            "base_anchor_shapes": len(self.base_anchor_shapes) >= 1,
            "patch_size": len(self.patch_size) == 3 and all(p % 8 == 0 for p in self.patch_size),
            "window_overlap": 0.0 <= self.window_overlap < 1.0,
            "nms_iou": 0.0 < self.nms_iou <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"DetectorConfig.{name} is out of range: {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorConfig":
        """Inverse of :meth:`to_dict` (lists back to tuples).

        Raises:
            TypeError: unknown field.
        """
        d = dict(data)
        for key in ("channels", "patch_size"):
            if key in d:
                d[key] = tuple(d[key])
        if "base_anchor_shapes" in d:
            d["base_anchor_shapes"] = tuple(tuple(s) for s in d["base_anchor_shapes"])
        return cls(**d)


def _conv_norm_act(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class _ResidualBlock(nn.Module):
    """Two 3×3×3 convolutions with batch norm and an identity (or strided 1×1×1) shortcut (He et al., CVPR 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_norm_act(in_channels, out_channels, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm3d(out_channels))
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class DetectorBackboneFPN(nn.Module):
    """Backbone + MONAI ``FeaturePyramidNetwork``: (B, 1, X, Y, Z) → OrderedDict of (B, fpn_channels, ...) maps
    at 1/2, 1/4, 1/8 of the input; X, Y, Z must be multiples of 8. ``out_channels`` is what MONAI's RetinaNet
    reads.

    With ``config.segmentation_head`` each forward pass also leaves the Retina U-Net logits, (B, 1, X/2, Y/2, Z/2),
    in ``segmentation_logits`` in training mode (MONAI's RetinaNet passes on only the pyramid, so the training
    loop reads them from here after the detector's forward pass); otherwise that attribute is not updated.
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        c1, c2 = config.channels
        self.stem = _conv_norm_act(1, c1, stride=2)
        self.layer1 = nn.Sequential(_ResidualBlock(c1, c1), _ResidualBlock(c1, c1))
        self.layer2 = nn.Sequential(_ResidualBlock(c1, c2, stride=2), _ResidualBlock(c2, c2))
        self.fpn = FeaturePyramidNetwork(spatial_dims=3, in_channels_list=[c1, c2], out_channels=config.fpn_channels,
                                         extra_blocks=LastLevelMaxPool(3))
        self.out_channels = config.fpn_channels
        self.segmentation = nn.Conv3d(config.fpn_channels, 1, 1) if config.segmentation_head else None
        self.segmentation_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        features = self.fpn(OrderedDict([("1", f1), ("2", f2)]))
        if self.segmentation is not None and self.training:
            self.segmentation_logits = self.segmentation(features["1"])
        return features


def _atss_only_detector_class():
    """MONAI's ``RetinaNetDetector`` with ``compute_anchor_matched_idxs`` for its own ATSS matcher only: the stock
    method first checks ``isinstance(matcher, torchvision...Matcher)``, which raises when torchvision is absent."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

    class AtssRetinaNetDetector(RetinaNetDetector):
        def compute_anchor_matched_idxs(self, anchors, targets, num_anchor_locs_per_level):
            matched = []
            for anchors_per_image, targets_per_image in zip(anchors, targets):
                boxes = targets_per_image[self.target_box_key].to(anchors_per_image.device)
                if boxes.numel() == 0:
                    matched.append(torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64,
                                              device=anchors_per_image.device))
                    continue
                _, idxs = self.proposal_matcher(boxes, anchors_per_image, num_anchor_locs_per_level,
                                                self.num_anchors_per_loc)
                matched.append(idxs)
            return matched

    return AtssRetinaNetDetector


CLASSIFICATION_LOSSES = ("bce", "focal")


def build_detector(config: DetectorConfig, *, training: bool = False, classification_loss: str = "bce"):
    """MONAI ``RetinaNetDetector`` around :class:`DetectorBackboneFPN`, with (training) ATSS matching, hard-negative
    sampling, a classification loss and a smooth-L1 box-delta loss, and NMS box selection.

    Args:
        config: architecture and box settings.
        training: also set the matcher, sampler and losses.
        classification_loss: "bce" (binary cross-entropy, MONAI's LUNA16 recipe) or "focal" (MONAI ``FocalLoss``,
            γ = 2, Lin et al. 2017), both on the hard-negative-sampled anchors.

    Returns:
        monai.apps.detection.networks.retinanet_detector.RetinaNetDetector (one class: nodule).

    Raises:
        ValueError: unknown ``classification_loss``.
    """
    if classification_loss not in CLASSIFICATION_LOSSES:
        raise ValueError(f"classification_loss must be one of {CLASSIFICATION_LOSSES}, got {classification_loss!r}")
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4),
                                             base_anchor_shapes=[list(s) for s in config.base_anchor_shapes])
    network = RetinaNet(spatial_dims=3, num_classes=1, num_anchors=anchors.num_anchors_per_location()[0],
                        feature_extractor=DetectorBackboneFPN(config), size_divisible=8)
    detector = _atss_only_detector_class()(network=network, anchor_generator=anchors, spatial_dims=3, num_classes=1,
                                 size_divisible=8)
    detector.set_target_keys(box_key="boxes", label_key="labels")
    detector.set_box_selector_parameters(score_thresh=config.score_threshold, topk_candidates_per_level=config.topk_per_level,
                                         nms_thresh=config.nms_iou, detections_per_img=config.detections_per_image)
    detector.set_sliding_window_inferer(roi_size=list(config.patch_size), overlap=config.window_overlap,
                                        sw_batch_size=1, mode="constant", device="cpu")
    if training:
        detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
        detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20,
                                           min_neg=16)
        detector.set_box_regression_loss(torch.nn.SmoothL1Loss(beta=1.0 / 9, reduction="mean"), encode_gt=True,
                                         decode_pred=False)
        if classification_loss == "focal":
            from monai.losses import FocalLoss

            detector.set_cls_loss(FocalLoss(gamma=2.0, reduction="mean"))
    return detector
