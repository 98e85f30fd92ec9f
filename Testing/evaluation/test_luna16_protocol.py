"""LUNA16 detection protocol: FROC, CPM, excluded findings, MONAI cross-check (lunglesionai.evaluation.luna16_protocol)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.app.evaluate_commands import add_evaluate_detection_parser
from lunglesionai.datasets.luna16 import (
    PREDICTION_COLUMNS,
    read_annotations,
    read_seriesuids,
    write_luna16_csv,
)
from lunglesionai.evaluation.luna16_protocol import (
    FP_RATES,
    evaluate_detection,
    froc_curve,
    froc_luna16,
    match_scan,
)

KEYS = ["0.125", "0.25", "0.5", "1", "2", "4", "8"]


def _a(rows):
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def test_hand_computed_froc():
    # scan A: nodule N1 (r 5) hit at 0.9 and again at 0.3 (duplicate), N2 (r 3) hit at 0.4, one FP at 0.8;
    # scan B: no nodule, FPs at 0.7 and 0.2.  Curve: (0,0) (0,.5) (.5,.5) (1,.5) (1,1) (1.5,1).
    predictions = {"A": _a([[1, 0, 0, 0.9], [0, 1, 0, 0.3], [100, 0, 0, 0.8], [50, 0, 0, 0.4]]),
                   "B": _a([[0, 0, 0, 0.7], [10, 10, 10, 0.2]])}
    annotations = {"A": _a([[0, 0, 0, 10], [50, 0, 0, 6]])}
    m = froc_luna16(predictions, annotations, None, 2, n_bootstrap=0)
    assert [m["froc"][k] for k in KEYS] == pytest.approx([0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert m["cpm"] == pytest.approx(5.5 / 7)
    assert (m["n_scans"], m["n_nodules"], m["n_detected"], m["n_false_positives"], m["n_duplicates"]) == (2, 2, 2, 3, 1)
    assert "radius" in m["hit_criterion"] and "cpm_ci95" not in m
    # two more scans without predictions or nodules halve the FP rates: 0.8 then 0.7 reach 0.25 and 0.5 FPs/scan
    m4 = froc_luna16(predictions, annotations, None, 4, n_bootstrap=0)
    assert [m4["froc"][k] for k in KEYS] == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_excluded_findings_are_ignored():
    annotations = {"A": _a([[0, 0, 0, 8]])}
    excluded = {"A": _a([[30, 0, 0, -1], [60, 0, 0, 4], [3, 0, 0, 10]])}
    predictions = {"A": _a([
        [34, 0, 0, 0.9],  # 4 mm from an excluded finding of unknown size (radius 5): ignored
        [36, 0, 0, 0.8],  # 6 mm from it: false positive
        [61.5, 0, 0, 0.7],  # within the 4 mm excluded finding (radius 2): ignored
        [63, 0, 0, 0.6],  # 3 mm from it: false positive
        [2, 0, 0, 0.5],  # inside the nodule and an excluded finding: a hit
    ])}
    match = match_scan(predictions["A"], annotations["A"], excluded["A"])
    assert match.nodule_scores.tolist() == [0.5] and sorted(match.fp_scores.tolist()) == [0.6, 0.8]
    assert match.n_ignored == 2
    m = froc_luna16(predictions, annotations, excluded, 1, n_bootstrap=0)
    assert m["n_ignored_excluded"] == 2 and m["n_false_positives"] == 2
    assert m["froc"]["1"] == 0.0 and m["froc"]["2"] == 1.0  # the hit comes after both FPs


def test_hit_is_strictly_within_radius_and_a_mark_on_two_nodules_counts_for_both():
    match = match_scan(_a([[2, 0, 0, 0.9]]), _a([[0, 0, 0, 4]]))  # distance == radius
    assert match.nodule_scores.tolist() == [-np.inf] and match.fp_scores.tolist() == [0.9]
    match = match_scan(_a([[0, 0, 0, 0.9]]), _a([[1, 0, 0, 6], [-1, 0, 0, 6]]))
    assert match.nodule_scores.tolist() == [0.9, 0.9] and match.fp_scores.size == 0


def test_edge_cases():
    annotations = {"A": _a([[0, 0, 0, 6]])}
    none = froc_luna16({}, annotations, None, 1, n_bootstrap=0)
    assert none["cpm"] == 0.0 and none["n_detected"] == 0
    perfect = froc_luna16({"A": _a([[0, 0, 0, 0.1]])}, annotations, None, 1, n_bootstrap=0)
    assert perfect["cpm"] == 1.0  # no false positive at all: full sensitivity at every rate
    with pytest.raises(ValueError, match="reference nodule"):
        froc_luna16({"A": _a([[0, 0, 0, 0.5]])}, {}, None, 1)
    with pytest.raises(ValueError, match="n_scans"):
        froc_luna16({"B": _a([[0, 0, 0, 0.5]])}, annotations, None, 1)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        froc_luna16({"A": np.zeros((2, 3))}, annotations, None, 1)
    fps, sens = froc_curve(np.array([0.5, -np.inf]), np.array([0.7]), 2)
    assert fps.tolist() == [0.0, 0.5, 0.5] and sens.tolist() == [0.0, 0.0, 0.5]


def _random_study(rng, n_scans=12, size=48):
    """Scans with non-overlapping nodule / excluded balls and predictions on integer voxel centres."""
    scans = {}
    for s in range(n_scans):
        balls, n_balls = [], rng.integers(0, 5)
        for _ in range(100):
            if len(balls) == n_balls:
                break
            centre = rng.integers(8, size - 8, 3).astype(float)
            diameter = float(rng.choice([-1.0, *rng.uniform(4, 12, 3)])) if len(balls) % 2 else rng.uniform(4, 12)
            radius = 5.0 if diameter < 0 else diameter / 2
            if all(np.linalg.norm(centre - c) > radius + r + 1 for c, r, _ in balls):
                balls.append((centre, radius, diameter))
        nodules = [(c, d) for i, (c, r, d) in enumerate(balls) if i % 2 == 0]
        excluded = [(c, d) for i, (c, r, d) in enumerate(balls) if i % 2 == 1]
        near = [c + rng.integers(-3, 4, 3) for c, _, _ in balls for _ in range(rng.integers(0, 3))]
        far = [rng.integers(0, size, 3).astype(float) for _ in range(rng.integers(0, 8))]
        points = np.clip(np.array(near + far, dtype=float).reshape(-1, 3), 0, size - 1)
        scores = rng.integers(1, 1024, len(points)) / 1024.0  # exact in float32, as MONAI stores TP scores
        scans[f"s{s}"] = (np.column_stack([points, scores]), nodules, excluded)
    return scans


def test_matches_monai_froc_on_the_same_predictions():
    froc = pytest.importorskip("monai.metrics.froc")
    rng = np.random.default_rng(4)
    scans = _random_study(rng)
    size = 48
    fp_all, tp_all, n_targets = [], [], 0
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).astype(float)
    for predictions, nodules, excluded in scans.values():
        labels = np.zeros((size,) * 3, np.int32)
        for label, (centre, diameter) in enumerate(nodules + excluded, start=1):
            radius = 5.0 if diameter < 0 else diameter / 2
            labels[np.linalg.norm(grid - centre, axis=-1) < radius] = label
        exclude = list(range(len(nodules) + 1, len(nodules) + len(excluded) + 1))
        fp, tp, n = froc.compute_fp_tp_probs_nd(predictions[:, 3], predictions[:, :3].astype(int), labels, exclude)
        fp_all.append(fp)
        tp_all.append(tp[: len(nodules)])
        n_targets += n
    # MONAI skips its lowest threshold (meant for the 0 of missed targets): add a 0 so that no real score is lost
    fps, sens = froc.compute_froc_curve_data(np.concatenate(fp_all + [np.zeros(1)]), np.concatenate(tp_all),
                                             n_targets, len(scans))
    ours = froc_luna16(
        {s: p for s, (p, _, _) in scans.items()},
        {s: _a([[*c, d] for c, d in n]) for s, (_, n, _) in scans.items() if n},
        {s: _a([[*c, d] for c, d in e]) for s, (_, _, e) in scans.items() if e},
        len(scans), n_bootstrap=0,
    )
    assert ours["n_nodules"] == n_targets > 5 and 0 < ours["cpm"] < 1
    assert ours["n_ignored_excluded"] > 0
    for rate, key in zip(FP_RATES, KEYS):
        assert ours["froc"][key] == pytest.approx(froc.compute_froc_score(fps, sens, (rate,)), abs=1e-9)
    assert ours["cpm"] == pytest.approx(froc.compute_froc_score(fps, sens, FP_RATES), abs=1e-9)


def test_bootstrap_interval():
    rng = np.random.default_rng(1)
    scans = _random_study(rng, n_scans=20)
    args = ({s: p for s, (p, _, _) in scans.items()},
            {s: _a([[*c, max(d, 4)] for c, d in n]) for s, (_, n, _) in scans.items() if n}, None, 20)
    a = froc_luna16(*args, n_bootstrap=200, seed=3)
    b = froc_luna16(*args, n_bootstrap=200, seed=3)
    low, high = a["cpm_ci95"]
    assert a["cpm_ci95"] == b["cpm_ci95"] and a["n_bootstrap"] == 200
    assert 0 <= low < a["cpm"] < high <= 1
    assert all(lo <= hi for lo, hi in a["froc_ci95"].values())


def _write_tables(tmp_path, predictions, annotations):
    write_luna16_csv(tmp_path / "annotations.csv", [(s, *row) for s, t in annotations.items() for row in t.tolist()])
    write_luna16_csv(tmp_path / "pred.csv", [(s, *row) for s, t in predictions.items() for row in t.tolist()],
                     PREDICTION_COLUMNS)


def test_evaluate_detection_from_predictions_and_cli(tmp_path):
    predictions = {"A": _a([[1, 0, 0, 0.9], [100, 0, 0, 0.8]]), "B": _a([[0, 0, 0, 0.7]]), "X": _a([[0, 0, 0, 1]])}
    annotations = {"A": _a([[0, 0, 0, 10]]), "B": _a([[40, 0, 0, 6]])}
    _write_tables(tmp_path, predictions, annotations)
    metrics = evaluate_detection(None, tmp_path / "annotations.csv", predictions_csv=tmp_path / "pred.csv",
                                 n_bootstrap=0)
    expected = froc_luna16({k: predictions[k] for k in "AB"}, annotations, None, 2, n_bootstrap=0)
    assert metrics["froc"] == expected["froc"] and metrics["cpm"] == expected["cpm"]
    assert metrics["timings_s"] == {} and metrics["per_scan"]["A"]["n_hit"] == 1
    (tmp_path / "uids.csv").write_text("A\nB\nC\nD\n")
    wider = evaluate_detection(None, tmp_path / "annotations.csv", predictions_csv=tmp_path / "pred.csv",
                               seriesuids_csv=tmp_path / "uids.csv", n_bootstrap=0)
    assert wider["n_scans"] == 4 and wider["froc"]["0.25"] == 0.5 and wider["froc"]["0.5"] == 0.5

    parser = argparse.ArgumentParser()
    evaluate = parser.add_subparsers(dest="command").add_parser("evaluate").add_subparsers(dest="dataset")
    add_evaluate_detection_parser(evaluate)
    args = parser.parse_args(["evaluate", "detection", "--annotations", str(tmp_path / "annotations.csv"),
                              "--predictions", str(tmp_path / "pred.csv"), "--bootstrap", "50",
                              "--out", str(tmp_path / "metrics.json")])
    assert args.func(args) == 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert {"n_scans", "n_nodules", "froc", "cpm", "hit_criterion", "cpm_ci95"} <= set(written)
    assert list(written["froc"]) == KEYS and written["cpm"] == expected["cpm"]
    args = parser.parse_args(["evaluate", "detection", "--annotations", str(tmp_path / "annotations.csv"),
                              "--out", str(tmp_path / "m.json")])
    with pytest.raises(ValueError, match="--images"):
        args.func(args)


def test_evaluate_detection_runs_the_pipeline(tmp_path):
    from lunglesionai.io.ct_files import save_volume
    from lunglesionai.synth import PhantomConfig, make_phantom

    phantom = make_phantom(PhantomConfig.small(seed=2))
    (tmp_path / "images" / "subset0").mkdir(parents=True)
    save_volume(phantom.volume, tmp_path / "images" / "subset0" / "case1.nii.gz")
    write_luna16_csv(tmp_path / "annotations.csv",
                     [("case1", *n.center_lps_mm, n.diameter_mm) for n in phantom.nodules])
    metrics = evaluate_detection(tmp_path / "images", tmp_path / "annotations.csv", n_bootstrap=10,
                                 save_predictions_csv=tmp_path / "pred.csv")
    assert metrics["n_scans"] == 1 and metrics["n_nodules"] == len(phantom.nodules)
    assert set(metrics["timings_s"]) == {"case1"} and metrics["timings_s"]["case1"] > 0
    assert metrics["per_scan"]["case1"]["n_hit"] >= 1  # the classical detector finds some phantom nodules
    replay = evaluate_detection(None, tmp_path / "annotations.csv", predictions_csv=tmp_path / "pred.csv",
                                n_bootstrap=0)
    assert replay["cpm"] == pytest.approx(metrics["cpm"])
    json.dumps(metrics, allow_nan=False)
    write_luna16_csv(tmp_path / "more.csv", [("case1", 0, 0, 0, 5), ("case2", 0, 0, 0, 5)])
    with pytest.raises(FileNotFoundError, match="case2"):
        evaluate_detection(tmp_path / "images", tmp_path / "more.csv")


def test_real_luna16_tables_with_perfect_and_excluded_marks():
    folder = shared_path("luna16")
    annotations = read_annotations(folder / "annotations.csv")
    excluded = read_annotations(folder / "annotations_excluded.csv", allow_unknown_diameter=True)
    uids = read_seriesuids(folder / "seriesuids.csv")
    marks = {s: np.column_stack([a[:, :3], np.full(len(a), 0.9)]) for s, a in annotations.items()}
    for s, e in excluded.items():
        extra = np.column_stack([e[:, :3], np.full(len(e), 0.95)])
        marks[s] = np.vstack([marks[s], extra]) if s in marks else extra
    m = froc_luna16(marks, annotations, excluded, len(uids), n_bootstrap=0)
    assert (m["n_scans"], m["n_nodules"]) == (888, 1186) and m["cpm"] == 1.0
    assert m["n_false_positives"] == 0
    assert m["n_ignored_excluded"] + m["n_duplicates"] > 0.9 * sum(len(e) for e in excluded.values())
