"""Rounding of nodule sizes the way the guidelines read them: half up, on the decimal value a reader sees.

Lung-RADS v2022 reports the mean diameter "to one decimal point" and compares that rounded value with its size
thresholds (a 5.96 mm nodule is 6.0 mm: category 3 at baseline, not 2). The Fleischner Society rounds to the
nearest whole millimetre (Bankier et al., "Recommendations for measuring pulmonary nodules at CT: a statement from
the Fleischner Society", Radiology 2017;285(2):584-600, doi:10.1148/radiol.2017162894), so 5.5 mm is 6 mm.
Python's ``round`` rounds half to even (``round(6.5) == 6``) and works on the binary float (``round(2.675, 2) ==
2.67``); neither is what a reader does with a ruler, hence this module.

Sources:
    Lung-RADS v2022 (ACR, November 2022), "Nodule size" note; Bankier et al. 2017 (above). Half-up on ties is
    the schoolbook rule both documents assume; neither states a tie rule explicitly.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["decimal_half_up", "round_half_up"]


def round_half_up(value: float, decimals: int = 0) -> float:
    """``value`` rounded to ``decimals`` places, ties away from zero, on its shortest decimal representation.

    Args:
        value: a length in mm (any finite float).
        decimals: number of decimal places (0: whole mm, 1: 0.1 mm); 0 or more.

    Returns:
        The rounded value as a float (e.g. 5.95 → 6.0 with ``decimals=1``; 5.5 → 6.0 and 6.5 → 7.0 with 0).

    Raises:
        ValueError: ``value`` is not finite, or ``decimals`` is negative.

    Example:
        >>> round_half_up(5.95, 1), round_half_up(6.5), round_half_up(5.49)
        (6.0, 7.0, 5.0)
    """
    return float(decimal_half_up(value, decimals))


def decimal_half_up(value: float, decimals: int = 0) -> Decimal:
    """``value`` rounded half up to ``decimals`` places on its shortest decimal representation, as a
    :class:`decimal.Decimal` that keeps its trailing zeros (``f"{decimal_half_up(5.95, 1):.1f}" == "6.0"``): the one
    rounding rule behind :func:`round_half_up` and the fixed-decimal text of ``findings.csv`` and report.html.

    Raises:
        ValueError: ``value`` is not finite, or ``decimals`` is negative.
    """
    if decimals < 0:
        raise ValueError(f"decimals must be 0 or more, got {decimals}")
    if not math.isfinite(float(value)):
        raise ValueError(f"cannot round a non-finite number: {value!r}")
    quantum = Decimal(1).scaleb(-decimals)
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP)
