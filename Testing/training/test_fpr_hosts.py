"""Tests of the multi-host FP-reduction training: reader marks, duplicate suppression, per-host counts, FROC, the
host-balanced training arrays, leave-one-host-out and the operating-point rule."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from crop_fixtures import _crops
from lunglesionai.app.fpr_hosts_command import choose_operating_point, parse_host
from lunglesionai.stages.fp_reduction import FprConfig
from lunglesionai.training.fp_reduction import FprTrainConfig
from lunglesionai.training.fpr_hosts import (
    IGNORE,
    HostRows,
    apply_marks,
    concatenate_rows,
    host_findings_per_scan,
    host_froc,
    leave_one_host_out,
    load_rows,
    suppress_duplicates,
    training_arrays,
)


def _rows(name: str, rng: np.random.Generator, n_real: int = 6, n_pos: int = 4) -> HostRows:
    """Real rows (tubes: negatives), pasted balls (positives) and one eval composite: 2 balls hit by candidates,
    3 tube candidates elsewhere."""
    balls = _crops(n_pos + 2, "ball", rng)
    tubes = _crops(n_real + 3, "tube", rng)
    crops = np.concatenate([tubes[:n_real], balls[:n_pos], balls[n_pos:], tubes[n_real:]])[:, None].astype(np.float16)
    real_centres = np.column_stack([np.arange(n_real) * 20.0, np.zeros(n_real), np.zeros(n_real)])
    eval_truth = np.array([[0.0, 100.0, 0.0, 8.0], [50.0, 100.0, 0.0, 8.0]])
    eval_centres = np.concatenate([eval_truth[:, :3] + 1.0, [[0.0, 200.0, 0.0], [40.0, 200.0, 0.0],
                                                              [80.0, 200.0, 0.0]]])
    centres = np.concatenate([real_centres, np.zeros((n_pos, 3)) + [0, 50, 0], eval_centres])
    labels = np.array([0] * n_real + [1] * n_pos + [1, 1, 0, 0, 0])
    scores = np.array([0.9] * n_real + [1.0] * n_pos + [0.8, 0.8, 0.9, 0.9, 0.9], np.float32)
    parts = np.array(["real"] * n_real + ["train"] * n_pos + ["eval0"] * 5)
    return HostRows(name, crops, labels, scores, centres, np.full(len(labels), 3.0, np.float32), parts,
                    {"eval0": eval_truth}, {"path": name})


def test_rows_round_trip_through_npz(tmp_path):
    rows = _rows("a", np.random.default_rng(0))
    rows.save(tmp_path / "a.npz")
    back = load_rows(tmp_path / "a.npz")
    assert back.name == "a" and back.info == {"path": "a"}
    np.testing.assert_array_equal(back.crops, rows.crops)
    np.testing.assert_array_equal(back.parts, rows.parts)
    np.testing.assert_array_equal(back.truth["eval0"], rows.truth["eval0"])
    assert not list(tmp_path.glob("*.part*"))


def test_reader_marks_turn_detections_into_positives_or_ignored():
    rows = _rows("a", np.random.default_rng(0))
    marks = np.array([[0.0, 0.0, 0.0, 5.0, 1.0],  # a nodule >= 3 mm on real candidate 0
                      [21.0, 0.0, 0.0, 5.0, 0.0],  # a non-nodule on real candidate 1
                      [0.0, 50.0, 0.0, 5.0, 0.0]])  # on the pasted positives: they keep their label
    marked = apply_marks(rows, marks)
    assert marked.labels[:3].tolist() == [1, IGNORE, 0]
    assert (marked.labels[rows.parts == "train"] == 1).all()
    assert rows.labels[0] == 0  # the input is not modified
    unmarked = apply_marks(rows, np.zeros((0, 5)))
    np.testing.assert_array_equal(unmarked.labels, rows.labels)


def test_duplicate_suppression_keeps_the_best_of_each_structure():
    centres = np.array([[0.0, 0, 0], [3.0, 0, 0], [20.0, 0, 0], [27.0, 0, 0]])
    scores = np.array([0.5, 0.9, 0.4, 0.6])
    radii = np.array([2.0, 2.0, 2.0, 8.0])  # the last is big: its radius reaches the third
    assert suppress_duplicates(centres, scores, radii).tolist() == [1, 3]
    assert suppress_duplicates(np.zeros((0, 3)), np.zeros(0), np.zeros(0)).tolist() == []


def test_findings_per_scan_and_froc_count_what_they_should():
    rows = _rows("a", np.random.default_rng(0))
    scores = np.zeros(len(rows.labels))
    scores[:6] = [0.95, 0.85, 0.75, 0.65, 0.55, 0.45]  # six real candidates, 20 mm apart
    counts = host_findings_per_scan(rows, scores, [0.5, 0.7, 0.9])
    assert counts == {"0.50": 5, "0.70": 3, "0.90": 1}
    scores[10:12] = [0.9, 0.7]  # the two eval nodules' candidates
    scores[12:] = [0.8, 0.3, 0.2]  # eval false positives
    froc = host_froc(rows, scores)
    assert froc["n_nodules"] == 2 and froc["n_detected"] == 2
    assert froc["n_false_positives"] == 3
    assert froc["froc"]["0.25"] == 0.5 and froc["froc"]["1"] == 1.0  # one FP (0.8) outranks the 0.7 nodule


def test_training_arrays_weigh_every_host_equally_and_skip_eval_and_ignored():
    rng = np.random.default_rng(0)
    big, small = _rows("big", rng, n_real=12, n_pos=6), _rows("small", rng, n_real=3, n_pos=2)
    small.labels[0] = IGNORE
    crops, labels, weights = training_arrays([big, small])
    assert len(labels) == 12 + 6 + 2 + 2  # no eval rows, no ignored row
    assert crops.shape[1:] == (1, 18, 18, 18)
    np.testing.assert_allclose(weights[:12].sum(), 1.0)  # big host's negatives
    np.testing.assert_allclose(weights[18:20].sum(), 1.0)  # small host's two usable negatives
    np.testing.assert_allclose(weights[labels == 1].sum(), 2.0)


def test_leave_one_host_out_trains_without_the_host_and_measures_on_it(tmp_path):
    rng = np.random.default_rng(1)
    hosts = [_rows(name, rng) for name in ("a", "b", "c")]
    config = FprTrainConfig(steps=40, batch_size=16, threads=1, network=FprConfig(crop_size=16, channels=(4, 8, 8)))
    result = leave_one_host_out(hosts, config, tmp_path, thresholds=[0.5, 0.9], held_out=["a", "c"])
    assert sorted(result["folds"]) == ["a", "c"]
    assert (tmp_path / "a" / "config.json").exists() and not (tmp_path / "b").exists()
    for fold in result["folds"].values():
        assert set(fold["findings_per_scan"]) == {"0.50", "0.90"}
        assert fold["findings_per_scan"]["0.90"] <= fold["findings_per_scan"]["0.50"] <= 6
        assert 0.0 <= fold["cpm"] <= 1.0 and fold["n_nodules"] == 2
    assert result["mean_findings_per_scan"]["0.50"] == np.mean(
        [f["findings_per_scan"]["0.50"] for f in result["folds"].values()])


def test_operating_point_is_the_lowest_threshold_within_the_budget():
    loho = {"mean_findings_per_scan": {"0.50": 4.0, "0.60": 1.0, "0.70": 0.5},
            "folds": {"a": {"findings_per_scan": {"0.50": 6, "0.60": 2, "0.70": 1}},
                      "b": {"findings_per_scan": {"0.50": 2, "0.60": 0, "0.70": 0}}}}
    threshold, row = choose_operating_point(loho, 1.0)
    assert threshold == 0.6
    assert row == {"mean_findings_per_scan": 1.0, "deciding_hosts": ["a", "b"], "per_host": {"a": 2, "b": 0}}
    assert choose_operating_point(loho, 0.1)[0] == 0.7  # none qualifies: the strictest
    assert choose_operating_point(loho, 0.1, hosts=["b"])[0] == 0.6  # only host b decides; a's count still shown
    assert choose_operating_point(loho, 0.1, hosts=["b"])[1]["per_host"]["a"] == 2


def test_host_argument_needs_name_and_path():
    assert parse_host("tcga=/data/ct.nii.gz") == ("tcga", "/data/ct.nii.gz")
    for bad in ("tcga", "=x", "a b=x", "tcga="):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_host(bad)


def test_rows_of_several_mining_runs_concatenate():
    rng = np.random.default_rng(2)
    first, second = _rows("a", rng), _rows("a", rng)
    second.truth = {"eval1": second.truth["eval0"]}
    second.parts = np.where(second.parts == "eval0", "eval1", second.parts)
    both = concatenate_rows([first, second])
    assert len(both.labels) == 2 * len(first.labels) and sorted(both.truth) == ["eval0", "eval1"]
    assert host_froc(both, np.full(len(both.labels), 0.5))["n_nodules"] == 4
    with pytest.raises(ValueError, match="mined twice"):
        concatenate_rows([first, first])
    with pytest.raises(ValueError, match="different hosts"):
        concatenate_rows([first, _rows("b", rng)])


def test_eval_candidates_are_labelled_by_the_luna16_hit_rule():
    from lunglesionai.training.fpr_hosts import _truth_labels

    truth = np.array([[0.0, 0.0, 0.0, 10.0], [30.0, 0.0, 0.0, 4.0]])
    centres = np.array([[4.9, 0, 0], [5.0, 0, 0], [31.0, 0, 0], [33.0, 0, 0]])  # 5.0 lies on the sphere: no hit
    assert _truth_labels(centres, truth).tolist() == [1, 0, 1, 0]
    assert _truth_labels(centres, np.zeros((0, 4))).tolist() == [0, 0, 0, 0]
    assert _truth_labels(np.zeros((0, 3)), truth).tolist() == []
