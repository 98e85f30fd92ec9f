"""Tests of the shared learning-rate schedule."""

import math

import pytest
from lunglesionai.schedules import warmup_cosine_lr


def test_warmup_then_cosine_to_the_floor():
    lr = [warmup_cosine_lr(s, 110, 10, 1.0) for s in range(110)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)  # linear warm-up
    assert lr[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(lr[10:], lr[11:]))  # then non-increasing
    assert lr[60] == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the decay
    assert warmup_cosine_lr(110, 110, 10, 1.0) == pytest.approx(0.01)  # the floor at the end
    assert warmup_cosine_lr(0, 100, 0, 2.0) == pytest.approx(2.0)  # no warm-up
    assert warmup_cosine_lr(50, 100, 0, 2.0, floor=0.0) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 2)))
