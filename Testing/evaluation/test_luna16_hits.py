"""The LUNA16 hit rule (lunglesionai.evaluation.metrics.luna16_hits.match_luna16) and its two users.

The boundary cases are a table; each row also states what the rule this one replaced gave (distance <= radius,
each finding given to the nearest nodule, the first finding in list order counted, no excluded findings: the old
``match_centres`` of the phantom scoring and the demo), so every row is a case the two rules disagree on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from lunglesionai.core.findings import Finding, InputInfo, Report
from lunglesionai.evaluation import luna16_protocol, phantom_protocol
from lunglesionai.evaluation.metrics.luna16_hits import (
    DUPLICATE,
    EXCLUDED_DEFAULT_DIAMETER_MM,
    FALSE_POSITIVE,
    IGNORED,
    LUNA16_HIT_RULE,
    match_luna16,
)

FP, DUP, IGN = FALSE_POSITIVE, DUPLICATE, IGNORED


@dataclass(frozen=True)
class Case:
    """One scan: candidates (N, 3) LPS mm with (N,) scores, nodules (T, 3) with (T,) diameters, excluded (E, 3)."""

    name: str
    candidates: list
    scores: list
    nodules: list
    diameters: list
    truth_finding: list  # expected (T,) counted candidate per nodule, -1 missed
    finding_truth: list  # expected (N,) label per candidate
    old_truth_finding: list  # what the replaced rule gave for (T,)
    old_finding_truth: list  # ... and for (N,) (no IGNORED: it had no excluded findings)
    excluded: list = field(default_factory=list)
    excluded_diameters: list = field(default_factory=list)


CASES = [
    Case("distance exactly the radius (x axis) is a miss", [[2, 0, 0]], [0.9], [[0, 0, 0]], [4.0],
         [-1], [FP], [0], [0]),
    Case("distance exactly the radius (3-D, 1-2-2) is a miss", [[1, 2, -2]], [0.9], [[0, 0, 0]], [6.0],
         [-1], [FP], [0], [0]),
    Case("distance exactly the radius, off-origin centre", [[12.5, -3, 7]], [0.9], [[10, -3, 7]], [5.0],
         [-1], [FP], [0], [0]),
    Case("a candidate between two nodules hits both", [[4, 0, 0]], [0.9], [[0, 0, 0], [6, 0, 0]], [10.0, 10.0],
         [0, 0], [1], [-1, 0], [1]),
    Case("a candidate between two nodules, the other nodule's own hit scores lower",
         [[4, 0, 0], [0, 0, 0]], [0.9, 0.5], [[0, 0, 0], [6, 0, 0]], [10.0, 10.0],
         [0, 0], [1, DUP], [1, 0], [1, 0]),
    Case("two candidates on one nodule: the higher score counts, not the first",
         [[0, 0, 0], [1, 0, 0]], [0.3, 0.9], [[0, 0, 0]], [6.0],
         [1], [DUP, 0], [0], [0, DUP]),
    Case("a candidate on an excluded finding is ignored", [[31, 0, 0], [0, 0, 0]], [0.8, 0.9], [[0, 0, 0]], [6.0],
         [1], [IGN, 0], [1], [FP, 0], [[30, 0, 0]], [4.0]),
    Case("excluded finding of unknown size: radius 5 mm, strict",
         [[34, 0, 0], [35, 0, 0]], [0.8, 0.7], [[0, 0, 0]], [6.0],
         [-1], [IGN, FP], [-1], [FP, FP], [[30, 0, 0]], [-1.0]),
    Case("on a nodule's sphere and inside an excluded finding: ignored, not a hit", [[3, 0, 0]], [0.8],
         [[0, 0, 0]], [6.0], [-1], [IGN], [0], [0], [[3, 0, 0]], [4.0]),
]


def _old_rule(case: Case) -> tuple[list, list]:
    """The replaced rule (the old ``match_centres``): <= radius, nearest nodule, first finding in list order."""
    truth, d = np.asarray(case.nodules, float), np.asarray(case.diameters, float)
    hit, labels = [-1] * len(truth), []
    for i, c in enumerate(np.asarray(case.candidates, float)):
        dist = np.linalg.norm(truth - c, axis=1)
        inside = np.flatnonzero(dist <= d / 2)
        if inside.size == 0:
            labels.append(FP)
            continue
        nearest = int(inside[np.argmin(dist[inside])])
        labels.append(DUP if hit[nearest] >= 0 else nearest)
        hit[nearest] = i if hit[nearest] < 0 else hit[nearest]
    return hit, labels


def _match(case: Case):
    return match_luna16(case.candidates, case.scores, case.nodules, case.diameters,
                        case.excluded or None, case.excluded_diameters or None)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_luna16_script_rule_on_boundary_cases(case):
    m = _match(case)
    assert m.truth_finding.tolist() == case.truth_finding
    assert m.finding_truth.tolist() == case.finding_truth
    assert m.false_positives == case.finding_truth.count(FP)
    expected_scores = [case.scores[i] if i >= 0 else -np.inf for i in case.truth_finding]
    assert m.nodule_scores.tolist() == expected_scores


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_replaced_rule_disagrees_on_every_boundary_case(case):
    old = _old_rule(case)
    assert old == (case.old_truth_finding, case.old_finding_truth)
    assert old != (case.truth_finding, case.finding_truth)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_luna16_protocol_uses_the_rule(case):
    predictions = np.column_stack([np.asarray(case.candidates, float), case.scores])
    annotations = np.column_stack([np.asarray(case.nodules, float), case.diameters])
    excluded = (np.column_stack([np.asarray(case.excluded, float), case.excluded_diameters])
                if case.excluded else None)
    scan = luna16_protocol.match_scan(predictions, annotations, excluded)
    m = _match(case)
    assert scan.nodule_scores.tolist() == m.nodule_scores.tolist()
    assert scan.fp_scores.tolist() == m.fp_scores.tolist()
    assert (scan.n_ignored, scan.n_duplicates) == (m.n_ignored, m.n_duplicates)
    assert luna16_protocol.HIT_CRITERION == LUNA16_HIT_RULE


def _report(centres, scores) -> Report:
    info = InputInfo("phantom", (1, 1, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    findings = [Finding(f"N{i + 1}", "nodule", tuple(map(float, c)), (tuple(map(float, c)),) * 2, detection_score=s)
                for i, (c, s) in enumerate(zip(centres, scores))]
    return Report(info, findings)


@pytest.mark.parametrize("case", [c for c in CASES if not c.excluded], ids=[c.name for c in CASES if not c.excluded])
def test_phantom_scoring_and_the_demo_use_the_rule(case):
    truth = [{"center_lps_mm": list(map(float, c)), "diameter_mm": d} for c, d in zip(case.nodules, case.diameters)]
    m = phantom_protocol.score_against_phantom(_report(case.candidates, case.scores), truth)
    assert m.truth_finding.tolist() == case.truth_finding
    assert m.finding_truth.tolist() == case.finding_truth


def test_counts_and_sensitivity():
    truth = [[0, 0, 0], [100, 0, 0], [0, 100, 0]]
    diameters = [10.0, 6.0, 20.0]
    findings = [[4, 0, 0], [100, 3.5, 0], [0, 91, 0], [50, 50, 50], [1, 0, 0]]
    m = match_luna16(findings, [0.9, 0.8, 0.7, 0.6, 0.5], truth, diameters)
    # finding 1 is 3.5 mm from a 6 mm nodule: outside its 3 mm radius -> a false positive
    assert m.hit_truth.tolist() == [True, False, True]
    assert m.finding_truth.tolist() == [0, FP, 2, FP, DUP]
    assert (m.true_positives, m.false_positives, m.n_duplicates, m.n_ignored) == (2, 2, 1, 0)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.fp_scores.tolist() == [0.8, 0.6]


def test_a_candidate_on_a_nodule_and_an_excluded_finding_is_a_hit():
    m = match_luna16([[2, 0, 0]], [0.8], [[0, 0, 0]], [6.0], [[3, 0, 0]], [10.0])
    assert m.finding_truth.tolist() == [0] and m.n_ignored == 0


def test_equal_scores_count_the_first_candidate():
    m = match_luna16([[1, 0, 0], [0, 0, 0]], [0.5, 0.5], [[0, 0, 0]], [6.0])
    assert m.truth_finding.tolist() == [0] and m.finding_truth.tolist() == [0, DUP]


def test_excluded_default_diameter_is_the_scripts():
    assert EXCLUDED_DEFAULT_DIAMETER_MM == 10.0
    assert luna16_protocol.EXCLUDED_DEFAULT_DIAMETER_MM == EXCLUDED_DEFAULT_DIAMETER_MM


def test_empty_inputs():
    m = match_luna16(np.zeros((0, 3)), [], [[0, 0, 0]], [5.0])
    assert m.sensitivity == 0.0 and m.false_positives == 0 and m.nodule_scores.tolist() == [-np.inf]
    m = match_luna16([[0, 0, 0]], [0.5], np.zeros((0, 3)), [])
    assert np.isnan(m.sensitivity) and m.false_positives == 1
    m = match_luna16([[0, 0, 0]], [0.5], np.zeros((0, 3)), [], [[0, 0, 0]], [4.0])
    assert m.finding_truth.tolist() == [IGN] and m.n_ignored == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (([[0, 0, 0]], [0.5], [[0, 0, 0]], [1.0, 2.0]), "diameters"),
        (([[0, 0, 0]], [0.5, 0.6], [[0, 0, 0]], [1.0]), "scores"),
        (([[0, 0]], [0.5], [[0, 0, 0]], [1.0]), r"\(n, 3\)"),
        (([[0, 0, np.nan]], [0.5], [[0, 0, 0]], [1.0]), "non-finite"),
        (([[0, 0, 0]], [0.5], [[0, 0, 0]], [0.0]), "> 0"),
        (([[0, 0, 0]], [0.5], [[0, 0, 0]], [1.0], [[0, 0, 0]], []), "excluded_diameters"),
    ],
)
def test_malformed_inputs_raise(args, message):
    with pytest.raises(ValueError, match=message):
        match_luna16(*args)
