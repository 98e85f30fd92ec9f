"""Tests of lunglesionai.pipeline on the small phantom: stages, findings against truth, duplicates, orientation."""

from dataclasses import replace

import numpy as np
import pytest

from lunglesionai import NOT_RUN, Finding, FindingMask, Volume
from lunglesionai.evaluation.phantom_protocol import score_against_phantom
from lunglesionai.pipeline import PipelineConfig, analyze_volume, merge_duplicates
from lunglesionai.synth import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig.small())


@pytest.fixture(scope="module")
def report(phantom):
    return analyze_volume(phantom.volume)


def test_stages_run_exactly_when_their_model_is_installed(report):
    from lunglesionai.nets.model_store import model_dir

    installed = (model_dir("fpr") / "config.json").is_file()
    assert report.stages["fp_reduction"].startswith(NOT_RUN) != installed, report.stages["fp_reduction"]
    assert report.stages["uld"] == NOT_RUN  # opt-in (PipelineConfig.uld)
    for stage in ("lung_mask", "detection", "segmentation", "measurement", "grading"):
        assert report.stages[stage] != NOT_RUN
        assert report.timings_s[stage] >= 0


def test_graded_findings_carry_probabilities_and_the_model(report):
    names = [m["name"] for m in report.models]
    assert "densesharp-grader" in names and len(names) == len(set(names))
    assert all(len(m["sha256"]) == 64 for m in report.models)
    for f in report.findings:
        assert 0.0 <= f.malignancy_probability <= 1.0
        assert set(f.invasiveness) == {"pre-invasive", "minimally-invasive", "invasive"}
        assert sum(f.invasiveness.values()) == pytest.approx(1.0, abs=1e-3)
        assert f.texture in ("solid", "part-solid", "ground-glass")
        assert f.extra["mask_source"] in ("densesharp", "classical", "detector box")
        # the shipped grader has the LIDC attribute heads: ratings 1-5, the spiculation call Brock reads
        assert set(f.extra["lidc_ratings"]) == {"spiculation", "lobulation", "margin", "sphericity"}
        assert all(1.0 <= r <= 5.0 for r in f.extra["lidc_ratings"].values())
        assert isinstance(f.extra["spiculated"], bool)
        assert f.extra["spiculated"] == (f.extra["lidc_cut_probabilities"]["spiculated"] >= 0.5)


def test_without_grader_fields_stay_empty(phantom, tmp_path):
    ungraded = analyze_volume(phantom.volume, PipelineConfig(grade=False))
    assert ungraded.stages["grading"] == NOT_RUN
    assert "densesharp-grader" not in [m["name"] for m in ungraded.models]
    missing = analyze_volume(phantom.volume, PipelineConfig(grader_model_dir=str(tmp_path / "none")))
    assert missing.stages["grading"].startswith(NOT_RUN) and "no grader model" in missing.stages["grading"]
    for f in ungraded.findings + missing.findings:
        assert f.malignancy_probability is None and f.invasiveness is None


def test_finds_most_phantom_nodules_with_few_false_positives(phantom, report):
    every_candidate = analyze_volume(phantom.volume, PipelineConfig(min_score=0.0, grade=False))
    match = score_against_phantom(every_candidate, phantom.truth_table())
    assert match.sensitivity >= 0.6, match
    # two detectors' candidates, each segmented and measured; learned ones are kept even where the segmentation cannot
    # separate them from a vessel (22 on this phantom; 12 before that change and the 1.0 mm detector)
    assert match.false_positives <= 25
    default = score_against_phantom(report, phantom.truth_table())  # the documented operating point
    # the operating point (0.7) is chosen for about one finding per unseen real scan: on this small phantom it keeps
    # 2 of the 6 procedural nodules and no false positive (the previous one, chosen on composites: 3 of 6)
    assert default.sensitivity >= 2 / 6 - 1e-9, default
    assert default.false_positives <= max(2, match.false_positives // 4)


def test_findings_are_consistent(phantom, report):
    assert report.masses() == []  # the phantom has no lesion over 30 mm
    ids = [f.id for f in report.findings]
    assert ids == [f"N{i}" for i in range(1, len(ids) + 1)]
    scores = [f.detection_score for f in report.findings]
    assert scores == sorted(scores, reverse=True)
    v = phantom.volume
    for f in report.findings:
        assert f.mask is not None and f.mask.voxel_count > 0
        assert 3.0 <= f.diameter_mm <= 30.0
        assert f.long_axis_mm >= f.short_axis_mm > 0
        assert f.volume_mm3 == pytest.approx(f.mask.voxel_count * v.voxel_volume_mm3, rel=1e-6)
        lo, hi = np.array(f.bbox_lps_mm)
        assert np.all(lo <= np.array(f.center_lps_mm)) and np.all(np.array(f.center_lps_mm) <= hi)


def test_matched_findings_measure_like_the_truth(phantom, report):
    truth = phantom.truth_table()
    match = score_against_phantom(report, truth)
    for finding, t in zip(report.findings, match.finding_truth):
        if t >= 0 and truth[t]["diameter_mm"] >= 6:
            assert finding.diameter_mm == pytest.approx(truth[t]["diameter_mm"], rel=0.35)


def test_flipped_input_gives_same_findings_in_lps(phantom, report):
    v = phantom.volume
    # the same voxels stored right-to-left and anterior-to-posterior: direction flips x and y
    n_i, n_j = v.shape_zyx[2], v.shape_zyx[1]
    origin = v.ijk_to_lps([[n_i - 1, n_j - 1, 0]])[0]
    flipped = Volume(v.hu[:, ::-1, ::-1].copy(), v.spacing_mm, tuple(origin), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    report_flipped = analyze_volume(flipped)
    a = np.array([f.center_lps_mm for f in report.findings])
    b = np.array([f.center_lps_mm for f in report_flipped.findings])
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-6)
    # masks come back on the flipped input's own grid
    labels = np.zeros(flipped.shape_zyx, bool)
    report_flipped.findings[0].mask.paste_into(labels, 1)
    centroid_kji = np.argwhere(labels).mean(axis=0)
    np.testing.assert_allclose(flipped.kji_to_lps(centroid_kji)[0], report.findings[0].center_lps_mm, atol=1e-6)


def _finding(center, diameter, score, offset=None, size=4):
    mask = FindingMask(offset, np.ones((size,) * 3, bool)) if offset is not None else None
    return Finding("", "nodule", center, (center, center), detection_score=score, diameter_mm=diameter, mask=mask)


def test_merge_duplicates_keeps_best_and_distinct():
    a = _finding((0, 0, 0), 8.0, 0.5)
    b = _finding((2, 0, 0), 6.0, 0.9)  # within a's radius: duplicate, b wins on score
    c = _finding((30, 0, 0), 6.0, 0.4, offset=(0, 0, 0))
    d = _finding((36, 0, 0), 4.0, 0.3, offset=(3, 3, 3))  # far in mm but masks overlap at voxel (3, 3, 3)
    e = _finding((80, 0, 0), 6.0, 0.2, offset=(10, 10, 10))
    kept = merge_duplicates([a, b, c, d, e])
    assert [k.detection_score for k in kept] == [0.9, 0.4, 0.2]
    assert a.detection_score == 0.5  # inputs untouched


def test_config_validation():
    with pytest.raises(ValueError, match="detector"):
        PipelineConfig(detector="magic")
    with pytest.raises(ValueError, match="diameter"):
        PipelineConfig(min_diameter_mm=10, max_diameter_mm=5)
    with pytest.raises(ValueError, match="min_score"):
        PipelineConfig(min_score=1.5)


def test_min_score_is_an_operating_point(phantom, report):
    threshold = float(np.median([f.detection_score for f in report.findings]))
    strict = analyze_volume(phantom.volume, PipelineConfig(min_score=threshold))
    assert 0 < len(strict.findings) < len(report.findings)
    assert min(f.detection_score for f in strict.findings) >= threshold


def test_progress_callback_reaches_one(phantom):
    calls = []
    small = make_phantom(replace(PhantomConfig.small(), n_nodules=2))
    analyze_volume(small.volume, progress=lambda stage, fraction: calls.append((stage, fraction)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [s for s, _ in calls][0] == "lung_mask"


@pytest.fixture(scope="module")
def tiny_fpr(tmp_path_factory):
    """An FPR model with the context channel trained for a few steps on synthetic balls vs tubes (behaviour, not
    quality, is tested)."""
    from crop_fixtures import _crops
    from lunglesionai.stages.fp_reduction import FprConfig
    from lunglesionai.training.fp_reduction import FprTrainConfig, train_fpr

    rng = np.random.default_rng(0)
    crops = np.concatenate([_crops(16, "ball", rng), _crops(16, "tube", rng)])
    crops = np.stack([crops, crops], axis=1)  # the crop and (here, a stand-in for) its context channel
    folder = tmp_path_factory.mktemp("fpr")
    config = FprTrainConfig(steps=5, batch_size=8, threads=1,
                            network=FprConfig(crop_size=16, channels=(4, 4, 4), context=True))
    train_fpr(crops, np.array([1] * 16 + [0] * 16), folder, config,
              extra={"grid_spacing_mm": 1.5, "operating_point": {"min_score": 0.0}})
    return folder


def test_fp_reduction_rescores_every_candidate(phantom, tiny_fpr):
    on = analyze_volume(phantom.volume, PipelineConfig(fpr_model_dir=str(tiny_fpr), grade=False))
    off = analyze_volume(phantom.volume, PipelineConfig(fpr=False, grade=False))
    assert on.stages["fp_reduction"].startswith("decoupled") and off.stages["fp_reduction"] == NOT_RUN
    assert "fpr-classifier" in [m["name"] for m in on.models]
    assert on.findings
    for f in on.findings:
        det, p = f.extra["detector_score"], f.extra["fpr_probability"]
        assert 0.0 <= p <= 1.0
        assert f.detection_score == pytest.approx(np.sqrt(det * p), abs=2e-4)
    missing = analyze_volume(phantom.volume, PipelineConfig(fpr_model_dir="/nonexistent/fpr", grade=False))
    assert missing.stages["fp_reduction"].startswith(NOT_RUN) and "no FPR model" in missing.stages["fp_reduction"]


def test_learned_detector_without_a_model_falls_back_to_classical(phantom, tmp_path):
    report = analyze_volume(phantom.volume, PipelineConfig(detector="learned", detector_model_dir=str(tmp_path / "x"),
                                                           fpr=False, grade=False))
    assert report.stages["detection"].startswith("classical") and "not found" in report.stages["detection"]
    assert report.findings


def test_learned_detector_feeds_the_fp_reduction_its_grid(phantom):
    """The shipped detector runs as the detection stage; the FP reduction re-scores its boxes; "combined" adds the
    classical candidates."""
    from lunglesionai.nets.model_store import model_dir

    if not all((model_dir(name) / "config.json").is_file() for name in ("detector", "fpr")):
        pytest.skip("models/detector or models/fpr is not installed")
    report = analyze_volume(phantom.volume, PipelineConfig(detector="learned", min_score=0.0, grade=False))
    assert report.stages["detection"].startswith("RetinaNet") and "decoupled" in report.stages["fp_reduction"]
    assert [m["name"] for m in report.models][:2] == ["retinanet-detector", "fpr-classifier"]
    assert report.findings and all({"detector_score", "fpr_probability"} <= set(f.extra) for f in report.findings)
    assert {f.extra["detector"] for f in report.findings} == {"retinanet"}
    combined = analyze_volume(phantom.volume, PipelineConfig(detector="combined", grade=False, min_score=0.0))
    assert "RetinaNet" in combined.stages["detection"] and "classical" in combined.stages["detection"]
    assert {f.extra["detector"] for f in combined.findings} == {"retinanet", "hessian-dot"}


def test_guideline_measurements_and_exam(phantom, report):
    """Issue 15: every lung finding carries the guideline measurements; the exam block has the pipeline's keys."""
    truth = phantom.truth_table()
    match = score_against_phantom(report, truth)
    n_nodules = sum(f.kind == "nodule" for f in report.findings)
    assert report.exam["nodule_count"] == n_nodules
    assert 0.0 <= report.exam["emphysema_index_pct"] < 5.0  # the phantom's lungs hold no emphysema
    assert report.exam["lungs_fully_covered"] is True  # the small phantom holds both lungs whole
    for finding, t in zip(report.findings, match.finding_truth):
        assert finding.mean_diameter_mm == pytest.approx((finding.long_axis_mm + finding.short_axis_mm) / 2)
        assert (finding.solid_component_mean_diameter_mm is not None) <= (finding.texture == "part-solid")
        assert finding.calcified is False  # the phantom has no calcification
        assert finding.attachment in ("juxta-pleural", "none")
        assert finding.location["lobe"] is None and finding.location["zone"] in ("upper", "middle", "lower")
        if t >= 0:
            assert finding.location["side"] == truth[t]["lung"]
    assert "not a lobe" in report.stages["measurement"]
