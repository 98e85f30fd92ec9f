"""Make ``docs/phantom.png``: an axial and a coronal slice of the clinical phantom, lung window, nodules outlined.

Usage (from the repository root)::

    python docs/make_phantom_figure.py                 # clinical preset, seed 0 -> docs/phantom.png
    python docs/make_phantom_figure.py --seed 3 --out /tmp/p3.png

The axial slice passes through the largest nodule (GT1), the coronal one through the trachea and the hila; the
coronal slice is stretched to square pixels. Nodule masks
are outlined in orange and labelled with their ids. Pillow only (no matplotlib).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lunglesionai.synth import PhantomConfig, make_phantom

#: Lung window: width and level, HU.
WINDOW_HU, LEVEL_HU = 1500.0, -600.0
#: Grey levels of the palette image (keeps the PNG small despite the noise), and the indices of the two colours.
GREY_LEVELS = 96
ORANGE, WHITE = GREY_LEVELS, GREY_LEVELS + 1
GREYS = [round(255 * i / (GREY_LEVELS - 1)) for i in range(GREY_LEVELS)]
PALETTE = [v for g in GREYS for v in (g, g, g)] + [255, 140, 0, 255, 255, 255]
#: Gap between the two panels, pixels.
GAP_PX = 6


def window(hu: np.ndarray) -> np.ndarray:
    """Map HU to uint8 grey through the lung window (W 1500, L −600)."""
    lo = LEVEL_HU - WINDOW_HU / 2
    return (np.clip((hu.astype(np.float32) - lo) / WINDOW_HU, 0.0, 1.0) * 255.0).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The 4-connected border pixels of a 2-D boolean mask."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def panel(grey: np.ndarray, masks: list[tuple[str, np.ndarray]], stretch: float) -> np.ndarray:
    """Palette indices (uint8) of a windowed slice, rows stretched by ``stretch``, nodule outlines in orange."""
    size = (grey.shape[1], int(round(grey.shape[0] * stretch)))
    smooth = np.asarray(Image.fromarray(grey).resize(size, Image.BILINEAR), dtype=np.float32)
    index = np.round(smooth / 255.0 * (GREY_LEVELS - 1)).astype(np.uint8)
    for _, mask in masks:
        big = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
        index[outline(big)] = ORANGE
    return index


def _labels(image: Image.Image, masks: list[tuple[str, np.ndarray]], stretch: float, x0: int) -> None:
    """Write each nodule's id beside its outline (``image`` is the figure being drawn)."""
    draw = ImageDraw.Draw(image)
    for label, mask in masks:
        rows, cols = np.nonzero(mask)
        draw.text((x0 + int(cols.max()) + 5, int(rows.min() * stretch) - 12), label, fill=ORANGE)


def make_figure(seed: int = 0) -> Image.Image:
    """The two panels side by side for ``PhantomConfig.clinical()`` with ``seed``, as a palette image."""
    phantom = make_phantom(replace(PhantomConfig.clinical(), seed=seed))
    vol = phantom.volume
    target = phantom.nodules[0]
    k = int(np.round(vol.lps_to_kji([target.center_lps_mm])[0][0]))
    hilum = (0.0, phantom.anatomy.trachea_center[1], 0.0)  # coronal plane through trachea, carina and hila
    j = int(np.round(vol.lps_to_kji([hilum])[0][1]))
    axial, coronal = [], []
    for n in phantom.nodules:
        full = np.zeros(vol.shape_zyx, dtype=np.uint8)
        n.mask.paste_into(full, 1)
        if full[k].any():
            axial.append((n.id, full[k] > 0))
        if full[:, j, :].any():
            coronal.append((n.id, full[::-1, j, :] > 0))
    stretch_ax = vol.spacing_mm[1] / vol.spacing_mm[0]
    stretch_co = vol.spacing_mm[2] / vol.spacing_mm[0]
    left = panel(window(vol.hu[k]), axial, stretch_ax)
    right = panel(window(vol.hu[::-1, j, :]), coronal, stretch_co)
    height = max(left.shape[0], right.shape[0])
    canvas = np.zeros((height, left.shape[1] + GAP_PX + right.shape[1]), dtype=np.uint8)
    top = (height - left.shape[0]) // 2
    canvas[top:top + left.shape[0], :left.shape[1]] = left
    canvas[:right.shape[0], left.shape[1] + GAP_PX:] = right
    image = Image.fromarray(canvas, mode="P")
    image.putpalette(PALETTE)
    x_right = left.shape[1] + GAP_PX
    _labels(image, [(name, np.pad(m, ((top, 0), (0, 0)))) for name, m in axial], stretch_ax, 0)
    _labels(image, coronal, stretch_co, x_right)
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), f"axial z = {target.center_lps_mm[2]:.0f} mm (lung window)", fill=WHITE)
    draw.text((x_right + 8, 8), f"coronal y = {hilum[1]:.0f} mm (trachea)", fill=WHITE)
    return image


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, render the figure, save it as a palette PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("phantom.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_figure(args.seed).save(args.out, optimize=True)
    logging.getLogger("make_phantom_figure").info("wrote %s (%d kB)", args.out, args.out.stat().st_size // 1024)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
