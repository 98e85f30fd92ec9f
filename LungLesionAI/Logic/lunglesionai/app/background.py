"""Run ``lunglesionai analyze`` in a background process: progress by polling, cancel, one error line.

The Slicer module must never freeze its GUI, so it does not run the pipeline on the GUI thread: it starts the CLI
as a child process of the same Python (``python -m lunglesionai analyze INPUT -o OUT --progress lines …``) and
calls :meth:`BackgroundAnalysis.poll` from a timer. Two reader threads move the child's stdout and stderr lines
into queues; ``poll()`` only drains them, so it never blocks. Progress arrives as the lines
``LUNGLESIONAI_PROGRESS {"stage": …, "fraction": …}`` (:mod:`lunglesionai.app.progress`).

Cancel ends the whole process tree: the child is started in a new session (POSIX: ``start_new_session=True``, the
child leads its own process group, which ``os.killpg`` ends: SIGTERM, then SIGKILL after a grace period) or a new
process group (Windows: ``taskkill /T /F``). The CLI writes into a temporary sibling folder that it renames to OUT
only when complete, so a cancelled or failed run leaves no OUT; temporary folders a killed child could not clean
up are removed here.

Plain Python: no Qt, no ``slicer``; the Slicer module wraps it, tests run it with the real CLI.

Example::

    job = BackgroundAnalysis.start("ct.nrrd", "out", min_score=0.5)
    while (status := job.poll()).state is AnalysisState.RUNNING:
        print(status.stage, status.fraction); time.sleep(0.2)
    print(status.state, status.output_dir or status.error)
"""

from __future__ import annotations

import enum
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from lunglesionai.app.progress import parse_progress_line
from lunglesionai.clinical.fleischner import INDICATIONS
from lunglesionai.clinical.patient import MAX_AGE_YEARS, SEXES
from lunglesionai.core import vocabulary

__all__ = [
    "AnalysisState",
    "AnalysisStatus",
    "BackgroundAnalysis",
    "analyze_arguments",
    "analyze_command",
    "clinical_arguments",
    "CLINICAL_INDICATIONS",
    "DEVICES",
    "PATIENT_FLAGS",
    "PATIENT_SEXES",
]

#: Values of the CLI's ``--device`` option ("auto", the default, is never passed on the command line) and of its
#: ``--detector`` option: the vocabulary's lists, which the panel's process reads without importing the pipeline.
DEVICES = vocabulary.DEVICES
DETECTORS = vocabulary.DETECTOR_NAMES
#: ``--indication`` and ``--sex`` values of ``analyze`` (:mod:`lunglesionai.app.arguments`), from the clinical rules.
CLINICAL_INDICATIONS = INDICATIONS
PATIENT_SEXES = SEXES
#: Boolean patient options of ``analyze``: ``--NAME`` / ``--no-NAME`` with "_" written as "-".
PATIENT_FLAGS = ("family_history", "emphysema", "immunocompromised", "known_cancer")
#: Seconds between SIGTERM and SIGKILL when cancelling.
CANCEL_GRACE_S = 3.0
#: Stderr lines kept for the error message (the last ones).
_STDERR_LINES_KEPT = 200
_ERROR_PREFIX = "lunglesionai: error:"


class AnalysisState(str, enum.Enum):
    """Where a background analysis stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class AnalysisStatus:
    """A snapshot returned by :meth:`BackgroundAnalysis.poll`.

    Args:
        state: running, done, failed or cancelled.
        stage: the last stage named in a progress line ("" before the first one; a name from
            :data:`lunglesionai.core.findings.STAGES`).
        fraction: the last progress fraction of the whole run, in [0, 1] (1.0 once done).
        output_dir: the output folder (absolute) once the run is done, else None.
        error: one line saying why the run failed (the CLI's ``lunglesionai: error: …`` line when it wrote one,
            else the last line of its stderr, else the exit status), else None.
        returncode: the child's exit status once it ended (negative: killed by that signal on POSIX), else None.
    """

    state: AnalysisState
    stage: str = ""
    fraction: float = 0.0
    output_dir: Optional[Path] = None
    error: Optional[str] = None
    returncode: Optional[int] = None

    @property
    def finished(self) -> bool:
        """True once the run is done, failed or cancelled."""
        return self.state is not AnalysisState.RUNNING


def analyze_arguments(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    detector: Optional[str] = None,
    min_score: Optional[float] = None,
    fp_reduction: bool = True,
    grading: bool = True,
    lesions: bool = False,
    device: str = "auto",
    series_uid: Optional[str] = None,
    indication: Optional[str] = None,
    age_years: Optional[float] = None,
    sex: Optional[str] = None,
    family_history: Optional[bool] = None,
    emphysema: Optional[bool] = None,
    immunocompromised: Optional[bool] = None,
    known_cancer: Optional[bool] = None,
    prior: Optional[str | os.PathLike] = None,
    interval_days: Optional[float] = None,
) -> list[str]:
    """The ``lunglesionai`` arguments (after the program) of one analysis: the one place that builds them.

    Options left at the CLI's defaults are not written, so the list works with every CLI version that has
    ``analyze -o OUT --overwrite --progress lines``; ``--no-fpr``, ``--no-grading``, ``--uld`` and ``--device`` are written only
    when asked for (older CLIs reject them with exit status 2 and a usage line on stderr).

    Args:
        input_path: CT file or DICOM folder.
        output_dir: output folder (replaced when it exists: ``--overwrite``).
        detector: one of :data:`DETECTORS`; None keeps the CLI's default.
        min_score: operating point in [0, 1] (``--min-score``): candidates below this detection score are dropped;
            None keeps the CLI's default (0, the most sensitive).
        fp_reduction: False adds ``--no-fpr``.
        grading: False adds ``--no-grading``.
        lesions: True adds ``--uld`` (universal lesion detection).
        device: "auto" (not written), "cpu" or "cuda" (``--device``).
        series_uid: SeriesInstanceUID for a DICOM folder with several series.
        indication: "screening" or "incidental" (``--indication``, the clinical read: Lung-RADS v2022 /
            Fleischner 2017); None keeps the CLI's default (screening).
        age_years: patient age in years, 0-130 (``--age``); None: from the DICOM header, else the read's default.
        sex: "F" or "M" (``--sex``); None: from the DICOM header, else the default.
        family_history, emphysema, immunocompromised, known_cancer: True / False (``--family-history`` /
            ``--no-family-history`` and so on); None: not written (the clinical read's default, listed in
            report.json's ``exam.assumed``).
        prior: an earlier CT of the same patient (``--prior``): compare each nodule with it.
        interval_days: days between the prior and this scan (``--interval-days``; needs ``prior``); None: from the
            StudyDate of both (the analysis refuses when that is missing).

    Returns:
        e.g. ``["analyze", "ct.nrrd", "-o", "out", "--overwrite", "--progress", "lines", "--min-score", "0.5"]``.

    Raises:
        ValueError: unknown detector, device, indication or sex, ``min_score`` outside [0, 1], an age outside
            0-130 years, a patient flag that is not a bool, or ``interval_days`` < 0 or without ``prior``.
    """
    args = ["analyze", os.fspath(input_path), "-o", os.fspath(output_dir), "--overwrite", "--progress", "lines"]
    if detector is not None:
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
        args += ["--detector", detector]
    if min_score is not None:
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score}")
        args += ["--min-score", f"{float(min_score):g}"]
    if not fp_reduction:
        args.append("--no-fpr")
    if not grading:
        args.append("--no-grading")
    if lesions:
        args.append("--uld")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device != "auto":
        args += ["--device", device]
    if series_uid:
        args += ["--series-uid", series_uid]
    if interval_days is not None:
        if prior is None:
            raise ValueError("interval_days needs a prior scan")
        if not (math.isfinite(float(interval_days)) and float(interval_days) >= 0):
            raise ValueError(f"interval_days must be a number of days >= 0, got {interval_days}")
    if prior is not None:
        args += ["--prior", os.fspath(prior)]
        if interval_days is not None:
            args += ["--interval-days", f"{float(interval_days):g}"]
    return args + clinical_arguments(indication=indication, age_years=age_years, sex=sex,
                                     family_history=family_history, emphysema=emphysema,
                                     immunocompromised=immunocompromised, known_cancer=known_cancer)


def clinical_arguments(*, indication: Optional[str] = None, age_years: Optional[float] = None,
                       sex: Optional[str] = None, **flags: Optional[bool]) -> list[str]:
    """The ``analyze`` options of the clinical read (:func:`analyze_arguments`' last arguments); None values are
    not written.

    Args:
        indication: "screening" or "incidental".
        age_years: years in 0-130.
        sex: "F" or "M".
        **flags: ``family_history``, ``emphysema``, ``immunocompromised``, ``known_cancer``: True, False or None.

    Returns:
        e.g. ``["--indication", "incidental", "--age", "70", "--sex", "M", "--no-family-history"]``.

    Raises:
        ValueError: a value outside those above (checked here, so the panel's process never starts a doomed run).
    """
    args: list[str] = []
    if indication is not None:
        if indication not in CLINICAL_INDICATIONS:
            raise ValueError(f"indication must be one of {CLINICAL_INDICATIONS}, got {indication!r}")
        args += ["--indication", indication]
    if age_years is not None:
        if isinstance(age_years, bool) or not 0.0 <= float(age_years) <= MAX_AGE_YEARS:
            raise ValueError(f"age must be a number of years in 0-{MAX_AGE_YEARS:g}, got {age_years!r}")
        args += ["--age", f"{float(age_years):g}"]
    if sex is not None:
        if sex not in PATIENT_SEXES:
            raise ValueError(f"sex must be one of {PATIENT_SEXES}, got {sex!r}")
        args += ["--sex", sex]
    unknown = sorted(set(flags) - set(PATIENT_FLAGS))
    if unknown:
        raise ValueError(f"unknown patient flags {unknown}; known: {PATIENT_FLAGS}")
    for name in PATIENT_FLAGS:
        value = flags.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True, False or None, got {value!r}")
        args.append(f"--{'' if value else 'no-'}{name.replace('_', '-')}")
    return args


def analyze_command(arguments: Sequence[str], python: Optional[str] = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``lunglesionai`` with ``arguments`` in a child Python.

    The child imports the same ``lunglesionai`` package as this process (``python -m lunglesionai`` with the
    package's parent folder first on PYTHONPATH: installed beside the Slicer module, a source checkout's
    ``Logic/``, or site-packages).

    Args:
        arguments: what :func:`analyze_arguments` returns (or any ``lunglesionai`` arguments).
        python: the Python executable; default ``sys.executable`` (inside 3D Slicer pass ``PythonSlicer``).

    Returns:
        ``(argv, env)``: argv for :class:`subprocess.Popen` and the environment (this one, plus PYTHONPATH when
        needed and ``PYTHONUNBUFFERED=1``).
    """
    from lunglesionai import __file__ as package_init

    package_dir = Path(package_init).resolve().parent
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_dir.parent), env.get("PYTHONPATH")]))
    return [python or sys.executable, "-m", "lunglesionai", *arguments], env


class BackgroundAnalysis:
    """One ``lunglesionai analyze`` child process, polled without blocking.

    Create it with :meth:`start` (or pass a ready command). Call :meth:`poll` as often as you like (a GUI timer),
    :meth:`cancel` to stop it, :meth:`wait` to block until it ends (scripts and tests).

    Args:
        argv: the command (first item the program).
        output_dir: the folder the command writes (reported on success, checked to exist).
        env: environment of the child (default: this process's).
    """

    def __init__(self, argv: Sequence[str], output_dir: str | os.PathLike, env: Optional[dict[str, str]] = None):
        self.argv = list(argv)
        self.output_dir = Path(output_dir).absolute()
        self._partials_before = set(self._partial_folders())
        self._stage = ""
        self._fraction = 0.0
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES_KEPT)
        #: Every ``(stage, fraction)`` received so far, in order.
        self.progress_log: list[tuple[str, float]] = []
        #: Stdout lines that are not progress lines (the CLI's summary), in order.
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[tuple[str, Optional[str]]] = queue.Queue()
        self._cancelled = False
        self._final: Optional[AnalysisStatus] = None
        self.started_at = time.monotonic()
        popen_kwargs: dict = {}
        if os.name == "nt":
            popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            popen_kwargs["start_new_session"] = True
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **popen_kwargs,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, "err"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @classmethod
    def start(
        cls,
        input_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        *,
        python: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
        **options,
    ) -> "BackgroundAnalysis":
        """Start ``lunglesionai analyze input_path -o output_dir`` in the background.

        Args:
            input_path: CT file or DICOM folder.
            output_dir: output folder (an existing one is replaced when the run succeeds).
            python: Python executable (default ``sys.executable``; ``PythonSlicer`` inside 3D Slicer).
            env: extra environment variables for the child (added to this process's).
            **options: keyword arguments of :func:`analyze_arguments` (detector, min_score, fp_reduction,
                grading, lesions, device, series_uid).

        Raises:
            ValueError: an option is out of range (see :func:`analyze_arguments`).
            OSError: the Python executable cannot be started.
        """
        argv, child_env = analyze_command(analyze_arguments(input_path, output_dir, **options), python)
        child_env.update(env or {})
        return cls(argv, output_dir, child_env)

    @property
    def pid(self) -> int:
        """Process id of the child (on POSIX also its process-group id)."""
        return self.process.pid

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\r\n")))
        self._lines.put((name, None))

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                continue
            if name == "err":
                self._stderr.append(line)
                continue
            parsed = parse_progress_line(line)
            if parsed is None:
                self.stdout_lines.append(line)
            else:
                self._stage, self._fraction = parsed[0], min(max(parsed[1], 0.0), 1.0)
                self.progress_log.append((self._stage, self._fraction))

    def poll(self) -> AnalysisStatus:
        """The latest stage, fraction and state; never blocks (safe to call from a GUI timer)."""
        if self._final is not None:
            return self._final
        self._drain()
        returncode = self.process.poll()
        if returncode is None:
            return AnalysisStatus(AnalysisState.RUNNING, self._stage, self._fraction)
        for reader in self._readers:  # the pipes close when the child ends: the readers finish at once
            reader.join(timeout=1.0)
        self._drain()
        return self._finish(returncode)

    def _finish(self, returncode: int) -> AnalysisStatus:
        if self._cancelled and returncode != 0:
            self._remove_partial_folders()
            status = AnalysisStatus(AnalysisState.CANCELLED, self._stage, self._fraction, returncode=returncode)
        elif returncode != 0:
            self._remove_partial_folders()
            status = AnalysisStatus(AnalysisState.FAILED, self._stage, self._fraction,
                                    error=self._error_line(returncode), returncode=returncode)
        elif not self.output_dir.is_dir():
            status = AnalysisStatus(AnalysisState.FAILED, self._stage, self._fraction,
                                    error=f"the analysis ended without writing {self.output_dir}",
                                    returncode=returncode)
        else:
            status = AnalysisStatus(AnalysisState.DONE, self._stage, 1.0, self.output_dir, returncode=returncode)
        self._final = status
        return status

    def _error_line(self, returncode: int) -> str:
        lines = [line.strip() for line in self._stderr if line.strip()]
        for line in reversed(lines):
            if line.startswith(_ERROR_PREFIX):
                return line
        for line in reversed(lines):  # argparse: "lunglesionai analyze: error: …"; a traceback's last line
            if "error:" in line or "Error" in line:
                return line
        if lines:
            return lines[-1]
        return f"the analysis ended with exit status {returncode} and no message"

    @property
    def stderr_text(self) -> str:
        """The last stderr lines of the child (for a log or a "details" box)."""
        self._drain()
        return "\n".join(self._stderr)

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> AnalysisStatus:
        """End the child and every process it started, then return the final status.

        POSIX: SIGTERM to the child's process group, SIGKILL to the group after ``grace_s`` seconds if it is still
        there. Windows: ``taskkill /PID pid /T /F``. A run that had already ended keeps its own state (done or
        failed). Temporary output folders the child left are removed; OUT is not created.
        """
        if self._final is not None:
            return self._final
        if self.process.poll() is None:
            self._cancelled = True
            self._kill_tree(grace_s)
        return self.poll()

    def _kill_tree(self, grace_s: float) -> None:
        if os.name == "nt":
            subprocess.run(["taskkill", "/PID", str(self.pid), "/T", "/F"], capture_output=True, check=False)
            self.process.wait(timeout=max(grace_s, 1.0) + 10.0)
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        try:  # grandchildren may outlive the leader: the group goes in any case
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def wait(self, timeout: Optional[float] = None, interval_s: float = 0.05) -> AnalysisStatus:
        """Block until the run ends (or ``timeout`` seconds pass) and return the status.

        Raises:
            TimeoutError: still running after ``timeout`` seconds (the child keeps running; call :meth:`cancel`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.poll()
            if status.finished:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"analysis still running after {timeout} s")
            time.sleep(interval_s)

    def _partial_folders(self) -> list[Path]:
        parent = self.output_dir.parent
        if not parent.is_dir():
            return []
        return [p for p in parent.glob(f".{self.output_dir.name}.*.partial") if p.is_dir()]

    def _remove_partial_folders(self) -> None:
        """Remove the temporary output folders this run left (a killed child cannot clean up after itself)."""
        for folder in self._partial_folders():
            if folder not in self._partials_before:
                shutil.rmtree(folder, ignore_errors=True)

    def __del__(self) -> None:  # never leave an orphan analysis running
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None and not getattr(self, "_final", None):
            try:
                self._cancelled = True
                self._kill_tree(0.5)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
