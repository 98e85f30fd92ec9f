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


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import lunglesionai.training.universal_lesions as tu

    cases = [toy_case(s) for s in range(3)]
    config = toy_train_config(steps=4)
    torch.set_num_threads(1)
    whole = train_uld(cases, config)
    save = tu._save_checkpoint

    def save_then_stop(path, step, *args):
        save(path, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "ckpt.pt"
    monkeypatch.setattr(tu, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_uld(cases, config, checkpoint=checkpoint, checkpoint_every=2)
    monkeypatch.setattr(tu, "_save_checkpoint", save)
    resumed = train_uld(cases, config, checkpoint=checkpoint, checkpoint_every=2)
    assert resumed.losses == pytest.approx(whole.losses)
    for a, b in zip(whole.detector.network.parameters(), resumed.detector.network.parameters()):
        assert torch.allclose(a, b)


def test_fine_tuning_starts_from_the_given_weights():
    from dataclasses import replace

    cases = [toy_case(s) for s in range(2)]
    torch.set_num_threads(1)
    start = train_uld(cases, toy_train_config(steps=2)).detector.network.state_dict()
    frozen = replace(toy_train_config(steps=1), lr=1e-12, n_val_cases=0)
    tuned = train_uld(cases, frozen, init_state=start).detector.network.state_dict()
    fresh = train_uld(cases, replace(frozen, seed=7)).detector.network.state_dict()
    name = next(k for k, v in start.items() if v.dtype.is_floating_point and v.numel() > 10)
    assert torch.allclose(tuned[name], start[name], atol=1e-6) and not torch.allclose(fresh[name], start[name])


def test_train_uld_command_fine_tunes_with_the_new_data_options(tmp_path, monkeypatch):
    import json

    import lunglesionai.app.train_commands as tc

    built = []

    def fake_build_cases(config, data_ct, lidc, cache_dir, host_cache=None):
        built.append(config)
        return [toy_case(s) for s in range(2)]

    monkeypatch.setattr(tc, "build_cases", fake_build_cases)
    parser = argparse.ArgumentParser(prog="lunglesionai")
    add_train_uld_parser(parser.add_subparsers(dest="command").add_parser("train").add_subparsers(dest="model"))
    common = ["train", "uld", "--data-ct", "ct", "--lidc", "lidc", "--steps", "2", "--n-val-cases", "1",
              "--threads", "1", "--seed", "3"]
    assert run_train_uld(parser.parse_args(common + ["--out", str(tmp_path / "a")])) == 0
    args = parser.parse_args(common + ["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a"), "--hosts",
                                       "whole_body", "pancreas", "--host-window-mm", "160", "--scanner-augmentation",
                                       "--real-texture", "--negatives-per-case", "12", "--lr", "3e-4",
                                       "--checkpoint", str(tmp_path / "ckpt.pt"), "--val-seed", "0"])
    assert run_train_uld(args) == 0
    train, val = built[2], built[3]
    assert train.hosts == ("whole_body", "pancreas") and train.host_window_mm == 160.0 and train.real_texture
    assert train.scanner_augmentation and train.negatives_per_case == 12 and train.seed == 3
    assert val.split == "val" and val.seed == 0 and val.hosts == ("chest", "abdomen", "phantom")  # like release 1
    assert not val.real_texture and not val.scanner_augmentation and val.host_window_mm is None
    first = json.loads((tmp_path / "a" / "config.json").read_text())
    second = json.loads((tmp_path / "b" / "config.json").read_text())
    assert second["fine_tuned_from"] == first["weights_sha256"] and first["fine_tuned_from"] is None
    assert second["training"]["lr"] == 3e-4 and (tmp_path / "ckpt.pt").is_file()
