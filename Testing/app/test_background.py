"""Tests of lunglesionai.app.background with the real CLI in a child process: progress lines, outputs, cancel, errors.

The phantom is the small preset (100×160×160 voxels); one run of ``analyze --detector classical`` takes a few
seconds. Process-tree checks read /proc (Linux).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lunglesionai.app import background
from lunglesionai.app.background import (
    AnalysisState,
    BackgroundAnalysis,
    analyze_arguments,
    analyze_command,
)
from lunglesionai.core.findings import STAGES

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc (Linux)")
CHILD_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def phantom_nrrd(tmp_path_factory) -> Path:
    from lunglesionai.io.ct_files import save_volume
    from lunglesionai.synth import PhantomConfig, make_phantom

    path = tmp_path_factory.mktemp("phantom") / "phantom.nrrd"
    save_volume(make_phantom(PhantomConfig.small()).volume, path)
    return path


def _live_pids_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is ``pgid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"


def test_arguments_use_only_options_the_cli_has_by_default():
    args = analyze_arguments("ct.nrrd", "out")
    assert args == ["analyze", "ct.nrrd", "-o", "out", "--overwrite", "--progress", "lines"]
    args = analyze_arguments("ct.nrrd", "out", detector="classical", min_score=0.55, fp_reduction=False,
                             grading=False, lesions=True, device="cpu", series_uid="1.2.3")
    assert args[7:] == ["--detector", "classical", "--min-score", "0.55", "--no-fpr", "--no-grading", "--uld",
                        "--device", "cpu", "--series-uid", "1.2.3"]
    from lunglesionai.app.cli import (
        build_parser,  # every option written is one the CLI accepts
    )

    assert build_parser().parse_args(args).uld is True
    for bad in ({"device": "gpu"}, {"min_score": 1.5}, {"detector": "magic"}):
        with pytest.raises(ValueError):
            analyze_arguments("ct.nrrd", "out", **bad)


def test_clinical_arguments_are_the_clis_options():
    from lunglesionai.app.arguments import patient_from_arguments
    from lunglesionai.app.cli import build_parser

    assert analyze_arguments("ct.nrrd", "out", indication=None, age_years=None)[7:] == []  # nothing: CLI defaults
    args = analyze_arguments("ct.nrrd", "out", indication="incidental", age_years=70.5, sex="M",
                             family_history=True, emphysema=False, immunocompromised=False, known_cancer=True)
    assert args[7:] == ["--indication", "incidental", "--age", "70.5", "--sex", "M", "--family-history",
                        "--no-emphysema", "--no-immunocompromised", "--known-cancer"]
    parsed = build_parser().parse_args(args)
    assert parsed.indication == "incidental"
    patient = patient_from_arguments(parsed)
    assert (patient.age_years, patient.sex, patient.family_history, patient.emphysema, patient.immunocompromised,
            patient.known_cancer) == (70.5, "M", True, False, False, True)
    unset = patient_from_arguments(build_parser().parse_args(analyze_arguments("ct.nrrd", "out", sex="F")))
    assert unset.sex == "F" and unset.age_years is None and unset.family_history is None
    for bad in ({"indication": "follow-up"}, {"age_years": 131}, {"age_years": -1}, {"age_years": True},
                {"sex": "O"}, {"family_history": "yes"}):
        with pytest.raises(ValueError):
            analyze_arguments("ct.nrrd", "out", **bad)


def test_prior_arguments_are_the_clis_options():
    from lunglesionai.app.cli import build_parser

    args = analyze_arguments("ct.nrrd", "out", prior="prior.nrrd", interval_days=182.0)
    assert args[7:] == ["--prior", "prior.nrrd", "--interval-days", "182"]
    parsed = build_parser().parse_args(args)
    assert (parsed.prior, parsed.interval_days) == ("prior.nrrd", 182.0)
    assert analyze_arguments("ct.nrrd", "out", prior="p.nrrd")[7:] == ["--prior", "p.nrrd"]  # dates decide
    for bad in ({"interval_days": 10.0}, {"prior": "p.nrrd", "interval_days": -1.0},
                {"prior": "p.nrrd", "interval_days": float("nan")}):
        with pytest.raises(ValueError, match="interval_days"):
            analyze_arguments("ct.nrrd", "out", **bad)


def test_detector_names_match_the_pipelines():
    from lunglesionai.pipeline import DETECTOR_NAMES

    assert set(background.DETECTORS) == set(DETECTOR_NAMES)
    from lunglesionai.app.cli import build_parser

    for name in background.DETECTORS:
        assert build_parser().parse_args(analyze_arguments("ct.nrrd", "out", detector=name)).detector == name


def test_command_runs_this_package(monkeypatch, tmp_path):
    argv, env = analyze_command(["--version"])
    assert argv[:3] == [sys.executable, "-m", "lunglesionai"]
    assert env["PYTHONUNBUFFERED"] == "1"
    # The package's parent folder comes first on PYTHONPATH, so the child imports this very package from any cwd.
    package_parent = Path(background.__file__).resolve().parents[2]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(package_parent)
    result = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lunglesionai ")


def test_run_streams_progress_and_writes_outputs(phantom_nrrd, tmp_path):
    out = tmp_path / "result"
    job = BackgroundAnalysis.start(phantom_nrrd, out, detector="classical", env=CHILD_ENV)
    first = job.poll()
    assert first.state is AnalysisState.RUNNING and first.output_dir is None
    fractions_seen = []
    deadline = time.monotonic() + 120
    while not (status := job.poll()).finished:
        fractions_seen.append(status.fraction)
        assert time.monotonic() < deadline, "analysis did not finish in 120 s"
        time.sleep(0.05)
    assert status.state is AnalysisState.DONE, (status.error, job.stderr_text)
    assert status.returncode == 0 and status.fraction == 1.0 and status.error is None
    assert status.output_dir == out.absolute()
    for name in ("report.json", "nodules.seg.nrrd", "nodules.mrk.json"):
        assert (out / name).is_file(), name
    stages = [stage for stage, _ in job.progress_log]
    assert stages and set(stages) <= set(STAGES)
    assert {"lung_mask", "detection", "segmentation"} <= set(stages)
    fractions = [fraction for _, fraction in job.progress_log]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert fractions_seen == sorted(fractions_seen)  # poll() reports the latest progress, never going back
    assert any("wrote" in line for line in job.stdout_lines)  # the CLI's summary is kept apart from progress
    assert job.poll() is status  # the final status stays


@needs_proc
def test_cancel_ends_the_process_group_and_writes_nothing(phantom_nrrd, tmp_path):
    out = tmp_path / "cancelled"
    job = BackgroundAnalysis.start(phantom_nrrd, out, detector="classical", env=CHILD_ENV)
    deadline = time.monotonic() + 60
    while not job.progress_log:  # cancel inside the pipeline, not during start-up
        assert job.poll().state is AnalysisState.RUNNING, job.stderr_text
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _live_pids_in_group(job.pid) == [job.pid]  # the child leads its own process group
    status = job.cancel(grace_s=2.0)
    assert status.state is AnalysisState.CANCELLED and status.returncode != 0
    assert _live_pids_in_group(job.pid) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)
    time.sleep(0.2)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "temporary output folders were left behind"


@needs_proc
def test_cancel_ends_grandchildren_too(tmp_path):
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    job = BackgroundAnalysis([sys.executable, "-c", script], tmp_path / "never")
    deadline = time.monotonic() + 30
    while not job.stdout_lines:
        job.poll()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int(job.stdout_lines[0])
    assert _alive(grandchild)
    status = job.cancel(grace_s=1.0)
    assert status.state is AnalysisState.CANCELLED
    time.sleep(0.1)
    assert not _alive(grandchild)
    assert _live_pids_in_group(job.pid) == []


def test_bad_input_fails_with_the_cli_error_line(tmp_path):
    not_a_ct = tmp_path / "notes.nrrd"
    not_a_ct.write_text("not an image\n")
    out = tmp_path / "out"
    status = BackgroundAnalysis.start(not_a_ct, out, env=CHILD_ENV).wait(timeout=60)
    assert status.state is AnalysisState.FAILED and status.returncode == 2
    assert status.error.startswith("lunglesionai: error:") and "notes.nrrd" in status.error
    assert not out.exists()


def test_unknown_option_fails_with_a_usage_error(tmp_path):
    job = BackgroundAnalysis([sys.executable, "-c", "import sys; sys.stderr.write('usage: x\\nx: error: bad\\n');"
                              "sys.exit(2)"], tmp_path / "out")
    status = job.wait(timeout=30)
    assert status.state is AnalysisState.FAILED and status.error == "x: error: bad"


def test_success_without_output_folder_is_a_failure(tmp_path):
    status = BackgroundAnalysis([sys.executable, "-c", "pass"], tmp_path / "out").wait(timeout=30)
    assert status.state is AnalysisState.FAILED and "without writing" in status.error


def test_wait_times_out_and_cancel_after_the_end_keeps_the_state(tmp_path):
    (tmp_path / "out").mkdir()
    job = BackgroundAnalysis([sys.executable, "-c", "import time; time.sleep(0.5)"], tmp_path / "out")
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.05)
    assert job.wait(timeout=30).state is AnalysisState.DONE
    assert job.cancel().state is AnalysisState.DONE
