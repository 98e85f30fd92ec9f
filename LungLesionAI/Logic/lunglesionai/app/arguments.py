"""Argument groups shared by several sub-commands (``analyze``, ``demo``, ``evaluate detection``).

Imports nothing heavy: the choices come from :mod:`lunglesionai.core.vocabulary`.
"""

from __future__ import annotations

import argparse
from typing import Optional

from lunglesionai.core.vocabulary import DEFAULT_DETECTOR, DETECTOR_NAMES, DEVICES

__all__ = ["add_clinical_arguments", "add_detection_arguments", "add_progress_arguments", "parse_host",
           "patient_from_arguments"]


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress bar|lines|none`` and ``--no-progress`` (``analyze`` and ``demo``)."""
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
    ``evaluate detection``); imports nothing heavy (the names come from :mod:`lunglesionai.core.vocabulary`)."""
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTOR_NAMES,
                        help="nodule candidate detector: learned (the RetinaNet; needs models/detector), classical "
                        "(the blob detector) or combined (both); the FP-reduction classifier re-scores them "
                        "(default %(default)s)")
    parser.add_argument("--no-fpr", action="store_true", help="skip the false-positive reduction classifier")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the learned detector runs (default auto: CUDA when available)")
    parser.add_argument(
        "--min-score", type=float, default=min_score_default,
        help="operating point: drop candidates whose score is below this (0..1; default: the detector's "
        "documented operating point, see README)" if min_score_default is None else
        "operating point (0..1; default %(default)s: every candidate, as FROC needs)")


def parse_host(text: str) -> tuple[str, str]:
    """``NAME=PATH`` → (name, path).

    Raises:
        argparse.ArgumentTypeError: no ``=``, an empty side, or a name that is not a plain file stem.
    """
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--host needs NAME=PATH, got {text!r}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"--host name {name!r}: use letters, digits, '-' and '_' only")
    return name, path


def add_clinical_arguments(parser: argparse.ArgumentParser) -> None:
    """``--indication`` and the patient facts of the clinical read (``analyze``): ``--age``, ``--sex``,
    ``--family-history``, ``--emphysema``, ``--immunocompromised``, ``--known-cancer`` (each flag also as
    ``--no-…``; not given = from the DICOM header where it has it, else the default that report.json lists under
    ``exam.assumed``; :mod:`lunglesionai.clinical.patient`)."""
    group = parser.add_argument_group(
        "clinical read", "decision support, not a diagnosis: Lung-RADS v2022 categories (screening), Fleischner 2017 "
        "recommendations (incidental nodules), Brock/PanCan risk (lunglesionai.clinical)")
    group.add_argument("--indication", choices=("screening", "incidental"), default="screening",
                       help="lung cancer screening CT (Lung-RADS) or a CT done for another reason (Fleischner "
                       "applies too; adults >= 35, not immunocompromised, no known cancer) (default %(default)s)")
    group.add_argument("--age", type=float, metavar="YEARS", help="patient age in years (default: DICOM "
                       "PatientAge, else 62, the Brock model's centring age)")
    group.add_argument("--sex", choices=("F", "M"), help="patient sex (default: DICOM PatientSex, else F)")
    for flag, text in (("family-history", "a first-degree relative had lung cancer (Brock)"),
                       ("emphysema", "emphysema present (default: from the CT's emphysema index)"),
                       ("immunocompromised", "immunocompromised patient (Fleischner does not apply)"),
                       ("known-cancer", "known primary cancer (Fleischner does not apply)")):
        group.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None, help=text)


def patient_from_arguments(args: argparse.Namespace):
    """The :class:`lunglesionai.clinical.patient.PatientInfo` of :func:`add_clinical_arguments`' options (None
    where not given).

    Raises:
        ValueError: an age outside 0-130 years (checked before any CT is read).
    """
    from lunglesionai.clinical.patient import PatientInfo

    return PatientInfo(age_years=args.age, sex=args.sex, family_history=args.family_history,
                       emphysema=args.emphysema, immunocompromised=args.immunocompromised,
                       known_cancer=args.known_cancer)
