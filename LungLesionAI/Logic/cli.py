"""The ``lunglesionai`` command line: ``analyze``, ``demo``, ``bench``.

``main()`` only parses arguments and calls one ``run_*`` function per command. Bad input ends with one line
``lunglesionai: error: …`` on stderr and exit status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__

__all__ = ["main", "build_parser", "run_analyze", "run_demo", "run_bench", "run_evaluate_phantom", "EXIT_BAD_INPUT"]

logger = logging.getLogger("lunglesionai")

EXIT_BAD_INPUT = 2


def run_analyze(args: argparse.Namespace) -> int:
    """``lunglesionai analyze INPUT -o OUT``: load a CT, run the pipeline, write the result files atomically."""
    from .export import write_outputs
    from .io import load_volume
    from .pipeline import PipelineConfig, analyze_volume
    from .progress import progress_reporter

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: output folder exists (use --overwrite to replace it)")
    config = PipelineConfig(detector=args.detector, min_score=args.min_score, fpr=not args.no_fpr,
                            grade=not args.no_grading, device=args.device, uld=args.uld)
    volume = load_volume(args.input, series_uid=args.series_uid)
    bar, update = progress_reporter(args.progress)
    with bar:
        report = analyze_volume(volume, config, progress=update)
    paths = write_outputs(report, out, overwrite=args.overwrite, volume=volume)
    _print_findings(report)
    print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``lunglesionai demo -o OUT``: analyse a phantom and print sensitivity and false positives."""
    from .demo import run_phantom_demo

    result = run_phantom_demo(
        Path(args.output), seed=args.seed, preset=args.preset, overwrite=args.overwrite, progress=args.progress
    )
    print(result.summary())
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """``lunglesionai bench``: per-stage timings and peak memory on a 512×512×300 phantom."""
    from .bench import BenchConfig, format_benchmark, run_benchmark

    config = BenchConfig(shape_zyx=tuple(args.shape), spacing_mm=tuple(args.spacing), repeats=args.repeats)
    result = run_benchmark(config)
    print(format_benchmark(result))
    if args.json:
        _write_json_atomic(Path(args.json), result)
    return 0


def run_evaluate_phantom(args: argparse.Namespace) -> int:
    """``lunglesionai evaluate phantom``: sensitivity / FPs per scan on phantoms at several operating points."""
    from .phantom_evaluation import PhantomEvaluationConfig, evaluate_phantoms, format_phantom_metrics

    config = PhantomEvaluationConfig(seeds=tuple(args.seeds), preset=args.preset, thresholds=tuple(args.thresholds))
    metrics = evaluate_phantoms(config)
    print(format_phantom_metrics(metrics))
    if args.out:
        _write_json_atomic(Path(args.out), metrics)
    return 0


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def _print_findings(report) -> None:
    nodules = report.nodules()
    print(f"{len(nodules)} nodule finding(s)")
    for f in nodules:
        x, y, z = f.center_lps_mm
        print(f"  {f.id}: LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm, {f.summary()}")
    lesions = report.lesions()
    if lesions:
        print(f"{len(lesions)} other lesion finding(s) (universal lesion detection)")


def _add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=["bar", "lines", "none"],
        default="bar",
        help="progress on stderr as a bar (default), as 'LUNGLESIONAI_PROGRESS {json}' lines on stdout for a "
        "parent process, or none",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_const", const="none", help="same as --progress none"
    )


def add_detection_arguments(parser: argparse.ArgumentParser, min_score_default: Optional[float] = None) -> None:
    """``--detector``, ``--no-fpr``, ``--device`` and ``--min-score`` (shared by ``analyze`` and
    ``evaluate detection``)."""
    from .pipeline import DETECTOR_NAMES, PipelineConfig

    parser.add_argument("--detector", default=PipelineConfig.detector, choices=DETECTOR_NAMES,
                        help="nodule candidate detector: learned (the RetinaNet; needs models/detector), classical "
                        "(the blob detector) or combined (both); the FP-reduction classifier re-scores them "
                        "(default %(default)s)")
    parser.add_argument("--no-fpr", action="store_true", help="skip the false-positive reduction classifier")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the learned detector runs (default auto: CUDA when available)")
    parser.add_argument(
        "--min-score", type=float, default=min_score_default,
        help="operating point: drop candidates whose score is below this (0..1; default: the detector's "
        "documented operating point, see README)" if min_score_default is None else
        "operating point (0..1; default %(default)s: every candidate, as FROC needs)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    from .composites import add_make_composites_parser
    from .detection_evaluation import add_evaluate_detection_parser
    from .detector_training import add_train_detector_parser
    from .fpr_training import add_train_fpr_parser
    from .grader_training import add_train_grader_parser
    from .lidc_evaluation import add_evaluate_lidc_parser
    from .uld_evaluation import add_evaluate_uld_parser
    from .uld_training import add_train_uld_parser

    parser = argparse.ArgumentParser(prog="lunglesionai", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lunglesionai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage (INFO) on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="analyse a chest CT (DICOM folder, NIfTI, NRRD, MHA/MHD, DICOM file)")
    p.add_argument("input", help="CT file or DICOM series folder")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--series-uid", help="SeriesInstanceUID to use when the DICOM folder holds several series")
    add_detection_arguments(p)
    p.add_argument("--no-grading", action="store_true", help="skip the DenseSharp grader (classical masks only)")
    p.add_argument("--uld", action="store_true", help="also run universal lesion detection (other lesions anywhere "
                   "in the scan; experimental, see models/uld/uld.card.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_progress_arguments(p)
    p.set_defaults(func=run_analyze)

    p = sub.add_parser("demo", help="make the procedural chest-CT phantom, analyse it, score against its truth")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.add_argument("--preset", choices=["clinical", "small"], default="clinical", help="phantom size")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_progress_arguments(p)
    p.set_defaults(func=run_demo)

    p = sub.add_parser("bench", help="per-stage seconds and peak memory on a clinical-size phantom")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--repeats", type=int, default=3, help="runs; medians are reported (default 3)")
    p.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.0], metavar=("X", "Y", "Z"))
    p.set_defaults(func=run_bench)

    evaluate = sub.add_parser("evaluate", help="measure the pipeline against ground truth").add_subparsers(
        dest="dataset", required=True
    )
    p = evaluate.add_parser("phantom", help="detection sensitivity and FPs/scan on procedural phantoms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="phantom seeds (default 0 1 2 3)")
    p.add_argument("--preset", choices=["clinical", "small"], default="clinical", help="phantom size")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.45, 0.5, 0.55, 0.6],
                   help="detection-score operating points to report")
    p.add_argument("--out", help="write the metrics as JSON to this file")
    p.set_defaults(func=run_evaluate_phantom)
    add_evaluate_detection_parser(evaluate)
    add_evaluate_lidc_parser(evaluate)
    add_evaluate_uld_parser(evaluate)

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="model", required=True)
    add_train_grader_parser(train)
    add_train_detector_parser(train)
    add_train_fpr_parser(train)
    add_train_uld_parser(train)
    add_make_composites_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``lunglesionai`` console script; returns the exit status."""
    from .io import CTInputError
    from .model_store import ModelFileError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (CTInputError, ModelFileError, FileExistsError, FileNotFoundError, NotADirectoryError,
            ValueError) as error:
        print(f"lunglesionai: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
