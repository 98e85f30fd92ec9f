"""Progress reporting for the command line, driven by the pipeline's ``progress(stage, fraction)`` callback.

Two forms: a tqdm bar on stderr for people, and machine-readable lines for a parent process (the Slicer module
runs the CLI in a background process and reads them):

    LUNGLESIONAI_PROGRESS {"stage": "detection", "fraction": 0.15}
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Callable, TextIO

__all__ = ["PROGRESS_PREFIX", "tqdm_progress", "line_progress", "parse_progress_line", "progress_reporter"]

#: Start of each machine-readable progress line.
PROGRESS_PREFIX = "LUNGLESIONAI_PROGRESS "


def tqdm_progress(enabled: bool = True) -> tuple[object, Callable[[str, float], None]]:
    """A tqdm bar (0–100 %) and the ``progress(stage, fraction)`` callback that drives it.

    Use the bar as a context manager around the analysis; ``enabled=False`` gives a silent bar (tqdm's
    ``disable``), so batch jobs can turn progress off.

    Example:
        >>> bar, update = tqdm_progress(enabled=False)
        >>> with bar:
        ...     update("detection", 0.5)
    """
    from tqdm import tqdm

    bar = tqdm(
        total=100,
        disable=not enabled,
        file=sys.stderr,
        unit="%",
        bar_format="{desc:<13}{percentage:3.0f}%|{bar}| {elapsed}",
    )

    def update(stage: str, fraction: float) -> None:
        bar.set_description_str(stage)
        bar.update(max(0, round(100 * fraction) - bar.n))

    return bar, update


def line_progress(stream: TextIO | None = None) -> Callable[[str, float], None]:
    """A callback writing one flushed ``LUNGLESIONAI_PROGRESS {json}`` line per call to ``stream`` (stdout)."""

    def update(stage: str, fraction: float) -> None:
        out = stream or sys.stdout
        out.write(PROGRESS_PREFIX + json.dumps({"stage": stage, "fraction": round(float(fraction), 4)}) + "\n")
        out.flush()

    return update


def parse_progress_line(line: str) -> tuple[str, float] | None:
    """``(stage, fraction)`` from a line written by :func:`line_progress`, or None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        data = json.loads(line[len(PROGRESS_PREFIX):])
        return str(data["stage"]), float(data["fraction"])
    except (ValueError, KeyError, TypeError):
        return None


def progress_reporter(mode: str) -> tuple[contextlib.AbstractContextManager, Callable[[str, float], None]]:
    """Context manager and callback for a CLI ``--progress`` mode: "bar" (tqdm), "lines" (machine) or "none".

    Raises:
        ValueError: unknown mode.
    """
    if mode == "lines":
        return contextlib.nullcontext(), line_progress()
    if mode in ("bar", "none"):
        return tqdm_progress(enabled=mode == "bar")
    raise ValueError(f"unknown progress mode {mode!r}; choose bar, lines or none")
