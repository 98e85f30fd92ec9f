"""Masses through lunglesionai.pipeline.analyze_volume and the writers: a synthetic lobulated tumour with spicules
(exact truth, ``mass_fixtures``) in the procedural phantom, and (slow, ../shared) in the real 1.5 mm chest CT crop
and the same on 8 mm slices: one finding of kind "mass" (M1) with its size, centre inside the tumour, no nodule
fragments inside it, not graded; the written seg.nrrd / markups / report.json / report.html carry it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path
from lunglesionai.core.findings import Finding, FindingMask, validate_report_dict
from lunglesionai.core.volume import Volume
from lunglesionai.io.outputs import write_outputs
from lunglesionai.pipeline import _renumber, analyze_volume
from lunglesionai.stages.mass_findings import MASS_NOT_GRADED, merge_into_masses
from mass_fixtures import crop_with_tumour, phantom_with_tumour, thick_slices


def _check(report, volume: Volume, truth: np.ndarray, truth_diameter_mm: float) -> Finding:
    masses = report.masses()
    assert [m.id for m in masses] == ["M1"], [(f.id, f.kind, f.diameter_mm) for f in report.findings]
    mass = masses[0]
    inside = lambda f: bool(truth[tuple(np.round(volume.lps_to_kji([f.center_lps_mm])[0]).astype(int))])  # noqa: E731
    assert inside(mass)
    assert mass.diameter_mm == pytest.approx(truth_diameter_mm, rel=0.2)
    assert not [f.id for f in report.nodules() if inside(f)], "nodule fragments inside the tumour"
    assert mass.malignancy_probability is None and mass.invasiveness is None
    assert mass.extra["grading"] == MASS_NOT_GRADED
    return mass


@pytest.fixture(scope="module")
def phantom_case():
    _, pasted = phantom_with_tumour()
    return pasted, analyze_volume(pasted.volume)


def test_phantom_tumour_is_one_mass_finding(phantom_case):
    pasted, report = phantom_case
    _check(report, pasted.volume, pasted.truth, pasted.diameter_mm)
    assert report.findings[0].kind == "mass"  # masses come first
    assert [f.id for f in report.nodules()] == [f"N{i}" for i in range(1, len(report.nodules()) + 1)]
    assert "masses: classical" in report.stages["segmentation"]
    assert "not graded: mass" in report.stages["grading"]


def test_mass_is_written_everywhere(phantom_case, tmp_path):
    import slicerio

    pasted, report = phantom_case
    validate_report_dict(report.to_dict())
    files = write_outputs(report, tmp_path / "out", volume=pasted.volume)
    written = json.loads(files["report"].read_text())
    assert [f["kind"] for f in written["findings"]][:1] == ["mass"] and written["findings"][0]["id"] == "M1"
    segmentation = slicerio.read_segmentation(str(files["nodules_segmentation"]), skip_voxels=True)
    segment = next(s for s in segmentation["segments"] if s["id"] == "M1")
    assert segment["name"] == "Mass 1"
    assert segment["terminology"]["type"] == ["SCT", "4147007", "Mass"]
    markups = json.loads(files["nodules_markups"].read_text())
    labels = [p["label"] for p in markups["markups"][0]["controlPoints"]]
    assert labels == [f.id for f in report.lung_findings()] and labels[0] == "M1"
    page = files["report_html"].read_text()
    assert ">M1<" in page
    assert "not graded: mass" in page


def test_schema_refuses_an_unknown_kind(phantom_case):
    import jsonschema

    _, report = phantom_case
    d = report.to_dict()
    d["findings"][0]["kind"] = "tumour"
    with pytest.raises(jsonschema.ValidationError):
        validate_report_dict(d)
    with pytest.raises(ValueError, match="kind"):
        Finding("M1", "tumour", (0.0, 0.0, 0.0), ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))


def _ball_finding(kind: str, centre_kji, radius: int, score: float, volume: Volume) -> Finding:
    k, j, i = np.mgrid[-radius: radius + 1, -radius: radius + 1, -radius: radius + 1]
    offset = tuple(int(c) - radius for c in centre_kji)
    centre = tuple(volume.kji_to_lps([centre_kji])[0])
    return Finding("", kind, centre, (centre, centre), detection_score=score, diameter_mm=2.0 * radius,
                   mask=FindingMask(offset, k**2 + j**2 + i**2 <= radius**2))


def test_nodules_inside_or_touching_a_mass_are_merged_into_it():
    volume = Volume(np.zeros((60, 60, 60), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    mass = _ball_finding("mass", (30, 30, 30), 18, 0.4, volume)
    inside = _ball_finding("nodule", (30, 35, 30), 3, 0.9, volume)        # centre inside the mass
    touching = _ball_finding("nodule", (30, 30, 50), 4, 0.5, volume)      # centre outside, mask overlaps
    apart = _ball_finding("nodule", (5, 5, 5), 3, 0.8, volume)
    masses, left = merge_into_masses(volume, [mass], [inside, touching, apart])
    assert left == [apart]
    assert masses[0].extra["merged_findings"] == 2 and masses[0].detection_score == pytest.approx(0.9)
    assert [f.id for f in _renumber(masses + left)] == ["M1", "N1"]


# ------------------------------------------------------------------------------------------------ real host (../shared)
@pytest.fixture(scope="module")
def crop_case():
    return crop_with_tumour(shared_path("ct", "chest_ct_crop_1p5mm.nii.gz"))


@pytest.mark.slow
def test_tumour_in_a_real_ct_is_one_mass_finding(crop_case):
    _, pasted = crop_case
    _check(analyze_volume(pasted.volume), pasted.volume, pasted.truth, pasted.diameter_mm)


@pytest.mark.slow
def test_tumour_on_8_mm_slices_is_one_mass_finding(crop_case):
    _, pasted = crop_case
    thick, truth = thick_slices(pasted.volume, pasted.truth, 8.0)
    _check(analyze_volume(thick), thick, truth, pasted.diameter_mm)
