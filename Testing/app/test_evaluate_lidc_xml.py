"""``lunglesionai evaluate detection --lidc-xml`` and ``evaluate false-positives`` end to end: on the two real LIDC
slabs with the real pipeline (counts checked for consistency, never against today's numbers), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from dicom_fixtures import write_series
from lunglesionai.app.cli import EXIT_BAD_INPUT, main
from lunglesionai.datasets.lidc_xml import read_lidc_scan
from lunglesionai.evaluation.false_positives import unmarked_findings


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def false_positives_run(tmp_path_factory, one_thread):
    """``evaluate false-positives`` on both slabs with contact sheets; operating point 0 added."""
    slabs = shared_path("lidc_slabs")
    out = tmp_path_factory.mktemp("fp")
    code = main(["evaluate", "false-positives", "--images", str(slabs), "--lidc-xml", "--out", str(out / "m.json"),
                 "--contact-sheet", str(out / "sheets"), "--thresholds", "0", "0.5", "0.9"])
    assert code == 0
    return slabs, out, json.loads((out / "m.json").read_text())


@pytest.mark.slow
def test_false_positives_on_the_real_slabs(false_positives_run):
    slabs, out, m = false_positives_run
    names = ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    assert [s["scan"] for s in m["per_scan"]] == names
    for s in m["per_scan"]:
        assert 0 <= s["unmarked"] <= s["findings"]
    assert m["findings_per_scan"] == pytest.approx(np.mean([s["findings"] for s in m["per_scan"]]))
    points = m["operating_points"]
    assert [p["min_score"] for p in points] == sorted({0.0, 0.5, 0.9, m["min_score"]})
    counts = [[s["findings"] for s in p["per_scan"]] for p in points]
    assert np.all(np.diff(np.array(counts), axis=0) <= 0), "fewer findings at a higher operating point"
    default = next(p for p in points if p["min_score"] == m["min_score"])
    assert default["per_scan"] == [{k: s[k] for k in ("scan", "findings", "unmarked")} for s in m["per_scan"]]
    for name in names:
        scan = read_lidc_scan(slabs / name)
        rows = [r for r in m["findings"] if r["scan"] == name]
        assert len(rows) == points[0]["per_scan"][names.index(name)]["findings"]
        flags = unmarked_findings([r["center_lps_mm"] for r in rows], scan) if rows else np.zeros(0, bool)
        assert [r["unmarked"] for r in rows] == flags.tolist()
    four = read_lidc_scan(slabs / names[0]).nodules(min_readers=4)[0]
    distance = [np.linalg.norm(np.subtract(r["center_lps_mm"], four.center_lps_mm)) for r in m["findings"]
                if r["scan"] == names[0]]
    assert min(distance) < four.diameter_mm / 2, "the 4-reader nodule of LIDC-IDRI-0001 is found at some score"
    sheets = sorted((out / "sheets").iterdir())
    assert [p.name for p in sheets] == [f"{n}.png" for n in names]
    assert all(Image.open(p).format == "PNG" for p in sheets)


@pytest.mark.slow
def test_detection_with_lidc_xml_on_a_real_slab(false_positives_run, tmp_path, capsys):
    slabs, _, fp_metrics = false_positives_run
    images = tmp_path / "images"
    images.mkdir()
    (images / "LIDC-IDRI-0002").symlink_to(slabs / "LIDC-IDRI-0002")
    out = tmp_path / "det.json"
    code = main(["evaluate", "detection", "--images", str(images), "--lidc-xml", "--bootstrap", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads(out.read_text())
    scan = read_lidc_scan(slabs / "LIDC-IDRI-0002")
    assert m["n_scans"] == 1 and m["n_nodules"] == len(scan.nodules(1))
    assert m["inputs"]["lidc_xml"] and m["inputs"]["min_readers"] == 1
    assert m["inputs"]["series_uids"] == {"LIDC-IDRI-0002": scan.series_uid}
    per_scan = m["per_scan"]["LIDC-IDRI-0002"]
    at_zero = fp_metrics["operating_points"][0]["per_scan"][1]
    assert at_zero["scan"] == "LIDC-IDRI-0002"
    assert per_scan["n_predictions"] == at_zero["findings"]
    # the same rule: FPs of evaluate detection (min-readers 1, every score) are the unmarked findings
    assert per_scan["n_false_positives"] == at_zero["unmarked"]


def run_refused(args: list[str], capsys) -> str:
    assert main(args) == EXIT_BAD_INPUT
    return capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    ([], "needs --annotations"),
    (["--lidc-xml", "--annotations", "a.csv"], "drop --annotations"),
    (["--lidc-xml", "--min-readers", "0"], "--min-readers must be >= 1"),
    (["--min-readers", "2"], "--min-readers needs --lidc-xml"),
])
def test_detection_option_errors(tmp_path, capsys, extra, message):
    err = run_refused(["evaluate", "detection", "--images", str(tmp_path), *extra, "--out", str(tmp_path / "m.json")],
                      capsys)
    assert message in err and not (tmp_path / "m.json").exists()


def test_detection_refuses_too_many_readers_before_the_pipeline(tmp_path, capsys):
    slabs = shared_path("lidc_slabs")
    err = run_refused(["evaluate", "detection", "--images", str(slabs), "--lidc-xml", "--min-readers", "5",
                       "--out", str(tmp_path / "m.json")], capsys)
    assert "no nodule marked by >= 5 reader(s)" in err and not (tmp_path / "m.json").exists()


@pytest.fixture
def broken_scan(tmp_path) -> Path:
    root = tmp_path / "images"
    write_series(root / "scan1", [2.0 * n for n in range(12)], shape=(20, 20))
    (root / "scan1" / "7.xml").write_text("<LidcReadMessage><readingSession>", encoding="utf-8")
    return root


@pytest.mark.parametrize("command", [["detection"], ["false-positives"]])
def test_a_malformed_xml_is_refused_naming_it(broken_scan, tmp_path, capsys, command):
    err = run_refused(["evaluate", *command, "--images", str(broken_scan), "--lidc-xml",
                       "--out", str(tmp_path / "m.json")], capsys)
    assert "7.xml" in err and "not well-formed XML" in err and not (tmp_path / "m.json").exists()


def test_false_positives_input_errors(tmp_path, capsys):
    out = tmp_path / "m.json"
    err = run_refused(["evaluate", "false-positives", "--images", str(tmp_path / "absent"), "--out", str(out)], capsys)
    assert "not a folder" in err
    slabs = shared_path("lidc_slabs")
    err = run_refused(["evaluate", "false-positives", "--images", str(slabs), "--lidc-xml", "--out", str(out),
                       "--contact-sheet", str(tmp_path / "one.png")], capsys)
    assert "holds one scan" in err
    err = run_refused(["evaluate", "false-positives", "--images", str(slabs), "--out", str(tmp_path)], capsys)
    assert "is a folder" in err
    assert not out.exists() and not (tmp_path / "one.png").exists()
