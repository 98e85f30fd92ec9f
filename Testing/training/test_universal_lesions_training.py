"""Tests of ULD training: batches (crops, flips, boxes), reproducibility, a tiny run that learns, the CLI parser."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from lunglesionai.app.train_commands import add_train_uld_parser, run_train_uld
from lunglesionai.datagen.uld_cases import (
    SlabSample,
)
from lunglesionai.training.universal_lesions import (
    ULDTrainConfig,
    make_batch,
    train_uld,
)
from uld_fixtures import (
    BACKGROUND_HU,
    DISC_HU,
    TOY_NET,
    toy_case,
    toy_train_config,
    train_toy_model,
)


def test_train_config_validation():
    with pytest.raises(ValueError, match="crop_size"):
        ULDTrainConfig(crop_size=100)
    with pytest.raises(ValueError, match="steps"):
        ULDTrainConfig(steps=0)


@pytest.mark.parametrize("flip", [False, True])
def test_batches_point_boxes_at_the_lesion(flip):
    from dataclasses import replace

    cases = [toy_case(s) for s in range(3)]
    config = replace(toy_train_config(), flip=flip, hu_shift=0.0)
    samples = [SlabSample(i, k, True) for i in range(3) for k in (4, 5, 7)] + [SlabSample(0, 0, False)]
    images, targets = make_batch(cases, samples, config, np.random.default_rng(0))
    soft_window = TOY_NET.hu_windows[0]
    disc = (DISC_HU - soft_window[0]) / (soft_window[1] - soft_window[0])
    background = (BACKGROUND_HU - soft_window[0]) / (soft_window[1] - soft_window[0])
    for image, target, sample in zip(images, targets, samples):
        assert image.shape == (TOY_NET.in_channels, 64, 64)  # (C·n, X, Y)
        boxes = target["boxes"].numpy()
        assert len(boxes) == (1 if sample.positive else 0)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            centre = image[1, int((x0 + x1) / 2), int((y0 + y1) / 2)]  # centre slice channel at the box centre
            assert abs(float(centre) - disc) < abs(float(centre) - background)  # the box sits on the dark disc


def test_training_is_reproducible():
    cases = [toy_case(s) for s in range(3)]
    config = toy_train_config(steps=4)
    torch.set_num_threads(1)
    first, second = train_uld(cases, config), train_uld(cases, config)
    assert first.losses == second.losses
    for a, b in zip(first.detector.network.parameters(), second.detector.network.parameters()):
        assert torch.equal(a, b)


def test_a_tiny_run_learns_to_find_the_lesions():
    result = train_toy_model()
    early, late = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert late < 0.6 * early, (early, late)
    validation = result.validation  # 4 held-out toy cases, one lesion each
    assert validation["n_lesions"] == 4 and validation["sensitivity_at_fp"]["1"] >= 0.75
    assert 0.0 < result.min_score < 1.0


def test_parser_registers_train_uld():
    parser = argparse.ArgumentParser(prog="lunglesionai")
    train = parser.add_subparsers(dest="command").add_parser("train").add_subparsers(dest="model")
    add_train_uld_parser(train)
    args = parser.parse_args(["train", "uld", "--data-ct", "ct", "--lidc", "lidc", "--out", "m", "--steps", "5",
                              "--seed", "2", "--threads", "1", "--cache-dir", "c"])
    assert args.func is run_train_uld and args.steps == 5 and args.seed == 2 and args.cache_dir == "c"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "uld", "--out", "m"])  # --data-ct and --lidc are required
