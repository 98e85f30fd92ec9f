"""Tests of lunglesionai.datasets.tables: CSV cell parsing shared by the table readers."""

from pathlib import Path

import pytest

from lunglesionai.datasets.lidc import LidcTableError
from lunglesionai.datasets.tables import finite_number


@pytest.mark.parametrize("text, value", [("1.5", 1.5), (" -3 ", -3.0), ("2e1", 20.0)])
def test_parses_finite_numbers(text, value):
    assert finite_number(Path("t.csv"), 1, "x", text) == value


@pytest.mark.parametrize("text, problem", [("", "not a number"), (None, "not a number"), ("abc", "not a number"),
                                           ("nan", "not finite"), ("inf", "not finite")])
def test_bad_cells_name_file_row_column(text, problem):
    with pytest.raises(LidcTableError, match=rf"t\.csv: row 7, column coordX: {problem}"):
        finite_number(Path("t.csv"), 7, "coordX", text, LidcTableError)
