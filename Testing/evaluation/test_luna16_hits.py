"""Tests of lunglesionai.evaluation.metrics.luna16_hits: the LUNA16 centre-within-radius matching."""

import numpy as np
import pytest

from lunglesionai.evaluation.metrics.luna16_hits import match_centres


def test_hits_misses_and_false_positives():
    truth = [[0, 0, 0], [100, 0, 0], [0, 100, 0]]
    diameters = [10.0, 6.0, 20.0]
    findings = [[4, 0, 0], [100, 3.5, 0], [0, 91, 0], [50, 50, 50]]
    m = match_centres(findings, truth, diameters)
    # finding 1 is 3.5 mm from a 6 mm nodule: outside its 3 mm radius -> a false positive
    assert m.hit_truth.tolist() == [True, False, True]
    assert m.finding_truth.tolist() == [0, -1, 2, -1]
    assert (m.true_positives, m.false_positives) == (2, 2)
    assert m.sensitivity == pytest.approx(2 / 3)


def test_second_finding_on_same_nodule_is_not_a_false_positive():
    m = match_centres([[0, 0, 0], [1, 1, 0]], [[0, 0, 0]], [8.0])
    assert m.finding_truth.tolist() == [0, -2]
    assert (m.true_positives, m.false_positives) == (1, 0)


def test_nearest_true_nodule_wins():
    m = match_centres([[4, 0, 0]], [[0, 0, 0], [6, 0, 0]], [10.0, 10.0])
    assert m.finding_truth.tolist() == [1]


def test_empty_inputs():
    m = match_centres(np.zeros((0, 3)), [[0, 0, 0]], [5.0])
    assert m.sensitivity == 0.0 and m.false_positives == 0
    m = match_centres([[0, 0, 0]], np.zeros((0, 3)), [])
    assert np.isnan(m.sensitivity) and m.false_positives == 1


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="diameters"):
        match_centres([[0, 0, 0]], [[0, 0, 0]], [1.0, 2.0])
