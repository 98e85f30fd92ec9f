"""Tests of lunglesionai.training.grader (losses, calibration, a tiny training run that learns) and
lunglesionai.stages.grading (loading, grading on the volume's own grid, errors), plus the shipped model on real VOIs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, shared_path
from lidc_fixtures import make_lidc_folder
from lunglesionai.core.volume import Volume
from lunglesionai.datasets.lidc import load_voi, read_nodule_table
from lunglesionai.datasets.lidc_crops import AugmentationConfig
from lunglesionai.evaluation.lidc_voi_protocol import dice_score
from lunglesionai.nets.densesharp import (
    DenseSharpConfig,
    DenseSharpNet,
    DenseSharpOutput,
)
from lunglesionai.stages.grading import (
    ATTRIBUTE_CUTS,
    MODELS_ENV,
    AttributeCut,
    GraderModelError,
    NoduleGrader,
    attribute_cut_probability,
    default_model_dir,
    save_grader,
    stacked_logit,
)
from lunglesionai.training.grader import (
    GraderLoss,
    GraderTrainingConfig,
    class_balanced_weights,
    train_grader,
)
from lunglesionai.training.grader_attributes import AttributeLabels
from lunglesionai.training.grader_calibration import (
    fit_malignancy_stacker,
    fit_temperature,
)

TINY_NET = DenseSharpConfig(stem_channels=4, down_channels=8, growth_rate=4, block_layers=(2, 2),
                            decoder_channels=(4, 8), dropout=0.0)
GENTLE = AugmentationConfig(rotate_deg=(180.0, 0.0, 0.0), shift_mm=1.0, scale=0.0, hu_shift=0.0, hu_scale=0.0,
                            noise_std_hu=0.0)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 10-epoch run on 12 synthetic nodules (malignant = 11 mm, benign = 5 mm)."""
    root = tmp_path_factory.mktemp("toy")
    folder = make_lidc_folder(root / "data", n=18)
    config = GraderTrainingConfig(
        data_dir=str(folder), out_dir=str(root / "model"), epochs=10, batch_size=4, learning_rate=1e-2,
        warmup_epochs=0, crop_size=16, cache_margin=4, spacing_mm=1.0, network=TINY_NET, augmentation=GENTLE,
    )
    start = time.monotonic()
    result = train_grader(config)
    return folder, config, result, time.monotonic() - start


# ----------------------------------------------------------------------------------------------- training


def test_training_learns_the_toy_set(toy_run):
    _, _, result, _ = toy_run
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.history[-1]["train_mask"] < result.history[0]["train_mask"]
    assert result.val_metrics["dice_iso_mean"] > 0.5
    assert result.val_metrics["malignancy_auc"] == 1.0  # size separates the toy classes
    # (no time limit here: speed belongs in benchmarks; a timed unit test fails on a busy machine)


def test_training_writes_a_reproducible_model_folder(toy_run):
    _, config, result, _ = toy_run
    saved = json.loads((result.out_dir / "config.json").read_text())
    assert saved["weights_sha256"] == result.weights_sha256
    assert GraderTrainingConfig.from_dict(saved["training"]) == config
    assert saved["calibration"]["temperature"] == result.temperature
    assert saved["preprocessing"]["crop_size"] == 16
    assert (result.out_dir / "train_result.json").is_file()
    assert 1 <= result.best_epoch <= result.epochs_run == 10


def test_training_is_reproducible(tmp_path, toy_run):
    folder, config, result, _ = toy_run
    again = train_grader(GraderTrainingConfig.from_dict({**config.to_dict(), "out_dir": str(tmp_path / "again")}))
    assert again.weights_sha256 == result.weights_sha256  # same seed, same data: same weights


def test_training_saves_a_stacker_fit_on_train(toy_run):
    _, _, result, _ = toy_run
    stacker = json.loads((result.out_dir / "config.json").read_text())["malignancy_stacker"]
    assert stacker["fit_on"] == "train"
    assert "log_diameter" in stacker["features"] and len(stacker["weights"]) == len(stacker["features"])


def test_stacker_picks_the_informative_features():
    rng = np.random.default_rng(3)
    n = 400
    features = {"log_diameter": rng.normal(2, 0.4, n), "logit": rng.normal(0, 1, n), "rating": rng.normal(3, 1, n)}
    truth = 3 * (features["log_diameter"] - 2) + 1.5 * (features["rating"] - 3)
    labels = (rng.random(n) < 1 / (1 + np.exp(-truth))).astype(int)
    stacker = fit_malignancy_stacker(features, labels)
    assert stacker["features"] == ["log_diameter", "rating"]  # "logit" here is noise
    z = stacked_logit(stacker, features)
    assert np.corrcoef(z, truth)[0, 1] > 0.95
    with pytest.raises(ValueError, match="both classes"):
        fit_malignancy_stacker(features, np.zeros(n, int))


@pytest.mark.parametrize(
    "kwargs",
    [dict(epochs=0), dict(crop_size=18), dict(spacing_mm=0.0), dict(class_balance_beta=1.0)],
)
def test_training_config_errors(kwargs):
    with pytest.raises(ValueError):
        GraderTrainingConfig(data_dir="x", **kwargs)


@pytest.mark.parametrize(
    "counts, beta, expected",
    [
        ([10, 10, 10], 0.999, [1.0, 1.0, 1.0]),
        ([50, 50, 450], 0.0, [1.0, 1.0, 1.0]),  # beta 0: unweighted
    ],
)
def test_class_balanced_weights_cases(counts, beta, expected):
    np.testing.assert_allclose(class_balanced_weights(np.array(counts), beta), expected)


def test_class_balanced_weights_favour_rare_classes():
    w = class_balanced_weights(np.array([53, 50, 464]), 0.999)
    assert w[1] > w[0] > w[2] and abs(w.mean() - 1) < 1e-12
    assert 5 < w[0] / w[2] < 9.5  # between sqrt-inverse and inverse frequency (8.75)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    assert abs(fit_temperature(3.0 * true_logits, labels) - 3.0) < 0.3
    with pytest.raises(ValueError):
        fit_temperature(np.zeros(3), np.zeros(2))


def test_loss_ignores_missing_labels():
    loss = GraderLoss(torch.ones(3))
    out = DenseSharpOutput(torch.zeros(2, 1, 4, 4, 4), torch.zeros(2), torch.zeros(2, 5), torch.zeros(2, 3),
                           torch.zeros(2, 3), torch.zeros(2, 2))
    batch = {"mask": torch.zeros(2, 1, 4, 4, 4), "malignant": torch.tensor([-1, -1]),
             "rating": torch.tensor([-1, -1]), "texture": torch.tensor([-1, 2]),
             "attributes": torch.tensor([[np.nan, 1.0], [np.nan, np.nan]])}
    total, terms = loss(out, batch)
    assert set(terms) == {"mask", "texture", "invasiveness", "attributes"}
    assert terms["texture"] == pytest.approx(np.log(3))
    assert terms["attributes"] == pytest.approx(1.0)  # one known target, 1.0 away
    assert torch.isfinite(total)


def test_cli_parser_registers_train_grader():
    from lunglesionai.app.cli import build_parser

    args = build_parser().parse_args(["train", "grader", "--data", "d", "--out", "o", "--epochs", "3", "--seed", "7"])
    assert (args.data, args.out, args.epochs, args.seed) == ("d", "o", 3, 7)
    assert callable(args.func)


# ----------------------------------------------------------------------------------------------- grader


def test_grade_on_the_volume_grid(toy_run):
    folder, _, result, _ = toy_run
    grader = NoduleGrader.load(result.out_dir)
    record = [r for r in read_nodule_table(folder, "val") if r.texture == 2][0]  # a solid nodule
    volume, truth = load_voi(folder, record)
    centre = volume.lps_to_kji([record.center_lps_mm])[0]
    graded = grader.grade(volume, centre, record.diameter_mm)
    assert 0 <= graded.malignancy_probability <= 1
    assert 1 <= graded.malignancy_rating <= 5
    assert sum(graded.texture_probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert set(graded.invasiveness) == {"pre-invasive", "minimally-invasive", "invasive"}
    assert graded.texture in ("ground-glass", "part-solid", "solid")
    pred = np.zeros(volume.shape_zyx, bool)
    assert graded.mask is not None
    graded.mask.paste_into(pred, 1)
    assert np.all(np.asarray(graded.mask.offset_kji) >= 0)
    assert np.all(np.asarray(graded.mask.offset_kji) + graded.mask.array.shape <= volume.shape_zyx)
    assert dice_score(truth, pred) > 0.5
    json.dumps(graded.to_dict())


def test_grade_many_matches_grade(toy_run):
    folder, _, result, _ = toy_run
    grader = NoduleGrader.load(result.out_dir)
    records = read_nodule_table(folder, "val")[:2]
    volume, _ = load_voi(folder, records[0])
    centres = [volume.lps_to_kji([records[0].center_lps_mm])[0], [3.0, 5.0, 20.0]]
    many = grader.grade_many(volume, centres, [5.0, 5.0], batch_size=1)
    one = grader.grade(volume, centres[1], 5.0)
    assert len(many) == 2
    assert many[1].malignancy_probability == pytest.approx(one.malignancy_probability, abs=1e-5)


@pytest.mark.parametrize(
    "centre, diameter, message",
    [((1.0, 2.0), 5.0, "3 finite"), ((1.0, np.nan, 2.0), 5.0, "3 finite"), ((1.0, 2.0, 3.0), 0.0, "diameter")],
)
def test_grade_errors(toy_run, centre, diameter, message):
    grader = NoduleGrader.load(toy_run[2].out_dir)
    volume = Volume(np.full((8, 8, 8), -900, np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=message):
        grader.grade(volume, centre, diameter)


def test_load_errors(tmp_path):
    with pytest.raises(GraderModelError, match="train grader"):
        NoduleGrader.load(tmp_path / "absent")
    net = DenseSharpNet(TINY_NET)
    prep = {"spacing_mm": 1.0, "crop_size": 16, "hu_window": [-1000, 400], "pad_hu": -1000}
    save_grader(net, tmp_path / "m", prep)
    NoduleGrader.load(tmp_path / "m")
    (tmp_path / "m" / "grader.pt").write_bytes(b"corrupt")
    with pytest.raises(GraderModelError, match="SHA-256"):
        NoduleGrader.load(tmp_path / "m")
    with pytest.raises(ValueError, match="preprocessing"):
        save_grader(net, tmp_path / "n", {"spacing_mm": 1.0})


def test_default_model_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert default_model_dir() == REPO_ROOT / "models" / "grader"
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    assert default_model_dir() == tmp_path / "grader"


# ----------------------------------------------------------------------------------------------- shipped model


def _shipped_grader() -> NoduleGrader:
    if not (REPO_ROOT / "models" / "grader" / "config.json").is_file():
        pytest.skip("models/grader has no trained grader")
    return NoduleGrader.load(REPO_ROOT / "models" / "grader")


def test_shipped_model_on_real_vois():
    folder = shared_path("lidc_voi")
    grader = _shipped_grader()
    records = read_nodule_table(folder, "val")[:4]
    dice = []
    for record in records:
        volume, truth = load_voi(folder, record)
        graded = grader.grade(volume, volume.lps_to_kji([record.center_lps_mm])[0], record.diameter_mm)
        pred = np.zeros(volume.shape_zyx, bool)
        if graded.mask is not None:
            graded.mask.paste_into(pred, 1)
        dice.append(dice_score(truth, pred))
    assert np.mean(dice) > 0.6


def test_shipped_model_is_fast_and_small():
    grader = _shipped_grader()
    assert (grader.model_dir / "grader.pt").stat().st_size < 20 * 2**20
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(-850, 40, (60, 80, 80)).astype(np.int16), (0.7, 0.7, 1.25), (0.0, 0.0, 0.0))
    grader.grade(volume, (30.0, 40.0, 40.0), 8.0)  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        grader.grade(volume, (30.0, 40.0, 40.0), 8.0)
    assert (time.perf_counter() - start) / 3 < 0.5  # ~0.05 s measured; loose bound for loaded CI machines


# ----------------------------------------------------------------------------------------------- LIDC attribute heads

TINY_ATTR = DenseSharpConfig(**{**TINY_NET.to_dict(), "lidc_attribute_heads": True})


@pytest.fixture(scope="module")
def fine_tuned(toy_run, tmp_path_factory):
    """Attribute heads added to the toy grader by fine-tuning with the old parts frozen (3 epochs)."""
    folder, config, result, _ = toy_run
    tuned = GraderTrainingConfig.from_dict({
        **config.to_dict(), "out_dir": str(tmp_path_factory.mktemp("tuned")), "epochs": 3,
        "init_from": str(result.out_dir), "pretrained_lr_factor": 0.0, "network": TINY_ATTR.to_dict()})
    return folder, result, train_grader(tuned)


def test_fine_tuning_keeps_frozen_parts_and_trains_new_heads(fine_tuned):
    _, old, new = fine_tuned
    before = NoduleGrader.load(old.out_dir).net.state_dict()
    after = NoduleGrader.load(new.out_dir).net.state_dict()
    for name, value in before.items():  # weights and BatchNorm statistics
        torch.testing.assert_close(after[name], value, rtol=0, atol=0)
    assert {n.split(".")[0] for n in set(after) - set(before)} == {"ordinal_heads", "calcification_head"}
    assert [h["train_ordinal_attributes"] for h in new.history][-1] < new.history[0]["train_ordinal_attributes"]
    saved = json.loads((new.out_dir / "config.json").read_text())
    assert saved["fine_tuned_from"]["weights_sha256"] == old.weights_sha256
    assert saved["network"]["lidc_attribute_heads"] is True
    assert "spiculation_kappa" in new.val_metrics and "calcification_macro_f1" in new.val_metrics


def test_fine_tuning_refuses_another_architecture(toy_run, tmp_path):
    folder, config, result, _ = toy_run
    other = {**TINY_ATTR.to_dict(), "growth_rate": 6}
    bad = GraderTrainingConfig.from_dict({**config.to_dict(), "out_dir": str(tmp_path), "epochs": 1,
                                          "init_from": str(result.out_dir), "network": other})
    with pytest.raises(ValueError, match="differs"):
        train_grader(bad)


def test_graded_attributes(fine_tuned):
    folder, _, new = fine_tuned
    grader = NoduleGrader.load(new.out_dir)
    record = read_nodule_table(folder, "val")[0]
    volume, _ = load_voi(folder, record)
    graded = grader.grade(volume, volume.lps_to_kji([record.center_lps_mm])[0], record.diameter_mm)
    assert set(graded.attributes) == {"spiculation", "lobulation", "margin", "sphericity"}
    assert all(1.0 <= v <= 5.0 for v in graded.attributes.values())
    assert all(v in range(1, 6) for v in graded.attribute_levels.values())
    assert set(graded.attribute_probabilities) == set(ATTRIBUTE_CUTS)
    assert graded.spiculated == (graded.attribute_probabilities["spiculated"] >= 0.5)
    assert sum(graded.calcification_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    benign = sum(graded.calcification_probabilities[p] for p in ("popcorn", "laminated", "solid", "central"))
    assert graded.calcified_probability == pytest.approx(benign)
    d = json.loads(json.dumps(graded.to_dict()))
    assert d["attributes"] == pytest.approx(graded.attributes) and d["spiculated"] == graded.spiculated


def test_old_format_grader_loads_without_attributes(tmp_path):
    save_grader(DenseSharpNet(TINY_NET).eval(), tmp_path, {"spacing_mm": 1.0, "crop_size": 16,
                                                           "hu_window": [-1000, 400], "pad_hu": -1000})
    config = json.loads((tmp_path / "config.json").read_text())
    del config["network"]["lidc_attribute_heads"]  # as written before the attribute heads existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    volume = Volume(np.full((16, 16, 16), -900, np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    graded = NoduleGrader.load(tmp_path).grade(volume, (8.0, 8.0, 8.0), 6.0)
    assert graded.attributes is None and graded.spiculated is None and graded.calcified_probability is None
    d = graded.to_dict()
    assert d["attributes"] is None and d["calcified_probability"] is None and "malignancy_probability" in d


@pytest.mark.parametrize(
    "exceed, cut, expected",
    [
        ([0.9, 0.4, 0.2, 0.1], AttributeCut("spiculation", 3, True), 0.4),  # P(r >= 3) = P(r > 2)
        ([0.9, 0.4, 0.2, 0.1], AttributeCut("spiculation", 2, True), 0.9),  # P(r >= 2) = P(r > 1)
        ([0.9, 0.7, 0.2, 0.1], AttributeCut("margin", 2, False), 0.3),  # P(r <= 2) = 1 - P(r > 2)
        ([0.9, 0.7, 0.2, 0.1], AttributeCut("margin", 4, False), 0.9),  # P(r <= 4) = 1 - P(r > 4)
    ],
)
def test_attribute_cut_probability_cases(exceed, cut, expected):
    assert float(attribute_cut_probability(np.array(exceed), cut)) == pytest.approx(expected)


def test_attribute_cuts_as_stated():
    assert [ATTRIBUTE_CUTS["spiculated"].holds(r) for r in range(1, 6)] == [False, False, True, True, True]
    assert [ATTRIBUTE_CUTS["poorly_defined_margin"].holds(r) for r in range(1, 6)] == [True, True, False, False, False]
    with pytest.raises(ValueError, match="level"):
        attribute_cut_probability(np.zeros(4), AttributeCut("margin", 5, True))


def test_attribute_losses_by_hand():
    loss = GraderLoss(torch.ones(3))
    out = DenseSharpOutput(torch.zeros(2, 1, 4, 4, 4), torch.zeros(2), torch.zeros(2, 5), torch.zeros(2, 3),
                           torch.zeros(2, 3), torch.zeros(2, 0),
                           attribute_cut_logits=torch.full((2, 4, 4), 2.0), calcification_logits=torch.zeros(2, 6))
    batch = {"mask": torch.zeros(2, 1, 4, 4, 4), "malignant": torch.tensor([-1, -1]),
             "rating": torch.tensor([-1, -1]), "texture": torch.tensor([-1, -1]), "attributes": torch.zeros(2, 0),
             "attribute_ratings": torch.tensor([[1, 0, 0, 0], [3, 0, 0, 0]]), "calcification": torch.tensor([5, -1])}
    _, terms = loss(out, batch)
    # rating 1: all four cuts "> k" false; rating 3: two true, two false. Logit 2 everywhere:
    # BCE(true) = log(1 + e^-2), BCE(false) = log(1 + e^2); 2 true and 6 false of 8 known cuts.
    expected = (2 * np.log1p(np.exp(-2.0)) + 6 * np.log1p(np.exp(2.0))) / 8
    assert terms["ordinal_attributes"] == pytest.approx(expected, rel=1e-6)
    assert terms["calcification"] == pytest.approx(np.log(6))  # uniform logits, one known label


def test_attribute_labels_from_records():
    from lunglesionai.datasets.lidc import NoduleRecord

    records = [NoduleRecord("a", (0, 0, 0), 5.0, attribute_ratings=(1, 2, None, 5), calcification=6),
               NoduleRecord("b", (0, 0, 0), 5.0, attribute_ratings=(3, 2, 4, 5), calcification=None)]
    labels = AttributeLabels.from_records(records)
    assert labels.ratings.tolist() == [[1, 2, 0, 5], [3, 2, 4, 5]] and labels.calcification.tolist() == [5, -1]
    exceed, patterns = labels.priors()
    assert exceed[0].tolist() == [0.5, 0.5, 0.0, 0.0]  # spiculation 1 and 3
    assert exceed[2].tolist() == [1.0, 1.0, 1.0, 0.0]  # margin: only the 4 is known
    assert patterns.tolist() == [0, 0, 0, 0, 0, 1.0]


def test_cli_parser_fine_tuning_options():
    from lunglesionai.app.cli import build_parser

    args = build_parser().parse_args(["train", "grader", "--data", "d", "--init-from", "models/grader",
                                      "--pretrained-lr-factor", "0.05", "--learning-rate", "1e-3"])
    assert (args.init_from, args.pretrained_lr_factor, args.learning_rate) == ("models/grader", 0.05, 1e-3)
    with pytest.raises(ValueError, match="pretrained_lr_factor"):
        GraderTrainingConfig(data_dir="x", pretrained_lr_factor=-1.0)
