"""Tests of lunglesionai.io.report_html (and its pictures, lunglesionai.io.report_pictures): the page parses, one row
per finding, thumbnails decode and are oriented radiologically, the 3D pictures are there or the page says why not;
write_outputs(volume=...) adds report.html. Issue 15: the study and exam summary at the top, rows linked to their
pictures and back, the slice number and zone, approximate outlines dashed and labelled with no volume or mean HU
shown, part-solid nodules with their solid part drawn inside.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from conftest import REPO_ROOT
from lunglesionai.core.findings import Finding, FindingMask, InputInfo, Report
from lunglesionai.core.volume import Volume
from lunglesionai.io import report_html
from lunglesionai.io.outputs import write_outputs
from lunglesionai.mrml.scene import segment_styles
from report_fixtures import grid_volume, make_small_report


class _Page(HTMLParser):
    """Collects the findings-table rows (id, cells) and every <img> (alt, src)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.images: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._in_body_row = False
        self._in_tbody = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.rows.append((attrs.get("id", ""), []))
        elif tag == "td" and self._in_tbody:
            self._cell = []
        elif tag == "img":
            self.images.append((attrs.get("alt", ""), attrs.get("src", "")))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _decode(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
    image.load()
    assert image.format == "PNG"
    return image.convert("RGB")


def _ct_report() -> tuple[Volume, Report]:
    report = make_small_report()
    hu = np.full(grid_volume().shape_zyx, -1000, np.int16)
    for finding in report.findings:
        if finding.mask is not None:
            finding.mask.paste_into(hu, 30)
    return grid_volume().with_array(hu), report


def _has_color(image: Image.Image, rgb01) -> bool:
    target = np.round(np.asarray(rgb01) * 255).astype(int)
    return bool(np.any(np.all(np.abs(np.asarray(image, int) - target) <= 1, axis=-1)))


def test_page_has_one_row_and_decodable_thumbnails_per_finding(tmp_path):
    volume, report = _ct_report()
    path = report_html.write_report_html(report, volume, tmp_path / "report.html")
    page = _parse(path)
    assert [row_id for row_id, _ in page.rows] == ["row-N1", "row-N2", "row-N3", "row-L1"]
    assert all(len(cells) == len(report_html._COLUMNS) for _, cells in page.rows)
    malignancy = report_html._COLUMNS.index("Malignancy")
    assert page.rows[0][1][:3] == ["N1", "nodule", "proposed"] and page.rows[0][1][malignancy] == "–"  # not invented
    styles = segment_styles(report.findings)
    by_alt = {alt: _decode(src) for alt, src in page.images}
    for finding in report.findings:
        for view in ("axial", "coronal", "sagittal"):
            image = by_alt[f"{finding.id} {view}"]
            assert max(image.size) == 160
            # The outline (in the segment colour) shows exactly where there is a mask.
            assert _has_color(image, styles[finding.id].color_rgb) == (finding.mask is not None), (finding.id, view)
    rendered = [alt for alt in by_alt if alt.endswith(" 3D")]
    if report_html.offscreen_rendering_available():
        assert sorted(rendered) == ["L1 3D", "N1 3D", "N2 3D"]  # N3 has no mask
        assert _has_color(by_alt["N1 3D"], (1.0, 1.0, 1.0))  # white background
    else:
        assert rendered == [] and "off-screen" in "".join(page.text)
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_thumbnails_are_in_radiological_orientation(tmp_path):
    """Array in RAS order (i -> right, j -> anterior): the page still shows left on the right, superior up."""
    hu = np.full((41, 41, 41), -1000, np.int16)
    volume = Volume(hu, (1.0, 1.0, 1.0), (20.0, 20.0, -20.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1), "ras-ordered")
    centre = np.array([20, 20, 20])
    k, j, i = np.mgrid[-3:4, -3:4, -3:4]
    ball = k**2 + j**2 + i**2 <= 9
    hu[17:24, 17:24, 17:24][ball] = 0
    # Markers 12 mm from the nodule: patient's left (+x: lower i here), superior (+z: higher k), anterior (-y:
    # higher j here), each a 3-voxel cube of bone.
    for dk, dj, di in ((0, 0, -12), (12, 0, 0), (0, 12, 0)):
        kk, jj, ii = centre + (dk, dj, di)
        hu[kk - 1:kk + 2, jj - 1:jj + 2, ii - 1:ii + 2] = 1000
    centre_lps = tuple(volume.kji_to_lps([centre])[0])
    finding = Finding("N1", "nodule", centre_lps, (centre_lps, centre_lps), diameter_mm=7.0,
                      mask=FindingMask((17, 17, 17), ball))
    report = Report(InputInfo.from_volume(volume), [finding])
    page = _parse(report_html.write_report_html(report, volume, tmp_path / "r.html", render_3d=False))
    images = {alt: np.asarray(_decode(src).convert("L"), float) for alt, src in page.images}

    def bright_centroid(image):
        rows, cols = np.nonzero(image > 240)
        return rows.mean() / image.shape[0], cols.mean() / image.shape[1]

    _, col = bright_centroid(images["N1 axial"])
    assert col > 0.6  # patient's left on the image's right
    row, _ = bright_centroid(images["N1 coronal"])
    assert row < 0.4  # superior at the top
    _, col = bright_centroid(images["N1 sagittal"])
    assert col < 0.4  # anterior on the left
    assert "switched off" in "".join(page.text)


def test_without_opengl_the_page_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(report_html.NO_3D_ENV, "1")
    volume, report = _ct_report()
    page = _parse(report_html.write_report_html(report, volume, tmp_path / "report.html"))
    assert not [alt for alt, _ in page.images if alt.endswith("3D")]
    assert "off-screen OpenGL rendering is not available" in "".join(page.text)
    assert len(page.images) == 3 * len(report.findings)


def test_without_volume_the_page_has_the_table_only(tmp_path):
    _, report = _ct_report()
    page = _parse(report_html.write_report_html(report, None, tmp_path / "report.html"))
    assert len(page.rows) == 4 and page.images == []
    with pytest.raises(ValueError):
        report_html.write_report_html(report, Volume(np.zeros((3, 3, 3), np.int16), (1, 1, 1), (0, 0, 0),
                                                     (1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "x.html")
    with pytest.raises(FileNotFoundError):
        report_html.write_report_html(report, None, tmp_path / "missing" / "report.html")


def test_text_is_escaped(tmp_path):
    _, report = _ct_report()
    report.input = replace(report.input, path="<script>alert(1)</script>.nrrd")
    text = (report_html.write_report_html(report, None, tmp_path / "report.html")).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_write_outputs_adds_report_html_when_given_the_volume(tmp_path):
    volume, report = _ct_report()
    paths = write_outputs(report, tmp_path / "out", volume=volume)
    assert paths["report_html"] == (tmp_path / "out" / "report.html").absolute()
    assert len(_parse(paths["report_html"]).rows) == 4
    assert "report_html" not in write_outputs(report, tmp_path / "plain")
    with pytest.raises(ValueError):
        write_outputs(report, tmp_path / "bad",
                      volume=Volume(np.zeros((4, 4, 4), np.int16), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    assert not (tmp_path / "bad").exists()


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium/Chrome installed for the headless rendering check")
def test_headless_chromium_renders_the_page(tmp_path):
    volume, report = _ct_report()
    page = report_html.write_report_html(report, volume, tmp_path / "report.html")
    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={screenshot}",
                    "--window-size=1200,1600", page.as_uri()], check=True, capture_output=True, timeout=120)
    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("L"))
    assert pixels.std() > 10  # not a blank page
    artifacts = REPO_ROOT / "build" / "test-artifacts"  # kept for a person to look at (git-ignored)
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, artifacts / "report_html.png")


# --- issue 15: the clinical read on the page ---------------------------------------------------------------------

class _Links(HTMLParser):
    """Collects every element id, every href, and the text of the exam block."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.exam_text: list[str] = []
        self._depth_in_exam = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.append(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag == "section" and (attrs.get("id") == "exam" or self._depth_in_exam):
            self._depth_in_exam += 1

    def handle_endtag(self, tag):
        if tag == "section" and self._depth_in_exam:
            self._depth_in_exam -= 1

    def handle_data(self, data):
        if self._depth_in_exam:
            self.exam_text.append(data)


def _links(path: Path) -> _Links:
    links = _Links()
    links.feed(path.read_text(encoding="utf-8"))
    links.close()
    return links


EXAM = {
    "emphysema_index_pct": 12.34, "nodule_count": 2, "lungs_fully_covered": True, "lung_rads": "4A",
    "modifiers": ["S"], "management": "3-month LDCT; PET/CT may be used", "indication": "incidental",
    "fleischner": {"applies": True, "recommendation": "CT at 3 months, then PET/CT or tissue sampling",
                   "note": "Fleischner 2017 cell: single solid > 8 mm"},
    "assumed": ["sex", "family_history"], "highest_risk_finding": "N2",
    "decision_support_note": "Decision support from automatic measurements, not a diagnosis.",
}


def _clinical_report(report: Report) -> Report:
    """The fixture's nodules with the clinical read's fields filled by hand (N2: the highest Brock risk)."""
    n1, n2, n3, l1 = report.findings
    n1 = replace(n1, lung_rads="2", brock_risk=0.004, mean_diameter_mm=5.0, long_axis_mm=5.5, short_axis_mm=4.5,
                 texture="solid", location={"side": "right", "lobe": None, "zone": "upper"},
                 extra={"mask_source": "classical"})
    n2 = replace(n2, lung_rads="4A", lung_rads_reason="solid 8 to < 15 mm at baseline", brock_risk=0.1234,
                 mean_diameter_mm=9.25, long_axis_mm=10.0, short_axis_mm=8.5, texture="solid", mean_hu=31.0,
                 volume_mm3=4321.0, location={"side": "left", "lobe": "LUL", "zone": "upper"},
                 extra={"mask_source": "detector box"})
    return replace(report, findings=[n1, n2, n3, l1], exam=dict(EXAM))


def _row_cells(page: _Page, finding_id: str) -> dict[str, str]:
    cells = dict(page.rows)[f"row-{finding_id}"]
    return dict(zip(report_html._COLUMNS, cells))


def test_exam_summary_and_study_are_at_the_top(tmp_path):
    _, report = _ct_report()
    report = _clinical_report(report)
    report.input = replace(report.input, description={
        "study_description": "CT THORAX LOW DOSE", "study_date": "2024-03-18", "series_description": "B50f 1mm"})
    path = report_html.write_report_html(report, None, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    exam = " ".join(" ".join(_links(path).exam_text).split())
    for expected in ("Lung-RADS v2022 category 4A", "modifier S", "3-month LDCT; PET/CT may be used",
                     "incidental", "CT at 3 months, then PET/CT or tissue sampling", "12.3 %", "Nodules 2",
                     "N2 (nodule): Brock risk 12.3", "sex, family history of lung cancer: defaults",
                     "not a diagnosis"):
        assert expected in exam.replace("\u00a0", " "), expected
    assert text.index('id="study"') < text.index('id="exam"') < text.index('id="findings"')
    study = text[text.index('id="study"'):text.index('id="exam"')]
    assert "CT THORAX LOW DOSE" in study and "2024-03-18" in study and "B50f 1mm" in study
    assert "Patient name" not in text  # identifiers only when the header fields are in the report


def test_patient_identifiers_only_when_in_the_report(tmp_path):
    _, report = _ct_report()
    report.input = replace(report.input, description={"study_date": "2024-03-18", "patient_name": "DOE^JANE",
                                                      "patient_id": "P-17"})
    text = report_html.write_report_html(report, None, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "DOE^JANE" in text and "P-17" in text
    report.input = replace(report.input, description={})
    text = report_html.write_report_html(report, None, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "not a DICOM series" in text and "No clinical read" in text  # no exam: the page says so


def test_fleischner_that_does_not_apply_says_why(tmp_path):
    _, report = _ct_report()
    report = replace(_clinical_report(report), exam=dict(EXAM, indication="screening", fleischner={
        "applies": False, "recommendation": None, "note": "Lung cancer screening: Lung-RADS applies."}))
    exam = "".join(_links(report_html.write_report_html(report, None, tmp_path / "r.html")).exam_text)
    assert "does not apply: Lung cancer screening: Lung-RADS applies." in exam


def test_rows_link_to_pictures_and_back(tmp_path):
    volume, report = _ct_report()
    report = _clinical_report(report)
    path = report_html.write_report_html(report, volume, tmp_path / "report.html", render_3d=False)
    links = _links(path)
    for finding in report.findings:
        assert finding.id in links.ids and f"row-{finding.id}" in links.ids
        assert f"#{finding.id}" in links.hrefs and f"#row-{finding.id}" in links.hrefs
    assert all(href[1:] in links.ids for href in links.hrefs if href.startswith("#"))  # no dangling anchor
    assert "#N2" in links.hrefs[:3]  # the exam's highest-risk finding links to its pictures


def test_table_cells_of_the_clinical_read(tmp_path):
    _, report = _ct_report()
    report = _clinical_report(report)
    page = _parse(report_html.write_report_html(report, None, tmp_path / "report.html"))
    n1, n2 = _row_cells(page, "N1"), _row_cells(page, "N2")
    assert (n1["Lung-RADS"], n1["Brock risk"].replace("\u00a0", " "), n1["Mean diameter (mm)"]) == ("2", "0.4 %", "5.0")
    assert n1["Location"] == "right, upper zone" and n2["Location"] == "left, LUL"
    for fid, cells in (("N1", n1), ("N2", n2)):
        k = {"N1": 5, "N2": 12}[fid]  # the fixture's centres, k of the (k, j, i) input grid
        z = next(f.center_lps_mm[2] for f in report.findings if f.id == fid)
        assert cells["Slice / table z (mm)"] == f"{k + 1} / {z:.1f}"
    assert n1["Volume (mm³)"] == f"{report.findings[0].volume_mm3:.0f}"


def test_approximate_outline_is_labelled_dashed_and_not_measured(tmp_path):
    volume, report = _ct_report()
    report = _clinical_report(report)
    path = report_html.write_report_html(report, volume, tmp_path / "report.html")
    page = _parse(path)
    n2 = _row_cells(page, "N2")
    assert n2["Volume (mm³)"] == "—†" and n2["Mean HU"] == "—†" and n2["Mean diameter (mm)"] == "≈9.3"
    text = path.read_text(encoding="utf-8")
    assert "4321" not in text and "approximate outline (detector sphere)" in text
    images = {alt: _decode(src) for alt, src in page.images}
    assert "N2 3D" not in images  # no 3D picture of the detector's sphere
    color = segment_styles(report.findings)["N2"].color_rgb

    def colour_pieces(image):
        target = np.round(np.asarray(color) * 255).astype(int)
        hit = np.all(np.abs(np.asarray(image, int) - target) <= 1, axis=-1)
        return ndi.label(hit, structure=np.ones((3, 3)))[1]

    assert colour_pieces(images["N2 axial"]) > 4  # dashes
    plain = replace(report, findings=[replace(f, extra={}) for f in report.findings])
    solid_page = _parse(report_html.write_report_html(plain, volume, tmp_path / "plain.html", render_3d=False))
    assert colour_pieces(dict((a, _decode(s)) for a, s in solid_page.images)["N2 axial"]) == 1  # one closed line


def _part_solid_case():
    """A 4-voxel-radius ground-glass ball (-600 HU) with a 2-voxel solid core (+30 HU), texture part-solid."""
    hu = np.full((31, 31, 31), -900, np.int16)
    k, j, i = np.mgrid[-4:5, -4:5, -4:5]
    ball = k**2 + j**2 + i**2 <= 16
    core = k**2 + j**2 + i**2 <= 4
    hu[11:20, 11:20, 11:20][ball] = -600
    hu[11:20, 11:20, 11:20][core] = 30
    volume = Volume(hu, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    centre = tuple(volume.kji_to_lps([(15, 15, 15)])[0])
    finding = Finding("N1", "nodule", centre, (centre, centre), diameter_mm=9.0, texture="part-solid",
                      mask=FindingMask((11, 11, 11), ball))
    return volume, Report(InputInfo.from_volume(volume), [finding])


def test_part_solid_nodule_has_its_solid_part_drawn_inside(tmp_path):
    from lunglesionai.io.report_pictures import solid_part_color

    volume, report = _part_solid_case()
    color = segment_styles(report.findings)["N1"].color_rgb
    second = solid_part_color(color)
    assert np.linalg.norm(np.subtract(second, color)) > 0.5  # a colour of its own

    def axial(report, **kwargs):
        page = _parse(report_html.write_report_html(report, volume, tmp_path / "r.html", render_3d=False, **kwargs))
        return dict((a, _decode(s)) for a, s in page.images)["N1 axial"], "".join(page.text)

    image, text = axial(report)
    assert _has_color(image, color) and _has_color(image, second) and "solid part" in text
    image, _ = axial(replace(report, findings=[replace(report.findings[0], texture="solid")]))
    assert _has_color(image, color) and not _has_color(image, second)
    image, _ = axial(report, solid_component_min_hu=100.0)  # nothing reaches the threshold: no solid part
    assert not _has_color(image, second)


def test_solid_part_mask_is_the_largest_connected_part_above_the_threshold():
    from lunglesionai.io.report_pictures import solid_part_mask

    volume, report = _part_solid_case()
    hu = volume.hu.copy()
    hu[15, 15, 19] = 50  # a lone dense voxel at the rim: not connected to the core
    solid = solid_part_mask(volume.with_array(hu), report.findings[0].mask)
    full = np.zeros(volume.shape_zyx, bool)
    solid.paste_into(full, True)
    assert full.sum() == 33 and full[15, 15, 15] and not full[15, 15, 19]  # the radius-2 voxel ball only
    assert solid_part_mask(volume, report.findings[0].mask, min_hu=200.0) is None


def test_solid_threshold_is_the_measurement_stage_one():
    from lunglesionai.io.report_pictures import SOLID_COMPONENT_MIN_HU
    from lunglesionai.stages.measurements import SOLID_COMPONENT_MIN_HU as STAGE_VALUE

    assert SOLID_COMPONENT_MIN_HU == STAGE_VALUE


def test_page_reads_the_fields_the_clinical_read_fills(tmp_path):
    """Contract check with lunglesionai.clinical.read (the page only reads Report fields)."""
    from lunglesionai.clinical.patient import PatientInfo
    from lunglesionai.clinical.read import apply_clinical_read

    _, report = _ct_report()
    base = _clinical_report(report)
    base = replace(base, findings=[replace(f, lung_rads=None, brock_risk=None, lung_rads_reason=None)
                                   for f in base.findings],
                   exam={"emphysema_index_pct": 3.0, "nodule_count": 3, "lungs_fully_covered": True})
    read = apply_clinical_read(base, PatientInfo(age_years=64.0, sex="M"), "incidental")
    path = report_html.write_report_html(read, None, tmp_path / "report.html")
    exam = "".join(_links(path).exam_text)
    assert f"category {read.exam['lung_rads']}" in exam and read.exam["management"][:40] in exam
    page = _parse(path)
    for finding in read.findings:
        if finding.lung_rads:
            assert _row_cells(page, finding.id)["Lung-RADS"] == finding.lung_rads
    highest = read.exam["highest_risk_finding"]
    assert highest is None or f"#{highest}" in _links(path).hrefs
