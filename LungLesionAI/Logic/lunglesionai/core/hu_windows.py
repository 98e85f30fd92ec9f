"""Named HU windows and the one windowing function: CT intensities (HU) mapped linearly to [0, 1] for networks,
or set as a display window in Slicer.

Every window the project uses is named here, with the reason for its bounds; the networks' model cards and
``config.json`` record the window each model was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "LUNG_DISPLAY_LEVEL_HU",
    "LUNG_DISPLAY_WIDTH_HU",
    "NODULE_WINDOW_HU",
    "ULD_WINDOWS_HU",
    "window_hu",
    "window_hu_channels",
]

NODULE_WINDOW_HU = (-1000.0, 400.0)
"""(low, high) HU of the nodule networks (grader, detector, FP reduction): lung air to calcification, so that
calcium stays bright (a benign sign)."""
ULD_WINDOWS_HU = ((-1024.0, 1024.0), (-160.0, 240.0))
"""The universal lesion detector's two input channels: a wide window (lung, bone, blastic lesions) and a
soft-tissue window (liver, nodes, soft-tissue masses), as MP3D/3DCE use on DeepLesion."""
LUNG_DISPLAY_WIDTH_HU = 1500.0
"""Width of the lung display window set on volumes shown in Slicer (the usual lung window W 1500 / L −600)."""
LUNG_DISPLAY_LEVEL_HU = -600.0
"""Level (centre) of the lung display window."""


def window_hu(hu: np.ndarray, window: tuple[float, float] = NODULE_WINDOW_HU) -> np.ndarray:
    """Map HU linearly to [0, 1] (``window[0]`` → 0, ``window[1]`` → 1), clipped.

    Args:
        hu: any-shaped array of HU.
        window: (low, high) HU with low < high.

    Returns:
        float32 array of ``hu``'s shape.

    Raises:
        ValueError: the window is not (low, high) with low < high.

    Example:
        >>> window_hu(np.array([-1000.0, -300.0, 1000.0])).round(2).tolist()
        [0.0, 0.5, 1.0]
    """
    low, high = float(window[0]), float(window[1])
    if not low < high:
        raise ValueError(f"HU window must be (low, high) with low < high, got {window}")
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def window_hu_channels(hu: np.ndarray, windows: Sequence[tuple[float, float]] = ULD_WINDOWS_HU) -> np.ndarray:
    """One [0, 1] channel per window (:func:`window_hu` of each).

    Args:
        hu: any-shaped array of HU.
        windows: sequence of (low, high) HU.

    Returns:
        float32 array of shape ``(len(windows),) + hu.shape``.

    Raises:
        ValueError: a window is not (low, high) with low < high.
    """
    hu = np.asarray(hu, dtype=np.float32)
    return np.stack([window_hu(hu, window) for window in windows]).astype(np.float32, copy=False)
