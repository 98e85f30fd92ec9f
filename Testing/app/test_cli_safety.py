"""The command line loses no data and exits cleanly: ``--overwrite`` safety, output-path checks before the work,
SIGINT/SIGTERM, ``--device cuda`` without CUDA, library warnings kept off the terminal, patient identifiers left
out, warnings about what was not analysed, and a ``--help`` that imports no torch, MONAI or SimpleITK.

The analysis itself is replaced by a quick one (``pipeline.analyze_volume`` monkeypatched) where a test is about
the command line around it; the real pipeline runs in the tests of the warnings it produces.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dicom_fixtures import write_series
from lunglesionai import pipeline
from lunglesionai.app.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, main
from lunglesionai.core.findings import InputInfo, Report
from lunglesionai.core.output_folder import MANIFEST_NAME
from lunglesionai.core.volume import Volume
from lunglesionai.io.ct_files import load_volume, save_volume
from lunglesionai.stages.scan_coverage import (
    NO_LUNG_WARNING,
    result_summary,
    scan_warnings,
)


def _chest_like_volume(spacing_z: float = 2.0, spacing_xy: float = 1.5) -> Volume:
    """A 12×32×32 body of soft tissue with two air-filled 'lungs' and air around it (HU, LPS)."""
    hu = np.full((12, 32, 32), -1000.0)
    hu[:, 4:28, 4:28] = 40.0
    hu[:, 8:24, 7:15] = -850.0
    hu[:, 8:24, 17:25] = -850.0
    hu = np.rint(hu + np.random.default_rng(0).normal(0.0, 12.0, hu.shape)).astype(np.int16)  # CT noise
    return Volume(hu, (spacing_xy, spacing_xy, spacing_z), (0.0, 0.0, 0.0))


@pytest.fixture
def ct_file(tmp_path):
    path = tmp_path / "data" / "ct.nii.gz"
    path.parent.mkdir()
    save_volume(_chest_like_volume(), path)
    return path


@pytest.fixture
def quick_analysis(monkeypatch):
    """``analyze_volume`` that returns an empty report at once (the CLI around it is under test)."""
    calls = []

    def analyze(volume, config=None, progress=None):
        calls.append(volume.shape_zyx)
        return Report(input=InputInfo.from_volume(volume), version="test")

    monkeypatch.setattr(pipeline, "analyze_volume", analyze)
    return calls


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("lunglesionai: ")
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ --overwrite


def test_overwrite_of_the_current_folder_holding_the_input_deletes_nothing(ct_file, quick_analysis, monkeypatch,
                                                                           capsys):
    folder = ct_file.parent
    (folder / "notes.txt").write_text("the reader's notes")
    before = _tree(folder)
    monkeypatch.chdir(folder)
    assert main(["analyze", ct_file.name, "-o", ".", "--overwrite"]) == EXIT_BAD_INPUT
    line = _one_error_line(capsys)
    assert "refusing" in line and "current folder" in line
    assert _tree(folder) == before
    assert quick_analysis == []  # refused before any work


@pytest.mark.parametrize("target", ["input_folder", "parent_of_input", "input_file", "home"])
def test_overwrite_never_targets_the_input_its_parents_or_home(tmp_path, target, quick_analysis, monkeypatch,
                                                               capsys):
    series = tmp_path / "study" / "series"
    write_series(series, np.arange(12) * 2.0)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    out = {"input_folder": series, "parent_of_input": series.parent, "input_file": sorted(series.iterdir())[0],
           "home": tmp_path / "home"}[target]
    before = _tree(tmp_path)
    assert main(["analyze", str(series), "-o", str(out), "--overwrite"]) == EXIT_BAD_INPUT
    line = _one_error_line(capsys)
    assert ("refusing" in line) or ("is a file" in line)
    assert _tree(tmp_path) == before and quick_analysis == []


def test_overwrite_replaces_only_a_folder_lunglesionai_wrote(ct_file, tmp_path, quick_analysis, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(ct_file), "-o", str(out)]) == 0
    written = json.loads((out / MANIFEST_NAME).read_text())["files"]
    assert "report.json" in written and "lunglesionai.log" in written
    assert main(["analyze", str(ct_file), "-o", str(out), "--overwrite"]) == 0  # ours: replaced
    (out / "reading.docx").write_bytes(b"a person's work")
    capsys.readouterr()
    assert main(["analyze", str(ct_file), "-o", str(out), "--overwrite"]) == EXIT_BAD_INPUT
    assert "reading.docx" in _one_error_line(capsys)
    assert (out / "reading.docx").read_bytes() == b"a person's work"
    assert len(quick_analysis) == 2


# ------------------------------------------------------------------------------------- output-path problems


def test_output_path_that_is_a_file_is_refused_before_the_analysis(ct_file, tmp_path, quick_analysis, capsys):
    target = tmp_path / "result.txt"
    target.write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["analyze", str(ct_file), "-o", str(target), *extra]) == EXIT_BAD_INPUT
        line = _one_error_line(capsys)
        assert "is a file" in line and "--overwrite" not in line  # no hint that would fail after the work
    assert target.read_text() == "keep me" and quick_analysis == []


def test_output_below_a_file_is_refused_before_the_analysis(ct_file, tmp_path, quick_analysis, capsys):
    (tmp_path / "plain").write_text("x")
    assert main(["analyze", str(ct_file), "-o", str(tmp_path / "plain" / "out")]) == EXIT_BAD_INPUT
    assert "is a file" in _one_error_line(capsys) and quick_analysis == []


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder where nothing can be created: a chmod 0500 folder, or /proc when running as root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    return Path("/proc")


def test_read_only_output_location_is_refused_before_the_analysis(ct_file, tmp_path, quick_analysis, capsys):
    folder = _read_only_folder(tmp_path)
    assert main(["analyze", str(ct_file), "-o", str(folder / "lunglesionai_out")]) == EXIT_BAD_INPUT
    assert "cannot write" in _one_error_line(capsys)
    assert quick_analysis == []


def test_evaluate_refuses_an_unwritable_metrics_path_before_the_work(tmp_path, capsys):
    folder = tmp_path / "metrics_dir"
    folder.mkdir()
    code = main(["evaluate", "phantom", "--seeds", "0", "--out", str(folder)])
    assert code == EXIT_BAD_INPUT and "is a folder" in _one_error_line(capsys)


# ------------------------------------------------------------------------------------------- clean exits


def test_device_cuda_without_cuda_is_one_line(ct_file, tmp_path, quick_analysis, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    assert main(["analyze", str(ct_file), "-o", str(tmp_path / "out"), "--device", "cuda"]) == EXIT_BAD_INPUT
    assert "--device cuda" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() and quick_analysis == []


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGINT, EXIT_INTERRUPTED)])
def test_signal_while_writing_leaves_nothing(ct_file, tmp_path, quick_analysis, monkeypatch, capsys, stop, code):
    from lunglesionai.io import outputs as export

    def write_and_get_stopped(*args, **kwargs):
        os.kill(os.getpid(), stop)  # delivered to this (main) thread; the handler runs at the next bytecode
        for _ in range(1000):
            pass
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(export, "markups_fiducial_dict", write_and_get_stopped)
    # Ctrl-C as in a terminal: a test worker process (pytest-xdist) may have been started with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "out"
    try:
        assert main(["analyze", str(ct_file), "-o", str(out), "--no-progress"]) == code
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "no output was written" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no OUT, no hidden .out.*.partial


def test_sigterm_during_a_real_run_leaves_nothing(tmp_path):
    """A real process, stopped while it analyses: one line, status 143, no partial or hidden folder."""
    from dataclasses import replace

    from lunglesionai.synth import PhantomConfig, make_phantom

    ct = tmp_path / "phantom.nrrd"
    save_volume(make_phantom(replace(PhantomConfig.small(), seed=1)).volume, ct)
    process = subprocess.Popen([sys.executable, "-m", "lunglesionai", "analyze", str(ct), "-o", str(tmp_path / "out"),
                                "--progress", "lines"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait until the analysis has started
        if line.startswith("LUNGLESIONAI_PROGRESS"):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_TERMINATED, err
    assert [line for line in err.splitlines() if line.strip()] == ["lunglesionai: stopped by SIGTERM; no output "
                                                                   "was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom.nrrd"]


def test_library_warnings_go_to_the_log_not_the_terminal(ct_file, tmp_path, monkeypatch, capsys):
    def noisy(volume, config=None, progress=None):
        warnings.warn("a library's deprecation notice", DeprecationWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("a pydicom remark")
        logging.getLogger("lunglesionai.pipeline").warning("a warning of ours")
        return Report(input=InputInfo.from_volume(volume), version="test")

    monkeypatch.setattr(pipeline, "analyze_volume", noisy)
    warnings.simplefilter("always", DeprecationWarning)
    assert main(["analyze", str(ct_file), "-o", str(tmp_path / "quiet"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "a warning of ours" in err
    assert "deprecation notice" not in err and "pydicom remark" not in err
    log = (tmp_path / "quiet" / "lunglesionai.log").read_text()
    assert "deprecation notice" in log and "pydicom remark" in log and "a warning of ours" in log
    assert main(["-v", "analyze", str(ct_file), "-o", str(tmp_path / "loud"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "deprecation notice" in err and "pydicom remark" in err


def test_help_lists_every_subcommand_and_imports_nothing_heavy():
    code = ("import sys\nfrom lunglesionai.app.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("analyze", "demo", "bench", "evaluate", "train", "make-composites"):
        assert f"    {command}" in result.stdout
    assert "HEAVY []" in result.stdout


def test_escape_codes_in_paths_are_not_printed_raw(tmp_path, capsys):
    bad = tmp_path / "scan\x1b[2J\x1b[31m.nii.gz"
    assert main(["analyze", str(bad), "-o", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    line = _one_error_line(capsys)
    assert "\x1b" not in line and "scan?[2J?[31m.nii.gz" in line


# -------------------------------------------------------------------------------------------- patient data


def test_patient_identifiers_only_when_asked(tmp_path, quick_analysis, capsys):
    series = tmp_path / "series"
    write_series(series, np.arange(12) * 2.0, description="Thorax 1.0 B70f",
                 tags={"PatientName": "Doe^Jane", "PatientID": "PID-98765", "StudyDate": "20260102"})
    assert main(["analyze", str(series), "-o", str(tmp_path / "plain"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert report["input"]["description"]["series_description"] == "Thorax 1.0 B70f"
    assert report["input"]["description"]["study_date"] == "2026-01-02"
    for name in ("report.json", "report.html", "lunglesionai.log"):
        text = (tmp_path / "plain" / name).read_text()
        assert "Doe" not in text and "PID-98765" not in text, name
    assert "Thorax 1.0 B70f" in (tmp_path / "plain" / "report.html").read_text()
    assert main(["analyze", str(series), "-o", str(tmp_path / "named"), "--include-identifiers",
                 "--no-progress"]) == 0
    described = json.loads((tmp_path / "named" / "report.json").read_text())["input"]["description"]
    assert described["patient_name"] == "Doe^Jane" and described["patient_id"] == "PID-98765"


# ---------------------------------------------------------------------------- what was not analysed, said


def test_scan_warnings_name_missing_lungs_and_thick_slices():
    volume = _chest_like_volume(spacing_z=2.0, spacing_xy=4.0)  # 2 × 100 mL of lung
    lungs = np.zeros(volume.shape_zyx, np.uint8)
    lungs[1:-1, 8:24, 7:15], lungs[1:-1, 8:24, 17:25] = 1, 2  # apices and bases inside the scan
    assert scan_warnings(volume, lungs) == []
    assert scan_warnings(volume, np.zeros_like(lungs))[0].startswith(NO_LUNG_WARNING)
    one_lung = scan_warnings(volume, np.where(lungs == 1, lungs, 0).astype(np.uint8))
    assert len(one_lung) == 1 and "left lung was not analysed" in one_lung[0]
    thick = _chest_like_volume(spacing_z=8.0, spacing_xy=4.0)
    assert any("thicker than 3 mm" in w for w in scan_warnings(thick, lungs))
    with pytest.raises(ValueError, match="grid"):
        scan_warnings(volume, lungs[:-1])


def test_result_summary_says_not_searched_and_lists_warnings():
    no_lung = scan_warnings(_chest_like_volume(spacing_z=5.0), np.zeros((12, 32, 32), np.uint8))
    text = result_summary(0, no_lung)
    assert text.startswith("Not searched") and "Found 0" not in text
    assert text.count("\nWarning: ") == len(no_lung) == 2
    assert result_summary(3, []).startswith("Found 3 finding(s).")


def test_no_lung_is_never_reported_as_no_findings(tmp_path, capsys):
    """The real pipeline on a CT without lungs (a water phantom in air, 5 mm slices)."""
    hu = np.full((12, 40, 40), -1000.0)
    hu[:, 4:36, 4:36] = 0.0
    hu = np.rint(hu + np.random.default_rng(0).normal(0.0, 12.0, hu.shape)).astype(np.int16)  # CT noise
    ct = tmp_path / "water_phantom.nii.gz"
    save_volume(Volume(hu, (1.0, 1.0, 5.0), (0.0, 0.0, 0.0)), ct)
    assert main(["analyze", str(ct), "-o", str(tmp_path / "out"), "--no-progress", "--no-grading"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["findings"] == []
    assert report["warnings"][0].startswith(NO_LUNG_WARNING)
    assert any("thicker than 3 mm" in w for w in report["warnings"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Not searched" in html and "No findings." not in html
    assert f"warning: {NO_LUNG_WARNING}" in capsys.readouterr().out


def test_thick_slice_ct_in_shared_data_still_loads(shared_data):
    volume = load_volume(shared_data / "ct" / "chest_ct_lowres.nrrd")
    assert volume.spacing_mm[2] > 3.0


def test_fifo_as_input_is_refused_at_once(tmp_path):
    """Opening a FIFO blocks until a writer appears: the program must refuse it from its file type (a subprocess
    with a timeout, so a regression fails instead of hanging the suite)."""
    fifo = tmp_path / "ct.nii.gz"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "lunglesionai", "analyze", str(fifo), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"lunglesionai: error: {fifo}: a FIFO (named pipe), not a CT file or folder"]
    assert not (tmp_path / "out").exists()
