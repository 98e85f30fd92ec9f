"""Tests of the prior-scan parts of report.html (issue 16, lunglesionai.io.report_html_followup): a "Change since
prior" column, the change written out under the finding, the prior's axial thumbnail beside the current one
(through the prior centre, outlined with the prior finding's mask), the prior scan and resolved nodules in the exam
block; none of it without a prior.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace

import numpy as np
from PIL import Image

from lunglesionai.core.findings import Report
from lunglesionai.io import report_html
from lunglesionai.io.report_html_followup import change_cell, change_sentence
from lunglesionai.mrml.scene import segment_styles
from report_fixtures import grid_volume, make_small_report, sphere_finding


def _decode(src: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    return np.asarray(image.convert("RGB"), int)


def _images(html_text: str) -> dict[str, str]:
    """alt text → data URI of every <img> of the page."""
    return {alt: src for src, alt in re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="([^"]+)"', html_text)}


def _pair():
    """Current: N1 (radius 3) and N2 (radius 4); prior: N1 as P1 (radius 2, shifted by 3 voxels in i), N2 absent
    (new); P9 resolved. HU 30 inside every mask."""
    current = make_small_report(with_lesion=False)
    volume = grid_volume()
    hu = np.full(volume.shape_zyx, -1000, np.int16)
    for f in current.findings:
        if f.mask is not None:
            f.mask.paste_into(hu, 30)
    current_volume = volume.with_array(hu)
    p1 = sphere_finding("P1", "nodule", (5, 6, 10), 2, volume)
    prior_hu = np.full(volume.shape_zyx, -1000, np.int16)
    p1.mask.paste_into(prior_hu, 30)
    prior_volume = volume.with_array(prior_hu)
    n1 = current.findings[0]
    growing = {"status": "growing", "prior_id": "P1", "prior_mean_diameter_mm": 4.0, "mean_diameter_change_mm": 2.1,
               "prior_volume_mm3": p1.volume_mm3, "volume_change_pct": 120.4, "vdt_days": 157.2,
               "vdt_range_days": [120.0, 230.0], "interval_days": 180.0, "match_distance_mm": 0.4,
               "prior_center_lps_mm": list(p1.center_lps_mm)}
    new = {"status": "new", "prior_id": None, "prior_mean_diameter_mm": None, "mean_diameter_change_mm": None,
           "prior_volume_mm3": None, "volume_change_pct": None, "vdt_days": None, "vdt_range_days": None,
           "interval_days": 180.0, "match_distance_mm": None, "prior_center_lps_mm": None}
    findings = [replace(n1, mean_diameter_mm=6.1, followup=growing), replace(current.findings[1], followup=new),
                current.findings[2]]
    exam = {"prior": {"path": "/data/prior.nii.gz", "study_date": "2026-06-01", "interval_days": 180.0,
                      "interval_source": "study dates", "registration": {"seconds": 9.8}},
            "resolved": [{"prior_id": "P9", "prior_center_lps_mm": [1.0, 2.0, 3.0],
                          "mapped_center_lps_mm": [1.5, 2.0, 3.0], "prior_mean_diameter_mm": 5.2,
                          "prior_volume_mm3": 70.0}]}
    report = replace(current, findings=findings, exam=exam)
    return report, current_volume, prior_volume, Report(input=current.input, findings=[p1])


def test_change_texts():
    report, *_ = _pair()
    grown, new, unknown = report.findings
    assert change_cell(grown) == "growing +2.1 mm, +120 % vol., VDT 157 d"
    assert change_cell(new) == "new" and change_cell(unknown) == "–"
    sentence = change_sentence(grown)
    assert "matched to prior P1" in sentence and "4.0 → 6.1 mm" in sentence and "157 days" in sentence
    assert "120 to 230 days" in sentence and "over 180 days" in sentence
    assert change_sentence(new).startswith("New since the prior scan") and change_sentence(unknown) == ""
    assert "±25 % volume repeatability" in sentence and "less reliable" not in sentence


def test_unreliable_volumetry_is_said_with_its_reasons_and_wider_range():
    report, *_ = _pair()
    grown = report.findings[0]
    volumetry = {"method": "paired", "reliable": False, "repeatability": 0.5,
                 "reasons": ["3.0 mm voxels on the prior scan (thin sections are <= 1.5 mm)"]}
    sentence = change_sentence(replace(grown, followup={**grown.followup, "volumetry": volumetry}))
    assert "±50 % volume repeatability" in sentence
    assert sentence.endswith("Volumetry less reliable (3.0 mm voxels on the prior scan (thin sections are <= 1.5 mm)).")
    stable = {**grown.followup, "status": "stable", "vdt_days": None, "vdt_range_days": None, "volumetry": volumetry}
    assert "Volumetry less reliable" in change_sentence(replace(grown, followup=stable))  # the volume change too


def test_the_change_shown_is_the_one_the_growth_rule_read():
    report, *_ = _pair()
    grown = report.findings[0]
    paired = replace(grown, followup={**grown.followup, "status": "stable", "vdt_days": None,
                                      "vdt_range_days": None, "equivalent_diameter_change_mm": -1.06})
    assert change_cell(paired) == "stable -1.1 mm, +120 % vol."
    sentence = change_sentence(paired)
    assert "(+2.1 mm)" in sentence and "equivalent diameter -1.1 mm, which the growth rule read" in sentence


def test_solid_component_change_is_written_out():
    report, *_ = _pair()
    grown = report.findings[0]
    solid = {"status": "growing", "prior_mean_diameter_mm": 4.0, "mean_diameter_mm": 6.0,
             "mean_diameter_change_mm": 2.0, "prior_volume_mm3": 33.5, "current_volume_mm3": 113.1,
             "volume_change_pct": 237.5, "vdt_days": 102.4}
    sentence = change_sentence(replace(grown, followup={**grown.followup, "solid_component": solid}))
    assert sentence.endswith("Solid component growing: 4.0 → 6.0 mm, volume-doubling time 102 days.")
    assert "Solid component" not in change_sentence(grown)


def test_page_shows_prior_beside_current_and_the_resolved(tmp_path):
    report, volume, prior_volume, prior_report = _pair()
    path = report_html.write_report_html(report, volume, tmp_path / "report.html", render_3d=False,
                                         prior_volume=prior_volume, prior_findings=prior_report.findings)
    text = path.read_text(encoding="utf-8")
    assert "<th>Change since prior</th>" in text and "growing +2.1 mm, +120 % vol., VDT 157 d" in text
    assert "Resolved since the prior" in text and "P9 (prior mean diameter 5.2 mm" in text
    assert "2026-06-01, 180 days before this scan (interval from study dates)" in text
    images = _images(text)
    assert "N1 prior axial" in images and "N2 prior axial" not in images  # new: nothing to show in the prior
    prior, current = _decode(images["N1 prior axial"]), _decode(images["N1 axial"])
    assert prior.shape == current.shape
    color = np.round(np.asarray(segment_styles(report.findings)["N1"].color_rgb) * 255).astype(int)
    outlined = np.all(np.abs(prior - color) <= 1, axis=-1)
    assert outlined.any(), "the prior finding's outline is drawn on the prior thumbnail"
    # The prior nodule is smaller: fewer bright (nodule) pixels inside the prior picture than in the current one.
    assert (prior.mean(axis=-1) > 120).sum() < (current.mean(axis=-1) > 120).sum()


def test_prior_centre_outside_the_prior_scan_gives_no_picture(tmp_path):
    report, volume, prior_volume, prior_report = _pair()
    far = dict(report.findings[0].followup, prior_center_lps_mm=[500.0, 500.0, 500.0])
    report = replace(report, findings=[replace(report.findings[0], followup=far), *report.findings[1:]])
    text = report_html.write_report_html(report, volume, tmp_path / "r.html", render_3d=False,
                                         prior_volume=prior_volume, prior_findings=prior_report.findings
                                         ).read_text(encoding="utf-8")
    assert "prior axial" not in text and "Since the prior scan:" in text


def test_no_prior_no_change_column(tmp_path):
    report = make_small_report(with_lesion=False)
    text = report_html.write_report_html(report, None, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Change since prior" not in text and "Resolved since the prior" not in text
