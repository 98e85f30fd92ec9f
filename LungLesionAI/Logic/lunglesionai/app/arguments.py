"""Argument groups shared by several sub-commands (``analyze``, ``demo``, ``evaluate detection``).

Imports nothing heavy: the choices come from :mod:`lunglesionai.core.vocabulary`.
"""

from __future__ import annotations

import argparse
from typing import Optional

from lunglesionai.core.vocabulary import DEFAULT_DETECTOR, DETECTOR_NAMES, DEVICES

__all__ = ["add_detection_arguments", "add_progress_arguments", "parse_host"]


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
