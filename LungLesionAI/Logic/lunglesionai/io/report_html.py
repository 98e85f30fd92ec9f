"""``report.html``: the findings for people, readable in any browser without Slicer.

One self-contained file (images embedded as PNG data URIs): the input and software, a table of findings, and per
finding axial, coronal and sagittal thumbnails through its centre (lung window, outline drawn in the finding's
segment colour) plus a small 3D rendering of its outline made with VTK off-screen rendering. Where off-screen
rendering is unavailable the 3D pictures are left out and the page says so.

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
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.findings import Finding, FindingMask, Report
from lunglesionai.core.output_folder import write_file_atomic
from lunglesionai.core.vocabulary import NO_LUNG_WARNING
from lunglesionai.core.volume import Volume

__all__ = [
    "WINDOW_HU",
    "LEVEL_HU",
    "Thumbnails",
    "finding_thumbnails",
    "render_mask_3d",
    "offscreen_rendering_available",
    "write_report_html",
    "report_html_text",
]

logger = logging.getLogger(__name__)

#: Lung window (width, level) of the thumbnails, HU.
WINDOW_HU = 1500.0
LEVEL_HU = -600.0
#: Half-width of a thumbnail's field of view: at least this many mm, or this many nodule diameters.
MIN_HALF_FOV_MM = 20.0
HALF_FOV_DIAMETERS = 1.5
#: Environment variable that switches the 3D renderings off (e.g. on machines whose OpenGL driver misbehaves).
NO_3D_ENV = "LUNGLESIONAI_NO_3D"
_AIR_HU = -1000.0


@dataclass(frozen=True)
class Thumbnails:
    """PNG images of one finding (bytes), or None where not made.

    Args:
        axial, coronal, sagittal: slices through the finding's centre with its outline.
        render_3d: the outline's surface seen from anterior, or None (no mask, or no off-screen rendering).
    """

    axial: Optional[bytes]
    coronal: Optional[bytes]
    sagittal: Optional[bytes]
    render_3d: Optional[bytes] = None


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _window(hu: np.ndarray) -> np.ndarray:
    low = LEVEL_HU - WINDOW_HU / 2
    return (np.clip((np.asarray(hu, dtype=np.float32) - low) / WINDOW_HU, 0.0, 1.0) * 255).astype(np.uint8)


def _slab(array: np.ndarray, center: np.ndarray, half: np.ndarray, fill) -> np.ndarray:
    """The box ``center ± half`` (voxels, per axis) of a 3-D array, padded with ``fill`` outside it."""
    lo = np.asarray(center) - np.asarray(half)
    hi = np.asarray(center) + np.asarray(half) + 1
    out = np.full(tuple(int(v) for v in hi - lo), fill, dtype=array.dtype)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, array.shape)
    if np.all(src_hi > src_lo):
        src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
        dst = tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(src_lo, src_hi, lo))
        out[dst] = array[src]
    return out


def _picture(gray: np.ndarray, mask: np.ndarray, row_mm: float, col_mm: float, size_px: int,
             color_rgb: tuple[float, float, float]) -> bytes:
    """A 2-D slice (rows, cols) at its physical aspect, ``size_px`` on its long side, with the mask outlined."""
    from PIL import Image

    rows, cols = gray.shape
    height_mm, width_mm = rows * row_mm, cols * col_mm
    scale = size_px / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))
    inside = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    outline = inside & ~ndi.binary_erosion(inside, iterations=2, border_value=0)
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[outline] = (np.asarray(color_rgb) * 255).astype(np.uint8)
    return _png(rgb)


def finding_thumbnails(volume_lps: Volume, mask_lps: Optional[FindingMask], center_kji: np.ndarray, half_fov_mm: float,
                       color_rgb: tuple[float, float, float], size_px: int = 160) -> Thumbnails:
    """Axial, coronal and sagittal thumbnails through one point of a volume in LPS axis order.

    Args:
        volume_lps: CT in HU whose axes are in LPS order (``reorient_to_lps``), ``hu`` (Z, Y, X).
        mask_lps: the finding's mask on that grid, or None (no outline).
        center_kji: (3,) voxel index (k, j, i) of the slices' crossing point.
        half_fov_mm: half the side of the square field of view, mm.
        color_rgb: outline colour, RGB in [0, 1].
        size_px: long side of each picture in pixels.

    Returns:
        :class:`Thumbnails` (``render_3d`` None; see :func:`render_mask_3d`).
    """
    spacing_zyx = np.asarray(volume_lps.spacing_mm[::-1], dtype=float)
    center = np.round(np.asarray(center_kji, dtype=float)).astype(int)
    half = np.maximum(np.ceil(half_fov_mm / spacing_zyx).astype(int), 1)
    gray = _window(_slab(volume_lps.hu, center, half, np.asarray(_AIR_HU, volume_lps.hu.dtype)))
    mask = np.zeros(gray.shape, dtype=bool)
    if mask_lps is not None:  # the crop pasted straight into the slab (no full-size array)
        FindingMask(tuple(np.subtract(mask_lps.offset_kji, center - half)), mask_lps.array).paste_into(mask, True)
    hk, hj, hi = half
    sz, sy, sx = spacing_zyx
    axial = _picture(gray[hk], mask[hk], sy, sx, size_px, color_rgb)  # rows A->P, cols R->L
    coronal = _picture(gray[::-1, hj, :], mask[::-1, hj, :], sz, sx, size_px, color_rgb)  # rows S->I
    sagittal = _picture(gray[::-1, :, hi], mask[::-1, :, hi], sz, sy, size_px, color_rgb)  # cols A->P
    return Thumbnails(axial, coronal, sagittal)


def offscreen_rendering_available() -> bool:
    """True when VTK can open an off-screen OpenGL context here (and :data:`NO_3D_ENV` is not set)."""
    return _renderer() is not None


_RENDER_STATE: dict[str, object] = {}


def _renderer():
    """A shared off-screen (render window, renderer), or None when OpenGL is unavailable."""
    if os.environ.get(NO_3D_ENV):
        return None
    if "window" in _RENDER_STATE:
        return _RENDER_STATE["window"]
    state = None
    try:
        import vtk

        previous = vtk.vtkLogger.GetCurrentVerbosityCutoff()
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)  # no "bad X server" warning on headless
        try:
            window = vtk.vtkRenderWindow()
            window.SetOffScreenRendering(1)
            if window.SupportsOpenGL():
                renderer = vtk.vtkRenderer()
                renderer.SetBackground(1.0, 1.0, 1.0)
                window.AddRenderer(renderer)
                state = (window, renderer)
        finally:
            vtk.vtkLogger.SetStderrVerbosity(previous)
    except Exception as error:  # noqa: BLE001 - any failure means "no 3D pictures", said in the page
        logger.info("off-screen rendering unavailable: %s", error)
        state = None
    _RENDER_STATE["window"] = state
    return state


def render_mask_3d(mask: FindingMask, spacing_mm: tuple[float, float, float],
                   color_rgb: tuple[float, float, float], size_px: int = 160) -> Optional[bytes]:
    """A PNG of a mask's surface (flying edges at 0.5, smoothed) seen from anterior, or None without OpenGL.

    Args:
        mask: boolean crop on a grid in LPS axis order.
        spacing_mm: (x, y, z) voxel size of that grid, mm.
        color_rgb: surface colour, RGB in [0, 1].
        size_px: width and height in pixels.
    """
    state = _renderer()
    if state is None or mask.voxel_count == 0:
        return None
    import vtk
    from vtk.util import numpy_support

    window, renderer = state
    padded = np.pad(np.asarray(mask.array, dtype=np.uint8), 1)
    image = vtk.vtkImageData()
    image.SetDimensions(padded.shape[2], padded.shape[1], padded.shape[0])
    image.SetSpacing(*spacing_mm)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(padded.ravel(), deep=True,
                                                                array_type=vtk.VTK_UNSIGNED_CHAR))
    surface = vtk.vtkFlyingEdges3D()
    surface.SetInputData(image)
    surface.SetValue(0, 0.5)
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(surface.GetOutputPort())
    smooth.SetNumberOfIterations(15)
    smooth.SetPassBand(0.1)
    smooth.NormalizeCoordinatesOn()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(smooth.GetOutputPort())
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color_rgb)
    outline = vtk.vtkOutlineFilter()
    outline.SetInputData(image)
    outline_mapper = vtk.vtkPolyDataMapper()
    outline_mapper.SetInputConnection(outline.GetOutputPort())
    outline_actor = vtk.vtkActor()
    outline_actor.SetMapper(outline_mapper)
    outline_actor.GetProperty().SetColor(0.6, 0.6, 0.6)
    renderer.RemoveAllViewProps()
    renderer.AddActor(actor)
    renderer.AddActor(outline_actor)
    window.SetSize(size_px, size_px)
    camera = renderer.GetActiveCamera()
    center = np.asarray(image.GetCenter())
    camera.SetFocalPoint(*center)
    camera.SetPosition(*(center - np.array([0.0, 1.0, 0.0])))  # anterior is -y in LPS
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    output = grab.GetOutput()
    width, height, _ = output.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars())
    rgb = pixels.reshape(height, width, -1)[::-1, :, :3]  # VTK rows go bottom-up
    renderer.RemoveAllViewProps()
    return _png(rgb)


def _data_uri(png: Optional[bytes]) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else ""


def _number(value, fmt: str) -> str:
    return "–" if value is None else format(float(value), fmt)


def _invasiveness(finding: Finding) -> str:
    if not finding.invasiveness:
        return "–"
    label, probability = max(finding.invasiveness.items(), key=lambda item: item[1])
    return f"{label} ({probability:.2f})"


#: The malignancy cell of a mass: the grader was trained on nodules and does not grade masses.
_MASS_NOT_GRADED = "not graded: mass"
_COLUMNS = ("Finding", "Kind", "Status", "Centre LPS (mm)", "Diameter (mm)", "Long / short axis (mm)",
            "Volume (mm³)", "Mean HU", "Texture", "Malignancy", "Invasiveness surrogate", "Score")


def _row(finding: Finding) -> list[str]:
    centre = ", ".join(f"{c:.1f}" for c in finding.center_lps_mm)
    axes = (f"{_number(finding.long_axis_mm, '.1f')} / {_number(finding.short_axis_mm, '.1f')}"
            if finding.long_axis_mm is not None else "–")
    return [finding.id, finding.kind, finding.status, centre, _number(finding.diameter_mm, ".1f"), axes,
            _number(finding.volume_mm3, ".0f"), _number(finding.mean_hu, ".0f"), finding.texture or "–",
            _MASS_NOT_GRADED if finding.kind == "mass" and finding.malignancy_probability is None
            else _number(finding.malignancy_probability, ".2f"), _invasiveness(finding),
            _number(finding.detection_score, ".2f")]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; } td:first-child, td:nth-child(2), td:nth-child(3), td:nth-child(9) { text-align: left; }
tr.rejected td { color: #999; text-decoration: line-through; }
.finding { margin: 1.2em 0; } .finding figure { display: inline-block; margin: 0 0.6em 0 0; text-align: center; }
.finding img { border: 1px solid #ccc; background: #000; } .render img { background: #fff; }
figcaption { font-size: 0.8em; color: #555; } .note { color: #a15c00; }
.small { font-size: 0.85em; color: #555; }
.warnings { border: 2px solid #a15c00; background: #fff4e5; padding: 0.3em 0.8em; margin: 0.8em 0; }
"""


def report_html_text(report: Report, thumbnails: dict[str, Thumbnails], note_3d: str = "") -> str:
    """The HTML page of a report (all text escaped), given the thumbnails of each finding id."""
    esc = html.escape
    lines = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>LungLesionAI report: {esc(Path(report.input.path).name or 'CT')}</title>",
        f"<style>{_STYLE}</style>", "</head>", "<body>",
        "<h1>LungLesionAI report</h1>",
        '<p class="note"><strong>Research use only; not a medical device.</strong> Findings are proposals for a '
        "reader to review. Texture and the invasiveness surrogate describe CT appearance, not pathology.</p>",
        "<dl>",
        f"<dt>Input</dt><dd>{esc(report.input.path)}: {' × '.join(str(n) for n in report.input.shape_zyx)} voxels "
        f"(z, y, x), spacing {' × '.join(f'{s:.3g}' for s in report.input.spacing_mm)} mm (x, y, z)</dd>",
        *(f"<dt>{esc(key.replace('_', ' ').capitalize())}</dt><dd>{esc(value)}</dd>"
          for key, value in report.input.description.items()),
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
        lines.append('<table id="findings"><thead><tr>' + "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
                     + "</tr></thead><tbody>")
        for finding in report.findings:
            cells = "".join(f"<td>{esc(value)}</td>" for value in _row(finding))
            lines.append(f'<tr class="{esc(finding.status)}" id="row-{esc(finding.id)}">{cells}</tr>')
        lines.append("</tbody></table>")
        lines.append('<p class="small">Coordinates are LPS millimetres (DICOM patient coordinates). "–": not '
                     "computed by the stages that ran.</p>")
    elif any(w.startswith(NO_LUNG_WARNING) for w in report.warnings):
        lines.append("<p><strong>Not searched:</strong> no lung of plausible size was found in this scan, so no "
                     "nodule could be looked for. This is not a negative result.</p>")
    else:
        lines.append("<p>No findings.</p>")
    if note_3d:
        lines.append(f'<p class="note">{esc(note_3d)}</p>')
    for finding in report.findings:
        images = thumbnails.get(finding.id)
        lines.append(f'<section class="finding" id="finding-{esc(finding.id)}">')
        lines.append(f"<h3>{esc(finding.id)} ({esc(finding.status)}): {esc(finding.summary())}</h3>")
        if images is None:
            lines.append("<p>No images (no CT given, or no mask).</p>")
        else:
            for view, png in (("axial", images.axial), ("coronal", images.coronal), ("sagittal", images.sagittal),
                              ("3D", images.render_3d)):
                if png:
                    css = ' class="render"' if view == "3D" else ""
                    lines.append(f'<figure{css}><img src="{_data_uri(png)}" alt="{esc(finding.id)} {view}">'
                                 f"<figcaption>{view}</figcaption></figure>")
        lines.append("</section>")
    lines += ['<p class="small">Thumbnails: lung window (W 1500, L −600 HU); radiological orientation (patient\'s '
              "right on the image's left; superior up; sagittal anterior on the left). 3D: the outline seen from "
              "anterior.</p>", "</body>", "</html>", ""]
    return "\n".join(lines)


def write_report_html(report: Report, volume: Optional[Volume], out_path: str | os.PathLike, *,
                      render_3d: bool = True, size_px: int = 160) -> Path:
    """Write ``report.html`` for a report, atomically (temporary file in the same folder, then renamed).

    Args:
        report: the findings; masks (when present) on the grid of ``volume``.
        volume: the analysed CT (HU, any axis order; the report's input grid), or None for a page without images.
        out_path: the HTML file to write (its folder must exist).
        render_3d: add the 3D renderings (when off-screen rendering is available; the page says when not).
        size_px: long side of each thumbnail in pixels.

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
    note_3d = ""
    if volume is not None:
        if tuple(volume.shape_zyx) != tuple(report.input.shape_zyx):
            raise ValueError(f"volume shape {volume.shape_zyx} is not the report's input {report.input.shape_zyx}")
        styles = segment_styles(report.findings)
        volume_lps, perm = reorient_to_lps(volume)
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
            images = finding_thumbnails(volume_lps, mask, center_kji, half_fov, color, size_px)
            if can_render and mask is not None:
                images = Thumbnails(images.axial, images.coronal, images.sagittal,
                                    render_mask_3d(mask, volume_lps.spacing_mm, color, size_px))
            thumbnails[finding.id] = images
    text = report_html_text(report, thumbnails, note_3d)
    write_file_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
