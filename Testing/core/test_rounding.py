"""Tests of lunglesionai.core.rounding: half-up rounding of sizes on their decimal value."""

import math

import pytest

from lunglesionai.core.rounding import round_half_up


@pytest.mark.parametrize(
    "value, decimals, expected",
    [
        (5.95, 1, 6.0),  # Lung-RADS: a 5.95 mm nodule reads 6.0 mm (binary 5.95 is 5.9499999...)
        (5.94, 1, 5.9),
        (2.675, 2, 2.68),  # Python's round gives 2.67
        (5.5, 0, 6.0),  # Fleischner: 5.5 mm is 6 mm (Python's round(5.5) = 6, but round(6.5) = 6)
        (6.5, 0, 7.0),
        (8.49, 0, 8.0),
        (8.5, 0, 9.0),
        (7.0, 1, 7.0),
    ],
)
def test_ties_go_up_on_the_decimal_value(value, decimals, expected):
    assert round_half_up(value, decimals) == expected


@pytest.mark.parametrize("value, decimals", [(math.nan, 1), (math.inf, 0), (5.0, -1)])
def test_refuses_non_finite_values_and_negative_decimals(value, decimals):
    with pytest.raises(ValueError):
        round_half_up(value, decimals)
