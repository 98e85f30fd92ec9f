"""The universal lesion detector's network: MP3D-style pseudo-3-D backbone, 3-D→2-D transform, FPN, 2-D RetinaNet.

Follows MP3D (Zhang S, Xu J, Chen Y-C, et al., "Revisiting 3D Context Modeling with Supervised Pre-training for
Universal Lesion Detection in CT Slices", MICCAI 2020, doi:10.1007/978-3-030-59719-1_53): ``n_slices``
consecutive axial slices at a fixed slice spacing are one input; a residual backbone of pseudo-3-D blocks
(a 1×3×3 in-plane convolution, then a 3×1×1 convolution across slices) never down-samples along z; a group
convolution over z turns each 3-D feature map into a 2-D one (the "3D→2D transform"); MONAI's
``FeaturePyramidNetwork`` and RetinaNet heads (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
doi:10.1109/ICCV.2017.324) then detect boxes on the centre slice, with MONAI's anchors, ATSS matcher, box coder,
sigmoid focal loss and NMS (``spatial_dims=2``). Classes are DeepLesion's coarse lesion types (Yan K, Wang X,
Lu L, Summers RM, "DeepLesion: automated mining of large-scale lesion annotations and universal lesion detection
with deep learning", J Med Imaging 5(3):036501, 2018, doi:10.1117/1.JMI.5.3.036501).

Differences from the paper, each for a reason:

* Small widths (16–64 channels, one block per level) so a whole 512×512×300 CT runs in well under a minute on
  two CPU cores; MP3D uses a ResNet/DenseNet-sized backbone on a GPU.
* The convolutions across slices use no z padding ("valid"): the centre slice's output depends on exactly
  ``n_slices`` input slices and never on padding. So running the backbone once over a whole scan and applying the
  3-D→2-D transform at every slice (:func:`predict_slices`) gives the same boxes as running every 9-slice slab on
  its own (the test checks it), at a ninth of the cost.
* Inputs are CT windows (:attr:`ULDConfig.hu_windows`), one channel each, instead of MP3D's 3-slice RGB
  pre-training trick (no large 2-D data set is available here).

Tensors: a slab is ``(B, C·n, X, Y)`` float32 in [0, 1]: ``C`` = number of HU windows, ``n`` = ``n_slices``,
channel index ``c·n + s`` (window ``c``, slice ``s``; slice ``n // 2`` is the centre slice, slices ordered
inferior → superior), first spatial axis ``X`` = image columns (LPS +x, patient left), second ``Y`` = image rows
(LPS +y, posterior). Boxes are MONAI ``StandardMode`` 2-D boxes ``(x0, y0, x1, y1)`` in pixels of that grid
(pixel centres at integers), labels index :attr:`ULDConfig.lesion_types`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from lunglesionai.core.hu_windows import ULD_WINDOWS_HU, window_hu_channels  # noqa: F401  (re-exported)
from lunglesionai.core.vocabulary import DEEPLESION_TYPES

__all__ = [
    "DEEPLESION_TYPES",
    "PositiveNormalisedFocalLoss",
    "ULDConfig",
    "ULDFeatureExtractor",
    "build_uld_detector",
    "merge_classes",
    "predict_slices",
]

#: DeepLesion's coarse lesion types, in the order of its ``Coarse_lesion_type`` codes 1–8 (Yan et al. 2018).
#: Default CT windows (HU low, high), each mapped linearly to [0, 1] as one input channel: a wide window (lung,
#: bone, blastic lesions) and a soft-tissue window (liver, nodes, soft-tissue masses).
DEFAULT_HU_WINDOWS = ULD_WINDOWS_HU


@dataclass(frozen=True)
class ULDConfig:
    """Input grid, architecture and box settings of the ULD network (saved beside the weights).

    Args:
        n_slices: consecutive slices per input (odd, >= 3); the centre slice is the one detected on.
        slice_spacing_mm: slice spacing the CT is resampled to along z, mm (MP3D: 2 mm).
        pixel_spacing_mm: in-plane pixel size the CT is resampled to, mm.
        hu_windows: (low, high) HU windows, one input channel each.
        channels: widths of the four backbone levels (strides 2, 4, 8, 16 in-plane).
        z_kernels: per level, the kernel size of its convolution across slices (odd; 1 = in-plane only). The
            depth left after level ``l`` is ``n_slices - sum(k - 1 for k in z_kernels[:l + 1])``; it must stay
            >= 1, and the 3-D→2-D transform of levels 2–4 spans what is left.
        fpn_channels: channels of every pyramid level and of the RetinaNet heads (multiple of 8: the heads'
            GroupNorm has 8 groups; use >= 16 when an input side can be 32 pixels, whose coarsest map is 1×1).
        base_anchor_shapes: (width, height) anchor sizes in pixels on the finest pyramid level (stride 4); the
            coarser levels (strides 8, 16, 32) use them ×2, ×4, ×8.
        lesion_types: class names (default DeepLesion's eight coarse types).
        score_threshold, topk_per_level, nms_iou, detections_per_slice: MONAI box selector settings.

    Raises:
        ValueError: a field is out of range (named in the message with its value).

    Example:
        >>> ULDConfig().in_channels, ULDConfig().plane_depths
        (18, (5, 5, 5))
    """

    n_slices: int = 9
    slice_spacing_mm: float = 2.0
    pixel_spacing_mm: float = 1.0
    hu_windows: tuple[tuple[float, float], ...] = DEFAULT_HU_WINDOWS
    channels: tuple[int, int, int, int] = (16, 32, 48, 64)
    z_kernels: tuple[int, int, int, int] = (3, 3, 1, 1)
    fpn_channels: int = 32
    base_anchor_shapes: tuple[tuple[int, int], ...] = ((4, 4), (8, 8))
    lesion_types: tuple[str, ...] = DEEPLESION_TYPES
    score_threshold: float = 0.05
    topk_per_level: int = 100
    nms_iou: float = 0.3
    detections_per_slice: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "hu_windows", tuple(tuple(float(v) for v in w) for w in self.hu_windows))
        checks = {
            "n_slices": self.n_slices >= 3 and self.n_slices % 2 == 1,
            "slice_spacing_mm": self.slice_spacing_mm > 0,
            "pixel_spacing_mm": self.pixel_spacing_mm > 0,
            "hu_windows": len(self.hu_windows) >= 1 and all(len(w) == 2 and w[0] < w[1] for w in self.hu_windows),
            "channels": len(self.channels) == 4 and min(self.channels) > 0,
            "z_kernels": len(self.z_kernels) == 4 and all(k >= 1 and k % 2 == 1 for k in self.z_kernels)
            and self.n_slices - sum(k - 1 for k in self.z_kernels) >= 1,
            "fpn_channels": self.fpn_channels > 0 and self.fpn_channels % 8 == 0,
            "base_anchor_shapes": len(self.base_anchor_shapes) >= 1
            and all(len(s) == 2 and min(s) > 0 for s in self.base_anchor_shapes),
            "lesion_types": len(self.lesion_types) >= 1 and len(set(self.lesion_types)) == len(self.lesion_types),
            "score_threshold": 0.0 <= self.score_threshold < 1.0,
            "nms_iou": 0.0 < self.nms_iou <= 1.0,
            "detections_per_slice": self.detections_per_slice >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ULDConfig.{name} is out of range: {getattr(self, name)!r}")

    @property
    def in_channels(self) -> int:
        """Channels of a slab: len(hu_windows) × n_slices."""
        return len(self.hu_windows) * self.n_slices

    @property
    def level_depths(self) -> tuple[int, ...]:
        """Depth (slices) of each backbone level's output for one slab."""
        depths, depth = [], self.n_slices
        for k in self.z_kernels:
            depth -= k - 1
            depths.append(depth)
        return tuple(depths)

    @property
    def plane_depths(self) -> tuple[int, ...]:
        """Depth spanned by the 3-D→2-D transform of each pyramid input (levels 2, 3, 4)."""
        return self.level_depths[1:]

    @property
    def size_divisible(self) -> int:
        """Input X and Y must be multiples of this (the coarsest pyramid stride, 32)."""
        return 32

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ULDConfig:
        """Inverse of :meth:`to_dict` (lists back to tuples).

        Raises:
            TypeError: unknown field.
        """
        d = dict(data)
        for key in ("channels", "z_kernels", "lesion_types"):
            if key in d:
                d[key] = tuple(d[key])
        for key in ("hu_windows", "base_anchor_shapes"):
            if key in d:
                d[key] = tuple(tuple(v) for v in d[key])
        return cls(**d)


class _P3DBlock(nn.Module):
    """Pseudo-3-D residual block: 1×3×3 conv (in-plane stride ``stride``) → BN → ReLU → ``z_kernel``×1×1 conv
    (no z padding) → BN, plus the shortcut cropped to the same slices, → ReLU. Input (B, C, D, X, Y), output
    (B, C', D − z_kernel + 1, X/stride, Y/stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, z_kernel: int) -> None:
        super().__init__()
        self.plane = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                      bias=False),
            nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))
        self.depth = nn.Sequential(nn.Conv3d(out_channels, out_channels, (z_kernel, 1, 1), bias=False),
                                   nn.BatchNorm3d(out_channels))
        self.crop = (z_kernel - 1) // 2
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
            nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.shortcut(x)
        if self.crop:
            short = short[:, :, self.crop:-self.crop]
        return torch.relu(self.depth(self.plane(x)) + short)


class _DepthToPlane(nn.Module):
    """MP3D's 3-D→2-D transform: a group convolution over ``depth`` slices, one group per channel, then BN and
    ReLU. (B, C, D, X, Y) → (B, C, D − depth + 1, X, Y); for a slab (D = depth) the depth axis becomes 1."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv3d(channels, channels, (depth, 1, 1), groups=channels, bias=False),
                                  nn.BatchNorm3d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(x)


class ULDFeatureExtractor(nn.Module):
    """Pseudo-3-D backbone + 3-D→2-D transforms + MONAI ``FeaturePyramidNetwork`` (2-D, ``LastLevelMaxPool``).

    ``forward``: slabs (B, C·n, X, Y) → OrderedDict of four (B, fpn_channels, X/s, Y/s) maps, s = 4, 8, 16, 32;
    X and Y multiples of 32. ``out_channels`` is what MONAI's RetinaNet reads.

    Args:
        config: the network's settings.
    """

    def __init__(self, config: ULDConfig) -> None:
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
        )

        self.n_windows, self.n_slices = len(config.hu_windows), config.n_slices
        c1, c2, c3, c4 = config.channels
        k1, k2, k3, k4 = config.z_kernels
        self.stem = nn.Sequential(
            nn.Conv3d(self.n_windows, c1, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(c1), nn.ReLU(inplace=True))
        self.levels = nn.ModuleList([_P3DBlock(c1, c1, 1, k1), _P3DBlock(c1, c2, 2, k2), _P3DBlock(c2, c3, 2, k3),
                                     _P3DBlock(c3, c4, 2, k4)])
        self.to_plane = nn.ModuleList([_DepthToPlane(c, d) for c, d in zip((c2, c3, c4), config.plane_depths)])
        self.fpn = FeaturePyramidNetwork(spatial_dims=2, in_channels_list=[c2, c3, c4],
                                         out_channels=config.fpn_channels, extra_blocks=LastLevelMaxPool(2))
        self.out_channels = config.fpn_channels

    def volume_features(self, volume: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Pyramid features of every slice a volume's slabs are centred on, with the backbone run only once.

        Args:
            volume: (1, C, D, X, Y) windowed slices, D >= n_slices.

        Returns:
            OrderedDict of (D − n_slices + 1, fpn_channels, X/s, Y/s) maps: batch entry ``i`` is the slab whose
            slices are ``i … i + n_slices − 1`` (identical to :meth:`forward` on that slab).
        """
        x = self.stem(volume)
        planes = []
        for index, level in enumerate(self.levels):
            x = level(x)
            if index >= 1:
                plane = self.to_plane[index - 1](x)[0]  # (C, D_out, X, Y)
                planes.append(plane.permute(1, 0, 2, 3).contiguous())
        return self.fpn(OrderedDict((str(i), p) for i, p in enumerate(planes)))

    def forward(self, slabs: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        b, _, sx, sy = slabs.shape
        x = self.stem(slabs.reshape(b, self.n_windows, self.n_slices, sx, sy))
        planes = []
        for index, level in enumerate(self.levels):
            x = level(x)
            if index >= 1:
                planes.append(self.to_plane[index - 1](x)[:, :, 0])
        return self.fpn(OrderedDict((str(i), p) for i, p in enumerate(planes)))


class PositiveNormalisedFocalLoss(nn.Module):
    """RetinaNet's classification loss: MONAI's ``sigmoid_focal_loss`` summed over all anchors and classes and
    divided by the number of positive anchor-class pairs (at least 1), as Lin et al. (ICCV 2017) normalise it.

    Args:
        gamma: focusing parameter (paper: 2).
        alpha: positive-class weight (paper: 0.25).

    Input: logits (N, K) and 0/1 targets (N, K); output: a scalar.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25) -> None:
        super().__init__()
        self.gamma, self.alpha = float(gamma), float(alpha)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from monai.losses.focal_loss import sigmoid_focal_loss

        loss = sigmoid_focal_loss(logits, targets, gamma=self.gamma, alpha=self.alpha)
        return loss.sum() / targets.sum().clamp(min=1.0)


def build_uld_detector(config: ULDConfig, *, training: bool = False):
    """MONAI ``RetinaNetDetector`` (2-D) around :class:`ULDFeatureExtractor`.

    Args:
        config: network, anchors and box selection.
        training: also set the ATSS matcher (Zhang et al., CVPR 2020), the positive-normalised focal loss and a
            smooth-L1 box loss on encoded boxes.

    Returns:
        The detector (``detector.network`` holds every trainable parameter). Inference input: a list of
        (C·n, X, Y) slabs or a (B, C·n, X, Y) tensor; output per slab: ``boxes`` (N, 4) ``(x0, y0, x1, y1)``,
        ``labels`` (N,) indices into ``config.lesion_types``, ``labels_scores`` (N,) in [0, 1]. MONAI's box
        selector applies NMS per class; :func:`predict_slices` and :mod:`lunglesionai.stages.universal_lesions.detector` merge across classes.

    Example:
        >>> detector = build_uld_detector(ULDConfig()).eval()
        >>> with torch.no_grad():
        ...     out = detector(torch.zeros(1, 18, 64, 64))
        >>> out[0]["boxes"].shape[1]
        4
    """
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    from lunglesionai.nets.retina_unet import _atss_only_detector_class

    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4, 8),
                                             base_anchor_shapes=[list(s) for s in config.base_anchor_shapes])
    n_classes = len(config.lesion_types)
    network = RetinaNet(spatial_dims=2, num_classes=n_classes, num_anchors=anchors.num_anchors_per_location()[0],
                        feature_extractor=ULDFeatureExtractor(config), size_divisible=config.size_divisible)
    detector = _atss_only_detector_class()(network=network, anchor_generator=anchors, spatial_dims=2,
                                           num_classes=n_classes, size_divisible=config.size_divisible)
    detector.set_target_keys(box_key="boxes", label_key="labels")
    detector.set_box_selector_parameters(score_thresh=config.score_threshold,
                                         topk_candidates_per_level=config.topk_per_level,
                                         nms_thresh=config.nms_iou, detections_per_img=config.detections_per_slice)
    if training:
        detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
        detector.set_cls_loss(PositiveNormalisedFocalLoss())
        detector.set_box_regression_loss(torch.nn.SmoothL1Loss(beta=1.0 / 9, reduction="mean"), encode_gt=True,
                                         decode_pred=False)
    return detector


@torch.no_grad()
def predict_slices(detector, volume: torch.Tensor, *, centres: np.ndarray | None = None, chunk: int = 16,
                   device: str = "cpu") -> list[dict[str, np.ndarray]]:
    """Boxes on the centre slice of every slab of a windowed volume, running the backbone once per chunk.

    Args:
        detector: from :func:`build_uld_detector`, in eval mode.
        volume: (C, Z, X, Y) float32 windowed slices (C = number of HU windows, Z along inferior → superior);
            X and Y multiples of 32.
        centres: slice indices (into Z) to detect on, ascending; default every slice. Slabs near the ends repeat
            the first / last slice (edge padding).
        chunk: centre slices per backbone run (bounds memory: at most 2 · chunk + n_slices slices at a time).
        device: torch device.

    Returns:
        One dict per centre: ``boxes`` (N, 4) float32 ``(x0, y0, x1, y1)`` pixels, ``scores`` (N,), ``labels``
        (N,) int64, highest score first: MONAI's box selection (NMS per class), then :func:`merge_classes`.

    Raises:
        ValueError: ``volume`` is not 4-D with C = the config's window count, or X, Y are not multiples of 32.
    """
    net = detector.network
    extractor: ULDFeatureExtractor = net.feature_extractor
    n, half = extractor.n_slices, extractor.n_slices // 2
    if volume.ndim != 4 or volume.shape[0] != extractor.n_windows:
        raise ValueError(f"volume must be (C={extractor.n_windows}, Z, X, Y), got {tuple(volume.shape)}")
    if volume.shape[2] % 32 or volume.shape[3] % 32:
        raise ValueError(f"volume X, Y must be multiples of 32, got {tuple(volume.shape[2:])}")
    n_z = volume.shape[1]
    centres = np.arange(n_z) if centres is None else np.asarray(centres, dtype=int)
    net.to(device)
    results: list[dict[str, np.ndarray]] = []
    for group in _chunks(centres, chunk):
        lo, hi = int(group[0]) - half, int(group[-1]) + half + 1
        index = torch.from_numpy(np.clip(np.arange(lo, hi), 0, n_z - 1))
        features = extractor.volume_features(volume[:, index][None].to(device))
        keep = torch.from_numpy(group - int(group[0]))
        maps = [f[keep] for f in features.values()]
        head = {detector.cls_key: net.classification_head(maps), detector.box_reg_key: net.regression_head(maps)}
        images = torch.zeros(1, device=device).expand(len(group), n * extractor.n_windows, *volume.shape[2:])
        detector.generate_anchors(images, head)
        locations = [m.shape[2:].numel() for m in head[detector.cls_key]]
        reshaped = {k: detector._reshape_maps(v) for k, v in head.items()}
        sizes = [list(volume.shape[2:])] * len(group)
        for out in detector.postprocess_detections(reshaped, detector.anchors, sizes, locations):
            results.append(merge_classes(out, detector.box_selector.nms_thresh))
    return results


def _chunks(centres: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Consecutive groups of at most ``chunk`` centres spanning fewer than ``2 · chunk`` slices (so sparse centres
    never make the backbone run over a long stretch of unused slices)."""
    groups, current = [], []
    for c in centres:
        if current and (len(current) == chunk or c - current[0] >= 2 * chunk):
            groups.append(np.asarray(current))
            current = []
        current.append(int(c))
    if current:
        groups.append(np.asarray(current))
    return groups


def merge_classes(output: dict, nms_iou: float) -> dict[str, np.ndarray]:
    """Class-agnostic NMS (MONAI ``non_max_suppression``) over one slab's detections, so one lesion gives one box
    whatever type it is scored as.

    Args:
        output: a MONAI detector result (``boxes`` (N, 4), ``labels_scores`` (N,), ``labels`` (N,)), tensors.
        nms_iou: boxes overlapping a higher-scored box by more than this IoU are dropped.

    Returns:
        ``{"boxes": (M, 4) float32, "scores": (M,) float32, "labels": (M,) int64}`` numpy, highest score first.
    """
    from monai.data.box_utils import non_max_suppression

    boxes, scores = output["boxes"].float().cpu(), output["labels_scores"].float().cpu()
    labels = output["labels"].long().cpu()
    if len(boxes):
        keep = non_max_suppression(boxes, scores, nms_thresh=nms_iou)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = torch.argsort(scores, descending=True)
    return {"boxes": boxes[order].numpy().reshape(-1, 4), "scores": scores[order].numpy(),
            "labels": labels[order].numpy()}
