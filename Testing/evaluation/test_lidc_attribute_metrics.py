"""Tests of lunglesionai.evaluation.lidc_attribute_metrics: weighted kappa, ordinal and binary agreement on
hand-computable cases (the kappa also against its independent pairwise form)."""

from __future__ import annotations

import numpy as np
import pytest

from lunglesionai.evaluation.lidc_attribute_metrics import binary_agreement, ordinal_agreement, weighted_kappa


def _pairwise_kappa(truth: np.ndarray, predicted: np.ndarray, power: int) -> float:
    """Weighted kappa by its pairwise form: 1 - mean |t_i - p_i|^power / mean over all pairs |t_i - p_j|^power."""
    t, p = np.asarray(truth, float), np.asarray(predicted, float)
    observed = np.mean(np.abs(t - p) ** power)
    chance = np.mean(np.abs(t[:, None] - p[None, :]) ** power)
    return 1.0 - observed / chance


def test_weighted_kappa_by_hand():
    # truth 0,0,1,2 vs predicted 0,1,1,1: mean (t - p)^2 = 2/4; all 16 pairs: sum (t_i - p_j)^2 = 6 + 1 + 7 = 14,
    # mean 14/16; quadratic kappa = 1 - 0.5 / 0.875 = 3/7.
    assert weighted_kappa(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3) == pytest.approx(3 / 7)
    assert weighted_kappa(np.array([0, 1, 2]), np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    assert weighted_kappa(np.array([0, 1, 2, 2]), np.array([1, 1, 1, 1]), 3) == pytest.approx(0.0)  # constant
    assert weighted_kappa(np.array([1, 1]), np.array([1, 1]), 3) is None  # no chance disagreement to compare with


@pytest.mark.parametrize("power", [1, 2])
def test_weighted_kappa_matches_pairwise_form(power):
    rng = np.random.default_rng(power)
    truth = rng.integers(0, 5, 60)
    predicted = np.clip(truth + rng.integers(-2, 3, 60), 0, 4)
    expected = _pairwise_kappa(truth, predicted, power)
    assert weighted_kappa(truth, predicted, 5, power) == pytest.approx(expected)


def test_weighted_kappa_errors():
    with pytest.raises(ValueError, match="power"):
        weighted_kappa(np.array([0]), np.array([0]), 3, power=3)
    with pytest.raises(ValueError, match="labels"):
        weighted_kappa(np.array([0, 3]), np.array([0, 1]), 3)


def test_ordinal_agreement_by_hand():
    got = ordinal_agreement(np.array([1, 2, 5, 4]), np.array([1, 3, 3, 4]))
    assert got["n"] == 4
    assert got["exact_accuracy"] == pytest.approx(2 / 4)  # 1=1, 4=4
    assert got["within_one_accuracy"] == pytest.approx(3 / 4)  # 5 vs 3 is two levels off
    assert got["quadratic_kappa"] == pytest.approx(_pairwise_kappa(np.array([1, 2, 5, 4]), np.array([1, 3, 3, 4]), 2))
    assert ordinal_agreement(np.array([], int), np.array([], int))["exact_accuracy"] is None
    with pytest.raises(ValueError, match="1..5"):
        ordinal_agreement(np.array([0, 2]), np.array([1, 2]))


def test_binary_agreement_by_hand():
    got = binary_agreement(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))
    # calls 0,1,1,1: class 0 F1 = 2·1/(2 + 1) = 2/3, class 1 F1 = 2·2/(2 + 3) = 4/5; macro (2/3 + 4/5) / 2
    assert got["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert got["accuracy"] == pytest.approx(3 / 4) and got["auc"] == pytest.approx(1.0) and got["n_positive"] == 2
    constant = binary_agreement(np.array([0, 0, 0, 1]), np.zeros(4))
    assert constant["macro_f1"] == pytest.approx(2 * 3 / (4 + 3) / 2)  # only class 0 is ever called: F1 6/7, 0
    with pytest.raises(ValueError, match="0/1"):
        binary_agreement(np.array([0, 2]), np.array([0.1, 0.2]))
