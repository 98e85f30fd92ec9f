"""Tests of lunglesionai.evaluation.lidc_voi_protocol: metric functions on hand-computable cases and the
``evaluate lidc-voi`` command on a tiny folder in the lidc_voi layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lidc_fixtures import make_lidc_folder
from lunglesionai.app.evaluate_commands import run_evaluate_lidc
from lunglesionai.datasets.lidc import LidcTableError
from lunglesionai.evaluation.lidc_voi_protocol import (
    bootstrap_ci,
    confusion_matrix,
    dice_score,
    evaluate_lidc_voi,
    expected_calibration_error,
    fit_logistic,
    macro_f1,
    roc_auc,
)
from lunglesionai.nets.densesharp import DenseSharpConfig, DenseSharpNet
from lunglesionai.stages.grading import save_grader

OUTSIDE_KEYS = ("n", "dice_mean", "dice_median", "malignancy_auc", "texture_macro_f1", "invasiveness_macro_f1")


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfect
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # reversed
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # one discordant pair of four
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied
        ([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.875),  # one tied pair counts one half: (3 + 0.5) / 4
    ],
)
def test_roc_auc_cases(scores, labels, expected):
    assert roc_auc(np.array(scores), np.array(labels)) == pytest.approx(expected)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = (rng.random(60) < 0.4).astype(int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert roc_auc(scores, labels) == pytest.approx(pairwise)


def test_roc_auc_one_class_and_errors():
    assert roc_auc(np.array([0.1, 0.2]), np.array([1, 1])) is None
    with pytest.raises(ValueError, match="0/1"):
        roc_auc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        roc_auc(np.array([0.1, 0.2]), np.array([0]))


def test_confusion_and_macro_f1():
    truth = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2, 2, 0])
    matrix = confusion_matrix(truth, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 3]]
    # F1: class 0 = 2*1/(2+2) = 0.5; class 1 = 2*2/(2+3) = 0.8; class 2 = 2*3/(4+3) = 6/7
    assert macro_f1(matrix) == pytest.approx((0.5 + 0.8 + 6 / 7) / 3)
    assert macro_f1(np.zeros((3, 3))) is None
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


@pytest.mark.parametrize(
    "probabilities, labels, n_bins, expected",
    [
        ([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], 10, 0.25),  # bins 2 and 8: |0.5-0.2|/2 + |1-0.8|/2
        ([0.0, 1.0], [0, 1], 10, 0.0),  # perfectly confident and right
        ([0.3, 0.7], [1, 0], 10, 0.7),  # bins 3 and 7: |1 - 0.3|/2 + |0 - 0.7|/2
        ([0.3, 0.7], [1, 0], 1, 0.0),  # one bin: mean probability 0.5 = positive rate 0.5
    ],
)
def test_expected_calibration_error(probabilities, labels, n_bins, expected):
    assert expected_calibration_error(np.array(probabilities), np.array(labels), n_bins) == pytest.approx(expected)


def test_ece_errors():
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([1.2]), np.array([1]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([]))


def test_dice_score():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros_like(a)
    assert dice_score(a, b) == 1.0
    a[0, 0, :2] = True
    b[0, 0, 1:3] = True
    assert dice_score(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        dice_score(a, b[:2])


def test_fit_logistic_recovers_coefficients():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(2.0 * x - 0.5)))).astype(int)
    (a,), b = fit_logistic(x, y)
    assert a == pytest.approx(2.0, abs=0.15) and b == pytest.approx(-0.5, abs=0.15)
    x2 = np.column_stack([x, rng.normal(0, 1, 5000)])  # a second feature with its own effect
    y2 = (rng.random(5000) < 1 / (1 + np.exp(-(2.0 * x2[:, 0] - 1.0 * x2[:, 1])))).astype(int)
    w, b = fit_logistic(x2, y2)
    np.testing.assert_allclose(w, [2.0, -1.0], atol=0.2)
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x[:3], np.zeros(3))


def test_bootstrap_ci_brackets_the_mean():
    values = np.random.default_rng(2).normal(5.0, 1.0, 200)
    low, high = bootstrap_ci(np.mean, (values,), n_samples=500, seed=0)
    assert low < values.mean() < high and high - low < 0.5
    assert bootstrap_ci(np.mean, (values,), n_samples=500, seed=0) == (low, high)  # reproducible
    assert bootstrap_ci(np.mean, (np.array([]),)) is None


# ----------------------------------------------------------------------------------------------- command


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A grader folder with an untrained tiny network (the command's plumbing, not its accuracy)."""
    folder = tmp_path_factory.mktemp("model")
    net = DenseSharpNet(DenseSharpConfig(stem_channels=4, down_channels=8, growth_rate=4, block_layers=(1, 1),
                                         decoder_channels=(4, 8), mask_prior=0.5))
    save_grader(net.eval(), folder, {"spacing_mm": 1.0, "crop_size": 16, "hu_window": [-1000, 400],
                                     "pad_hu": -1000}, {"calibration": {"temperature": 1.0}})
    return folder


def _run_cli(argv: list[str]) -> int:
    from lunglesionai.app.cli import main

    return main(argv)


def test_evaluate_command_writes_metrics(tmp_path, untrained_model):
    data = make_lidc_folder(tmp_path / "data", n=9)
    out = tmp_path / "metrics.json"
    assert _run_cli(["evaluate", "lidc-voi", "--data", str(data), "--out", str(out),
                     "--model", str(untrained_model)]) == 0
    metrics = json.loads(out.read_text())
    for key in OUTSIDE_KEYS:
        assert key in metrics
    assert metrics["n"] == 3  # the val rows
    assert 0 <= metrics["dice_mean"] <= 1 and len(metrics["per_nodule"]) == 3
    assert metrics["classical_dice_mean"] > 0.5  # the classical method finds the synthetic spheres
    assert metrics["diameter_baseline"]["fit_on"].startswith("train rows")
    assert metrics["texture_confusion"]["rows_truth_columns_predicted"] is not None
    assert np.array(metrics["texture_confusion"]["rows_truth_columns_predicted"]).sum() == 3


def test_evaluate_folder_without_split_column(tmp_path, untrained_model):
    data = make_lidc_folder(tmp_path / "data", n=4, with_split=False)
    metrics = evaluate_lidc_voi(data, "val", untrained_model, classical=False, bootstrap_samples=20)
    assert metrics["n"] == 4  # no split column: all rows
    assert "classical_dice_mean" not in metrics
    assert metrics["diameter_baseline"] is None  # no train rows and none saved with the model
    assert metrics["malignancy_auc"] is not None  # labels 0,0,0,1 present


def test_evaluate_errors(tmp_path, untrained_model):
    with pytest.raises(LidcTableError):
        evaluate_lidc_voi(tmp_path, "val", untrained_model)
    data = make_lidc_folder(tmp_path / "data", n=3)
    with pytest.raises(LidcTableError, match="split == 'test'"):
        evaluate_lidc_voi(data, "test", untrained_model)


def test_cli_parser_registers_evaluate_lidc_voi():
    from lunglesionai.app.cli import build_parser

    args = build_parser().parse_args(["evaluate", "lidc-voi", "--data", "d", "--out", "m.json"])
    assert (args.data, args.split, args.out) == ("d", "val", "m.json")
    assert args.func is run_evaluate_lidc


def test_evaluate_folder_without_labels(tmp_path, untrained_model):
    data = tmp_path / "bare"
    make_lidc_folder(tmp_path / "full", n=3)
    (data / "images").parent.mkdir()
    for sub in ("images", "masks"):
        (tmp_path / "full" / sub).rename(data / sub)
    rows = (tmp_path / "full" / "nodules.csv").read_text().splitlines()
    keep = [0, 3, 4, 5, 6]  # file, coordX/Y/Z, diameter_mm only
    (data / "nodules.csv").write_text("\n".join(",".join(r.split(",")[i] for i in keep) for r in rows) + "\n")
    metrics = evaluate_lidc_voi(data, "val", untrained_model, classical=False, bootstrap_samples=10)
    assert metrics["n"] == 3 and 0 <= metrics["dice_mean"] <= 1
    for key in ("malignancy_auc", "texture_macro_f1", "invasiveness_macro_f1"):
        assert metrics[key] is None  # no labels in the table: reported as null, never invented


def test_evaluate_reports_attributes_with_baselines(tmp_path):
    data = make_lidc_folder(tmp_path / "data", n=12)  # train: 5 small (spiculation 1), 3 large (4); val: 1 and 3
    model = tmp_path / "model"
    net = DenseSharpNet(DenseSharpConfig(stem_channels=4, down_channels=8, growth_rate=4, block_layers=(1, 1),
                                         decoder_channels=(4, 8), mask_prior=0.5, lidc_attribute_heads=True))
    save_grader(net.eval(), model, {"spacing_mm": 1.0, "crop_size": 16, "hu_window": [-1000, 400], "pad_hu": -1000})
    metrics = evaluate_lidc_voi(data, "val", model, classical=False, bootstrap_samples=20)
    attributes = metrics["attributes"]
    assert "not pathology" in attributes["note"]
    spiculation = attributes["ratings"]["spiculation"]
    assert spiculation["train_majority_rating"] == 1
    assert spiculation["majority_baseline"]["quadratic_kappa"] == pytest.approx(0.0)
    assert spiculation["majority_baseline"]["exact_accuracy"] == pytest.approx(1 / 4)
    assert spiculation["model"]["n"] == 4 and attributes["ratings"]["margin"]["model"]["n"] == 0  # no margin column
    spiculated = attributes["cuts"]["spiculated"]
    assert spiculated["definition"] == "spiculation >= 3" and spiculated["model"]["n_positive"] == 3
    assert spiculated["majority_baseline"]["macro_f1"] == pytest.approx(2 * 1 / (1 + 4) / 2)  # "no" for all
    assert spiculated["diameter_baseline"]["auc"] == pytest.approx(1.0)  # the fixture's spiculated nodules are large
    assert attributes["cuts"]["calcified"]["model"]["n_positive"] == 0  # all rated 6, absent
    assert metrics["spiculation_quadratic_kappa"] == spiculation["model"]["quadratic_kappa"]


def test_evaluate_old_grader_has_no_attributes(tmp_path, untrained_model):
    data = make_lidc_folder(tmp_path / "data", n=3)
    metrics = evaluate_lidc_voi(data, "val", untrained_model, classical=False, bootstrap_samples=10)
    assert metrics["attributes"] is None and metrics["per_nodule"][0]["attributes_predicted"] is None
