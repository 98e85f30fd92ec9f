"""End-to-end tests of the ``lunglesionai`` command line: analyze, demo, bench, and bad input."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_fixtures import write_series
from lunglesionai.app.cli import EXIT_BAD_INPUT, main
from lunglesionai.core.findings import validate_report_dict
from lunglesionai.io.ct_files import save_volume
from lunglesionai.synth import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    phantom = make_phantom(replace(PhantomConfig.small(), seed=3))
    path = tmp_path_factory.mktemp("ct") / "phantom.nrrd"
    save_volume(phantom.volume, path)
    return phantom, path


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lunglesionai", *args], capture_output=True, text=True)


def test_analyze_writes_the_result_files(phantom_file, tmp_path):
    phantom, path = phantom_file
    out = tmp_path / "out"
    result = _run_cli("analyze", str(path), "-o", str(out), "--indication", "incidental", "--age", "70")
    assert result.returncode == 0, result.stderr
    files = ["findings.csv", "lunglesionai.log", "nodules.mrk.json", "nodules.seg.nrrd", "report.html", "report.json"]
    assert sorted(p.name for p in out.iterdir()) == [".lunglesionai-manifest.json", *files]
    manifest = json.loads((out / ".lunglesionai-manifest.json").read_text())
    assert manifest["command"] == "analyze"
    assert manifest["files"] == files
    report = json.loads((out / "report.json").read_text())
    validate_report_dict(report)
    assert report["input"]["path"] == str(path.resolve())
    assert report["input"]["shape_zyx"] == list(phantom.volume.shape_zyx)
    markups = json.loads((out / "nodules.mrk.json").read_text())
    points = markups["markups"][0]["controlPoints"]
    assert [p["label"] for p in points] == [f["id"] for f in report["findings"]]
    assert "%" in result.stderr  # the tqdm bar went to stderr
    exam = report["exam"]  # the clinical read: given age used, sex (not in a NRRD header) assumed
    assert exam["indication"] == "incidental" and "age" not in exam["assumed"] and "sex" in exam["assumed"]
    lung_findings = [f for f in report["findings"] if f["kind"] in ("nodule", "mass")]
    assert all(f["lung_rads"] in ("1", "2", "3", "4A", "4B", "4X") for f in lung_findings)
    expected = max([f["lung_rads"] for f in lung_findings], default="1", key=["1", "2", "3", "4A", "4B", "4X"].index)
    assert exam["lung_rads"] in (expected, "0")  # "0" only when the phantom's lungs count as not fully covered
    assert f"exam Lung-RADS {exam['lung_rads']}" in result.stdout


def test_bad_patient_age_is_refused_before_the_ct_is_read(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "missing.nrrd"), "-o", str(out), "--age", "200", "--no-progress"]) \
        == EXIT_BAD_INPUT
    assert "age" in capsys.readouterr().err and not out.exists()


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image\n")
    return path


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.uint8)), str(path))
    return path


def _mr_volume(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "t1_mr.nii.gz"
    image = sitk.GetImageFromArray(rng.integers(0, 1200, size=(24, 64, 64)).astype(np.int16))
    sitk.WriteImage(image, str(path))
    return path


def _mr_dicom_series(tmp_path: Path) -> Path:
    folder = tmp_path / "mr_series"
    write_series(folder, np.arange(12) * 2.0, modality="MR", description="T1")
    return folder


def _two_ct_series(tmp_path: Path) -> Path:
    folder = tmp_path / "two_series"
    write_series(folder, np.arange(12) * 2.0, description="Chest 2 mm")
    write_series(folder, np.arange(24) * 1.0, description="Chest 1 mm")
    return folder


@pytest.mark.parametrize(
    "make_input, problem",
    [
        (lambda tmp: tmp / "does_not_exist.nii.gz", "no such file"),
        (_text_file, ""),
        (_png, "2"),
        (_mr_volume, "HU"),
        (_mr_dicom_series, "MR"),
        (_two_ct_series, "series"),
    ],
    ids=["missing", "text-file", "2d-png", "mr-volume", "mr-dicom", "two-series"],
)
def test_bad_input_one_line_error_and_no_output(tmp_path, make_input, problem, capsys):
    path = make_input(tmp_path)
    out = tmp_path / "out"
    code = main(["analyze", str(path), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT
    assert err.startswith("lunglesionai: error:") and len(err.splitlines()) == 1
    assert path.name in err and problem in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_existing_output_is_not_overwritten(phantom_file, tmp_path, capsys):
    _, path = phantom_file
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["analyze", str(path), "-o", str(out), "--no-progress"]) == EXIT_BAD_INPUT
    assert "exists" in capsys.readouterr().err
    assert (out / "keep.txt").exists()


def test_demo_prints_sensitivity(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--preset", "small", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "phantom sensitivity" in text and "false positives" in text
    names = sorted(p.name for p in out.iterdir())
    assert {"nodules.seg.nrrd", "nodules.mrk.json", "report.json", "phantom_ct.nrrd", "ground_truth.json"} <= set(names)
    assert f"wrote {out} ({', '.join(names)})" in text  # the summary lists what is really there
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth and {"id", "center_lps_mm", "diameter_mm", "texture", "attachment"} <= set(truth[0])
    exam = json.loads((out / "report.json").read_text())["exam"]  # the demo's report is read too: all assumed
    assert exam["indication"] == "screening" and {"age", "sex", "family_history"} <= set(exam["assumed"])


def test_bench_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--shape", "48", "160", "160", "--spacing", "0.8", "0.8", "2.0", "--repeats", "2",
                 "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["volume_shape_zyx"] == [48, 160, 160]
    assert set(result["stages"]) >= {"lung_mask", "detection", "segmentation", "measurement", "export"}
    assert result["total_s"] > 0 and result["peak_rss_mb"] > 0 and len(result["runs"]) == 2
    assert "total" in capsys.readouterr().out


def test_evaluate_phantom_json(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    code = main(["evaluate", "phantom", "--preset", "small", "--seeds", "1", "--thresholds", "0", "0.99",
                 "--out", str(path)])
    assert code == 0
    metrics = json.loads(path.read_text())
    assert metrics["n_scans"] == 1 and metrics["n_nodules"] > 0
    loose, strict = metrics["operating_points"]
    assert loose["sensitivity"] >= strict["sensitivity"] and loose["fps_per_scan"] >= strict["fps_per_scan"]
    assert loose["true_positives"] > 0
    assert sum(v["n"] for v in metrics["by_texture"].values()) == metrics["n_nodules"]
    assert "min_score" in capsys.readouterr().out


def test_progress_lines_for_a_parent_process(phantom_file, tmp_path):
    from lunglesionai.app.progress import parse_progress_line

    _, path = phantom_file
    result = _run_cli("analyze", str(path), "-o", str(tmp_path / "out"), "--progress", "lines")
    assert result.returncode == 0, result.stderr
    events = [e for e in map(parse_progress_line, result.stdout.splitlines()) if e is not None]
    assert [s for s, _ in events][0] == "lung_mask" and events[-1][1] == 1.0
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions)
    assert "%|" not in result.stderr  # no bar when lines are asked for
    assert parse_progress_line("1 nodule finding(s)") is None
    assert parse_progress_line("LUNGLESIONAI_PROGRESS {broken") is None
