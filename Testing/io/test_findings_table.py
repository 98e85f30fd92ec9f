"""Tests of lunglesionai.io.findings_table: findings.csv columns, fixed decimals rounded half up, empty cells for
None, the 1-based axial slice number of the input grid, atomic writing and its place in write_outputs."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import replace

import pytest

from lunglesionai.core.findings import InputInfo
from lunglesionai.core.output_folder import read_manifest
from lunglesionai.io import findings_table as table
from lunglesionai.io.outputs import write_outputs
from report_fixtures import make_small_report

#: The columns the issue asks for, in its order (spelled out here, independently of the module).
EXPECTED_COLUMNS = [
    "id", "kind", "status", "lung_rads", "brock_risk", "mean_diameter_mm", "long_axis_mm", "short_axis_mm",
    "solid_component_mean_diameter_mm", "volume_mm3", "texture", "calcified", "attachment", "side", "lobe", "zone",
    "slice", "center_x_lps_mm", "center_y_lps_mm", "center_z_lps_mm", "malignancy_probability", "detection_score",
    "mask_source", "followup_status", "prior_id", "volume_change_pct", "vdt_days", "volumetry_reliable",
]
#: (k, j, i) centres of the fixture's findings N1, N2, N3, L1 (report_fixtures.make_small_report).
FIXTURE_KJI = {"N1": (5, 6, 7), "N2": (12, 15, 18), "N3": (9, 4, 20), "L1": (13, 5, 6)}


def _clinical_report():
    report = make_small_report()
    n1, n2, n3, l1 = report.findings
    n1 = replace(n1, lung_rads="4A", brock_risk=0.123456, mean_diameter_mm=5.95, long_axis_mm=6.65, short_axis_mm=5.25,
                 solid_component_mean_diameter_mm=4.05, texture="part-solid", calcified=False,
                 attachment="juxta-pleural", location={"side": "right", "lobe": None, "zone": "upper"},
                 malignancy_probability=0.5, extra={"mask_source": "classical"},
                 followup={"status": "growing", "prior_id": "N2", "prior_mean_diameter_mm": 4.0,
                           "volume_change_pct": 87.25, "vdt_days": 201.6,
                           "volumetry": {"method": "paired", "reliable": False, "reasons": ["thick"]}})
    n2 = replace(n2, calcified=True, location={"side": "left", "lobe": "LLL", "zone": "lower"},
                 extra={"mask_source": "detector box"})
    return replace(report, findings=[n1, n2, n3, l1])


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_columns_are_those_of_the_issue():
    assert list(table.FINDINGS_CSV_COLUMNS) == EXPECTED_COLUMNS
    header = table.findings_csv_text(make_small_report()).splitlines()[0]
    assert header.split(",") == EXPECTED_COLUMNS


def test_one_row_per_finding_with_fixed_decimals_and_empty_cells_for_none():
    report = _clinical_report()
    rows = _rows(table.findings_csv_text(report))
    assert [r["id"] for r in rows] == ["N1", "N2", "N3", "L1"]
    n1, n2, n3, l1 = rows
    assert n1["lung_rads"] == "4A" and n1["brock_risk"] == "0.1235"
    assert n1["mean_diameter_mm"] == "6.0"  # 5.95 rounded half up, as Lung-RADS reads it (format() gives 5.9)
    assert (n1["long_axis_mm"], n1["short_axis_mm"], n1["solid_component_mean_diameter_mm"]) == ("6.7", "5.3", "4.1")
    assert (n1["texture"], n1["calcified"], n1["attachment"]) == ("part-solid", "no", "juxta-pleural")
    assert (n1["side"], n1["lobe"], n1["zone"]) == ("right", "", "upper")
    assert (n1["malignancy_probability"], n1["mask_source"]) == ("0.5000", "classical")
    assert (n2["calcified"], n2["lobe"], n2["mask_source"]) == ("yes", "LLL", "detector box")
    assert (n1["followup_status"], n1["prior_id"], n1["volume_change_pct"], n1["vdt_days"]) == \
        ("growing", "N2", "87.3", "202")  # with a prior scan (Finding.followup)
    assert n1["volumetry_reliable"] == "no"
    assert (n2["followup_status"], n2["prior_id"], n2["vdt_days"], n2["volumetry_reliable"]) == ("", "", "", "")
    for empty in ("lung_rads", "brock_risk", "mean_diameter_mm", "calcified", "side", "malignancy_probability"):
        assert n3[empty] == "", empty  # None is an empty cell, never "0" or "None"
    assert l1["kind"] == "lesion" and l1["detection_score"] == "0.9000"
    for row, finding in zip(rows, report.findings):
        assert row["volume_mm3"] == f"{finding.volume_mm3:.1f}"
        for axis, value in zip("xyz", finding.center_lps_mm):
            assert math.isclose(float(row[f"center_{axis}_lps_mm"]), value, abs_tol=0.005)
            assert len(row[f"center_{axis}_lps_mm"].split(".")[1]) == 2


def test_slice_is_the_one_based_k_of_the_input_grid():
    report = make_small_report()  # oblique grid whose k axis points inferior
    rows = _rows(table.findings_csv_text(report))
    assert {r["id"]: int(r["slice"]) for r in rows} == {fid: kji[0] + 1 for fid, kji in FIXTURE_KJI.items()}


@pytest.mark.parametrize("direction, shape_zyx, point, expected", [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 4, 4), (1.0, 1.0, -95.0), 3),    # axial: k; z = -100 + 2.5 * 2
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 4, 4), (1.0, 1.0, -93.8), 3),    # index 2.48 rounds to 2
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 4, 4), (1.0, 1.0, -93.6), 4),    # index 2.56 rounds to 3
    ((1, 0, 0, 0, 1, 0, 0, 0, -1), (10, 4, 4), (1.0, 1.0, -105.0), 3),  # k pointing inferior
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 4, 4), (1.0, 1.0, -40.0), None),  # beyond the last slice
    ((0, 0, 1, 1, 0, 0, 0, 1, 0), (4, 4, 10), (0.0, 0.0, -95.0), 3),    # i axis along z (a sagittal-like grid)
])
def test_axial_slice_number(direction, shape_zyx, point, expected):
    info = InputInfo("ct", shape_zyx, (2.5, 2.5, 2.5), (0.0, 0.0, -100.0), direction)
    assert table.axial_slice_number(info, point) == expected


def test_axial_slice_number_refuses_bad_points():
    info = InputInfo("ct", (10, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="three finite"):
        table.axial_slice_number(info, (0.0, float("nan"), 0.0))
    with pytest.raises(ValueError, match="three finite"):
        table.axial_slice_number(info, (0.0, 0.0))


@pytest.mark.parametrize("value, decimals, expected", [
    (5.95, 1, "6.0"), (2.675, 2, "2.68"), (6.5, 0, "7"), (-1.25, 1, "-1.3"), (0.0, 4, "0.0000"), (None, 1, ""),
    (12, 2, "12.00"),
])
def test_fixed_rounds_half_up(value, decimals, expected):
    assert table.fixed(value, decimals) == expected


def test_fixed_agrees_with_the_clinical_rounding():
    from lunglesionai.core.rounding import round_half_up

    for value in (5.95, 5.949999, 7.05, 3.45, 14.95, 29.95, 0.05):
        assert float(table.fixed(value, 1)) == round_half_up(value, 1), value


def test_fixed_refuses_non_finite_and_negative_decimals():
    with pytest.raises(ValueError, match="non-finite"):
        table.fixed(float("inf"), 1)
    with pytest.raises(ValueError, match="decimals"):
        table.fixed(1.0, -1)


def test_write_findings_csv_is_atomic(tmp_path):
    report = _clinical_report()
    path = table.write_findings_csv(report, tmp_path / "findings.csv")
    assert path.read_text(encoding="utf-8") == table.findings_csv_text(report)
    bad = replace(report, findings=[replace(report.findings[0], brock_risk=float("nan"))])
    with pytest.raises(ValueError):
        table.write_findings_csv(bad, tmp_path / "findings.csv")
    assert path.read_text(encoding="utf-8") == table.findings_csv_text(report)  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.csv"]  # no temporary file left
    with pytest.raises(FileNotFoundError):
        table.write_findings_csv(report, tmp_path / "missing" / "findings.csv")


def test_write_outputs_puts_findings_csv_beside_report_json(tmp_path):
    report = _clinical_report()
    paths = write_outputs(report, tmp_path / "out")
    assert paths["findings_csv"] == (tmp_path / "out" / "findings.csv").absolute()
    assert "findings.csv" in read_manifest(tmp_path / "out") and paths["report"].parent == paths["findings_csv"].parent
    rows = _rows(paths["findings_csv"].read_text(encoding="utf-8"))
    assert [r["id"] for r in rows] == [f.id for f in report.findings]
