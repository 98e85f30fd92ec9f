"""False positives on real scans (lunglesionai.evaluation.false_positives): the unmarked rule, scan discovery,
operating points from one run at min_score 0, contact sheets; the pipeline is replaced by a fake with known
findings so that every count below is worked out by hand."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicom_fixtures import PIXEL_SPACING, write_series
from lunglesionai.core.findings import Finding, InputInfo, Report
from lunglesionai.core.volume import Volume
from lunglesionai.datasets.lidc_xml import read_lidc_scan
from lunglesionai.evaluation import false_positives as fp
from lunglesionai.io.ct_files import save_volume
from lunglesionai.pipeline import PipelineConfig

ROW_MM, COL_MM = PIXEL_SPACING
XY = (-20.0, 30.0)
SQUARE = "".join(f"<edgeMap><xCoord>{c}</xCoord><yCoord>{r}</yCoord></edgeMap>"
                 for c, r in ((10, 10), (20, 10), (20, 20), (10, 20)))
XML = f"""<?xml version="1.0"?>
<LidcReadMessage xmlns="http://www.nih.gov"><ResponseHeader><SeriesInstanceUid>{{uid}}</SeriesInstanceUid>
</ResponseHeader><readingSession><unblindedReadNodule><noduleID>A</noduleID><characteristics><malignancy>3</malignancy>
</characteristics>{''.join(f'<roi><imageZposition>{z}</imageZposition><imageSOP_UID>x</imageSOP_UID><inclusion>TRUE'
                           f'</inclusion>{SQUARE}</roi>' for z in (8.0, 10.0, 12.0))}</unblindedReadNodule>
<nonNodule><nonNoduleID>n</nonNoduleID><imageZposition>20.0</imageZposition><imageSOP_UID>y</imageSOP_UID>
<locus><xCoord>30</xCoord><yCoord>32</yCoord></locus></nonNodule></readingSession></LidcReadMessage>"""
NON_NODULE_LPS = np.array([XY[0] + 30 * COL_MM, XY[1] + 32 * ROW_MM, 20.0])
NODULE_LPS = np.array([XY[0] + 15 * COL_MM, XY[1] + 15 * ROW_MM, 10.0])  # centre of the filled square stack


@pytest.fixture
def images(tmp_path) -> Path:
    """scan1/: a DICOM series with its LIDC XML (one nodule, one non-nodule); ct.nrrd: a CT file; notes.txt."""
    root = tmp_path / "images"
    uid = write_series(root / "scan1", [2.0 * n for n in range(12)], xy=XY, shape=(40, 40))
    (root / "scan1" / "1.xml").write_text(XML.replace("{uid}", uid), encoding="utf-8")
    hu = np.random.default_rng(0).normal(-850, 40, (12, 20, 20)).astype(np.int16)  # lung
    hu[:, :3] = 40  # chest wall
    save_volume(Volume(hu, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0)), root / "ct.nrrd")
    (root / "notes.txt").write_text("not a scan")
    return root


def fake_findings(source: str) -> list[tuple[np.ndarray, float, str]]:
    """(centre LPS mm, score, kind) per finding, best first; a mass counts at every operating point."""
    if source.endswith("scan1"):
        return [(NODULE_LPS, 0.9, "nodule"), (NODULE_LPS + [40.0, 0, 0], 0.7, "nodule"),
                (NON_NODULE_LPS + [4.0, 0, 0], 0.6, "nodule"), (NODULE_LPS - [40.0, 0, 0], 0.2, "nodule")]
    return [(np.array([10.0, 10.0, 10.0]), 0.8, "nodule"), (np.array([5.0, 5.0, 5.0]), 0.4, "nodule"),
            (np.array([12.0, 8.0, 12.0]), 0.1, "mass")]


@pytest.fixture
def fake_pipeline(monkeypatch):
    calls = []

    def analyze(volume, config, progress=None):
        calls.append((volume.source, config))
        findings = [Finding(id=f"{kind[0].upper()}{n}", kind=kind, center_lps_mm=tuple(c),
                            bbox_lps_mm=(tuple(c - 2), tuple(c + 2)), detection_score=s, diameter_mm=4.0)
                    for n, (c, s, kind) in enumerate(fake_findings(volume.source), start=1)]
        return Report(input=InputInfo.from_volume(volume), findings=findings)

    monkeypatch.setattr("lunglesionai.pipeline.analyze_volume", analyze)
    return calls


def test_unmarked_rule_is_luna16s_strict_radius(images):
    scan = read_lidc_scan(images / "scan1")
    nodule = scan.clusters[0]
    radius = nodule.diameter_mm / 2
    centres = [nodule.center_lps_mm, nodule.center_lps_mm + [radius - 0.01, 0, 0],
               nodule.center_lps_mm + [radius, 0, 0], NON_NODULE_LPS + [0, 4.99, 0], NON_NODULE_LPS + [0, 5.0, 0]]
    assert fp.unmarked_findings(centres, scan).tolist() == [False, False, True, False, True]
    assert fp.unmarked_findings(np.zeros((0, 3)), scan).shape == (0,)
    np.testing.assert_allclose(nodule.center_lps_mm, NODULE_LPS, atol=1e-6)


def test_scan_sources(images, tmp_path):
    with_xml = fp.find_scan_sources(images, lidc_xml=True)
    assert [(s.name, s.lidc is not None) for s in with_xml] == [("ct.nrrd", False), ("scan1", True)]
    assert all(s.lidc is None for s in fp.find_scan_sources(images))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no CT file"):
        fp.find_scan_sources(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        fp.find_scan_sources(images / "ct.nrrd")


def test_operating_points_from_one_run_at_min_score_zero(images, fake_pipeline, tmp_path):
    sheets = tmp_path / "sheets"
    m = fp.evaluate_false_positives(images, lidc_xml=True, pipeline_config=PipelineConfig(min_score=0.5),
                                    thresholds=(0.3, 0.65), contact_sheet=sheets)
    assert len(fake_pipeline) == 2 and all(c.min_score == 0.0 and not c.uld for _, c in fake_pipeline)
    assert m["min_score"] == 0.5 and m["n_scans"] == 2
    # scan1 at >= 0.5: 0.9 (on the nodule), 0.7 (nowhere), 0.6 (4 mm from the non-nodule): 3 findings, 1 unmarked
    # ct.nrrd at >= 0.5: the 0.8 nodule and the mass (reported at any operating point)
    assert [(s["scan"], s["findings"], s["unmarked"]) for s in m["per_scan"]] == [("ct.nrrd", 2, None),
                                                                                    ("scan1", 3, 1)]
    assert m["findings_per_scan"] == 2.5 and m["unmarked_per_scan"] == 1.0
    assert m["per_scan"][1]["reader_nodules"] == 1 and m["per_scan"][1]["reader_nodules_found"] == 1
    table = {p["min_score"]: [(s["findings"], s["unmarked"]) for s in p["per_scan"]] for p in m["operating_points"]}
    assert table == {0.3: [(3, None), (3, 1)], 0.5: [(2, None), (3, 1)], 0.65: [(2, None), (2, 1)]}
    assert len(m["findings"]) == 7 and sum(r["unmarked"] is True for r in m["findings"]) == 2
    pictures = {p.name: Image.open(p) for p in sheets.iterdir()}
    assert sorted(pictures) == ["ct.nrrd.png", "scan1.png"]
    sheet = pictures["scan1.png"].convert("RGB")
    assert sheet.getpixel((1, 41)) == fp._FRAME[True] and sheet.getpixel((fp._TILE_PX + 9, 41)) == fp._FRAME[False]
    assert pictures["ct.nrrd.png"].convert("RGB").getpixel((1, 41)) == fp._FRAME[None]


def test_bad_requests_are_refused_before_any_analysis(images, fake_pipeline, tmp_path):
    with pytest.raises(ValueError, match="one scan"):
        fp.evaluate_false_positives(images, contact_sheet=tmp_path / "sheet.png")
    with pytest.raises(ValueError, match="thresholds"):
        fp.evaluate_false_positives(images, thresholds=(1.5,))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError):
        fp.evaluate_false_positives(images, contact_sheet=tmp_path / "a_file")
    assert fake_pipeline == []


def test_default_min_score_follows_the_pipeline_rule(tmp_path):
    assert fp.default_min_score(PipelineConfig(min_score=0.42)) == 0.42
    missing = str(tmp_path / "no_model")
    assert fp.default_min_score(PipelineConfig(detector="classical", fpr_model_dir=missing)) == 0.0
    assert fp.default_min_score(PipelineConfig(detector="classical", fpr=False)) == 0.0


def test_contact_sheet_without_findings_is_a_picture():
    volume = Volume(np.full((4, 8, 8), -1000, np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    picture = Image.open(io.BytesIO(fp.contact_sheet_png(volume, [], "empty")))
    assert picture.format == "PNG" and picture.width >= 480


def test_uld_lesions_are_counted_apart_per_scan_and_per_cm(images, monkeypatch, tmp_path):
    calls = []

    def analyze(volume, config, progress=None):
        calls.append(config)
        lesions = [(np.array([30.0, 30.0, 10.0]), 0.9), (np.array([60.0, 30.0, 10.0]), 0.6)] if config.uld else []
        findings = [Finding(id="N1", kind="nodule", center_lps_mm=(10.0, 10.0, 10.0),
                            bbox_lps_mm=((8.0, 8.0, 8.0), (12.0, 12.0, 12.0)), detection_score=0.8, diameter_mm=4.0)]
        findings += [Finding(id=f"L{n}", kind="lesion", center_lps_mm=tuple(c), bbox_lps_mm=(tuple(c - 5), tuple(c + 5)),
                             detection_score=s, extra={"lesion_type": "liver", "box_size_mm": [10.0, 10.0, 10.0]})
                     for n, (c, s) in enumerate(lesions, start=1)]
        return Report(input=InputInfo.from_volume(volume), findings=findings)

    monkeypatch.setattr("lunglesionai.pipeline.analyze_volume", analyze)
    config = PipelineConfig(min_score=0.5, uld_min_score=0.7)
    m = fp.evaluate_false_positives(images, pipeline_config=config, thresholds=(0.5,), uld=True,
                                    uld_thresholds=(0.55, 0.95), contact_sheet=tmp_path / "sheets")
    assert all(c.uld and c.uld_min_score == 0.55 for c in calls)  # one run at the lowest ULD threshold
    assert [s["findings"] for s in m["per_scan"]] == [1, 1]  # lesions are not nodule findings
    uld = m["uld"]
    assert uld["min_score"] == 0.7 and [s["lesions"] for s in uld["per_scan"]] == [1, 1]
    assert uld["per_scan"][0]["z_extent_cm"] == pytest.approx(2.4)  # ct.nrrd: 12 slices of 2 mm
    assert uld["per_scan"][0]["lesions_per_cm"] == pytest.approx(1 / 2.4, abs=1e-3)
    table = {p["min_score"]: [s["lesions"] for s in p["per_scan"]] for p in uld["operating_points"]}
    assert table == {0.55: [2, 2], 0.7: [1, 1], 0.95: [0, 0]}
    assert len(uld["lesions"]) == 4 and uld["lesions"][0]["lesion_type"] == "liver"
    assert "uld" not in fp.evaluate_false_positives(images, pipeline_config=config, thresholds=(0.5,))
    with pytest.raises(ValueError, match="ULD thresholds"):
        fp.evaluate_false_positives(images, pipeline_config=config, uld=True, uld_thresholds=(1.5,))


def test_contact_sheet_shows_lesions_in_a_soft_tissue_window_with_their_box():
    hu = np.full((20, 80, 80), 40, np.int16)  # soft tissue: white in the lung window, grey in W 400 / L 40
    hu[8:12, 30:50, 30:50] = 140
    volume = Volume(hu, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    lesion = Finding(id="L1", kind="lesion", center_lps_mm=(39.5, 39.5, 19.0),
                     bbox_lps_mm=((29.5, 29.5, 15.0), (49.5, 49.5, 23.0)), detection_score=0.8)
    nodule = Finding(id="N1", kind="nodule", center_lps_mm=(39.5, 39.5, 19.0),
                     bbox_lps_mm=((35.0, 35.0, 15.0), (44.0, 44.0, 23.0)), detection_score=0.8)
    tiles = {}
    for finding in (lesion, nodule):
        sheet = Image.open(io.BytesIO(fp.contact_sheet_png(volume, [(finding, None)], "t"))).convert("L")
        tiles[finding.kind] = np.asarray(sheet)[44:44 + fp._TILE_PX, 4:4 + fp._TILE_PX]
    assert tiles["nodule"].min() > 200  # 40 HU is white in the lung window
    assert 100 < np.median(tiles["lesion"]) < 200 and tiles["lesion"].max() > np.median(tiles["lesion"]) + 40
