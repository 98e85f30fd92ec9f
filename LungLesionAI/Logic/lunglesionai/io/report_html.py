"""``report.html``: the findings for people, readable in any browser without Slicer.

One self-contained file (images embedded as PNG data URIs): the study (DICOM header: description and date; the
patient's name and ID only when the report carries them, i.e. with ``--include-identifiers``), the exam summary of
the clinical read (:mod:`lunglesionai.io.report_html_summary`), the input and software, a table of findings (the
columns of ``findings.csv``, :mod:`lunglesionai.io.findings_table`; each row links to the finding's pictures and
back), and per finding axial, coronal and sagittal thumbnails through its centre (lung window, outline drawn in the
finding's segment colour) plus a small 3D rendering of its outline made with VTK off-screen rendering. Where
off-screen rendering is unavailable the 3D pictures are left out and the page says so.

Honest outlines: an outline that is only the learned detector's sphere (``extra["mask_source"] == "detector box"``)
is drawn dashed and labelled "approximate outline (detector sphere)"; its volume and mean HU are shown as "—" with a
footnote (not measurements) and its sizes with "≈". A part-solid nodule is outlined whole, and its solid part (the
largest 6-connected group of its voxels at or above ``solid_component_min_hu``, the rule of
``lunglesionai.stages.measurements.solid_component``) is tinted and outlined inside in a second colour.

Display conventions (radiological): the volume is first put in LPS axis order exactly
(:func:`lunglesionai.core.orientation.reorient_to_lps`); axial and coronal images show the patient's right on the image's
left, coronal and sagittal images have superior at the top, sagittal images anterior on the left; pixels are
resampled to square millimetres. The 3D view looks from anterior (patient's right on the viewer's left, superior
up) and ignores any small obliquity of the grid.
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from lunglesionai.core.findings import Finding, Report
from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.core.vocabulary import NO_LUNG_WARNING
from lunglesionai.core.volume import Volume
from lunglesionai.io.findings_table import axial_slice_number, fixed, is_approximate_outline
from lunglesionai.io.report_html_followup import change_cell, change_sentence, prior_axial_png
from lunglesionai.io.report_html_summary import STUDY_KEYS, brock_text, exam_summary_html, lung_rads_badge, study_html
from lunglesionai.io.report_pictures import (
    HALF_FOV_DIAMETERS,
    MIN_HALF_FOV_MM,
    NO_3D_ENV,
    SOLID_COMPONENT_MIN_HU,
    Thumbnails,
    finding_thumbnails,
    offscreen_rendering_available,
    render_mask_3d,
    solid_part_mask,
)

__all__ = [
    "APPROXIMATE_OUTLINE_LABEL",
    "report_html_text",
    "write_report_html",
    # The pictures live in lunglesionai.io.report_pictures; these names stay importable from here for callers
    # written before the split (evaluation.false_positives, the tests).
    "NO_3D_ENV",
    "SOLID_COMPONENT_MIN_HU",
    "Thumbnails",
    "finding_thumbnails",
    "offscreen_rendering_available",
    "render_mask_3d",
]

logger = logging.getLogger(__name__)

#: Label of an outline that is only the learned detector's sphere (``extra["mask_source"] == "detector box"``).
APPROXIMATE_OUTLINE_LABEL = "approximate outline (detector sphere)"


def _data_uri(png: Optional[bytes]) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else ""


_MISSING = "–"
"""Cell text of a value the stages that ran did not compute."""
_NOT_MEASURED = "—"
"""Cell text of the volume and mean HU of an approximate outline (not measurements; footnote †)."""
_APPROX_FOOTNOTE = (
    "† " + APPROXIMATE_OUTLINE_LABEL + ", drawn dashed: the learned detector found this nodule but it could not be "
    "segmented apart from an adjacent vessel or the pleura, so its outline is the dense part of the detector's "
    "sphere. Its volume and mean HU are not measurements (—) and its sizes (≈) are approximate; measure it by hand.")


def _number(value, decimals: int) -> str:
    return _MISSING if value is None else fixed(value, decimals)


def _invasiveness(finding: Finding) -> str:
    if not finding.invasiveness:
        return _MISSING
    label, probability = max(finding.invasiveness.items(), key=lambda item: item[1])
    return f"{label} ({probability:.2f})"


#: The malignancy cell of a mass: the grader was trained on nodules and does not grade masses.
_MASS_NOT_GRADED = "not graded: mass"
_COLUMNS = ("Finding", "Kind", "Status", "Lung-RADS", "Brock risk", "Mean diameter (mm)", "Long / short axis (mm)",
            "Solid part (mm)", "Calcified", "Texture", "Location", "Slice / table z (mm)", "Volume (mm³)",
            "Mean HU", "Malignancy", "Score")


def _location_text(finding: Finding) -> str:
    """"right, RUL" when the lobe is known, else "right, upper zone"; "–" without a location."""
    location = finding.location or {}
    where = location.get("lobe") or (f"{location['zone']} zone" if location.get("zone") else None)
    return ", ".join(str(part) for part in (location.get("side"), where) if part) or _MISSING


def _position_text(finding: Finding, report: Report) -> str:
    """"slice / table z": the 1-based slice number of the input grid and the centre's LPS z (mm)."""
    number = axial_slice_number(report.input, finding.center_lps_mm)
    return f"{_MISSING if number is None else number} / {fixed(finding.center_lps_mm[2], 1)}"


def _sizes(finding: Finding) -> tuple[str, str, str]:
    """(mean diameter, long / short axis, solid part) cells; "≈" before the sizes of an approximate outline."""
    approx = "≈" if is_approximate_outline(finding) else ""
    mean = _MISSING if finding.mean_diameter_mm is None else approx + fixed(finding.mean_diameter_mm, 1)
    axes = (_MISSING if finding.long_axis_mm is None
            else f"{approx}{fixed(finding.long_axis_mm, 1)} / {_number(finding.short_axis_mm, 1)}")
    if finding.texture != "part-solid":
        solid = _MISSING
    elif finding.solid_component_mean_diameter_mm is None:
        solid = "not measured"
    else:
        solid = approx + fixed(finding.solid_component_mean_diameter_mm, 1)
    return mean, axes, solid


def _row(finding: Finding, report: Report) -> list[str]:
    """The table cells of a finding as HTML (values escaped)."""
    esc = html.escape
    fid = esc(finding.id)
    mean, axes, solid = _sizes(finding)
    approximate = is_approximate_outline(finding)
    not_measured = f'{_NOT_MEASURED}<sup><a href="#approximate-note">†</a></sup>'
    reason = esc(finding.lung_rads_reason or "", quote=True)
    lung_rads = lung_rads_badge(finding.lung_rads)
    malignancy = (_MASS_NOT_GRADED if finding.kind == "mass" and finding.malignancy_probability is None
                  else _number(finding.malignancy_probability, 2))
    calcified = _MISSING if finding.calcified is None else ("yes" if finding.calcified else "no")
    return [
        f'<a href="#{fid}">{fid}</a>', esc(finding.kind), esc(finding.status),
        f'<span title="{reason}">{lung_rads}</span>' if reason else lung_rads, esc(brock_text(finding.brock_risk)),
        esc(mean), esc(axes), esc(solid), calcified, esc(finding.texture or _MISSING), esc(_location_text(finding)),
        esc(_position_text(finding, report)),
        not_measured if approximate else esc(_number(finding.volume_mm3, 0)),
        not_measured if approximate else esc(_number(finding.mean_hu, 0)),
        esc(malignancy), esc(_number(finding.detection_score, 2)),
    ] + ([esc(change_cell(finding))] if _has_prior(report) else [])


def _has_prior(report: Report) -> bool:
    """The report compares with a prior scan (``analyze --prior``): the table gets a "Change since prior" column."""
    return bool(report.exam.get("prior")) or any(f.followup for f in report.findings)


def _table_notes(report: Report) -> list[str]:
    """The footnotes under the findings table."""
    notes = [
        "Lung-RADS: v2022 category of the nodule (hover for the table row that applied; it is also written under "
        "the finding's pictures). Brock risk: PanCan full model (McWilliams et al., NEJM 2013), in %.",
        "Mean diameter: (long + short axis) / 2 on the axial slice where the nodule is largest, to 0.1 mm as "
        "Lung-RADS reads it. Solid part: mean diameter of a part-solid nodule's solid component (HU rule).",
        "Location: side and lobe; where lobes are not segmented, the upper, middle or lower third of the lung's "
        "height, labelled \"zone\" (a zone is not a lobe).",
        "Slice: number of the axial slice in the analysed volume, counted from 1 at its first slice (DICOM input: "
        "slices ordered by position, 1 = lowest; a viewer may number them the other way round). Table z: the "
        "centre's LPS z in mm (DICOM patient coordinates, as in ImagePositionPatient), the same in every viewer.",
        f"{_MISSING}: not computed by the stages that ran.",
    ]
    lines = ['<ul class="small notes">', *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    if any(is_approximate_outline(f) for f in report.findings):
        lines.append(f'<p class="small approx" id="approximate-note">{html.escape(_APPROX_FOOTNOTE)}</p>')
    return lines


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; }
#findings td:nth-child(-n+3), #findings td:nth-child(10), #findings td:nth-child(11) { text-align: left; }
#findings td { white-space: nowrap; } #findings td, #findings th { padding: 0.2em 0.4em; }
tr.rejected td { color: #999; text-decoration: line-through; }
.finding { margin: 1.2em 0; border-top: 1px solid #ddd; padding-top: 0.4em; }
.finding figure { display: inline-block; margin: 0 0.6em 0 0; text-align: center; vertical-align: top; }
.finding img { border: 1px solid #ccc; background: #000; } .render img { background: #fff; }
.finding h3 { margin: 0.2em 0; } .facts { margin: 0.3em 0; }
figcaption { font-size: 0.8em; color: #555; } .note { color: #a15c00; }
.small { font-size: 0.85em; color: #555; } .notes { margin: 0.4em 0; padding-left: 1.2em; }
.approx { color: #a15c00; }
.warnings { border: 2px solid #a15c00; background: #fff4e5; padding: 0.3em 0.8em; margin: 0.8em 0; }
.exam { border: 2px solid #336; background: #f3f5fb; padding: 0.4em 1em; margin: 0.8em 0; max-width: 70em; }
.exam h2 { margin: 0.2em 0; } .exam .category { font-size: 1.3em; margin: 0.3em 0; }
.exam table.kv th { text-align: left; vertical-align: top; background: #e4e8f3; white-space: nowrap; }
.exam table.kv td { text-align: left; } .decision { font-weight: bold; color: #333; }
.lr { display: inline-block; min-width: 1.8em; padding: 0 0.3em; border-radius: 0.3em; text-align: center;
      font-weight: bold; color: #fff; }
.lr0 { background: #777; } .lr1 { background: #2e7d32; } .lr3 { background: #b26a00; } .lr4 { background: #c62828; }
.pair { display: inline-flex; gap: 0.3em; padding: 0.2em; border: 1px dashed #999; margin-right: 0.5em; }
.change { background: #f4f8ff; padding: 0.2em 0.4em; }
dl.study { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; margin: 0.4em 0; }
dl.study dt { font-weight: bold; } dl.study dd { margin: 0; } .legend { margin: 0.2em 0; }
"""


def _finding_section(finding: Finding, report: Report, images: Optional[Thumbnails],
                     solid_component_min_hu: float, prior_axial: Optional[bytes] = None) -> list[str]:
    """The pictures of one finding (``<section id="<finding id>">``) with its facts and a link back to the table;
    with a prior scan its change and, when ``prior_axial`` is given, the prior and current axial side by side."""
    esc = html.escape
    fid = esc(finding.id)
    mean, axes, solid = _sizes(finding)
    facts = [f"mean diameter {mean} mm (long / short axis {axes} mm)"]
    if finding.texture == "part-solid":
        facts.append(f"solid part {solid} mm")
    facts += [f"texture {finding.texture or _MISSING}", _location_text(finding),
              "slice / table z " + _position_text(finding, report) + " mm",
              "centre LPS (" + ", ".join(fixed(c, 1) for c in finding.center_lps_mm) + ") mm"]
    if finding.invasiveness:
        facts.append(f"invasiveness surrogate {_invasiveness(finding)}")
    if finding.lung_rads_reason:
        facts.append(f"Lung-RADS: {finding.lung_rads_reason}")
    change = change_sentence(finding)
    heading = (f"{fid} · {esc(finding.kind)} ({esc(finding.status)}) · Lung-RADS {lung_rads_badge(finding.lung_rads)}"
               f" · Brock risk {esc(brock_text(finding.brock_risk))}")
    lines = [f'<section class="finding" id="{fid}">', f"<h3>{heading}</h3>",
             f'<p class="facts">{esc("; ".join(facts))}. <a href="#row-{fid}">↑ back to the table</a></p>']
    if change:
        lines.append(f'<p class="change"><strong>Since the prior scan:</strong> {esc(change)}</p>')
    if is_approximate_outline(finding):
        lines.append(f'<p class="approx"><strong>{esc(APPROXIMATE_OUTLINE_LABEL)}</strong>, drawn dashed: volume '
                     'and mean HU not measured (<a href="#approximate-note">†</a>).</p>')
    if images is None:
        lines.append("<p>No images (no CT given, or no mask).</p>")
        return lines + ["</section>"]
    legend = ("Dashed line: the approximate outline." if is_approximate_outline(finding)
              else "Line: the outline of the whole finding.")
    if images.has_solid_part:
        legend += (f" Tinted inside: the solid part (voxels at or above {solid_component_min_hu:.0f} HU, largest "
                   "connected part), in a second colour.")
    lines.append(f'<p class="small legend">{esc(legend)}</p>')
    views = (("axial", images.axial), ("coronal", images.coronal), ("sagittal", images.sagittal),
             ("3D", images.render_3d))
    if prior_axial is not None:  # prior and current side by side, then the current's other views
        lines.append(f'<div class="pair"><figure class="prior"><img src="{_data_uri(prior_axial)}" alt="{fid} '
                     f'prior axial"><figcaption>prior, axial</figcaption></figure>')
        lines.append(f'<figure><img src="{_data_uri(images.axial)}" alt="{fid} axial"><figcaption>current, axial'
                     "</figcaption></figure></div>")
        views = views[1:]
    for view, png in views:
        if png:
            css = ' class="render"' if view == "3D" else ""
            lines.append(f'<figure{css}><img src="{_data_uri(png)}" alt="{fid} {view}">'
                         f"<figcaption>{view}</figcaption></figure>")
    lines.append("</section>")
    return lines


def report_html_text(report: Report, thumbnails: dict[str, Thumbnails], note_3d: str = "", *,
                     solid_component_min_hu: float = SOLID_COMPONENT_MIN_HU,
                     prior_axials: Optional[dict[str, bytes]] = None) -> str:
    """The HTML page of a report (all text escaped), given the thumbnails of each finding id.

    Args:
        report: the findings and ``exam`` (the clinical read's keys when it ran); ``input.description`` holds the
            DICOM header fields shown as the study.
        thumbnails: finding id → its pictures (findings without an entry get "No images").
        note_3d: a line on the 3D renderings (left out, switched off), or "".
        solid_component_min_hu: the solid-part threshold the pictures used (named in their legend).
        prior_axials: finding id → the prior scan's axial thumbnail (``analyze --prior``), shown beside the
            current axial.

    Returns:
        The page: study, exam summary, input and software, warnings, findings table (rows ``id="row-<id>"``
        linking to ``#<id>``), footnotes, then one ``<section id="<id>">`` of pictures per finding.
    """
    esc = html.escape
    described = {k: v for k, v in report.input.description.items() if k not in STUDY_KEYS}
    lines = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>LungLesionAI report: {esc(Path(report.input.path).name or 'CT')}</title>",
        f"<style>{_STYLE}</style>", "</head>", "<body>",
        "<h1>LungLesionAI report</h1>",
        '<p class="note"><strong>Research use only; not a medical device.</strong> Findings are proposals for a '
        "reader to review. Texture and the invasiveness surrogate describe CT appearance, not pathology.</p>",
        '<dl class="study" id="study">', *study_html(report.input.description), "</dl>",
        *exam_summary_html(report),
        '<dl class="study">',
        f"<dt>Input</dt><dd>{esc(report.input.path)}: {' × '.join(str(n) for n in report.input.shape_zyx)} voxels "
        f"(z, y, x), spacing {' × '.join(f'{s:.3g}' for s in report.input.spacing_mm)} mm (x, y, z)</dd>",
        *(f"<dt>{esc(key.replace('_', ' ').capitalize())}</dt><dd>{esc(value)}</dd>"
          for key, value in described.items()),
        f"<dt>Software</dt><dd>lunglesionai {esc(report.version or '?')} on {esc(report.device)}"
        + "".join(f"; model {esc(m.get('name', ''))} {esc(m.get('version', ''))}" for m in report.models)
        + "</dd>",
        "<dt>Stages</dt><dd>" + "; ".join(f"{esc(k)}: {esc(v)}" for k, v in report.stages.items()) + "</dd>",
        f"<dt>Written</dt><dd>{datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}</dd>",
        "</dl>",
    ]
    if report.warnings:
        lines.append('<div class="warnings" id="warnings"><strong>Warnings: what was not analysed or is less '
                     "reliable</strong><ul>" + "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
                     + "</ul></div>")
    lines.append(f"<h2>Findings ({len(report.findings)})</h2>")
    if report.findings:
        columns = _COLUMNS + (("Change since prior",) if _has_prior(report) else ())
        lines.append('<table id="findings"><thead><tr>' + "".join(f"<th>{esc(c)}</th>" for c in columns)
                     + "</tr></thead><tbody>")
        for finding in report.findings:
            cells = "".join(f"<td>{value}</td>" for value in _row(finding, report))
            lines.append(f'<tr class="{esc(finding.status)}" id="row-{esc(finding.id)}">{cells}</tr>')
        lines.append("</tbody></table>")
        lines += _table_notes(report)
    elif any(w.startswith(NO_LUNG_WARNING) for w in report.warnings):
        lines.append("<p><strong>Not searched:</strong> no lung of plausible size was found in this scan, so no "
                     "nodule could be looked for. This is not a negative result.</p>")
    else:
        lines.append("<p>No findings.</p>")
    if note_3d:
        lines.append(f'<p class="note">{esc(note_3d)}</p>')
    for finding in report.findings:
        lines += _finding_section(finding, report, thumbnails.get(finding.id), solid_component_min_hu,
                                  (prior_axials or {}).get(finding.id))
    lines += ['<p class="small">Thumbnails: lung window (W 1500, L −600 HU); radiological orientation (patient\'s '
              "right on the image's left; superior up; sagittal anterior on the left). 3D: the outline seen from "
              "anterior.</p>", "</body>", "</html>", ""]
    return "\n".join(lines)


def write_report_html(report: Report, volume: Optional[Volume], out_path: str | os.PathLike, *,
                      render_3d: bool = True, size_px: int = 160,
                      solid_component_min_hu: float = SOLID_COMPONENT_MIN_HU,
                      prior_volume: Optional[Volume] = None, prior_findings: Sequence[Finding] = ()) -> Path:
    """Write ``report.html`` for a report, atomically (temporary file in the same folder, then renamed).

    Args:
        report: the findings; masks (when present) on the grid of ``volume``.
        volume: the analysed CT (HU, any axis order; the report's input grid), or None for a page without images.
        out_path: the HTML file to write (its folder must exist).
        render_3d: add the 3D renderings (when off-screen rendering is available; the page says when not).
        size_px: long side of each thumbnail in pixels.
        solid_component_min_hu: lowest HU of a part-solid nodule's solid part drawn inside its outline (default
            :data:`SOLID_COMPONENT_MIN_HU`, the value of ``lunglesionai.stages.measurements.SOLID_COMPONENT_MIN_HU``,
            which io may not import; pass the pipeline's value when it differs).
        prior_volume: the prior CT of ``analyze --prior`` (HU, any axis order): each matched finding's section
            shows the prior's axial slice through the prior centre (``followup["prior_center_lps_mm"]``) beside
            the current one (:mod:`lunglesionai.io.report_html_followup`).
        prior_findings: the prior report's findings; their masks (prior grid), when present, are outlined.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ValueError: ``volume`` is not on the report's input grid.
        FileNotFoundError: the folder of ``out_path`` does not exist.
    """
    from lunglesionai.core.orientation import reorient_to_lps
    from lunglesionai.core.segments import segment_styles

    out = Path(out_path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    thumbnails: dict[str, Thumbnails] = {}
    prior_axials: dict[str, bytes] = {}
    note_3d = ""
    if volume is not None:
        if tuple(volume.shape_zyx) != tuple(report.input.shape_zyx):
            raise ValueError(f"volume shape {volume.shape_zyx} is not the report's input {report.input.shape_zyx}")
        styles = segment_styles(report.findings)
        volume_lps, perm = reorient_to_lps(volume)
        prior_lps, prior_perm = reorient_to_lps(prior_volume) if prior_volume is not None else (None, None)
        can_render = render_3d and offscreen_rendering_available()
        if render_3d and not can_render:
            note_3d = "3D renderings are left out: off-screen OpenGL rendering is not available on this computer."
        elif not render_3d:
            note_3d = "3D renderings were switched off."
        for finding in report.findings:
            mask = finding.mask.reoriented(perm) if finding.mask is not None else None
            if mask is not None and mask.voxel_count:
                center_kji = np.argwhere(mask.array).mean(axis=0) + np.asarray(mask.offset_kji)
            else:
                center_kji = volume_lps.lps_to_kji([finding.center_lps_mm])[0]
            half_fov = max(MIN_HALF_FOV_MM, HALF_FOV_DIAMETERS * float(finding.diameter_mm or 0.0))
            color = styles[finding.id].color_rgb
            solid = (solid_part_mask(volume_lps, mask, solid_component_min_hu)
                     if finding.texture == "part-solid" and mask is not None else None)
            approximate = is_approximate_outline(finding)
            images = finding_thumbnails(volume_lps, mask, center_kji, half_fov, color, size_px, solid_lps=solid,
                                        dashed=approximate)
            if can_render and mask is not None and not approximate:  # no 3D picture of the detector's sphere
                images = replace(images, render_3d=render_mask_3d(mask, volume_lps.spacing_mm, color, size_px))
            thumbnails[finding.id] = images
            if prior_lps is not None and images.axial:
                png = prior_axial_png(prior_lps, prior_findings, finding, half_fov, color, size_px, prior_perm)
                if png is not None:
                    prior_axials[finding.id] = png
    text = report_html_text(report, thumbnails, note_3d, solid_component_min_hu=solid_component_min_hu,
                            prior_axials=prior_axials)
    write_file_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
