"""Make ``docs/demo_result.png``: what the pipeline found on the demo phantom, nodule by nodule.

Usage (from the repository root)::

    python docs/make_result_figure.py                 # clinical preset, seed 0 -> docs/demo_result.png

One axial tile (48 mm square, lung window) per true nodule, through its centre: the true mask outlined in orange,
the pipeline's segment in green (when a finding hits it by the LUNA16 rule), and a caption with size, texture,
attachment and the finding id or "missed". Phantom results, not clinical performance. Pillow only.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from make_phantom_figure import GREY_LEVELS, GREYS, window
from make_phantom_figure import outline as mask_outline
from PIL import Image, ImageDraw

from lunglesionai.evaluation.phantom_protocol import score_against_phantom
from lunglesionai.pipeline import analyze_volume
from lunglesionai.synth import PhantomConfig, make_phantom

#: Tile side in mm and in pixels, tiles per row, caption height in pixels.
TILE_MM, TILE_PX, COLUMNS, CAPTION_PX = 48.0, 200, 5, 30
ORANGE, GREEN, WHITE = GREY_LEVELS, GREY_LEVELS + 1, GREY_LEVELS + 2
PALETTE = [v for g in GREYS for v in (g, g, g)] + [255, 140, 0, 40, 220, 60, 255, 255, 255]


def _tile(volume, centre_lps, truth_mask: np.ndarray, found_mask: np.ndarray | None) -> np.ndarray:
    """Palette indices (TILE_PX, TILE_PX) of an axial crop around ``centre_lps`` with both outlines."""
    k, j, i = np.round(volume.lps_to_kji([centre_lps])[0]).astype(int)
    half = [int(round(TILE_MM / 2 / s)) for s in volume.spacing_mm[1::-1]]  # rows (y), columns (x)
    rows = slice(max(j - half[0], 0), j + half[0])
    cols = slice(max(i - half[1], 0), i + half[1])

    def resize(a: np.ndarray, resample) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((TILE_PX, TILE_PX), resample))

    grey = resize(window(volume.hu[k, rows, cols]), Image.BILINEAR).astype(np.float32)
    index = np.round(grey / 255.0 * (GREY_LEVELS - 1)).astype(np.uint8)
    for mask, colour in ((truth_mask, ORANGE), (found_mask, GREEN)):
        if mask is not None:
            big = resize(mask[k, rows, cols].astype(np.uint8) * 255, Image.NEAREST) > 0
            index[mask_outline(big)] = colour
    return index


def make_figure(seed: int = 0) -> Image.Image:
    """Analyse ``PhantomConfig.clinical()`` with ``seed`` and draw one tile per true nodule."""
    phantom = make_phantom(replace(PhantomConfig.clinical(), seed=seed))
    volume = phantom.volume
    report = analyze_volume(volume)
    match = score_against_phantom(report, phantom.truth_table())
    found = {int(t): report.nodules()[n] for n, t in enumerate(match.finding_truth) if t >= 0}
    n_rows = -(-len(phantom.nodules) // COLUMNS)
    canvas = Image.new("P", (COLUMNS * TILE_PX, n_rows * (TILE_PX + CAPTION_PX)), WHITE)
    canvas.putpalette(PALETTE)
    draw = ImageDraw.Draw(canvas)
    for n, truth in enumerate(phantom.nodules):
        truth_mask = np.zeros(volume.shape_zyx, bool)
        truth.mask.paste_into(truth_mask, True)
        finding = found.get(n)
        found_mask = None
        if finding is not None and finding.mask is not None:
            found_mask = np.zeros(volume.shape_zyx, bool)
            finding.mask.paste_into(found_mask, True)
        x, y = (n % COLUMNS) * TILE_PX, (n // COLUMNS) * (TILE_PX + CAPTION_PX)
        canvas.paste(Image.fromarray(_tile(volume, truth.center_lps_mm, truth_mask, found_mask), "P"), (x, y))
        verdict = finding.id if finding is not None else "missed"
        draw.text((x + 4, y + TILE_PX + 2), f"{truth.id} {truth.diameter_mm:.1f} mm {truth.texture}", fill=0)
        draw.text((x + 4, y + TILE_PX + 15), f"{truth.attachment}: {verdict}", fill=0)
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, render the figure, save it as a palette PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo_result.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_figure(args.seed).save(args.out, optimize=True)
    logging.getLogger("make_result_figure").info("wrote %s (%d kB)", args.out, args.out.stat().st_size // 1024)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
