"""Tests of ``lunglesionai analyze --prior`` and ``lunglesionai evaluate followup`` (lunglesionai.app.followup_command).

The refusals run before any analysis. The wiring tests replace the pipeline and the registration by stand-ins
(findings at known places, a known shift), so they check what the command line does with them, quickly; the
real pipeline and registration are tested end to end in Testing/evaluation/test_followup_protocol.py.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import lunglesionai.clinical.followup as followup_module
import lunglesionai.evaluation.followup_protocol as protocol_module
import lunglesionai.pipeline as pipeline_module
from dicom_fixtures import write_series
from lunglesionai import Finding, InputInfo, Report
from lunglesionai.app.cli import EXIT_BAD_INPUT, main
from lunglesionai.app.followup_command import resolve_prior
from lunglesionai.core.findings import validate_report_dict
from lunglesionai.core.volume import Volume
from lunglesionai.io.ct_files import save_volume

SHIFT_MM = np.array([6.0, -4.0, 8.0])


def _ct(path, seed=0):
    hu = np.random.default_rng(seed).normal(-850, 40, (12, 20, 20)).astype(np.int16)
    hu[4:8, 6:14, 6:14] = 40
    save_volume(Volume(hu, (2.0, 2.0, 2.5), (0.0, 0.0, 0.0)), path)
    return path


def _finding(fid, centre, diameter_mm):
    c = np.asarray(centre, float)
    return Finding(id=fid, kind="nodule", center_lps_mm=tuple(c), bbox_lps_mm=(tuple(c - 3), tuple(c + 3)),
                   diameter_mm=diameter_mm, mean_diameter_mm=diameter_mm, long_axis_mm=diameter_mm,
                   short_axis_mm=diameter_mm, volume_mm3=np.pi / 6 * diameter_mm**3, texture="solid")


PRIOR_FINDINGS = [_finding("N1", (10.0, 12.0, 8.0), 6.0), _finding("N2", (30.0, 20.0, 15.0), 7.0)]
CURRENT_FINDINGS = [_finding("N1", np.add((10.0, 12.0, 8.0), SHIFT_MM), 8.0),  # prior N1 grown 6 → 8 mm
                    _finding("N2", (20.0, 30.0, 25.0), 5.0)]                    # new; the prior N2 resolved


@pytest.fixture
def stand_ins(monkeypatch):
    """The pipeline returns the findings above by file name; the registration is the known shift."""
    calls = []

    def analyze_volume(volume, config=None, progress=None):
        calls.append(volume.source)
        findings = PRIOR_FINDINGS if Path(volume.source).name.startswith("prior") else CURRENT_FINDINGS
        return Report(input=InputInfo.from_volume(volume), findings=list(findings), version="test",
                      exam={"lungs_fully_covered": True, "nodule_count": len(findings)})

    def compare_scans(prior_volume, prior, current_volume, current, interval_days, *, config=None):
        comparison = followup_module.compare_findings(prior, current, lambda p: np.asarray(p) + SHIFT_MM,
                                                      interval_days)
        return replace(comparison, registration={"seconds": 2.0, "stages": ["rigid"], "metric_value": -0.5})

    monkeypatch.setattr(pipeline_module, "analyze_volume", analyze_volume)
    monkeypatch.setattr(followup_module, "compare_scans", compare_scans)
    monkeypatch.setattr(protocol_module, "compare_scans", compare_scans)
    return calls


def _analyze(*args):
    return main(["analyze", *map(str, args), "--no-progress"])


def test_prior_ct_gives_followup_resolved_and_lung_rads_rows(tmp_path, stand_ins):
    prior, current = _ct(tmp_path / "prior.nrrd"), _ct(tmp_path / "current.nrrd", 1)
    out = tmp_path / "out"
    assert _analyze(current, "-o", out, "--prior", prior, "--interval-days", "300") == 0
    assert len(stand_ins) == 2  # the prior CT was analysed too
    report = json.loads((out / "report.json").read_text())
    validate_report_dict(report)
    grown, new = report["findings"]
    assert grown["followup"]["status"] == "growing" and grown["followup"]["prior_id"] == "N1"
    assert grown["followup"]["vdt_days"] == pytest.approx(300 * np.log(2) / np.log((8 / 6) ** 3))
    assert grown["lung_rads"] == "4B" and "growing solid ≥ 8 mm" in grown["lung_rads_reason"]
    assert new["followup"]["status"] == "new" and new["lung_rads"] == "3"  # new solid 4 to < 6 mm
    assert [r["prior_id"] for r in report["exam"]["resolved"]] == ["N2"]
    prior_block = report["exam"]["prior"]
    assert prior_block["source"] == "ct" and prior_block["interval_source"] == "option"
    assert prior_block["interval_days"] == 300 and prior_block["path"] == str(prior.resolve())
    assert grown["followup"]["prior_center_lps_mm"] == [10.0, 12.0, 8.0]  # in the prior scan, LPS mm
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>Change since prior</th>" in page and 'alt="N1 prior axial"' in page  # prior beside current
    assert 'alt="N2 prior axial"' not in page and "Resolved since the prior" in page
    assert not (out / "prior_nodules.seg.nrrd").exists()  # the stand-in prior findings have no outlines


def test_prior_output_folder_reuses_its_findings(tmp_path, stand_ins):
    prior, current = _ct(tmp_path / "prior.nrrd"), _ct(tmp_path / "current.nrrd", 1)
    assert _analyze(prior, "-o", tmp_path / "first") == 0
    first = json.loads((tmp_path / "first" / "report.json").read_text())
    first["findings"][1]["status"] = "rejected"  # a reader's decision on the prior: N2 takes no part
    (tmp_path / "first" / "report.json").write_text(json.dumps(first))
    stand_ins.clear()
    out = tmp_path / "second"
    assert _analyze(current, "-o", out, "--prior", tmp_path / "first", "--interval-days", "300") == 0
    assert len(stand_ins) == 1  # only the current CT was analysed
    report = json.loads((out / "report.json").read_text())
    assert report["exam"]["prior"]["source"] == "output folder" and report["exam"]["resolved"] == []
    assert report["findings"][0]["followup"]["prior_id"] == "N1" and report["findings"][0]["lung_rads"] == "4B"
    assert report["findings"][1]["followup"]["status"] == "new"


@pytest.mark.parametrize("extra, problem", [
    ([], "no StudyDate on the prior and this scan; give --interval-days D"),
    (["--interval-days", "-3"], "--interval-days must be"),
    (["--interval-days", "nan"], "--interval-days must be"),
])
def test_prior_without_a_usable_interval_is_refused(tmp_path, capsys, stand_ins, extra, problem):
    prior, current = _ct(tmp_path / "prior.nrrd"), _ct(tmp_path / "current.nrrd", 1)
    out = tmp_path / "out"
    assert _analyze(current, "-o", out, "--prior", prior, *extra) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("lunglesionai: error:") and problem in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and stand_ins == []  # refused before any analysis, nothing written


def test_interval_days_without_prior_is_refused(tmp_path, capsys, stand_ins):
    current = _ct(tmp_path / "current.nrrd")
    assert _analyze(current, "-o", tmp_path / "out", "--interval-days", "30") == EXIT_BAD_INPUT
    assert "--interval-days needs --prior" in capsys.readouterr().err
    assert stand_ins == []


def _prior_folder(tmp_path, report):
    folder = tmp_path / "earlier"
    folder.mkdir()
    (folder / "report.json").write_text(report if isinstance(report, str) else json.dumps(report))
    return folder


@pytest.mark.parametrize("make_prior, problem", [
    (lambda tmp: tmp / "missing.nrrd", "prior scan not found"),
    (lambda tmp: _prior_folder(tmp, "{not json"), "not a lunglesionai report"),
    (lambda tmp: _prior_folder(tmp, {"schema": "lunglesionai-report/1"}), "not a lunglesionai report"),
    (lambda tmp: _prior_folder(tmp, Report(InputInfo(str(tmp / "gone.nrrd"), (12, 20, 20), (2.0, 2.0, 2.5),
                                                     (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))).to_dict()),
     "cannot be found"),
])
def test_unusable_prior_is_refused(tmp_path, capsys, stand_ins, make_prior, problem):
    current = _ct(tmp_path / "current.nrrd")
    out = tmp_path / "out"
    assert _analyze(current, "-o", out, "--prior", make_prior(tmp_path), "--interval-days", "30") == EXIT_BAD_INPUT
    assert problem in capsys.readouterr().err
    assert not out.exists() and stand_ins == []


def test_output_into_the_prior_folder_is_refused(tmp_path, capsys, stand_ins):
    prior, current = _ct(tmp_path / "prior.nrrd"), _ct(tmp_path / "current.nrrd", 1)
    assert _analyze(prior, "-o", tmp_path / "first") == 0
    before = sorted(p.name for p in (tmp_path / "first").iterdir())
    assert _analyze(current, "-o", tmp_path / "first", "--overwrite", "--prior", tmp_path / "first",
                    "--interval-days", "30") == EXIT_BAD_INPUT
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == before


def _args(current, prior, days=None):
    return argparse.Namespace(input=str(current), prior=str(prior), interval_days=days, series_uid=None,
                              max_memory_gb=None)


@pytest.mark.parametrize("prior_date, current_date, expected", [("20230105", "20240105", 365.0),
                                                                 ("20240105", "20240105", 0.0)])
def test_interval_from_the_dicom_study_dates(tmp_path, prior_date, current_date, expected):
    write_series(tmp_path / "prior", np.arange(12) * 2.0, tags={"StudyDate": prior_date})
    write_series(tmp_path / "current", np.arange(12) * 2.0, tags={"StudyDate": current_date})
    prior = resolve_prior(_args(tmp_path / "current", tmp_path / "prior"))
    assert (prior.interval_days, prior.interval_source, prior.source) == (expected, "study dates", "ct")
    assert prior.volume.shape_zyx[0] == 12
    given = resolve_prior(_args(tmp_path / "current", tmp_path / "prior", days=40.0))
    assert (given.interval_days, given.interval_source) == (40.0, "option")


def test_prior_study_after_the_current_one_is_refused(tmp_path):
    write_series(tmp_path / "prior", np.arange(12) * 2.0, tags={"StudyDate": "20240301"})
    write_series(tmp_path / "current", np.arange(12) * 2.0, tags={"StudyDate": "20240105"})
    with pytest.raises(ValueError, match="later than the current one"):
        resolve_prior(_args(tmp_path / "current", tmp_path / "prior"))


def test_evaluate_followup_writes_the_metrics(tmp_path, capsys, stand_ins):
    case = tmp_path / "pairs" / "case1"
    case.mkdir(parents=True)
    _ct(case / "prior.nii.gz"), _ct(case / "current.nii.gz", 1)
    truth = {"interval_days": 300, "nodules": [
        {"prior_lps_mm": [10, 12, 8], "current_lps_mm": list(np.add((10, 12, 8), SHIFT_MM)),
         "prior_volume_mm3": 113.1, "current_volume_mm3": 268.1},
        {"prior_lps_mm": [30, 20, 15], "current_lps_mm": None, "prior_volume_mm3": 179.6, "current_volume_mm3": None},
        {"prior_lps_mm": None, "current_lps_mm": [20, 30, 25], "prior_volume_mm3": None, "current_volume_mm3": 65.4}]}
    (case / "truth.json").write_text(json.dumps(truth))
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "followup", "--pairs", str(tmp_path / "pairs"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert (metrics["detected_in_both"], metrics["match_accuracy"], metrics["status_accuracy"]) == (1, 1.0, 1.0)
    assert metrics["vdt_median_abs_rel_error"] == pytest.approx(0.0, abs=1e-3)
    assert "match accuracy 100.0 %" in capsys.readouterr().out


def test_evaluate_followup_refuses_a_missing_pairs_folder(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "followup", "--pairs", str(tmp_path / "none"), "--out", str(out)]) == EXIT_BAD_INPUT
    assert "not a folder of follow-up pairs" in capsys.readouterr().err and not out.exists()
