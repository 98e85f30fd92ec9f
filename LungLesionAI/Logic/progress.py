"""Progress reporting for the command line: a tqdm bar on stderr driven by the pipeline's callback."""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["tqdm_progress"]


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

    bar = tqdm(total=100, disable=not enabled, file=sys.stderr, unit="%", bar_format="{desc:<13}{percentage:3.0f}%|{bar}| {elapsed}")

    def update(stage: str, fraction: float) -> None:
        bar.set_description_str(stage)
        bar.update(max(0, round(100 * fraction) - bar.n))

    return bar, update
