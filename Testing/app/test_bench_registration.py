"""``lunglesionai bench --registration`` (issue 16): times the lung masks and the registration apart and scores the
registered nodule centres. Run here on the small phantom with a mild motion (its child-size chest fills the field
of view); the 512×512×300 figure is the README's, measured with the command."""

from __future__ import annotations

import pytest

from lunglesionai.app.bench_registration import format_registration_benchmark, run_registration_benchmark
from lunglesionai.app.cli import build_parser


@pytest.mark.slow
def test_registration_bench_on_a_small_pair(sitk_one_thread):
    result = run_registration_benchmark(repeats=1, deformation_mm=6.0, shift_mm=4.0, small_phantom=True)
    assert result["volume_shape_zyx"] == [100, 160, 160] and result["repeats"] == 1
    assert result["registration_s"] > 0 and result["lung_masks_s"] > 0
    assert result["total_s"] == pytest.approx(result["lung_masks_s"] + result["registration_s"], abs=0.01)
    assert result["stages"][0] == "rigid" and result["nodule_error_mm"]["n"] >= 2
    assert result["nodule_error_mm"]["mean"] < 2.0  # registered to within a couple of mm
    assert "registration bench" in format_registration_benchmark(result)


def test_cli_option_and_bad_repeats():
    args = build_parser(["bench"]).parse_args(["bench", "--registration", "--repeats", "2"])
    assert args.registration and args.repeats == 2
    with pytest.raises(ValueError, match="repeats"):
        run_registration_benchmark(repeats=0)
