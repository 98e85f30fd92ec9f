"""A toy universal lesion detector and its training cases, shared by the ULD training and detection tests."""

from __future__ import annotations

import numpy as np
import torch

from lunglesionai.datagen.uld_cases import (
    GridLesion,
    ULDCase,
    ULDDataConfig,
)
from lunglesionai.nets.mp3d import ULDConfig
from lunglesionai.stages.universal_lesions.grid import SliceGrid, mask_boxes_per_slice
from lunglesionai.training.universal_lesions import (
    ULDTrainConfig,
    train_uld,
)

DISC_HU, BACKGROUND_HU = -10.0, 60.0
#: A tiny network: 3 slices, one soft-tissue window, 8 channels; one class.
TOY_NET = ULDConfig(n_slices=3, hu_windows=((-160.0, 240.0),), channels=(8, 8, 8, 8), z_kernels=(3, 1, 1, 1),
                    fpn_channels=8, base_anchor_shapes=((8, 8), (12, 12)), lesion_types=("liver",))


def toy_case(seed: int) -> ULDCase:
    """A 12×64×64 grid of 60 HU tissue (noise 12 HU) with a −10 HU disc of radius 5–9 px on slices 3–8."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(BACKGROUND_HU, 12, (12, 64, 64)).astype(np.float32)
    cy, cx, r = rng.uniform(16, 48), rng.uniform(16, 48), rng.uniform(5, 9)
    yy, xx = np.mgrid[:64, :64]
    mask = np.zeros(hu.shape, bool)
    mask[3:9] = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)[None]
    hu[mask] = rng.normal(DISC_HU, 12, int(mask.sum()))
    boxes = {k: b for k, (b, _) in mask_boxes_per_slice(mask).items()}
    lesion = GridLesion(f"toy-{seed}/1", "liver_cyst", "liver", 0, 5, boxes, ((0.0,) * 3, (1.0,) * 3))
    grid = SliceGrid(np.rint(hu).astype(np.int16), np.array([-40.0, -50.0, 100.0]), (1.4, 1.4, 2.0))
    return ULDCase(f"toy-{seed}", "toy", grid, [lesion], mask.any(axis=(1, 2)))


def toy_train_config(steps: int = 80) -> ULDTrainConfig:
    data = ULDDataConfig(n_cases=8, network=TOY_NET, positives_per_lesion=6, negatives_per_case=4)
    return ULDTrainConfig(steps=steps, batch_size=4, crop_size=64, lr=3e-3, warmup_steps=5, threads=1,
                          n_val_cases=4, data=data)


def train_toy_model(steps: int = 80):
    """A toy detector trained on 8 toy cases and validated on 4 others (about 7 s on one CPU thread)."""
    torch.set_num_threads(1)
    return train_uld([toy_case(s) for s in range(8)], toy_train_config(steps), [toy_case(100 + s) for s in range(4)])
