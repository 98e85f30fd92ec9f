"""Pictures of report.html: thumbnails of a finding through its centre and a 3D rendering of its outline.

Axial, coronal and sagittal thumbnails (lung window, outline drawn in the finding's segment colour, dashed for an
approximate outline; a part-solid nodule's solid part tinted and outlined inside in a second colour) and a small 3D
rendering made with VTK off-screen rendering (None where OpenGL is unavailable). Display conventions
(radiological): the volume is in LPS axis order (:func:`lunglesionai.core.orientation.reorient_to_lps`); axial and
coronal images show the patient's right on the image's left, coronal and sagittal images have superior at the top,
sagittal images anterior on the left; pixels are resampled to square millimetres. The 3D view looks from anterior.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.volume import Volume

__all__ = [
    "HALF_FOV_DIAMETERS",
    "LEVEL_HU",
    "MIN_HALF_FOV_MM",
    "NO_3D_ENV",
    "SOLID_COMPONENT_MIN_HU",
    "WINDOW_HU",
    "Thumbnails",
    "finding_thumbnails",
    "offscreen_rendering_available",
    "render_mask_3d",
    "solid_part_color",
    "solid_part_mask",
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
#: Default lower HU limit of a part-solid nodule's solid part. The same value as
#: ``lunglesionai.stages.measurements.SOLID_COMPONENT_MIN_HU``, repeated here because io (layer 1) may not import
#: stages (layer 2); ``write_report_html(solid_component_min_hu=...)`` takes another, and a test checks they agree.
SOLID_COMPONENT_MIN_HU = -400.0
#: Colours of a solid part, RGB in [0, 1]: the one farther from the nodule's outline colour is used.
_SOLID_PART_COLORS_RGB = ((0.0, 1.0, 1.0), (1.0, 1.0, 0.0))
#: Opacity of the solid part's tint over the CT.
_SOLID_PART_TINT = 0.35
#: Dashes of an approximate outline: this many pixels drawn, then as many left out (along image diagonals).
_DASH_PX = 4


@dataclass(frozen=True)
class Thumbnails:
    """PNG images of one finding (bytes), or None where not made.

    Args:
        axial, coronal, sagittal: slices through the finding's centre with its outline.
        render_3d: the outline's surface seen from anterior, or None (no mask, or no off-screen rendering).
        has_solid_part: a solid part is drawn inside the outline (part-solid nodules).
    """

    axial: Optional[bytes]
    coronal: Optional[bytes]
    sagittal: Optional[bytes]
    render_3d: Optional[bytes] = None
    has_solid_part: bool = False


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
             color_rgb: tuple[float, float, float], solid: Optional[np.ndarray] = None,
             solid_rgb: tuple[float, float, float] = _SOLID_PART_COLORS_RGB[0], dashed: bool = False) -> bytes:
    """A 2-D slice (rows, cols) at its physical aspect, ``size_px`` on its long side, with the mask outlined
    (dashed and just outside it when ``dashed``) and the ``solid`` part (same shape as ``mask``) tinted and
    outlined inside."""
    from PIL import Image

    rows, cols = gray.shape
    height_mm, width_mm = rows * row_mm, cols * col_mm
    scale = size_px / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))

    def resized(binary: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(binary.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0

    image = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))
    rgb = np.repeat(image[..., None], 3, axis=2)
    if solid is not None and solid.any():
        part = resized(solid)
        tint = np.asarray(solid_rgb, dtype=float) * 255
        rgb[part] = np.round((1 - _SOLID_PART_TINT) * rgb[part] + _SOLID_PART_TINT * tint).astype(np.uint8)
        rgb[part & ~ndi.binary_erosion(part, border_value=0)] = tint.astype(np.uint8)
    inside = resized(mask)
    if dashed:  # just outside the mask, so the edge of what is under it stays visible
        outline = ndi.binary_dilation(inside, iterations=2) & ~inside
        rr, cc = np.indices(outline.shape)
        outline &= ((rr + cc) // _DASH_PX) % 2 == 0
    else:
        outline = inside & ~ndi.binary_erosion(inside, iterations=2, border_value=0)
    rgb[outline] = (np.asarray(color_rgb) * 255).astype(np.uint8)
    return _png(rgb)


def finding_thumbnails(volume_lps: Volume, mask_lps: Optional[FindingMask], center_kji: np.ndarray, half_fov_mm: float,
                       color_rgb: tuple[float, float, float], size_px: int = 160, *,
                       solid_lps: Optional[FindingMask] = None, dashed: bool = False) -> Thumbnails:
    """Axial, coronal and sagittal thumbnails through one point of a volume in LPS axis order.

    Args:
        volume_lps: CT in HU whose axes are in LPS order (``reorient_to_lps``), ``hu`` (Z, Y, X).
        mask_lps: the finding's mask on that grid, or None (no outline).
        center_kji: (3,) voxel index (k, j, i) of the slices' crossing point.
        half_fov_mm: half the side of the square field of view, mm.
        color_rgb: outline colour, RGB in [0, 1].
        size_px: long side of each picture in pixels.
        solid_lps: a part-solid nodule's solid part on that grid (:func:`solid_part_mask`), tinted and outlined
            inside the outline in a colour distinct from ``color_rgb`` (cyan, or yellow next to a cyan outline).
        dashed: draw the outline dashed (an approximate outline: the detector's sphere, see report.html).

    Returns:
        :class:`Thumbnails` (``render_3d`` None; see :func:`render_mask_3d`).
    """
    spacing_zyx = np.asarray(volume_lps.spacing_mm[::-1], dtype=float)
    center = np.round(np.asarray(center_kji, dtype=float)).astype(int)
    half = np.maximum(np.ceil(half_fov_mm / spacing_zyx).astype(int), 1)
    gray = _window(_slab(volume_lps.hu, center, half, np.asarray(_AIR_HU, volume_lps.hu.dtype)))
    masks = []
    for crop in (mask_lps, solid_lps):
        slab = np.zeros(gray.shape, dtype=bool)
        if crop is not None:  # the crop pasted straight into the slab (no full-size array)
            FindingMask(tuple(np.subtract(crop.offset_kji, center - half)), crop.array).paste_into(slab, True)
        masks.append(slab)
    mask, solid = masks
    style = dict(solid_rgb=solid_part_color(color_rgb), dashed=dashed)
    hk, hj, hi = half
    sz, sy, sx = spacing_zyx
    axial = _picture(gray[hk], mask[hk], sy, sx, size_px, color_rgb, solid[hk], **style)  # rows A->P, cols R->L
    coronal = _picture(gray[::-1, hj, :], mask[::-1, hj, :], sz, sx, size_px, color_rgb, solid[::-1, hj, :],
                       **style)  # rows S->I
    sagittal = _picture(gray[::-1, :, hi], mask[::-1, :, hi], sz, sy, size_px, color_rgb, solid[::-1, :, hi],
                        **style)  # cols A->P
    return Thumbnails(axial, coronal, sagittal, has_solid_part=bool(solid.any()))


def solid_part_color(color_rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """The colour of a solid part inside an outline of ``color_rgb`` (RGB in [0, 1]): cyan, or yellow when the
    outline itself is close to cyan."""
    return max(_SOLID_PART_COLORS_RGB, key=lambda c: float(np.linalg.norm(np.subtract(c, color_rgb))))


def solid_part_mask(volume: Volume, mask: FindingMask, min_hu: float = SOLID_COMPONENT_MIN_HU) -> Optional[FindingMask]:
    """The solid part of a nodule: the largest 6-connected group of its mask's voxels at or above ``min_hu``.

    The rule of ``lunglesionai.stages.measurements.solid_component`` (HU thresholds after Scholten et al., Eur
    Radiol 2015, doi:10.1007/s00330-014-3427-z), redone here on the picture's grid because io may not import stages.

    Args:
        volume: CT in HU, ``hu`` (Z, Y, X), any axis order.
        mask: the whole nodule's mask on that grid (parts outside the grid are ignored).
        min_hu: lowest HU of the solid part (default :data:`SOLID_COMPONENT_MIN_HU`).

    Returns:
        The solid part as a :class:`FindingMask` on the same grid, or None when no voxel reaches ``min_hu``.
    """
    from lunglesionai.core.segments import mask_crop_in_grid

    first, crop = mask_crop_in_grid(mask, volume.shape_zyx)
    if crop.size == 0:
        return None
    box = tuple(slice(int(f), int(f) + n) for f, n in zip(first, crop.shape))
    labels, count = ndi.label(crop & (np.asarray(volume.hu[box]) >= min_hu))
    if count == 0:
        return None
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return FindingMask.cropped(largest, tuple(int(f) for f in first))


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
