"""Tests of lunglesionai.io.report_html: the page parses, one row per finding, thumbnails decode and are oriented
radiologically, the 3D pictures are there or the page says why not; write_outputs(volume=...) adds report.html.
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
    assert page.rows[0][1][:3] == ["N1", "nodule", "proposed"] and page.rows[0][1][9] == "–"  # not invented
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
