"""Prior/current comparison on the command line: ``analyze CURRENT --prior PRIOR`` and ``evaluate followup``.

``--prior PRIOR`` is an earlier CT of the same patient (any input ``analyze`` reads), or an earlier ``analyze``
output folder: its ``report.json`` names the CT (``input.path``), which must still be readable, and its findings
(with a reader's review decisions and Lung-RADS categories) are reused instead of analysing the prior again. The
interval is ``--interval-days`` or the days between the two StudyDate tags (DICOM inputs, or the prior report's
``input.description.study_date``). Every problem with these (no interval, a prior that cannot be read, a report that
is not one) is refused before the current CT is analysed (one line, exit 2, nothing written).

The comparison itself is :func:`lunglesionai.clinical.followup.compare_scans` (lung registration, matching, growth,
VDT); its Lung-RADS facts go to :func:`lunglesionai.clinical.read.apply_clinical_read`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["REPORT_NAME", "PriorScan", "add_evaluate_followup_parser", "add_prior_arguments", "compare_to_prior",
           "compare_with_prior", "resolve_prior", "run_evaluate_followup"]

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"
"""The file of an output folder that makes it a usable ``--prior``."""


@dataclass(frozen=True)
class PriorScan:
    """The prior scan of ``analyze --prior``, read and checked.

    Args:
        path: ``--prior`` as given.
        source: "ct" or "output folder".
        volume: the prior CT (:class:`lunglesionai.core.volume.Volume`).
        report: the prior output folder's report (None for a CT: it is analysed).
        interval_days: days from the prior to the current scan.
        interval_source: "option" (``--interval-days``) or "study dates".
        study_date: the prior's StudyDate (YYYY-MM-DD) when known.
    """

    path: str
    source: str
    volume: Any
    report: Any
    interval_days: float
    interval_source: str
    study_date: Optional[str]


def add_prior_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--prior PRIOR`` and ``--interval-days D`` to the ``analyze`` parser."""
    group = parser.add_argument_group("prior scan (follow-up: new, growing, stable, shrinking, resolved; VDT)")
    group.add_argument("--prior", metavar="PRIOR", help="an earlier CT of the same patient, or an earlier output "
                       "folder of analyze (its report.json names the CT; its findings are reused)")
    group.add_argument("--interval-days", type=float, metavar="D", help="days between the prior and this scan "
                       "(default: from the StudyDate of both)")


def resolve_prior(args: argparse.Namespace) -> Optional[PriorScan]:
    """Read and check ``--prior`` and the interval, before the current CT is analysed; None without ``--prior``.

    Raises:
        ValueError: ``--interval-days`` without ``--prior`` or not a number >= 0; a report.json that is not a
            lunglesionai report or names a CT that cannot be found; no interval (neither ``--interval-days`` nor a
            StudyDate on both scans); the prior CT's own read errors (:func:`lunglesionai.io.ct_files.load_volume`).
        FileNotFoundError: ``--prior`` does not exist.
    """
    days = args.interval_days
    if days is not None and not (math.isfinite(days) and days >= 0):
        raise ValueError(f"--interval-days must be a number of days >= 0, got {days}")
    if args.prior is None:
        if days is not None:
            raise ValueError("--interval-days needs --prior")
        return None
    from lunglesionai.clinical.followup import interval_days_from_study_dates
    from lunglesionai.io.ct_files import load_volume

    given = Path(args.prior)
    if not given.exists():
        raise FileNotFoundError(f"{given}: prior scan not found")
    report = _read_prior_report(given / REPORT_NAME) if (given / REPORT_NAME).is_file() else None
    ct = report.input.path if report is not None else str(given)
    prior_description = report.input.description if report is not None else _dicom_description(ct, None)
    current_description = _dicom_description(args.input, args.series_uid)
    interval_source = "option"
    if days is None:
        interval_source = "study dates"
        try:
            days = interval_days_from_study_dates(prior_description, current_description)
        except ValueError as error:
            raise ValueError(f"{args.input}: {error}; give --interval-days") from error
    if days is None:
        sides = (("the prior", prior_description), ("this scan", current_description))
        missing = " and ".join(name for name, d in sides if not d.get("study_date"))
        raise ValueError(f"{args.input}: no interval to the prior scan {given}: no StudyDate on {missing}; give "
                         "--interval-days D")
    volume = load_volume(ct, max_memory_gb=args.max_memory_gb)
    return PriorScan(str(given), "ct" if report is None else "output folder", volume, report, float(days),
                     interval_source, prior_description.get("study_date"))


def compare_to_prior(prior: PriorScan, volume, report, pipeline_config) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Analyse the prior CT (unless its report was given), register, match and describe each change.

    Args:
        prior: what :func:`resolve_prior` returned.
        volume: the current CT; report: its analysis.
        pipeline_config: the :class:`lunglesionai.pipeline.PipelineConfig` of the current analysis (used again for
            a prior CT).

    Returns:
        (report with ``followup`` per nodule and mass and ``exam["resolved"]``/``exam["prior"]``, the Lung-RADS
        ``follow_up`` facts for :func:`lunglesionai.clinical.read.apply_clinical_read`).
    """
    report, facts, _prior_report = compare_with_prior(prior, volume, report, pipeline_config)
    return report, facts


def compare_with_prior(prior: PriorScan, volume, report, pipeline_config) -> tuple[Any, dict[str, dict[str, Any]],
                                                                                 Any]:
    """:func:`compare_to_prior`, also returning the prior's report (its findings, with masks when the prior CT was
    analysed here), which ``report.html`` outlines on the prior thumbnails
    (``write_outputs(prior_volume=prior.volume, prior_findings=prior_report.findings)``).

    Returns:
        (current report with the follow-up, Lung-RADS follow-up facts, prior report).
    """
    from lunglesionai.clinical.followup import compare_scans, with_followup

    prior_report = prior.report
    if prior_report is None:
        from lunglesionai.pipeline import analyze_volume

        logger.info("analysing the prior scan %s", prior.path)
        prior_report = analyze_volume(prior.volume, pipeline_config)
    comparison = compare_scans(prior.volume, prior_report, volume, report, prior.interval_days)
    logger.info("registration %.1f s (%s); %d resolved", comparison.registration.get("seconds", float("nan")),
                ", ".join(comparison.registration.get("stages", [])), len(comparison.resolved))
    info = {"path": str(Path(prior.path).resolve()), "source": prior.source, "study_date": prior.study_date,
            "interval_source": prior.interval_source}
    return with_followup(report, comparison, prior_info=info), comparison.lung_rads_follow_up, prior_report


def add_evaluate_followup_parser(evaluate_subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate followup`` on what ``add_subparsers()`` returned for ``lunglesionai evaluate``.

    Returns:
        The new sub-parser.
    """
    from lunglesionai.app.arguments import add_detection_arguments

    p = evaluate_subparsers.add_parser(
        "followup", help="prior/current pairs: nodules detected in both scans, match and status accuracy, VDT error")
    p.add_argument("--pairs", required=True, metavar="DIR", help="folder of <case>/prior.nii.gz, current.nii.gz, "
                   "truth.json (format: lunglesionai.evaluation.followup_protocol)")
    p.add_argument("--out", required=True, help="write the metrics as JSON to this file")
    p.add_argument("--no-grading", action="store_true", help="skip the DenseSharp grader (classical masks only)")
    add_detection_arguments(p)
    p.set_defaults(func=run_evaluate_followup)
    return p


def run_evaluate_followup(args: argparse.Namespace) -> int:
    """``lunglesionai evaluate followup``: analyse and compare every pair, print a summary, write the JSON; 0.

    Raises:
        FileNotFoundError, ValueError: the errors of
            :func:`lunglesionai.evaluation.followup_protocol.evaluate_followup`.
    """
    from lunglesionai.core.findings import to_jsonable
    from lunglesionai.core.output_folder import check_output_file, write_json_atomic
    from lunglesionai.evaluation.followup_protocol import evaluate_followup, format_followup_metrics
    from lunglesionai.pipeline import PipelineConfig

    out = check_output_file(args.out)
    config = PipelineConfig(detector=args.detector, min_score=args.min_score, fpr=not args.no_fpr,
                            grade=not args.no_grading, device=args.device, uld=False)
    metrics = evaluate_followup(args.pairs, pipeline_config=config)
    print(format_followup_metrics(metrics))
    write_json_atomic(out, to_jsonable(metrics, nan_as_none=True), trailing_newline=False)
    print(f"wrote {out}")
    return 0


def _read_prior_report(path: Path):
    """The Report of an earlier output folder, checked; its CT must still exist."""
    import jsonschema

    from lunglesionai.core.findings import Report

    try:
        report = Report.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, jsonschema.ValidationError) as error:
        reason = error.message if isinstance(error, jsonschema.ValidationError) else error
        raise ValueError(f"{path}: not a lunglesionai report ({reason})") from error
    if not Path(report.input.path).exists():
        raise ValueError(f"{path}: the CT it names, {report.input.path}, cannot be found (moved or deleted); give "
                         "the prior CT itself as --prior")
    return report


def _dicom_description(path: str, series_uid: Optional[str]) -> dict[str, str]:
    """The DICOM header description of a DICOM folder or file ({} for other inputs)."""
    from pydicom.misc import is_dicom

    from lunglesionai.io.dicom_description import describe_dicom_input

    p = Path(path)
    if not (p.is_dir() or (p.is_file() and is_dicom(p))):
        return {}
    return describe_dicom_input(p, series_uid=series_uid)
