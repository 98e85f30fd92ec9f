"""The ``lunglesionai`` command line: ``analyze``, ``demo``, ``bench``, ``evaluate``, ``train``, ``make-composites``.

``main()`` only parses arguments and calls one ``run_*`` function per command. Bad input ends with one line
``lunglesionai: error: …`` on stderr and exit status 2, before any output is written; SIGINT/SIGTERM end with one
line and status 130/143 and leave no partial output. Building the parser imports no torch, MONAI or SimpleITK (the
sub-commands that need them import them when they run), so ``lunglesionai --help`` is quick.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Sequence

from lunglesionai import __version__
from lunglesionai.app.arguments import (
    add_clinical_arguments,
    add_detection_arguments,
    add_progress_arguments,
    patient_from_arguments,
)

__all__ = ["main", "build_parser", "run_analyze", "run_demo", "run_bench", "run_evaluate_phantom", "EXIT_BAD_INPUT",
           "EXIT_INTERRUPTED", "EXIT_TERMINATED", "RUN_LOG_NAME", "UsageError", "add_detection_arguments"]

logger = logging.getLogger("lunglesionai")

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (SIGINT), the shell's 128 + 2."""
EXIT_TERMINATED = 143
"""Exit status after SIGTERM or SIGHUP, the shell's 128 + 15."""
RUN_LOG_NAME = "lunglesionai.log"
"""The log of a run (every message at INFO and above, library warnings included), written into the output folder."""
#: Sub-commands whose parsers import heavy modules: registered only when the command line asks for them.
_LAZY_COMMANDS = {
    "evaluate": "measure the pipeline against ground truth (phantom, detection, false-positives, lidc-voi, uld)",
    "train": "train a model (grader, detector, fpr, fpr-hosts, uld)",
    "make-composites": "paste real LIDC nodules into real / phantom lungs (LUNA16-style folder; not clinical scans)",
    "dicom-node": "DICOM Storage SCP for a PACS: analyse each CT series it receives, C-STORE the SEG and SR back",
    "make-followup-pairs": "prior/current pairs with known growth from a phantom or a real CT (for evaluate followup)",
}


class UsageError(ValueError):
    """A command-line request that cannot be honoured here (e.g. ``--device cuda`` without CUDA)."""


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM/SIGHUP handler, so that ``finally`` blocks clean up."""


def run_analyze(args: argparse.Namespace) -> int:
    """``lunglesionai analyze INPUT -o OUT``: load a CT, run the pipeline, write the result files atomically
    (:func:`lunglesionai.app.analysis.run_analysis`; DICOM SEG and SR for a DICOM series or with ``--dicom-out``).

    Every output-path problem and ``--device cuda`` without CUDA are refused before the CT is read; the CT is
    checked before the analysis (:func:`lunglesionai.io.ct_files.load_volume`).
    """
    from lunglesionai.app.dicomweb_command import run_dicomweb_analyze, uses_dicomweb
    from lunglesionai.core.output_folder import check_output_folder

    if uses_dicomweb(args):  # --dicomweb URL --study UID: download, then this function on the series
        return run_dicomweb_analyze(args, run_analyze)
    _check_device(args.device)
    patient = patient_from_arguments(args)
    out = check_output_folder(args.output, overwrite=args.overwrite, inputs=[args.input, *filter(None, [args.prior])])
    from lunglesionai.app.followup_command import resolve_prior

    prior = resolve_prior(args)  # refuses a bad --prior or a missing interval before the analysis
    from lunglesionai.io.ct_files import load_volume

    volume = load_volume(args.input, series_uid=args.series_uid, max_memory_gb=args.max_memory_gb)
    from lunglesionai.app.analysis import run_analysis  # the pipeline (torch, MONAI) only for a usable CT
    from lunglesionai.app.progress import progress_reporter
    from lunglesionai.pipeline import PipelineConfig

    config = PipelineConfig(detector=args.detector, min_score=args.min_score, fpr=not args.no_fpr,
                            grade=not args.no_grading, device=args.device, uld=args.uld)
    bar, update = progress_reporter(args.progress)
    with bar:
        result = run_analysis(args.input, out, series_uid=args.series_uid, overwrite=args.overwrite, config=config,
                              patient=patient, indication=args.indication, dicom_out=args.dicom_out,
                              progress=update, prior=prior, include_identifiers=args.include_identifiers,
                              max_memory_gb=args.max_memory_gb, extra_files={RUN_LOG_NAME: _RUN_LOG.write},
                              volume=volume)
    _print_findings(result.report)
    print(f"wrote {', '.join(p.name for p in result.paths.values())} to {out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``lunglesionai demo -o OUT``: analyse a phantom and print sensitivity and false positives."""
    from lunglesionai.app.demo import run_phantom_demo

    result = run_phantom_demo(  # checks the output folder before it makes the phantom
        Path(args.output), seed=args.seed, preset=args.preset, overwrite=args.overwrite, progress=args.progress
    )
    print(result.summary())
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """``lunglesionai bench``: per-stage timings and peak memory on a 512×512×300 phantom or a given CT."""
    from lunglesionai.app.bench import BenchConfig, format_benchmark, run_benchmark
    from lunglesionai.core.output_folder import check_output_file, write_json_atomic

    if args.json:
        check_output_file(args.json)
    if args.registration:  # analyze --prior's lung registration on a phantom pair (issue 16)
        from lunglesionai.app.bench_registration import format_registration_benchmark, run_registration_benchmark

        result = run_registration_benchmark(tuple(args.shape), tuple(args.spacing), repeats=args.repeats)
        print(format_registration_benchmark(result))
        if args.json:
            write_json_atomic(args.json, result, trailing_newline=False)
        return 0
    config = BenchConfig(shape_zyx=tuple(args.shape), spacing_mm=tuple(args.spacing), repeats=args.repeats,
                         input_path=args.input, uld=not args.no_uld)
    result = run_benchmark(config)
    print(format_benchmark(result))
    if args.json:
        write_json_atomic(args.json, result, trailing_newline=False)
    return 0


def run_evaluate_phantom(args: argparse.Namespace) -> int:
    """``lunglesionai evaluate phantom``: sensitivity / FPs per scan on phantoms at several operating points."""
    from lunglesionai.core.findings import to_jsonable
    from lunglesionai.core.output_folder import check_output_file, write_json_atomic
    from lunglesionai.evaluation.phantom_protocol import (
        PhantomEvaluationConfig,
        evaluate_phantoms,
        format_phantom_metrics,
    )

    if args.out:
        check_output_file(args.out)
    config = PhantomEvaluationConfig(seeds=tuple(args.seeds), preset=args.preset, thresholds=tuple(args.thresholds))
    metrics = evaluate_phantoms(config)
    print(format_phantom_metrics(metrics))
    if args.out:
        # A sensitivity undefined on a set without nodules (NaN) is written as null: JSON has no NaN.
        write_json_atomic(args.out, to_jsonable(metrics, nan_as_none=True), trailing_newline=False)
    return 0


def _print_findings(report) -> None:
    for warning in report.warnings:
        print(f"warning: {warning}")
    masses, nodules = report.masses(), report.nodules()
    if masses:
        print(f"{len(masses)} mass finding(s) (over 30 mm; not graded)")
    print(f"{len(nodules)} nodule finding(s)")
    for f in masses + nodules:
        x, y, z = f.center_lps_mm
        print(f"  {f.id}: LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm, {f.summary()}")
    lesions = report.lesions()
    if lesions:
        print(f"{len(lesions)} other lesion finding(s) (universal lesion detection)")
    exam = report.exam
    if exam.get("lung_rads") is not None:
        assumed = f"; assumed: {', '.join(exam['assumed'])}" if exam.get("assumed") else ""
        print(f"exam Lung-RADS {exam['lung_rads']} ({exam.get('indication')}; decision support){assumed}")
        fleischner = exam.get("fleischner") or {}
        if fleischner.get("applies"):
            print(f"Fleischner 2017: {fleischner.get('recommendation')}")


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The argument parser of all sub-commands.

    Args:
        argv: the command line about to be parsed; the parsers of ``evaluate``, ``train`` and ``make-composites``
            (which import torch) are filled in only when it names that command. None: all are filled in.
    """
    command = _command_of(argv)
    parser = argparse.ArgumentParser(prog="lunglesionai", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"lunglesionai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each stage (INFO) and library warnings (ITK, pydicom, MONAI) on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_analyze_parser(sub)

    p = sub.add_parser("demo", help="make the procedural chest-CT phantom, analyse it, score against its truth")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.add_argument("--preset", choices=["clinical", "small"], default="clinical", help="phantom size")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that lunglesionai wrote")
    add_progress_arguments(p)
    p.set_defaults(func=run_demo)

    p = sub.add_parser("bench", help="per-stage seconds and peak memory on a clinical-size phantom or a given CT")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--input", metavar="CT", help="time this CT (DICOM folder or file, NIfTI, NRRD, MHA/MHD) "
                   "instead of the phantom; --shape and --spacing are then ignored")
    p.add_argument("--no-uld", action="store_true", help="leave universal lesion detection out (as analyze does "
                   "by default); it is timed unless this is given")
    p.add_argument("--registration", action="store_true", help="time the prior-to-current lung registration of "
                   "analyze --prior on a phantom pair of --shape/--spacing instead of the pipeline")
    p.add_argument("--repeats", type=int, default=3, help="runs; medians are reported (default 3)")
    p.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.0], metavar=("X", "Y", "Z"))
    p.set_defaults(func=run_bench)

    lazy = {name: sub.add_parser(name, help=text) for name, text in _LAZY_COMMANDS.items()}
    if command in (None, "evaluate"):
        _fill_evaluate_parser(lazy["evaluate"])
    if command in (None, "train"):
        _fill_train_parser(lazy["train"])
    if command in (None, "make-composites"):
        from lunglesionai.app.data_commands import fill_make_composites_parser

        fill_make_composites_parser(lazy["make-composites"])
    if command in (None, "dicom-node"):
        from lunglesionai.app.dicom_node import fill_dicom_node_parser

        fill_dicom_node_parser(lazy["dicom-node"])
    if command in (None, "make-followup-pairs"):
        from lunglesionai.app.followup_pairs_command import fill_make_followup_pairs_parser

        fill_make_followup_pairs_parser(lazy["make-followup-pairs"])
    return parser


def _add_analyze_parser(sub) -> None:
    p = sub.add_parser("analyze", help="analyse a chest CT (DICOM folder, NIfTI, NRRD, MHA/MHD, DICOM file)")
    p.add_argument("input", nargs="?", help="CT file or DICOM series folder (left out with --dicomweb)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (must not exist unless --overwrite; never the input's folder)")
    p.add_argument("--series-uid", help="SeriesInstanceUID to use when the DICOM folder holds several series")
    add_detection_arguments(p)
    p.add_argument("--no-grading", action="store_true", help="skip the DenseSharp grader (classical masks only)")
    p.add_argument("--uld", action="store_true", help="also run universal lesion detection (other lesions anywhere "
                   "in the scan; experimental, see models/uld/uld.card.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder that lunglesionai wrote (its manifest lists every file)")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="memory budget of the analysis in GB; larger CTs are refused before they are read "
                   "(default 16)")
    p.add_argument("--dicom-out", action="store_true",
                   help="for NIfTI/NRRD/MHA input: also export the CT as a DICOM series (OUT/ct_series/) and write "
                   "nodules.seg.dcm and report.sr.dcm referencing it (DICOM series input always gets them)")
    p.add_argument("--include-identifiers", action="store_true",
                   help="write the patient's name and ID (DICOM input) into report.json and report.html; by "
                   "default they are left out")
    add_clinical_arguments(p)
    from lunglesionai.app.dicomweb_command import add_dicomweb_arguments
    from lunglesionai.app.followup_command import add_prior_arguments

    add_prior_arguments(p)
    add_dicomweb_arguments(p)
    add_progress_arguments(p)
    p.set_defaults(func=run_analyze)


def _fill_evaluate_parser(p: argparse.ArgumentParser) -> None:
    from lunglesionai.app.evaluate_commands import (
        add_evaluate_detection_parser,
        add_evaluate_false_positives_parser,
        add_evaluate_lidc_parser,
        add_evaluate_uld_parser,
    )

    evaluate = p.add_subparsers(dest="dataset", required=True)
    p = evaluate.add_parser("phantom", help="detection sensitivity and FPs/scan on procedural phantoms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="phantom seeds (default 0 1 2 3)")
    p.add_argument("--preset", choices=["clinical", "small"], default="clinical", help="phantom size")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.45, 0.5, 0.55, 0.6],
                   help="detection-score operating points to report")
    p.add_argument("--out", help="write the metrics as JSON to this file")
    p.set_defaults(func=run_evaluate_phantom)
    add_evaluate_detection_parser(evaluate)
    add_evaluate_false_positives_parser(evaluate)
    add_evaluate_lidc_parser(evaluate)
    add_evaluate_uld_parser(evaluate)
    from lunglesionai.app.followup_command import add_evaluate_followup_parser

    add_evaluate_followup_parser(evaluate)


def _fill_train_parser(p: argparse.ArgumentParser) -> None:
    from lunglesionai.app.fpr_hosts_command import add_train_fpr_hosts_parser
    from lunglesionai.app.train_commands import (
        add_train_detector_parser,
        add_train_fpr_parser,
        add_train_grader_parser,
        add_train_uld_parser,
    )

    train = p.add_subparsers(dest="model", required=True)
    add_train_grader_parser(train)
    add_train_detector_parser(train)
    add_train_fpr_parser(train)
    add_train_fpr_hosts_parser(train)
    add_train_uld_parser(train)


def _command_of(argv: Optional[Sequence[str]]) -> Optional[str]:
    """The sub-command named on the command line (the first word that is not an option), None when unknown."""
    if argv is None:
        return None
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``lunglesionai`` console script; returns the exit status.

    Exit status: 0 success; 2 bad input or output location (one line on stderr, nothing written); 130 after
    Ctrl-C, 143 after SIGTERM/SIGHUP (one line, no partial output); 1 an unexpected error (traceback).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    with _logging_configured(args.verbose), _signals_as_exceptions():
        try:
            _check_outputs_of(args)
            return args.func(args)
        except KeyboardInterrupt:
            print("lunglesionai: interrupted (Ctrl-C); no output was written", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Terminated as stop:
            print(f"lunglesionai: stopped by {stop.args[0]}; no output was written", file=sys.stderr)
            return EXIT_TERMINATED
        except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
            from lunglesionai.core.ct_checks import sanitize_text

            print(f"lunglesionai: error: {sanitize_text(error, 1000)}", file=sys.stderr)
            return EXIT_BAD_INPUT


def _check_outputs_of(args: argparse.Namespace) -> None:
    """Output-path checks of the commands whose ``run_*`` lives outside this module, before any work."""
    from lunglesionai.core.output_folder import check_output_file, check_output_folder

    if args.command == "evaluate" and getattr(args, "out", None):
        check_output_file(args.out)
    elif args.command == "make-composites":
        check_output_folder(args.out, overwrite=args.overwrite, inputs=[x for x in (args.lidc, args.real_ct) if x])
    elif args.command == "train" and getattr(args, "out", None):
        if Path(args.out).is_file():
            raise NotADirectoryError(f"{args.out}: is a file; train --out names a model folder")
        check_output_file(Path(args.out) / "config.json")


def _check_device(device: str) -> None:
    """``--device cuda`` needs a CUDA device that torch can use; refused (one line) before any work."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}, but no GPU is visible"
        raise UsageError(f"--device cuda: no CUDA device is available (torch {torch.__version__} built {built}); "
                         "use --device cpu or auto")


class _RunLog(logging.Handler):
    """Keeps every record of a run (INFO and above, libraries included) for the output folder's log file."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        from lunglesionai.core.ct_checks import sanitize_text

        self.lines.append(sanitize_text(self.format(record), 2000))

    def write(self, path: Path) -> None:
        path.write_text("".join(f"{line}\n" for line in self.lines), encoding="utf-8")


_RUN_LOG = _RunLog()


class _TerminalFilter(logging.Filter):
    """Without ``--verbose`` the terminal shows the project's own warnings only; libraries' go to the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and record.name.startswith("lunglesionai")


@contextlib.contextmanager
def _logging_configured(verbose: bool) -> Iterator[None]:
    """Route Python warnings into logging; the terminal gets the project's warnings (everything at INFO with
    ``verbose``), the run log everything; ITK's own stderr warnings are silenced unless ``verbose``."""
    root = logging.getLogger()
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        terminal.addFilter(_TerminalFilter())
    _RUN_LOG.lines.clear()
    previous_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(terminal)
    root.addHandler(_RUN_LOG)
    logging.captureWarnings(True)
    itk_display = _set_itk_warnings(verbose)
    try:
        yield
    finally:
        _set_itk_warnings(itk_display)
        logging.captureWarnings(False)
        root.removeHandler(terminal)
        root.removeHandler(_RUN_LOG)
        root.setLevel(previous_level)


def _set_itk_warnings(on: Optional[bool]) -> Optional[bool]:
    """Switch ITK's global warning display when SimpleITK is already imported or will be; returns the old value."""
    if on is None:
        return None
    import SimpleITK as sitk  # noqa: PLC0415 (only when a command runs, never for --help)

    previous = bool(sitk.ProcessObject.GetGlobalWarningDisplay())
    sitk.ProcessObject.SetGlobalWarningDisplay(on)
    return previous


@contextlib.contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (Ctrl-C raises KeyboardInterrupt), so the
    atomic writers' ``finally`` blocks remove their staging folders. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame) -> None:
        raise Terminated(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

