"""Tests of the shared learning-rate schedule and optimiser step."""

import math

import pytest

from lunglesionai.training.schedules import scheduled_step, warmup_cosine_lr


def test_warmup_then_cosine_to_the_floor():
    lr = [warmup_cosine_lr(s, 110, 10, 1.0) for s in range(110)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)  # linear warm-up
    assert lr[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(lr[10:], lr[11:]))  # then non-increasing
    assert lr[60] == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the decay
    assert warmup_cosine_lr(110, 110, 10, 1.0) == pytest.approx(0.01)  # the floor at the end
    assert warmup_cosine_lr(0, 100, 0, 2.0) == pytest.approx(2.0)  # no warm-up
    assert warmup_cosine_lr(50, 100, 0, 2.0, floor=0.0) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_scheduled_step_sets_the_rate_clips_and_steps():
    import torch

    weight = torch.nn.Parameter(torch.zeros(3))
    optimiser = torch.optim.SGD([weight], lr=123.0)
    loss = (weight * torch.tensor([300.0, 400.0, 0.0])).sum()  # gradient norm 500
    assert scheduled_step(optimiser, loss, 0, 100, 10, 1.0, clip_norm=5.0) == pytest.approx(0.0)
    assert optimiser.param_groups[0]["lr"] == pytest.approx(0.1)  # warm-up step 0 of 10
    torch.testing.assert_close(weight.detach(), torch.tensor([-0.3, -0.4, 0.0]))  # clipped to norm 5, times 0.1
    loss = (weight * torch.tensor([300.0, 400.0, 0.0])).sum()
    value = scheduled_step(optimiser, loss, 50, 100, 0, 1.0)  # no clipping: the whole gradient, fresh (zeroed)
    assert value == pytest.approx(-250.0)
    lr = warmup_cosine_lr(50, 100, 0, 1.0)
    torch.testing.assert_close(weight.detach(), torch.tensor([-0.3 - 300 * lr, -0.4 - 400 * lr, 0.0]))
