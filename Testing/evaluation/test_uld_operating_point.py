"""Tests of the ULD whole-scan operating point: composite hits, findings per scan, leave-one-scan-out choice."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from lunglesionai.evaluation.uld_operating_point import (
    case_hits,
    choose_min_score,
    findings_per_threshold,
    leave_one_scan_out,
)


def _lesion(slices, box):
    return NS(slices=list(slices), boxes=[np.asarray(box, float)] * len(slices))


def test_case_hits_need_the_key_slice_and_iou():
    truth = [NS(key_slice=5, boxes={4: np.array([0.0, 0, 10, 10]), 5: np.array([0.0, 0, 12, 12])}),
             NS(key_slice=9, boxes={9: np.array([50.0, 50, 60, 60])})]
    on_key = _lesion([4, 5], [0, 0, 12, 12])          # IoU 1 on the key slice
    off_key = _lesion([9], [50, 50, 56, 60])           # IoU 0.6 on the key slice of lesion 2
    stray = _lesion([5], [100, 100, 110, 110])          # overlaps nothing
    hits, false = case_hits([on_key, off_key, stray], truth)
    assert hits.tolist() == [True, True] and false == 1
    hits, false = case_hits([_lesion([4], [0, 0, 10, 10])], truth)  # only a non-key slice
    assert hits.tolist() == [False, False] and false == 0   # on a lesion, but not its key slice
    hits, _ = case_hits([_lesion([9], [50, 50, 54, 60])], truth)  # IoU 0.4 < 0.5
    assert hits.tolist() == [False, False]


def test_findings_per_threshold_counts_scores_at_or_above():
    assert findings_per_threshold([0.9, 0.6, 0.5, 0.2], [0.3, 0.55, 0.95]).tolist() == [3, 2, 0]


def test_operating_point_is_the_lowest_threshold_every_scan_meets():
    t = [0.3, 0.5, 0.7, 0.9]
    counts = {"a": np.array([9, 4, 2, 0]), "b": np.array([5, 3, 3, 1]), "c": np.array([50, 20, 8, 2])}
    assert choose_min_score({"a": counts["a"], "b": counts["b"]}, t, 3) == 0.7
    assert choose_min_score({"b": counts["b"]}, t, 3) == 0.5
    assert choose_min_score({"c": counts["c"]}, t, 1) == 0.9  # never met: the highest threshold
    held = leave_one_scan_out(counts, t, 3)
    assert held["c"] == {"min_score": 0.7, "findings": 8}  # chosen on a and b, counted on c
    assert held["a"] == {"min_score": 0.9, "findings": 0}  # c forces 0.9


@pytest.mark.parametrize("call, match", [
    (lambda: choose_min_score({}, [0.5], 3), "no scan"),
    (lambda: choose_min_score({"a": np.array([1, 2])}, [0.5, 0.4], 3), "ascending"),
    (lambda: leave_one_scan_out({"a": np.array([1])}, [0.5], 3), "at least two"),
])
def test_bad_inputs_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
